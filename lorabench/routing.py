"""Arrow routing (Ostapenko et al. 2024), the math of PEFT's `tuners/lora/arrow.py` on stacked factors.

Per adapted matrix, module n's *prototype* pₙ is the top right-singular vector of its raw product BₙAₙ
(no scale), found as PEFT finds it: power iteration v ↦ Aᵀ(BᵀB)(Av) for 15 steps from one seeded random
start, never forming BₙAₙ. A token x scores |⟨pₙ, x⟩| (sign-free: a singular vector's sign is arbitrary,
and a raw dot product, not a cosine); its top-k modules get softmax(score / T) weights, the others 0.
Nothing here trains, and the weights depend on the input, so a routed layer cannot be merged into W0.
"""

from __future__ import annotations

import torch


def arrow_prototypes(a: torch.Tensor, b: torch.Tensor, iters: int = 15, seed: int = 0,
                     eps: float = 1e-8) -> torch.Tensor:
    """Top right-singular vectors of B·A for a batch of modules: a [..., r, in], b [..., out, r] -> [..., in]
    (float32, unit norm; 0 where B·A = 0). Every module starts from the same randn(in) drawn from `seed`,
    as PEFT does when its `rng_seed` is set, so prototypes agree with PEFT's to float tolerance."""
    a32, b32 = a.float(), b.float()
    gram = b32.transpose(-1, -2) @ b32  # BᵀB: [..., r, r]
    gen = torch.Generator(device=a.device.type).manual_seed(int(seed))
    v = torch.randn(a.shape[-1], generator=gen, device=a.device)
    v = (v / (v.norm() + eps)).expand(*a.shape[:-2], -1)
    for _ in range(iters):
        w = (a32.transpose(-1, -2) @ (gram @ (a32 @ v.unsqueeze(-1)))).squeeze(-1)
        v = w / (w.norm(dim=-1, keepdim=True) + eps)
    return v


def arrow_top_k(tokens: torch.Tensor, prototypes: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's top-k modules per adapted matrix: tokens [t, in], prototypes [S, N, in] -> (scores
    |⟨pₙ, x⟩|, module indices), both [t, S, k] (top-k capped at N)."""
    s, n, _ = prototypes.shape
    sim = (tokens @ prototypes.reshape(s * n, -1).to(tokens.dtype).T).abs().view(-1, s, n)
    return sim.topk(min(int(top_k), n), dim=-1)


def arrow_coefficients(tokens: torch.Tensor, prototypes: torch.Tensor, top_k: int,
                       temperature: float) -> torch.Tensor:
    """Routing weights per token and adapted matrix: tokens [t, in], prototypes [S, N, in] -> [t, S, N],
    softmax(|⟨pₙ, x⟩| / T) over each token's top-k modules (`arrow_top_k`), exactly 0 elsewhere."""
    top, idx = arrow_top_k(tokens, prototypes, top_k)
    score = torch.full((*idx.shape[:2], prototypes.shape[1]), float("-inf"), dtype=top.dtype,
                       device=top.device).scatter(-1, idx, top)
    return torch.softmax(score / temperature, dim=-1)
