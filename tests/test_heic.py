"""Phone photos: HEIC/HEIF (pillow-heif) and AVIF (Pillow) decode, keep their orientation, and predict."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.images import ImageError, load_image

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is in requirements.txt")
ROOT = Path(__file__).resolve().parent.parent


def _striped(w=40, h=20) -> Image.Image:
    img = Image.new("RGB", (w, h), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, w // 4, h))                  # white stripe on the left
    return img


def heic_bytes(img: Image.Image, orientation: int | None = None) -> bytes:
    kw = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    img.save(buf, format="HEIF", quality=95, **kw)
    data = buf.getvalue()
    assert data[4:12] == b"ftypheic"
    return data


def test_heic_decodes_with_its_pixels():
    out = load_image(heic_bytes(_striped()))
    assert out.format == "HEIF" and out.image.size == (40, 20) and out.image.mode == "RGB"
    arr = np.asarray(out.image).astype(int)
    assert arr[10, 3].min() > 220 and arr[10, 35].max() < 35        # lossy, but the stripe is where it was


def test_heic_orientation_applied_once():
    # Orientation 6 = turn 90 degrees clockwise for display: 40x20 shows as 20x40, the stripe on top.
    out = load_image(heic_bytes(_striped(), orientation=6))
    assert out.image.size == (20, 40)
    arr = np.asarray(out.image).astype(int)
    assert arr[3, 10].min() > 220 and arr[35, 10].max() < 35


def test_damaged_heic_refused_with_reason():
    with pytest.raises(ImageError, match="damaged HEIC/HEIF"):
        load_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")


def test_avif_decodes():
    buf = io.BytesIO()
    _striped().save(buf, format="AVIF", quality=95)
    out = load_image(buf.getvalue())
    assert out.format == "AVIF" and out.image.size == (40, 20)
    assert np.asarray(out.image)[10, 3].min() > 200


def test_heic_predicts_from_library_and_cli(tmp_path, trained_ckpt):
    from core.model.checkpoint import load_checkpoint
    from core.inference.predict import predict_many
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (64, 48, 3)).astype(np.uint8))
    (tmp_path / "phone").mkdir()
    (tmp_path / "phone" / "IMG_0001.HEIC").write_bytes(heic_bytes(photo))
    lm = load_checkpoint(trained_ckpt)
    pred = predict_many(lm, [("IMG_0001.HEIC", (tmp_path / "phone" / "IMG_0001.HEIC").read_bytes())])[0]
    assert pred.error is None and 0 <= pred.prob_fake <= 1 and pred.original_size == (48, 64)
    r = subprocess.run([sys.executable, "-m", "core", "predict", "--weights", str(trained_ckpt), str(tmp_path / "phone")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip())
    assert line["file"].endswith("IMG_0001.HEIC") and abs(line["prob_fake"] - pred.prob_fake) < 1e-6
