"""Training augmentation (core.augment): resampling, the recipe's per-image shifts, pseudo-fakes."""
import torch

from core.augment import (PSEUDO_FAKE_KINDS, AugmentRecipe, augment, pseudo_fakes, resample,
                          synthetic_trace)


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
