"""Training-time augmentation: one batch function, with the recipe's knobs passed per call.

`augment(x, gen, recipe)` on uint8 (B, 3, S, S) batches. Always: horizontal flip and a 2-pixel
translation. Per image, each with its own probability (`AugmentRecipe`):
- blur (Gaussian, sigma in {0.2, 0.4, ..., 1.2} px) and JPEG re-encoding (quality ~ U[30, 95]): CNNDetection's
  (Wang et al., CVPR 2020) finding that blur+JPEG augmentation at moderate probability is what
  lets a detector trained on one generator carry over to others; their sigma range (0-3 px at
  256 px) is scaled down here for 32 px images;
- resampling: down by a factor in {0.5, 0.6, ..., 0.9} and back up with a random filter (nearest, bilinear,
  bicubic, area): fakes reach users resized by unknown pipelines, as CIFAKE's were downscaled;
- the legacy `robust` mix (grayscale / JPEG / blur / noise on 30% of the batch).
The shifts are `core.data.shifts.apply_shift`, the same code the robustness sweep measures with.

`pseudo_fakes(x, y, gen, share)` is the other kind of augmentation: it adds to the batch, for a
share of its REAL images, a copy labelled FAKE that carries a trace that no photograph has but some generator
might leave (self-synthesised fakes, as Self-Blended Images do for face forgeries: Shiohara and
Yamasaki, CVPR 2022). A detector trained on a few generators learns their particular traces, and
"REAL" becomes its answer for everything else (a model that has seen only smooth fakes calls the
per-pixel noise of an autoregressive sampler REAL). The traces, one per image, at random strength:
- sampling noise: independent per pixel and channel, from barely visible to heavy (sigma 3-48 grey
  levels, log-uniform: under-trained autoregressive and diffusion samplers leave such noise);
- over-smoothing: Gaussian blur (VAEs, autoencoders, under-trained GANs);
- upsampling: generated at half size, then enlarged by nearest / bilinear / bicubic (GAN and
  decoder upsampling layers);
- banding: each channel quantised to 8-24 levels (generators with a few output levels);
- spectral (opt-in, `kinds`): the image's spectrum reshaped by a random smooth radial gain, a tilt
  plus a bump (log-amplitude up to +-1.2, DC kept), so that too much or too little energy in any
  frequency band, not only the few shapes above, reads as a trace (generators miss the 1/f power
  law of photographs in both directions, band by band: Durall et al., CVPR 2020; Dzanic et al.,
  NeurIPS 2020);
then the same JPEG encoding as the sample's images (quality 90, 4:2:0), so the last step of a
pseudo-fake's life is the one every image in the data went through, not a cue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.data.shifts import apply_shift

RESAMPLE_MODES = ("nearest", "bilinear", "bicubic", "area")


@dataclass(frozen=True)
class AugmentRecipe:
    blur: float = 0.0        # probability per image of a Gaussian blur
    jpeg: float = 0.0        # probability per image of JPEG re-encoding
    resample: float = 0.0    # probability per image of down-and-up resampling
    robust: bool = False     # the earlier --robust-aug mix (30% of each batch, one shift kind per batch)


def _uniform(gen, lo, hi) -> float:
    return float(torch.empty(1).uniform_(lo, hi, generator=gen))


def resample(x: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> down to round(S * factor) and back to S with `mode`; uint8."""
    s = x.shape[-1]
    small = max(2, int(round(s * factor)))
    kw = {} if mode in ("nearest", "area") else {"align_corners": False}
    y = F.interpolate(x.float(), size=(small, small), mode="area" if mode == "area" else mode, **kw)
    y = F.interpolate(y, size=(s, s), mode="nearest" if mode in ("nearest", "area") else mode, **kw)
    return y.round_().clamp_(0, 255).to(torch.uint8)


PSEUDO_FAKE_KINDS = ("noise", "smooth", "upsample", "banding")     # the default set
ALL_PSEUDO_FAKE_KINDS = PSEUDO_FAKE_KINDS + ("spectral",)


def parse_pseudo_fake_kinds(text: str) -> tuple[str, ...]:
    """"noise, spectral" -> ("noise", "spectral"); ValueError naming the unknown ones, or when none is given."""
    kinds = tuple(k.strip() for k in str(text).split(",") if k.strip())
    bad = sorted(set(kinds) - set(ALL_PSEUDO_FAKE_KINDS))
    if bad or not kinds:
        raise ValueError(f"unknown trace(s) {', '.join(bad) or '(none given)'}; "
                         f"known: {', '.join(ALL_PSEUDO_FAKE_KINDS)}")
    return kinds


def spectral_gain(s: int, gen: torch.Generator) -> torch.Tensor:
    """A random radial log-amplitude gain on `torch.fft.rfft2`'s (S, S // 2 + 1) grid: tilt * f plus a
    Gaussian bump over the radial frequency f in [0, 1] (1 = the corner), 0 at DC; at least 0.2 at its
    largest, so the trace is never a no-op."""
    fy = torch.fft.fftfreq(s).abs()
    fx = torch.fft.rfftfreq(s)
    f = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / math.sqrt(0.5)
    tilt, amp = _uniform(gen, -0.6, 0.6), _uniform(gen, -0.6, 0.6)
    c, w = _uniform(gen, 0.15, 0.85), _uniform(gen, 0.08, 0.25)
    g = tilt * f + amp * (torch.exp(-(f - c) ** 2 / (2 * w * w)) - math.exp(-c * c / (2 * w * w)))
    g[0, 0] = 0.0                               # exactly, not up to float rounding
    top = float(g.abs().max())
    return g * (0.2 / top) if top < 0.2 else g


def synthetic_trace(im: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """uint8 (3, S, S) -> the same image carrying one synthetic generator trace of `kind`
    (ALL_PSEUDO_FAKE_KINDS), at a strength drawn from `gen`; before the final JPEG encoding."""
    x = im.unsqueeze(0)
    if kind == "noise":                         # sigma 3-48 grey levels (log-uniform), per pixel and channel
        sigma = math.exp(_uniform(gen, math.log(3.0), math.log(48.0)))
        x = (x.float() + sigma * torch.randn(x.shape, generator=gen)).round_().clamp_(0, 255).to(torch.uint8)
    elif kind == "smooth":                      # Gaussian blur, sigma 0.5-1.2 px
        x = apply_shift(x, "blur", _uniform(gen, 0.5, 1.2))
    elif kind == "upsample":                    # made at half size, enlarged by a random filter
        x = resample(x, 0.5, ("nearest", "bilinear", "bicubic")[int(torch.randint(0, 3, (1,), generator=gen))])
    elif kind == "banding":                     # 8-24 levels per channel
        step = 255.0 / (int(torch.randint(8, 25, (1,), generator=gen)) - 1)
        x = ((x.float() / step).round_() * step).round_().clamp_(0, 255).to(torch.uint8)
    elif kind == "spectral":                    # random smooth radial reshaping of the spectrum
        s = x.shape[-1]
        y = torch.fft.irfft2(torch.fft.rfft2(x.float()) * torch.exp(spectral_gain(s, gen)), s=(s, s))
        x = y.round_().clamp_(0, 255).to(torch.uint8)
    else:
        raise ValueError(f"unknown trace {kind!r}; known: {', '.join(ALL_PSEUDO_FAKE_KINDS)}")
    return x[0]


def pseudo_fakes(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, share: float,
                 kinds: tuple = PSEUDO_FAKE_KINDS) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, 3, S, S), labels (B,) -> (B + k, ...): the batch, then for each REAL image picked with
    probability `share` a copy labelled FAKE (1) carrying one synthetic trace, of a kind drawn uniformly
    from `kinds` (see the module doc).
    The real original stays in the batch, so the pair differs only by the trace. Inputs not modified."""
    if not share:
        return x, y
    b = x.shape[0]
    pick = torch.nonzero((y == 0) & (torch.rand(b, generator=gen) < share)).flatten()
    if not len(pick):
        return x, y
    drawn = torch.randint(0, len(kinds), (len(pick),), generator=gen)
    # quality 90 with Pillow's default 4:2:0 subsampling: the sample's encoding (data/build_sample.py)
    out = [apply_shift(synthetic_trace(x[i], kinds[k], gen), "jpeg", 90)
           for i, k in zip(pick.tolist(), drawn.tolist())]
    return torch.cat([x, torch.stack(out)]), torch.cat([y, torch.ones(len(out), dtype=y.dtype)])


def augment(x: torch.Tensor, gen: torch.Generator, recipe: AugmentRecipe = AugmentRecipe()) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> augmented uint8 (B, 3, S, S); the input is not modified."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    pad = F.pad(x, (2, 2, 2, 2), mode="constant")
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()   # one offset per batch: cheap, enough
    x = pad[:, :, dy:dy + s, dx:dx + s].contiguous()
    # Per image: whether it is changed and how strongly. Images that drew the same mode/level bin are
    # shifted in one call (small tensor ops cost more in dispatch than in arithmetic).
    if recipe.resample:
        pick = torch.rand(b, generator=gen) < recipe.resample
        mode = torch.randint(0, len(RESAMPLE_MODES), (b,), generator=gen)
        factor = torch.randint(0, 5, (b,), generator=gen)               # 0.5, 0.6, ..., 0.9
        for m in range(len(RESAMPLE_MODES)):
            for f in range(5):
                idx = torch.nonzero(pick & (mode == m) & (factor == f)).flatten()
                if len(idx):
                    x[idx] = resample(x[idx], 0.5 + 0.1 * f, RESAMPLE_MODES[m])
    if recipe.blur:
        pick = torch.rand(b, generator=gen) < recipe.blur
        sigma = torch.randint(0, 6, (b,), generator=gen)                 # 0.2, 0.4, ..., 1.2 px
        for k in range(6):
            idx = torch.nonzero(pick & (sigma == k)).flatten()
            if len(idx):
                x[idx] = apply_shift(x[idx], "blur", 0.2 * (k + 1))
    if recipe.jpeg:
        pick = torch.nonzero(torch.rand(b, generator=gen) < recipe.jpeg).flatten()
        qual = torch.randint(30, 96, (b,), generator=gen)
        for i in pick.tolist():
            x[i] = apply_shift(x[i], "jpeg", int(qual[i]))
    if recipe.robust:
        idx = torch.nonzero(torch.rand(b, generator=gen) < 0.3).flatten()
        if len(idx):
            kind = ["grayscale", "jpeg", "blur", "noise"][int(torch.randint(0, 4, (1,), generator=gen))]
            level = {"grayscale": 1.0, "jpeg": float(torch.randint(20, 95, (1,), generator=gen)),
                     "blur": _uniform(gen, 0.3, 1.5), "noise": _uniform(gen, 2, 16)}[kind]
            x[idx] = apply_shift(x[idx], kind, level, seed=int(torch.randint(0, 2**31, (1,), generator=gen)))
    return x
