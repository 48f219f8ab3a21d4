"""The one preprocessing function of the project, used by training, evaluation, prediction and the app.

`preprocess_image(rgb, cfg)` turns a decoded RGB image of any size into a uint8 tensor (3, S, S).
Scaling to [0, 1] and normalisation happen inside the model (`to_model_input`, the model's own
`normalize` buffers), so the tensor here is exactly "what the model sees" and can be shown as is.

Two settings exist (`PreprocessConfig`):
- native (default): resize straight to `size` (32 for CIFAKE-like data) with antialiasing;
- seed V2.1: resize to `upsample_from` (32) with antialiasing, then upscale to `size` (128). Same
  information, 16x the pixels to convolve; kept to reproduce the seed and to measure against.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 32                      # model input side, pixels
    upsample_from: int | None = None    # seed V2.1: downsample to this side first, then upscale to `size`
    fit: str = "squash"                 # "squash": whole image to a square (as both seeds); "center": centre crop

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "PreprocessConfig":
        d = dict(d or {})
        return cls(**{k: d[k] for k in ("size", "upsample_from", "fit") if k in d})

    def describe(self) -> str:
        if self.upsample_from:
            return f"resize to {self.upsample_from}x{self.upsample_from}, then upscale to {self.size}x{self.size} (seed V2.1)"
        return f"resize to {self.size}x{self.size} (native)"


SEED_V21_PREPROCESS = PreprocessConfig(size=128, upsample_from=32)


def _resize(img: Image.Image, side: int) -> Image.Image:
    if img.size == (side, side):
        return img
    # PIL's resampling filters widen with the scale factor when shrinking, i.e. they antialias;
    # reducing_gap first box-reduces by an integer factor, which is much faster on large photos.
    return img.resize((side, side), Image.Resampling.BICUBIC, reducing_gap=3.0)


def preprocess_image(rgb: Image.Image | torch.Tensor, cfg: PreprocessConfig = PreprocessConfig()) -> torch.Tensor:
    """RGB PIL image or uint8 tensor (3, H, W) of any size -> uint8 tensor (3, cfg.size, cfg.size).

    The input is not modified (a new tensor is returned). A tensor input goes through the same PIL
    operations as an image, except when it already has the model's size (then every step is the identity).
    """
    if isinstance(rgb, torch.Tensor):
        if rgb.dtype != torch.uint8 or rgb.ndim != 3 or rgb.shape[0] != 3:
            raise ValueError(f"preprocess_image expects a uint8 (3, H, W) tensor, got {rgb.dtype} {tuple(rgb.shape)}")
        if rgb.shape[1] == rgb.shape[2] == cfg.size and not cfg.upsample_from:
            return rgb.clone()
        rgb = Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy(), "RGB")
    if rgb.mode != "RGB":
        raise ValueError(f"preprocess_image expects an RGB image (use core.images.load_image), got {rgb.mode}")
    img = rgb
    if cfg.fit == "center":
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if cfg.upsample_from:
        img = _resize(img, cfg.upsample_from)
        img = img.resize((cfg.size, cfg.size), Image.Resampling.BICUBIC)
    else:
        img = _resize(img, cfg.size)
    arr = np.asarray(img, dtype=np.uint8)               # (H, W, 3), read-only view
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, S, S)


def to_model_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float32 in [0, 1], channels_last. Float input keeps its values."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
