"""The one preprocessing function of the project, used by training, evaluation, prediction and the app.

`preprocess_image(rgb, cfg)` turns a decoded RGB image of any size into a uint8 tensor (3, S, S).
Scaling to [0, 1] and normalisation happen inside the model (`to_model_input`, the model's own
`normalize` buffers), so the tensor here is exactly "what the model sees" and can be shown as is.

Settings (`PreprocessConfig`, stored in every checkpoint, so one function serves training,
evaluation, prediction and the app):
- native (default, fit "squash"): resize straight to `size` (32 for CIFAKE-like data) with antialiasing;
  fit "center" takes the centre square first;
- seed V2.1: resize to `upsample_from` (32) with antialiasing, then upscale to `size` (128). Same
  information, 16x the pixels to convolve; kept to reproduce the seed and to measure against;
- crops (fit "crop"): a size x size window at native resolution, nothing resized (as CNNDetection
  trains): generator traces in the high frequencies survive, which a resize to 32 px destroys. Training
  takes a random window per image and epoch (`crop_at`), inference the centre window, or the average
  logit of `crops` windows (centre, corners, edge midpoints: `crop_positions`). Images smaller than
  the window are first enlarged (bicubic) until their short side fits.
- draft: JPEGs much larger than needed are decoded at 1/2, 1/4 or 1/8 scale straight from the DCT
  (Pillow's draft mode), keeping at least twice the input side, then resized. Much faster on large
  photos, slightly different pixels: a setting of the checkpoint, not a switch of the decoder.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


FITS = ("squash", "center", "crop")
# Window positions (fy, fx) as fractions of the free range: centre, corners, edge midpoints.
_CROP_POSITIONS = ((0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0),
                   (0.5, 0.0), (0.5, 1.0), (0.0, 0.5), (1.0, 0.5))
MAX_CROPS = len(_CROP_POSITIONS)


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 32                      # model input side, pixels
    upsample_from: int | None = None    # seed V2.1: downsample to this side first, then upscale to `size`
    fit: str = "squash"                 # "squash": whole image to a square (as both seeds); "center": centre
                                        # square; "crop": a size x size window at native resolution
    crops: int = 1                      # fit "crop": windows whose logits are averaged at inference
    draft: bool = False                 # JPEGs decoded at reduced DCT scale (>= 2x size) before resizing

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if not 1 <= self.crops <= MAX_CROPS:
            raise ValueError(f"crops must be 1..{MAX_CROPS}, got {self.crops}")
        if self.crops > 1 and self.fit != "crop":
            raise ValueError("several crops need fit 'crop' (the model was trained on windows)")
        if self.fit == "crop" and (self.draft or self.upsample_from):
            raise ValueError("fit 'crop' reads native pixels: no draft decoding, no upsampling")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "PreprocessConfig":
        d = dict(d or {})
        return cls(**{k: d[k] for k in ("size", "upsample_from", "fit", "crops", "draft") if k in d})

    @property
    def draft_side(self) -> int | None:
        """The short side a JPEG may be DCT-reduced to (None: decode at full size)."""
        return 2 * self.size if self.draft else None

    def describe(self) -> str:
        s = self.size
        if self.upsample_from:
            return f"resize to {self.upsample_from}x{self.upsample_from}, then upscale to {s}x{s} (seed V2.1)"
        if self.fit == "crop":
            return (f"{s}x{s} window at native resolution (" +
                    (f"{self.crops} windows averaged" if self.crops > 1 else "centre") + " at inference)")
        out = f"resize to {s}x{s} (native)" if self.fit == "squash" else f"centre square resized to {s}x{s}"
        return out + (", large JPEGs draft-decoded" if self.draft else "")


def crop_positions(k: int) -> list[tuple[float, float]]:
    """The k inference windows as (fy, fx) fractions: centre first, then corners, then edge midpoints."""
    if not 1 <= k <= MAX_CROPS:
        raise ValueError(f"crops must be 1..{MAX_CROPS}")
    return list(_CROP_POSITIONS[:k])


def random_crop_position(seed: int, index: int) -> tuple[float, float]:
    """A training window for item `index` under `seed` (e.g. the epoch): uniform, reproducible."""
    g = np.random.default_rng([seed, index])
    fy, fx = g.random(2)
    return float(fy), float(fx)


SEED_V21_PREPROCESS = PreprocessConfig(size=128, upsample_from=32)


def _resize(img: Image.Image, side: int) -> Image.Image:
    if img.size == (side, side):
        return img
    # PIL's resampling filters widen with the scale factor when shrinking, i.e. they antialias;
    # reducing_gap first box-reduces by an integer factor, which is much faster on large photos.
    return img.resize((side, side), Image.Resampling.BICUBIC, reducing_gap=3.0)


def preprocess_image(rgb: Image.Image | torch.Tensor, cfg: PreprocessConfig = PreprocessConfig(),
                     crop_at: tuple[float, float] | None = None) -> torch.Tensor:
    """RGB PIL image or uint8 tensor (3, H, W) of any size -> uint8 tensor (3, cfg.size, cfg.size).

    The input is not modified (a new tensor is returned). A tensor input goes through the same PIL
    operations as an image, except when it already has the model's size (then every step is the identity)
    and for windows (fit "crop"), which are the same pixels sliced. `crop_at` = (fy, fx) in [0, 1]
    places the window (fit "crop" only; default the centre).
    """
    if cfg.fit == "crop":
        return _window(rgb, cfg.size, crop_at or (0.5, 0.5))
    if isinstance(rgb, torch.Tensor):
        _check_tensor(rgb)
        if rgb.shape[1] == rgb.shape[2] == cfg.size and not cfg.upsample_from:
            return rgb.clone()
        rgb = Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy(), "RGB")
    if rgb.mode != "RGB":
        raise ValueError(f"preprocess_image expects an RGB image (use core.data.images.load_image), got {rgb.mode}")
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


def preprocess_views(rgb: Image.Image | torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """What inference feeds the model for one image: (3, S, S), or (K, 3, S, S) for cfg.crops = K > 1
    windows (crop_positions), whose logits are averaged (core.inference.evaluate.predict_logits)."""
    if cfg.crops > 1:
        return torch.stack([preprocess_image(rgb, cfg, at) for at in crop_positions(cfg.crops)])
    return preprocess_image(rgb, cfg)


def _check_tensor(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"preprocess_image expects a uint8 (3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")


def _window(rgb: Image.Image | torch.Tensor, side: int, at: tuple[float, float]) -> torch.Tensor:
    """A side x side window of the native pixels at (fy, fx); short sides below `side` enlarged first."""
    if isinstance(rgb, torch.Tensor):
        _check_tensor(rgb)
        h, w = rgb.shape[1:]
    else:
        if rgb.mode != "RGB":
            raise ValueError(f"preprocess_image expects an RGB image (use core.data.images.load_image), got {rgb.mode}")
        w, h = rgb.size
    if min(w, h) < side:
        img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy(), "RGB")
        scale = side / min(w, h)
        w, h = max(side, round(w * scale)), max(side, round(h * scale))
        rgb = img.resize((w, h), Image.Resampling.BICUBIC)
    fy, fx = (min(1.0, max(0.0, float(v))) for v in at)
    top, left = round(fy * (h - side)), round(fx * (w - side))
    if isinstance(rgb, torch.Tensor):
        return rgb[:, top:top + side, left:left + side].clone()                     # (3, S, S)
    arr = np.asarray(rgb.crop((left, top, left + side, top + side)), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def to_model_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float32 in [0, 1], channels_last. Float input keeps its values."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
