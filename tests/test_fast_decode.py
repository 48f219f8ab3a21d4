"""The fast JPEG path of core.data.images.load_image gives Pillow's pixels exactly, and is really taken."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import images
from core.data.images import _jpeg_header, _load_plain_jpeg, load_image
from core.data.preprocess import PreprocessConfig, preprocess_image

ROOT = Path(__file__).resolve().parent.parent


def _photo(w=48, h=40, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _with_pillow(data: bytes, monkeypatch) -> images.LoadedImage:
    with monkeypatch.context() as m:
        m.setattr(images, "_FAST_JPEG", False)           # as if torchvision's codecs were gone
        out = load_image(data)
    assert isinstance(out.decoded, Image.Image)
    return out


def _orientation(o: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = o
    return _jpeg(_photo(30, 20, o), exif=exif, quality=92)


CASES = {
    "baseline q90": _jpeg(_photo(), quality=90),
    "q10": _jpeg(_photo(), quality=10),
    "progressive": _jpeg(_photo(), progressive=True),
    "4:4:4": _jpeg(_photo(), subsampling=0),
    "4:2:2": _jpeg(_photo(), subsampling=1),
    "odd size 33x17": _jpeg(_photo(33, 17)),
    "grayscale": _jpeg(_photo().convert("L")),
    "tiny 5x3": _jpeg(_photo(5, 3)),
    "optimized": _jpeg(_photo(), optimize=True),
    **{f"exif orientation {o}": _orientation(o) for o in range(1, 9)},
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_equals_pillow(name, monkeypatch):
    data = CASES[name]
    fast = load_image(data)
    assert isinstance(fast.decoded, torch.Tensor), "the fast path was not taken"
    slow = _with_pillow(data, monkeypatch)
    assert torch.equal(fast.pixels, slow.pixels)
    assert fast.size == slow.image.size == fast.original_size == slow.original_size
    assert (fast.original_mode, fast.format, fast.notes) == (slow.original_mode, slow.format, slow.notes)
    assert np.array_equal(np.asarray(fast.image), np.asarray(slow.image))


def test_orientation_really_turns_the_image():
    # Orientation 6 (turn 90 degrees clockwise): a 30x20 file is shown 20x30, its left column on top.
    img = Image.new("RGB", (30, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 6, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = load_image(_jpeg(img, exif=exif, quality=95))
    assert isinstance(out.decoded, torch.Tensor)
    assert out.size == (20, 30)
    assert out.pixels[:, :3, :].float().mean() > 200 and out.pixels[:, -3:, :].float().mean() < 50


def test_header_parser_and_what_goes_to_pillow():
    assert _jpeg_header(_jpeg(_photo(33, 17))) == (33, 17, 3)
    assert _jpeg_header(_jpeg(_photo().convert("L"))) == (48, 40, 1)
    assert _jpeg_header(_jpeg(Image.new("CMYK", (8, 8)))) == (8, 8, 4)
    assert _jpeg_header(b"\x89PNG\r\n") is None
    full = _jpeg(_photo())
    assert _load_plain_jpeg(full[: len(full) // 2], 10**9) is None                  # truncated
    assert _load_plain_jpeg(_jpeg(Image.new("CMYK", (8, 8))), 10**9) is None         # 4 components
    assert _load_plain_jpeg(full, 48 * 40 - 1) is None                               # over the pixel limit
    # A header declaring 60000x60000 is refused before a single pixel is decoded.
    big = bytearray(full)
    i = big.index(b"\xff\xc0")
    big[i + 5:i + 9] = (60000).to_bytes(2, "big") * 2
    assert _jpeg_header(bytes(big)) == (60000, 60000, 3)
    assert _load_plain_jpeg(bytes(big), 40_000_000) is None


@pytest.mark.parametrize("size,src,fit", [(32, (32, 32), "squash"), (32, (48, 40), "squash"), (32, (48, 40), "center"),
                                          (64, (32, 32), "squash")])
def test_preprocess_tensor_input_equals_pil_input(size, src, fit):
    img = _photo(*src)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
    cfg = PreprocessConfig(size=size, fit=fit)
    out = preprocess_image(x, cfg)
    assert torch.equal(out, preprocess_image(img, cfg))
    assert out.data_ptr() != x.data_ptr()                                              # a new tensor


@pytest.mark.skipif(not (ROOT / "data" / "sample" / "test").is_dir(), reason="no shipped sample")
def test_every_sample_test_image_decodes_identically(monkeypatch):
    files = sorted((ROOT / "data" / "sample" / "test").rglob("*.jpg"))
    assert len(files) >= 1000
    for f in files:
        data = f.read_bytes()
        fast = load_image(data)
        assert isinstance(fast.decoded, torch.Tensor), f
        assert torch.equal(fast.pixels, _with_pillow(data, monkeypatch).pixels), f
