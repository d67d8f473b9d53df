"""The LoRA engine: which matrices are adapted, LoRA training layers, and exact composition.

An *adapted matrix* (a `Target`) is a whole Linear / 1x1-Conv weight, or one row block of a fused
weight (timm ViT's `qkv` is split into q, k and v, each with its own (A, B) pair, as in the paper).
Every delta is ΔW = scale·B·A. Composition never mixes A's and B's separately. Since the modules are
frozen, each BₙAₙ is materialised once and Σₙ wₙ·scaleₙ·(BₙAₙ) is one batched product per layer per forward
(N·out·in flops, memory-bound); or the factors are kept and the same sum is (B_cat · diag(w⊗1ᵣ·scale)) · A_cat
(r times the flops, a fraction of the memory): `adapters.stacked_layers` picks per layer, by the device's
flops per byte and a memory budget; both products with the stack (forward Σₙ wₙΔWₙ, backward ⟨∂L/∂W, ΔWₙ⟩)
are batched GEMMs over column blocks, which use every core where a GEMV uses one. Never a Python loop over
modules, except Arrow's top-k dispatch at large N, where each module runs on its own tokens.
"""

from __future__ import annotations

import math
import re
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lorabench.routing import arrow_coefficients, arrow_prototypes, arrow_top_k


@dataclass(frozen=True)
class TargetRule:
    """Module names (regex, full match) to adapt; `split` names equal row blocks of a fused weight."""

    pattern: str
    split: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str  # the adapted matrix: module path, or "<module path>.<block>" for fused weights
    module: str
    rows: tuple[int, int]
    in_features: int
    out_features: int  # rows of this block
    conv: bool


def _io(module: nn.Module, name: str) -> tuple[int, int, bool]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        return module.in_channels, module.out_channels, True
    raise ValueError(f"LoRA target {name} is a {type(module).__name__}; only Linear and 1x1 Conv2d are supported.")


def find_targets(model: nn.Module, rules: list[TargetRule]) -> list[Target]:
    targets: list[Target] = []
    for mname, module in model.named_modules():
        if isinstance(module, AdaptedLayer):
            module = module.base
        rule = next((r for r in rules if re.fullmatch(r.pattern, mname)), None)
        if rule is None or not mname:
            continue
        if mname.endswith(".base") and isinstance(model.get_submodule(mname.rsplit(".", 1)[0]), AdaptedLayer):
            continue
        in_f, out_f, conv = _io(module, mname)
        blocks = rule.split or ("",)
        if out_f % len(blocks):
            raise ValueError(f"{mname}: {out_f} output rows do not split into {len(blocks)} equal blocks")
        size = out_f // len(blocks)
        for i, block in enumerate(blocks):
            name = f"{mname}.{block}" if block else mname
            targets.append(Target(name, mname, (i * size, (i + 1) * size), in_f, size, conv))
    return targets


def lora_param_count(targets: list[Target], rank: int) -> int:
    return sum(rank * (t.in_features + t.out_features) for t in targets)


def exact(like: torch.Tensor) -> AbstractContextManager:
    """Autocast off on `like`'s device: ΔW = scale·B·A and its combinations are computed in fp32 even inside a
    bf16 cell (`lorabench.precision`); the layer's conv / linear then runs in the cell's precision."""
    return torch.autocast(like.device.type, enabled=False)


def compose_delta(a_cat: torch.Tensor, b_cat: torch.Tensor, coef: torch.Tensor, rank: int) -> torch.Tensor:
    """Σₙ coefₙ·Bₙ·Aₙ for every block at once.

    a_cat: [S, N·r, in], b_cat: [S, out, N·r], coef: [S, N] (weight × scale) -> [S, out, in].
    """
    coef_r = coef.repeat_interleave(rank, dim=-1)  # [S, N·r]
    return torch.bmm(b_cat * coef_r.unsqueeze(1), a_cat)


def _col_blocks(m: torch.Tensor) -> tuple[int, torch.Tensor]:
    """[N, E] -> (P, its P column blocks as [P, N, E/P], no copy). MKL runs a plain GEMV over a stack on one
    core (24 GB/s here, where two cores read 32-36 GB/s); a batched GEMM over column blocks uses every core."""
    e = m.shape[-1]
    p = next((p for p in (8, 4, 2) if e % p == 0), 1)
    return p, m.view(m.shape[0], p, e // p).transpose(0, 1)


def stack_vecmat(w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Σₙ wₙ·Mₙ for w [N], M [N, E] -> [E]."""
    p, blocks = _col_blocks(m)
    return torch.bmm(w.reshape(1, 1, -1).expand(p, 1, -1), blocks).view(-1)


def stack_matvec(m: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """⟨Mₙ, g⟩ for every n, M [N, E], g [E] -> [N]."""
    p, blocks = _col_blocks(m)
    return torch.bmm(g.reshape(p, 1, -1), blocks.transpose(1, 2)).sum(0).view(-1)  # g may be a strided grad


class _StackedSum(torch.autograd.Function):
    """U[s] = Σₙ coef[s, n]·stack[s, n] ([S, N] x [S, N, E] -> [S, E]); the stack is a constant."""

    @staticmethod
    def forward(ctx, coef: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(stack)
        return torch.stack([stack_vecmat(coef[b], stack[b]) for b in range(stack.shape[0])])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (stack,) = ctx.saved_tensors
        return torch.stack([stack_matvec(stack[b], grad[b]) for b in range(stack.shape[0])]), None


# Routed layers run every module densely up to this many times the top-k (one GEMM, no Python loop), and
# dispatch each token to its top-k modules only beyond it.
ROUTE_DENSE_MAX_RATIO = 4


class AdaptedLayer(nn.Module):
    """Wraps one Linear / 1x1 Conv; adds LoRA (trainable) or a composition of N frozen modules.

    Modes: "base" (plain), "lora" (y = W0x + scale·B(Ax)), "compose" (W = W0 + g·Σ softmax(v)ₙ ΔWₙ,
    the merged weight computed once per forward, so the step cost barely grows with N). Two options let the
    composition shrink, which softmax weights alone cannot: a *null module* (ΔW = 0) as an extra softmax
    entry, whose weight is the share of the update dropped; and a learned *gain* g (one scalar, shared by
    every layer of the network, init 1) on the composed update. Both stay exact on ΔWₙ = scaleₙ·Bₙ·Aₙ.
    "route" (Arrow, `lorabench.routing`): y = W0x + Σₙ cₙ(x)·scaleₙ·Bₙ(Aₙx) with per-token weights c(x), from
    the factors (input-dependent weights cannot be merged).
    """

    def __init__(self, base: nn.Module, targets: list[Target]):
        super().__init__()
        self.base = base
        self.targets = sorted(targets, key=lambda t: t.rows)
        self.conv = self.targets[0].conv
        self.n_blocks = len(self.targets)
        self.block_rows = self.targets[0].out_features
        self.in_features = self.targets[0].in_features
        covered = sum(t.out_features for t in self.targets)
        if covered != self.base.weight.shape[0]:
            raise ValueError(f"{self.targets[0].module}: targets cover {covered} rows of {self.base.weight.shape[0]}")
        self.mode = "base"
        self.reuse: dict[str, torch.Tensor] | None = None  # set by `compose_once`

    # -- LoRA ---------------------------------------------------------------------------------
    def enable_lora(self, rank: int, alpha: float) -> None:
        s, out, inp = self.n_blocks, self.block_rows, self.in_features
        self.rank, self.scale = rank, alpha / rank
        a = torch.empty(s, rank, inp, device=self.base.weight.device)
        for i in range(s):  # PEFT's init: A ~ kaiming-uniform(a=√5), B = 0, so ΔW = 0 at start
            nn.init.kaiming_uniform_(a[i], a=math.sqrt(5))
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(s, out, rank, device=a.device))
        self.mode = "lora"

    def lora_weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {t.name: (self.lora_A[i].detach().clone(), self.lora_B[i].detach().clone())
                for i, t in enumerate(self.targets)}

    def _lora_delta_out(self, x: torch.Tensor) -> torch.Tensor:
        s, r = self.n_blocks, self.rank
        h = F.linear(x, self.lora_A.reshape(s * r, -1)).unflatten(-1, (s, r))
        return torch.einsum("...sr,sor->...so", h, self.lora_B).flatten(-2) * self.scale

    # -- composition --------------------------------------------------------------------------
    def set_composition(self, a_cat: torch.Tensor, b_cat: torch.Tensor, scales: torch.Tensor, rank: int,
                        logits: nn.Parameter | None = None, materialize: bool = True, null: bool = False,
                        gain: nn.Parameter | None = None) -> None:
        """Frozen factors of N modules; `logits` ([S, N (+1 with `null`)] per block, or a shared vector) is
        learned, and so is `gain` (a shared scalar) when given.

        `materialize` keeps the raw products Bₙ·Aₙ ([S, N, out, in]) instead of the factors."""
        self.register_buffer("comp_scale", scales, persistent=False)
        self.register_buffer("comp_A", a_cat, persistent=False)  # factors are small: always kept
        self.register_buffer("comp_B", b_cat, persistent=False)
        self.comp_rank = rank
        n = scales.shape[-1]
        self.register_buffer("comp_delta", self._raw_products() if materialize else None, persistent=False)
        self.comp_null = null
        width = n + int(null)
        self.comp_logits = logits if logits is not None else nn.Parameter(torch.zeros(self.n_blocks, width,
                                                                                      device=a_cat.device))
        if self.comp_logits.shape[-1] != width:
            raise ValueError(f"composition logits have {self.comp_logits.shape[-1]} entries, expected {width}")
        self.comp_gain = gain
        self.mode = "compose"

    def _raw_products(self) -> torch.Tensor:
        """Bₙ·Aₙ for every block and module, batched: [S, N, out, in] (no scale)."""
        n, r = self.comp_scale.shape[-1], self.comp_rank
        a = self.comp_A.unflatten(1, (n, r))  # [S, N, r, in]
        b = self.comp_B.unflatten(2, (n, r)).transpose(1, 2)  # [S, N, out, r]
        with exact(a):
            return b @ a

    def module_deltas(self) -> torch.Tensor:
        """Each module's exact ΔWₙ = scaleₙ·Bₙ·Aₙ per block: [S, N, out, in] (for non-linear merges)."""
        raw = self.comp_delta if self.comp_delta is not None else self._raw_products()
        return raw * self.comp_scale[..., None, None]

    def composition_weights(self, with_null: bool = False) -> torch.Tensor:
        """softmax(v) per block, [S, N]; the null module's share is the last column with `with_null`."""
        w = torch.softmax(self.comp_logits, dim=-1).expand(self.n_blocks, -1)
        return w if with_null or not self.comp_null else w[:, :-1]

    def composed_delta(self, coef: torch.Tensor | None = None) -> torch.Tensor:
        """ΔW of the whole weight: [out, in] (no conv dims). `coef` defaults to g·softmax(logits)·scale."""
        if coef is None:
            coef = self.composition_weights() * self.comp_scale
            if self.comp_gain is not None:
                coef = coef * self.comp_gain
        coef = coef.expand(self.n_blocks, -1)
        with exact(coef):
            return self._combine(coef)

    def _combine(self, coef: torch.Tensor) -> torch.Tensor:
        if self.comp_delta is not None:
            s, n = coef.shape
            return _StackedSum.apply(coef.to(self.comp_delta.dtype), self.comp_delta.view(s, n, -1)).view(
                s * self.block_rows, self.in_features)
        return compose_delta(self.comp_A, self.comp_B, coef, self.comp_rank).flatten(0, 1)

    # -- routing (Arrow) ----------------------------------------------------------------------------
    @torch.no_grad()
    def set_routing(self, top_k: int, temperature: float, iters: int = 15, seed: int = 0) -> None:
        """Route each token over the composition's N modules (call `set_composition` first): per block, the
        prototypes of the N raw products Bₙ·Aₙ, then top-k / softmax(|⟨p, x⟩| / T) weights per token. A 1×1
        conv's tokens are its input pixels' channel vectors (PEFT's Arrow covers Linear layers only)."""
        if self.mode != "compose":
            raise ValueError("set_routing needs the modules' factors: call set_composition first")
        if self.conv and tuple(self.base.padding) != (0, 0):
            raise ValueError(f"{self.targets[0].module}: a padded 1x1 conv has output pixels without an input token")
        n, r = self.comp_scale.shape[-1], self.comp_rank
        a = self.comp_A.unflatten(1, (n, r))  # [S, N, r, in]
        b = self.comp_B.unflatten(2, (n, r)).transpose(1, 2)  # [S, N, out, r]
        self.register_buffer("route_protos", arrow_prototypes(a, b, iters, seed).to(self.comp_A.dtype),
                             persistent=False)
        # a buffer, not attributes, so the feature cache's digest of the weights sees top-k and T as well
        self.register_buffer("route_config", torch.tensor([float(top_k), float(temperature)]), persistent=False)
        self.route_totals: torch.Tensor | None = None  # Σ over tokens of c(x), [S, N], while `track_routing`
        self.mode = "route"

    def track_routing(self, on: bool = True) -> None:
        """Start (from zero) or stop summing the routing weights of every token this layer sees."""
        self.route_totals = torch.zeros(self.route_protos.shape[:2], device=self.route_protos.device) if on else None
        self.route_tokens = 0

    def routing_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """c(x) for tokens [t, in]: [t, S, N]."""
        return arrow_coefficients(tokens, self.route_protos, int(self.route_config[0]), float(self.route_config[1]))

    def _routed_delta_out(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            stride = self.base.stride
            x = x[:, :, ::stride[0], ::stride[1]] if stride != (1, 1) else x
            x = x.movedim(1, -1)  # [B, H, W, C]: one token per pixel
        lead = x.shape[:-1]
        tok = x.reshape(-1, self.in_features)
        n, k = self.comp_scale.shape[-1], min(int(self.route_config[0]), self.comp_scale.shape[-1])
        y = self._dispatched(tok) if n > ROUTE_DENSE_MAX_RATIO * k else self._dense_routed(tok)
        y = y.reshape(*lead, self.n_blocks * self.block_rows)
        return y.movedim(-1, 1) if self.conv else y

    def _dense_routed(self, tok: torch.Tensor) -> torch.Tensor:
        """Every module on every token, weighted by c(x) (zeros included): one GEMM each way."""
        s, r, out, n = self.n_blocks, self.comp_rank, self.block_rows, self.comp_scale.shape[-1]
        coef = self.routing_weights(tok)  # [t, S, N]
        if self.route_totals is not None:
            self.route_totals += coef.detach().sum(0).to(self.route_totals.dtype)
            self.route_tokens += tok.shape[0]
        z = F.linear(tok, self.comp_A.reshape(s * n * r, -1)).view(-1, s, n, r)
        z = z * (coef * self.comp_scale.to(coef.dtype)).unsqueeze(-1)
        return torch.einsum("tsnr,sonr->tso", z, self.comp_B.view(s, out, n, r))

    def _dispatched(self, tok: torch.Tensor) -> torch.Tensor:
        """Only each token's top-k modules, as a mixture of experts dispatches: the (token, module) pairs are
        sorted by module, each module runs once on its own tokens, and the results are added back per token.
        Same sum as `_dense_routed` without the N - k zero terms: k·r·(in + out) multiply-adds per token."""
        s, r, out, n = self.n_blocks, self.comp_rank, self.block_rows, self.comp_scale.shape[-1]
        k = min(int(self.route_config[0]), n)
        top, idx = arrow_top_k(tok, self.route_protos, k)  # [t, S, k]
        w = torch.softmax(top / float(self.route_config[1]), dim=-1)  # arrow_coefficients' nonzero weights
        if self.route_totals is not None:
            for b in range(s):
                self.route_totals[b].index_add_(0, idx[:, b].flatten(), w[:, b].flatten().to(self.route_totals.dtype))
            self.route_tokens += tok.shape[0]
        a = self.comp_A.view(s, n, r, -1)
        bt = self.comp_B.view(s, out, n, r)
        coef = w * self.comp_scale.to(w.dtype)[torch.arange(s, device=w.device).view(1, s, 1), idx]  # [t, S, k]
        y = tok.new_zeros(tok.shape[0], s, out)
        for b in range(s):
            module = idx[:, b].flatten()  # [t·k]: the module of each (token, slot), token-major
            order = torch.argsort(module, stable=True)
            token = order // k
            x_sorted, c_sorted = tok[token], coef[:, b].flatten()[order].unsqueeze(-1)
            y_sorted = torch.empty(module.shape[0], out, dtype=tok.dtype, device=tok.device)
            start = 0
            for m, count in enumerate(torch.bincount(module, minlength=n).tolist()):
                if count:
                    end = start + count
                    z = F.linear(x_sorted[start:end], a[b, m]) * c_sorted[start:end]  # weigh the r-vector
                    torch.mm(z, bt[b, :, m].T, out=y_sorted[start:end])
                    start = end
            y[:, b].index_add_(0, token, y_sorted)
        return y

    @torch.no_grad()
    def merge_(self, delta: torch.Tensor | None = None) -> None:
        """Fold a delta (default: the current composition) into W0, then behave as a plain layer."""
        if delta is None:
            if self.mode == "route":
                raise ValueError(f"{self.targets[0].module}: routed weights depend on the input; nothing to merge")
            delta = self.composed_delta()
        w = self.base.weight
        w.add_(delta.reshape(w.shape).to(w.dtype))
        self.mode = "base"

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "base":
            return self.base(x)
        if self.mode == "lora" and self.conv:
            # One conv with W0 + scale·B·A: the factored path's extra activations, scaling and sum cost a 1x1
            # conv more (they stream full-size maps) than the merged weight's extra gradient GEMM.
            b = self.base
            with exact(x):
                weight = b.weight + (self.scale * (self.lora_B[0] @ self.lora_A[0]))[:, :, None, None]
            return F.conv2d(x, weight, b.bias, b.stride, b.padding, b.dilation, b.groups)
        if self.mode == "lora":
            return self.base(x) + self._lora_delta_out(x)
        if self.mode == "route":
            return self.base(x) + self._routed_delta_out(x)
        if self.reuse is not None and "weight" in self.reuse:
            weight = self.reuse["weight"]
        else:
            weight = self.base.weight + self.composed_delta().reshape(self.base.weight.shape)  # composed_delta: fp32
            if self.reuse is not None:
                self.reuse["weight"] = weight
        if self.conv:
            b = self.base
            return F.conv2d(x, weight, b.bias, b.stride, b.padding, b.dilation, b.groups)
        return F.linear(x, weight, self.base.bias)


def attach(model: nn.Module, targets: list[Target]) -> dict[str, AdaptedLayer]:
    """Replace each targeted module by an AdaptedLayer (idempotent); returns them by module path."""
    by_module: dict[str, list[Target]] = {}
    for t in targets:
        by_module.setdefault(t.module, []).append(t)
    layers: dict[str, AdaptedLayer] = {}
    for mpath, ts in by_module.items():
        current = model.get_submodule(mpath)
        if not isinstance(current, AdaptedLayer):
            parent_name, _, child = mpath.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            current = AdaptedLayer(current, ts)
            setattr(parent, child, current)
        layers[mpath] = current
    return layers


def adapted_layers(model: nn.Module) -> dict[str, AdaptedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptedLayer)}


@contextmanager
def compose_once(model: nn.Module):
    """Within the block each composed layer builds W0 + ΔW once and reuses it. The text scorer runs the
    encoder twice per batch (question, then choices), and building the weight is the part of a composed
    step that grows with N; autograd adds both uses' gradients before the one backward through Σₙ."""
    layers = [layer for layer in adapted_layers(model).values() if layer.mode == "compose"]
    for layer in layers:
        layer.reuse = {}
    try:
        yield
    finally:
        for layer in layers:
            layer.reuse = None


def merge_all_(model: nn.Module) -> None:
    """Fold every composition into its base weight: evaluation then costs exactly the bare backbone."""
    for layer in adapted_layers(model).values():
        if layer.mode == "compose":
            layer.merge_()
