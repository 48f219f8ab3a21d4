"""Training augmentation (core.model.augment): resampling, the recipe's per-image shifts, pseudo-fakes."""
import torch

import math

import pytest

from core.model.augment import (ALL_PSEUDO_FAKE_KINDS, PSEUDO_FAKE_KINDS, AugmentRecipe, augment, pseudo_fakes,
                          resample, spectral_gain, synthetic_trace)
from core.model.train import TrainConfig, get_args_parser, main_config


def _checker(s=32):
    """uint8 (3, s, s): 0/255 alternating pixels, the highest frequency an image can hold."""
    i = torch.arange(s)
    return (((i.view(-1, 1) + i.view(1, -1)) % 2) * 255).to(torch.uint8).expand(3, s, s).contiguous()


def test_resample_nearest_by_hand():
    # 4x4 with distinct 2x2 blocks: area-down to 2x2 keeps the block means, nearest-up copies them back
    blocks = torch.tensor([[10, 10, 20, 20], [10, 10, 20, 20], [30, 30, 40, 40], [30, 30, 40, 40]], dtype=torch.uint8)
    x = blocks.expand(1, 3, 4, 4).contiguous()
    assert torch.equal(resample(x, 0.5, "area"), x)
    # a checkerboard averaged over 2x2 blocks is flat grey (127.5 -> 128)
    flat = resample(_checker(4).unsqueeze(0), 0.5, "area")
    assert torch.equal(flat, torch.full_like(flat, 128))


def test_augment_zero_recipe_only_flips_and_shifts():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 32, 32), dtype=torch.uint8)
    before = x.clone()
    out = augment(x, g, AugmentRecipe())
    assert torch.equal(x, before)                            # input untouched
    assert out.shape == x.shape and out.dtype == torch.uint8
    # every output pixel is an input pixel or the zero padding of the 2-px translation
    inner = out[:, :, 2:30, 2:30]
    for b in range(16):
        vals = set(x[b].flatten().tolist())
        assert set(inner[b].flatten().tolist()) <= vals


def test_pseudo_fakes_adds_one_fake_copy_per_picked_real():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1] * 20)
    before = x.clone()
    x2, y2 = pseudo_fakes(x, y, g, share=1.0)
    assert torch.equal(x, before)                            # inputs not modified
    assert len(x2) == 40 + 20 and torch.equal(x2[:40], x) and torch.equal(y2[:40], y)
    assert torch.equal(y2[40:], torch.ones(20, dtype=y.dtype))    # every REAL got exactly one FAKE copy
    # each copy is its real original plus a trace: close to it, never equal (the JPEG alone changes noise)
    diff = (x2[40:].float() - x[y == 0].float()).abs().mean(dim=(1, 2, 3))
    assert (diff > 0.5).all()
    # share 0: the batch as it was; FAKE-only batch: nothing to copy
    assert pseudo_fakes(x, y, g, 0.0)[0] is x
    assert len(pseudo_fakes(x[y == 1], y[y == 1], g, 1.0)[0]) == 20


def test_pseudo_fakes_share_is_a_probability():
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(2000, 3, 8, 8, dtype=torch.uint8)
    y = torch.zeros(2000, dtype=torch.long)
    _, y2 = pseudo_fakes(x, y, g, share=0.25)
    assert 0.22 < (len(y2) - 2000) / 2000 < 0.28          # 500 expected, sd ~19


def test_each_trace_does_what_it_says():
    g = torch.Generator().manual_seed(3)
    grey = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    mad = [(synthetic_trace(grey, "noise", g).float() - 128).abs().mean() for _ in range(200)]
    assert 2.0 < min(mad) and max(mad) < 40.0                  # sigma 3-48 -> mean |n| = 0.8 sigma
    assert sum(m < 8 for m in mad) > 60 and sum(m > 16 for m in mad) > 40    # log-uniform: both ends drawn
    chk = _checker()
    for kind in ("smooth", "upsample"):                        # both remove the highest frequency
        out = synthetic_trace(chk, kind, g).float()
        assert out.std() < 0.7 * chk.float().std(), kind
    ramp = torch.arange(256, dtype=torch.uint8).view(16, 16).expand(3, 16, 16).contiguous()
    band = synthetic_trace(ramp, "banding", g)
    assert 8 <= len(torch.unique(band[0])) <= 24              # 8-24 levels per channel
    assert set(PSEUDO_FAKE_KINDS) == {"noise", "smooth", "upsample", "banding"}


def test_spectral_gain_shape_dc_and_floor():
    g = torch.Generator().manual_seed(4)
    for _ in range(50):
        gain = spectral_gain(32, g)
        assert gain.shape == (32, 17)                       # torch.fft.rfft2's grid for 32 x 32
        assert gain[0, 0] == 0                              # DC kept: mean brightness unchanged
        assert 0.2 - 1e-6 <= gain.abs().max() <= 1.2 + 1e-6   # never a no-op, at most tilt 0.6 + bump 0.6
        # radial: the same gain at (0, k) and (k, 0)
        assert torch.allclose(gain[0, 1:17], gain[1:17, 0], atol=1e-6)


def test_spectral_trace_applies_its_gain():
    # A mid-grey image with a weak sinusoid stays inside [0, 255], so the trace is the gain exactly up to
    # rounding: the sinusoid's Fourier coefficient is multiplied by exp(gain) at its frequency.
    i = torch.arange(32, dtype=torch.float32)
    im = (128 + 20 * torch.cos(2 * math.pi * 5 * i / 32)).view(1, 32).expand(32, 32)
    im = im.round().to(torch.uint8).expand(3, 32, 32).contiguous()
    out = synthetic_trace(im, "spectral", torch.Generator().manual_seed(5))
    expected = math.exp(float(spectral_gain(32, torch.Generator().manual_seed(5))[0, 5]))
    got = torch.fft.rfft2(out[0].float())[0, 5].abs() / torch.fft.rfft2(im[0].float())[0, 5].abs()
    assert abs(float(got) - expected) < 0.02, (float(got), expected)
    assert abs(out.float().mean() - im.float().mean()) < 0.1       # DC kept


def test_pseudo_fakes_kinds_are_chosen_and_checked():
    # flat grey images: banding (and JPEG) keep them flat, noise does not
    x = (torch.arange(64) * 4 + 2).to(torch.uint8).view(64, 1, 1, 1).expand(64, 3, 32, 32).contiguous()
    y = torch.zeros(64, dtype=torch.long)
    flat = lambda xs: [bool(im.float().std() == 0) for im in xs]       # noqa: E731
    x2, y2 = pseudo_fakes(x, y, torch.Generator().manual_seed(6), share=1.0, kinds=("banding",))
    assert len(y2) == 128 and y2[64:].eq(1).all()
    assert all(flat(x2[64:]))
    x3, _ = pseudo_fakes(x, y, torch.Generator().manual_seed(6), share=1.0)          # default: four kinds
    assert 5 <= flat(x3[64:]).count(False) <= 30              # the noise quarter (16 expected)
    assert "spectral" in ALL_PSEUDO_FAKE_KINDS and "spectral" not in PSEUDO_FAKE_KINDS   # opt-in
    with pytest.raises(ValueError, match="unknown trace"):
        pseudo_fakes(x, y, torch.Generator(), share=1.0, kinds=("sharpen",))
    args = get_args_parser().parse_args(["--data", "d", "--pseudo-fakes", "0.3", "--pseudo-fake-kinds", "noise,spectral"])
    assert main_config(args).pseudo_fake_kinds == "noise,spectral"
    assert TrainConfig().pseudo_fake_kinds == ",".join(PSEUDO_FAKE_KINDS)   # old recipes unchanged
    with pytest.raises(ValueError, match="unknown trace"):
        main_config(get_args_parser().parse_args(["--data", "d", "--pseudo-fake-kinds", "noise,sharpen"]))
