"""LoRA adapters on disk in the PEFT format, and stacking N of them into composed layers.

Files: `adapter_config.json` (PEFT's LoraConfig fields) + `adapter_model.safetensors` with keys
`base_model.model.<target>.lora_{A,B}.weight`. Fused blocks are saved as `<module>.<block>`
(e.g. `blocks.0.attn.qkv.q`); an adapter made by PEFT on the whole fused module is read too, by
splitting its B rows into the blocks, which is exact since ΔW rows = B rows · A.
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


def save_adapter(adapter: LoraAdapter, directory: Path, targets: list[Target], rank: int, alpha: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    conv = {t.name: t.conv for t in targets}
    tensors = {}
    for name, (a, b) in adapter.weights.items():
        if conv[name]:  # PEFT stores conv LoRA factors as 1x1 kernels
            a, b = a[:, :, None, None], b[:, :, None, None]
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.detach().float().contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.detach().float().contiguous().cpu()
    config = {
        "peft_type": "LORA", "task_type": None, "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
        "target_modules": sorted({t.module for t in targets}), "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
        "rank_pattern": {}, "alpha_pattern": {}, "base_model_name_or_path": adapter.base_model,
        "lorabench": {"name": adapter.name, "fused_blocks": sorted({t.name for t in targets if t.name != t.module}),
                      **adapter.meta},
    }
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))


def load_adapter(directory: str | Path, targets: list[Target], backbone_aliases: set[str] = frozenset(),
                 name: str | None = None) -> LoraAdapter:
    """Read a PEFT-format LoRA and check it fits `targets`; any mismatch names the file."""
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
    if base and backbone_aliases and base not in backbone_aliases:
        raise AdapterError(f"{cfg_path} was trained on {base!r}, but this backbone is one of "
                           f"{sorted(backbone_aliases)}.")
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

    alpha = float(cfg.get("lora_alpha", cfg.get("r", 8)))
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
        r = a.shape[0]
        alpha_k = float(cfg.get("alpha_pattern", {}).get(key, alpha))
        scale = alpha_k / (math.sqrt(r) if rslora else r)
        for t in blocks:  # fused module saved whole: ΔW's rows of block t are B[rows] · A
            lo = t.rows[0] - blocks[0].rows[0]
            weights[t.name] = (a, b[lo:lo + t.out_features])
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
                       shared_logits: nn.Parameter | None = None) -> dict[str, AdaptedLayer]:
    """Turn every targeted module into a composed layer over `adapters` (initial weights: uniform)."""
    layers = attach(model, targets)
    device = next(model.parameters()).device
    stacked_bytes = 4 * len(adapters) * sum(t.in_features * t.out_features for t in targets)
    materialize = stacked_bytes <= STACKED_DELTA_BUDGET_BYTES
    for mpath, (a_cat, b_cat, scales, r) in stack_adapters(targets, adapters).items():
        layers[mpath].set_composition(a_cat.to(device), b_cat.to(device), scales.to(device), r, shared_logits,
                                      materialize=materialize)
    return layers


def adapters_tag(adapters: list[LoraAdapter], kind: str) -> str:
    """Names composed weights for the feature cache: same adapters + same weighting = same features."""
    return f"{kind}:" + "|".join(a.source or a.name for a in adapters)
