"""Image views: the deterministic test-time resize and the random training views (crop + flip).

Images are kept decoded as uint8 at their stored size (PACS 128 px, CIFAR 32 px) and brought to the
task's input size per batch, so a random-resized crop samples the source pixels rather than an
already-upsampled copy, and a 10,000-image pool costs its native size in memory, not 224 px.
All randomness comes from the caller's generator: the same generator gives the same views.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of the random crop (torchvision's default)


def resize(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, h, w] (uint8 or float, 0..255) -> float [B, C, size, size]; a no-op copy if already that size."""
    x = pixels.float()
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 255)


def crop_boxes(n: int, height: int, width: int, gen: torch.Generator, scale: tuple[float, float],
               ratio: tuple[float, float] = RATIO) -> list[tuple[int, int, int, int]]:
    """torchvision's RandomResizedCrop box sampling (10 tries, then the centre crop), from `gen`."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = []
    for _ in range(n):
        for _ in range(10):
            u = torch.rand(4, generator=gen).tolist()
            target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
            aspect = math.exp(log_r[0] + (log_r[1] - log_r[0]) * u[1])
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(u[2] * (height - h + 1))
                left = int(u[3] * (width - w + 1))
                boxes.append((top, left, h, w))
                break
        else:  # fall back to the whole image, as torchvision does (within the ratio range)
            boxes.append((0, 0, height, width))
    return boxes


@lru_cache(maxsize=1024)
def _resize_weights(length: int, size: int) -> torch.Tensor:
    """The [size, length] matrix of `resize` along one axis (bicubic, antialiased): F.interpolate of the
    identity, so its weights are PyTorch's own and `resize(crop) == Wy @ crop @ Wx.T` up to float rounding."""
    eye = torch.eye(length)[None, None]
    return F.interpolate(eye, size=(size, length), mode="bicubic", align_corners=False, antialias=True)[0, 0]


def random_views(pixels: torch.Tensor, size: int, gen: torch.Generator, scale: tuple[float, float] = (0.25, 1.0),
                 hflip: bool = True) -> torch.Tensor:
    """One random-resized crop (+ horizontal flip with p = 1/2) per image: float [B, C, size, size], on the
    device of `pixels`.

    Boxes and flips come from `gen` (a CPU generator), so a seed draws the same views on every device. Each view
    is `resize` of its crop written as two matrix products, out = Ay · x · Axᵀ, with Ay, Ax the crop's resize
    weights placed at the box (Ax's rows reversed for a flip): one batched product for the whole batch instead
    of a crop and an interpolation per image."""
    n, _, h, w = pixels.shape
    boxes = crop_boxes(n, h, w, gen, scale)
    flips = (torch.rand(n, generator=gen) < 0.5).tolist() if hflip else [False] * n
    dev = pixels.device
    pinned = dev.type == "cuda"  # built in pinned memory, the weights go to the device without the host waiting
    rows = torch.zeros(n, size, h, pin_memory=pinned)
    cols = torch.zeros(n, size, w, pin_memory=pinned)
    for i, ((top, left, bh, bw), flip) in enumerate(zip(boxes, flips)):
        rows[i, :, top:top + bh] = _resize_weights(bh, size)
        wx = _resize_weights(bw, size)
        cols[i, :, left:left + bw] = wx.flip(0) if flip else wx
    rows, cols = rows.to(dev, non_blocking=True), cols.to(dev, non_blocking=True)
    return (rows[:, None] @ pixels.float() @ cols.transpose(1, 2)[:, None]).clamp_(0, 255)
