"""Named distribution shifts, applied to uint8 image tensors (..., 3, H, W) before preprocessing.

`parse_shift("jpeg:30")` -> Shift; `shift.apply(x, index)` works on one image (3, H, W) or a batch
(B, 3, H, W), so robustness sweeps apply it to whole batches. torchvision's transforms are used where
they exist.

Noise is the one random shift, and it has one definition: the image at dataset position i gets
the noise drawn from a generator seeded with `seed + i`, whether it is shifted alone (the per-image
path, `ImageDataset.record`) or inside a batch (the sweep's batched path, `apply_shift` with a
per-image seed for each row). Re-running gives the same pixels; batching never changes them.

| name       | level means                               | identity |
|------------|-------------------------------------------|----------|
| grayscale  | blend towards luma, 0..1 (1 = full gray)  | 0        |
| jpeg       | JPEG quality 1..100 (Pillow re-encode)    | -        |
| blur       | gaussian sigma, pixels                    | 0        |
| noise      | gaussian std, in units of 1/255 of range  | 0        |
| downscale  | factor >= 1: shrink (antialiased), re-enlarge | 1    |
| brightness | multiplicative factor                     | 1        |
| contrast   | factor                                    | 1        |
| saturation | factor (0 = gray)                         | 1        |
| hue        | hue rotation, fraction of a turn -0.5..0.5 | 0       |
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

SHIFT_NAMES = ("grayscale", "jpeg", "blur", "noise", "downscale", "brightness", "contrast", "saturation", "hue")

# The levels the limitations page sweeps (severity increasing left to right).
SWEEP_LEVELS = {
    "grayscale": [0.5, 1.0],
    "jpeg": [90, 70, 50, 30, 10],
    "blur": [0.5, 1.0, 1.5, 2.0],
    "noise": [4, 8, 16, 32],
    "downscale": [1.5, 2, 3, 4],
    "brightness": [0.5, 0.75, 1.25, 1.5],
    "contrast": [0.5, 0.75, 1.25, 1.5],
    "saturation": [0.0, 0.5, 1.5, 2.0],
    "hue": [0.05, 0.1, 0.25, 0.5],
}
IDENTITY_LEVEL = {"grayscale": 0.0, "jpeg": 100, "blur": 0.0, "noise": 0.0, "downscale": 1.0,
                  "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}


class ShiftError(ValueError):
    pass


@dataclass(frozen=True)
class Shift:
    name: str
    level: float
    seed: int = 0       # for noise: image at dataset position i is seeded with seed + i

    def __str__(self):
        return f"{self.name}:{self.level:g}"

    def apply(self, x: torch.Tensor, index=0) -> torch.Tensor:
        """uint8 (3, H, W) of the item at dataset position `index`, or (B, 3, H, W) with `index` an int
        (rows are positions index, index+1, ...) or a sequence of B positions."""
        if isinstance(index, int):
            return apply_shift(x, self.name, self.level, self.seed + index)
        return apply_shift(x, self.name, self.level, [self.seed + int(i) for i in index])


def parse_shift(text: str | None) -> Shift | None:
    """'jpeg:30' -> Shift('jpeg', 30.0); None/'' -> None; bad names/levels raise ShiftError."""
    if not text:
        return None
    name, _, level = text.partition(":")
    name = name.strip().lower()
    if name not in SHIFT_NAMES:
        raise ShiftError(f"unknown shift {name!r}; known: {', '.join(SHIFT_NAMES)}")
    if not level:
        if name == "grayscale":
            level = "1"
        else:
            raise ShiftError(f"shift {name!r} needs a level, e.g. {name}:{SWEEP_LEVELS[name][1]}")
    try:
        value = float(level)
    except ValueError:
        raise ShiftError(f"shift level {level!r} is not a number") from None
    _check_level(name, value)
    return Shift(name, value)


def _check_level(name, v):
    ok = {"grayscale": 0 <= v <= 1, "jpeg": 1 <= v <= 100, "blur": v >= 0, "noise": v >= 0, "downscale": v >= 1,
          "brightness": v >= 0, "contrast": v >= 0, "saturation": v >= 0, "hue": -0.5 <= v <= 0.5}[name]
    if not ok:
        raise ShiftError(f"level {v:g} is out of range for {name}")


def image_seeds(x: torch.Tensor, seed) -> list[int]:
    """Per-image seeds for x (3, H, W) or (B, 3, H, W): an int seed means seed, seed + 1, ... per row."""
    n = 1 if x.ndim == 3 else int(np.prod(x.shape[:-3]))
    seeds = [seed + k for k in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images")
    return seeds


def gaussian_noise(shape, seed: int) -> torch.Tensor:
    """Standard normal noise of one image's shape (3, H, W) from a generator seeded with `seed`."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed)))


def apply_shift(x: torch.Tensor, name: str, level: float, seed=0) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> uint8 of the same shape. The input is not modified.

    seed (noise only): an int for one image; for a batch an int s (row k seeded s + k) or one seed per row.
    """
    if x.dtype != torch.uint8:
        raise TypeError("apply_shift expects uint8 images")
    _check_level(name, level)
    if name == "grayscale":
        gray = TF.rgb_to_grayscale(x, num_output_channels=3)
        if level >= 1:
            return gray
        return torch.lerp(x.float(), gray.float(), float(level)).round_().clamp_(0, 255).to(torch.uint8)
    if name == "jpeg":
        # Pillow's libjpeg rather than torchvision.io, whose codecs are deprecated from 0.29 on.
        q = int(round(level))
        if x.ndim == 3:
            return _jpeg(x, q)
        return torch.stack([_jpeg(im, q) for im in x.reshape(-1, *x.shape[-3:])]).reshape(x.shape)
    if name == "blur":
        if level <= 0:
            return x.clone()
        k = 2 * math.ceil(3 * level) + 1
        return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(level), float(level)])
    if name == "noise":
        if level <= 0:
            return x.clone()
        seeds = image_seeds(x, seed)
        noise = torch.stack([gaussian_noise(x.shape[-3:], s) for s in seeds]).reshape(x.shape) * float(level)
        return (x.float() + noise).round_().clamp_(0, 255).to(torch.uint8)
    if name == "downscale":
        if level <= 1:
            return x.clone()
        h, w = x.shape[-2:]
        small = (max(1, round(h / level)), max(1, round(w / level)))
        down = TF.resize(x, list(small), antialias=True)
        return TF.resize(down, [h, w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if name == "brightness":
        return TF.adjust_brightness(x, float(level))
    if name == "contrast":
        return TF.adjust_contrast(x, float(level))
    if name == "saturation":
        return TF.adjust_saturation(x, float(level))
    if name == "hue":
        return TF.adjust_hue(x, float(level))
    raise ShiftError(f"unknown shift {name!r}")


def shift_array(arr: np.ndarray, name: str, level: float, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3) array -> uint8 (H, W, 3): `apply_shift` for one image held as an array (the app's examples)."""
    x = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()   # (3, H, W)
    return apply_shift(x, name, level, seed).permute(1, 2, 0).contiguous().numpy()


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    tensor_to_pil(x).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return pil_to_tensor(Image.open(buf).convert("RGB"))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """uint8 (3, H, W) -> RGB PIL."""
    return Image.fromarray(x.permute(1, 2, 0).contiguous().numpy(), "RGB")
