"""Images/s of an upstream LoRA training step as the protocol runs it, against the bare step it contains.

    python benchmarks/bench_pipeline.py                      # CPU, and CUDA when present
    python benchmarks/bench_pipeline.py --devices cpu --rounds 5 --steps 2

Three variants, run round by round (interleaved, so a busy machine slows all three alike):
- `bare`: the backbone's forward + backward + AdamW on ready, normalised float tensors at 224 px already on
  the device (what the step would cost if the data pipeline were free);
- `pipeline`: `training.train_end_to_end` as upstream training calls it (EfficientNet-Lite0 + rank-16 LoRA
  + head, batch 32, the upstream recipe) on 128-px uint8 images: the support split moved to the device once,
  random-resized-crop + flip views made in one batched product there, host tensors sent through pinned memory
  (`runtime.to_device`), the non-finite-loss check every `training.CHECK_EVERY` steps;
- `per-image`: the same loop as it was before (views cropped and resized one image at a time on the host,
  pageable host-to-device copies, the loss read back every step), kept here as the reference.
Images are random pixels: the cost does not depend on their content. Ratios use each variant's median round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lorabench import backbones, data, training
from lorabench.backbones import create_backbone
from lorabench.data import Split
from lorabench.lora import attach
from lorabench.seeding import generator
from lorabench.specs import UpstreamRecipe
from lorabench.views import crop_boxes, resize

SOURCE, SIZE, CLASSES = 128, 224, 7


def per_image_views(pixels, size, gen, scale=(0.25, 1.0), hflip=True):
    """The views as they were made before: one host crop + bicubic resize per image (same boxes and flips)."""
    pixels = pixels.cpu()
    _, _, h, w = pixels.shape
    boxes = crop_boxes(len(pixels), h, w, gen, scale)
    flips = (torch.rand(len(pixels), generator=gen) < 0.5).tolist() if hflip else [False] * len(pixels)
    out = torch.empty(len(pixels), pixels.shape[1], size, size)
    for i, ((top, left, bh, bw), flip) in enumerate(zip(boxes, flips)):
        view = resize(pixels[i:i + 1, :, top:top + bh, left:left + bw], size)[0]
        out[i] = view.flip(-1) if flip else view
    return out


def setup(device: str, n: int):
    backbone = create_backbone("efficientnet_lite0", device)
    recipe = UpstreamRecipe()
    for layer in attach(backbone.model, backbone.targets()).values():
        layer.enable_lora(recipe.rank, recipe.alpha)
    lora = [p for p in backbone.model.parameters() if p.requires_grad]
    head = backbone.make_head(CLASSES).to(device)
    g = torch.Generator().manual_seed(0)
    split = Split(key="bench", inputs={"pixels": torch.randint(0, 256, (n, 3, SOURCE, SOURCE), dtype=torch.uint8,
                                                               generator=g)},
                  labels=torch.randint(0, CLASSES, (n,), generator=g), num_classes=CLASSES, modality="image",
                  meta={"image_size": SIZE})
    groups = [{"params": lora, "lr": recipe.lr}, {"params": list(head.parameters()), "lr": recipe.head_lr}]
    return backbone, head, split, groups, recipe


def bare_round(backbone, head, groups, recipe: UpstreamRecipe, steps: int) -> None:
    dev = backbone.device()
    x = torch.randn(recipe.batch_size, 3, SIZE, SIZE, device=dev)
    if backbone.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (recipe.batch_size,), device=dev)
    opt = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(backbone.model(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def pageable_copy(t: torch.Tensor, device) -> torch.Tensor:
    return t.to(device)


def pipeline_round(backbone, head, split, groups, recipe: UpstreamRecipe, steps: int, seed: int, before: bool) -> None:
    """One round of `steps` steps; `before`: the loop as it ran before issue 26 (data on the host, views per
    image, plain pageable copies, the loss read back every step)."""
    patched = [(training, "random_views", per_image_views), (training, "CHECK_EVERY", 1),
               (Split, "to", lambda self, device: self), (training, "to_device", pageable_copy),
               (data, "to_device", pageable_copy), (backbones, "to_device", pageable_copy)] if before else []
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patched]
    for obj, name, value in patched:
        setattr(obj, name, value)
    try:
        training.train_end_to_end(backbone, head, groups, split, recipe, generator("bench", seed), steps=steps,
                                  trace_every=steps)
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def bench(device: str, rounds: int, steps: int) -> dict[str, float]:
    backbone, head, split, groups, recipe = setup(device, n=max(512, 2 * steps * 32))
    split_dev = split.to(device)  # as train_end_to_end does once per call; not part of a step
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    runs = {"bare": lambda r: bare_round(backbone, head, groups, recipe, steps),
            "pipeline": lambda r: pipeline_round(backbone, head, split_dev, groups, recipe, steps, r, before=False),
            "per-image": lambda r: pipeline_round(backbone, head, split, groups, recipe, steps, r, before=True)}
    for fn in runs.values():  # warm-up (allocator, kernels, weight caches)
        fn(-1)
    sync()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(r)
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: steps * recipe.batch_size / statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="steps per round (default: 2 on CPU, 20 on CUDA)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; EfficientNet-Lite0 + rank-16 LoRA, "
          f"batch 32, {SOURCE}-px uint8 sources -> {SIZE} px")
    print("| device | variant | images/s | / bare |")
    print("|---|---|---|---|")
    for device in args.devices.split(","):
        steps = args.steps or (20 if device.startswith("cuda") else 2)
        ips = bench(device, args.rounds, steps)
        for name, v in ips.items():
            print(f"| {device} | {name} | {v:.1f} | {v / ips['bare']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
