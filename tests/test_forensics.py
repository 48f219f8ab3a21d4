"""Frequency forensics, the shortcut check and the re-encoding control (core.audits.forensics), on fixtures in tmp_path.

    python -m pytest -q tests/test_forensics.py
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image
from core.audits import forensics
from core.data.datasets import open_dataset


def _save(img: Image.Image, path, fmt="JPEG", **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)


def _bytes(img, fmt="JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# ----------------------------------------------------------------------------- spectra

@pytest.mark.parametrize("side,period,axis", [(32, 4, "x"), (32, 8, "y"), (64, 8, "x")])
def test_planted_periodic_pattern_peaks_at_its_frequency_bin(side, period, axis):
    """A cosine of period P px across a side-S image has S/P cycles: its peak sits S/P bins from DC."""
    t = np.arange(side)
    wave = 128 + 60 * np.cos(2 * np.pi * t / period)
    plane = np.tile(wave, (side, 1)) if axis == "x" else np.tile(wave[:, None], (1, side))
    arr = np.repeat(plane[:, :, None], 3, axis=2).astype(np.uint8)          # (S, S, 3)
    spec = forensics.residual_spectrum(arr)
    assert spec.shape == (side, side)
    c, k = side // 2, side // period
    peak = np.unravel_index(np.argmax(spec), spec.shape)
    expected = {(c, c + k), (c, c - k)} if axis == "x" else {(c + k, c), (c - k, c)}
    assert tuple(int(v) for v in peak) in expected
    radial = forensics.radial_profile(spec)
    assert len(radial) == side // 2 + 1
    # The 1-D curve averages a ring of ~2 pi k cells, two of which hold the peak: a local maximum at k.
    assert radial[k] > radial[k - 1] and radial[k] > radial[k + 1]
    assert radial[k] == max(radial[2:])


def test_radial_profile_hand_checked():
    spec = np.zeros((4, 4))
    spec[2, 2] = 8.0                      # DC (radius 0)
    spec[2, 3] = spec[1, 2] = 4.0         # two of the radius-1 cells
    spec[0, 0] = 6.0                      # a corner: distance sqrt(8) = 2.83, beyond the last radius (2)
    r = forensics.radial_profile(spec)
    # Radius 1 (rounded distance) holds the 4 side neighbours and the 4 diagonals (sqrt 2 = 1.41 -> 1):
    # (4 + 4) / 8 = 1.0. Radius 2: 4 cells at distance 2 and 8 at sqrt 5 = 2.24, all 0.
    assert r.tolist() == [8.0, 1.0, 0.0]


def test_dataset_spectra_per_class_and_source(tmp_path):
    """Class means are means of the per-image spectra; a source with a planted period shows its peak."""
    rng = np.random.default_rng(0)
    t = np.arange(32)
    for i in range(6):
        _save(smooth_image(rng), tmp_path / "REAL" / f"{i}.png", "PNG")
        base = np.asarray(smooth_image(rng), dtype=np.float64)
        stripes = base + 40 * np.cos(2 * np.pi * t / 4)[None, :, None]
        _save(Image.fromarray(np.clip(stripes, 0, 255).astype(np.uint8)), tmp_path / "FAKE" / f"{i}.png", "PNG")
    (tmp_path / "manifest.csv").write_text("file,label,source\n" + "".join(
        f"REAL/{i}.png,0,photos\nFAKE/{i}.png,1,striped-gan\n" for i in range(6)))
    ds = open_dataset(tmp_path)
    sp = forensics.dataset_spectra(ds, crop=32)
    assert sp["count"] == {"REAL": 6, "FAKE": 6} and sp["source_count"] == {"photos": 6, "striped-gan": 6}
    np.testing.assert_allclose(sp["mean"]["FAKE"], sp["source_mean"]["striped-gan"])
    by_hand = np.mean([forensics.residual_spectrum(np.asarray(ds.load(i).image)) for i in range(len(ds))
                       if ds.items[i][1] == 0], axis=0)
    np.testing.assert_allclose(sp["mean"]["REAL"], by_hand)
    assert int(np.argmax(forensics.radial_profile(sp["diff"]))) == 8      # 32 px / period 4
    npz = tmp_path / "s.npz"
    npz.write_bytes(forensics.spectra_npz_bytes(sp))
    back = forensics.load_spectra_npz(npz)
    np.testing.assert_allclose(back["diff"], sp["diff"])
    assert back["count"] == sp["count"] and set(back["radial"]) == set(sp["radial"])


def _spectrum_one_at_a_time(arr, sigma=forensics.RESIDUAL_SIGMA):
    # The per-image definition the vectorised pass replaced (blur over H and W only, FFT, mean of channels).
    from scipy.ndimage import gaussian_filter
    a = np.asarray(arr, dtype=np.float64)
    f = np.fft.fft2(a - gaussian_filter(a, sigma=(sigma, sigma, 0), mode="wrap"), axes=(0, 1))
    return np.fft.fftshift(np.log1p(np.abs(f)).mean(axis=2))


def test_vectorised_spectra_equal_one_image_at_a_time(tmp_path, monkeypatch):
    """residual_spectra of a batch = each image's spectrum on its own (no blur across the batch); dataset_spectra
    in batches that straddle classes and sources = the per-image means, counts in first-seen order."""
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
    imgs[2] = 0                                                   # a flat image between two noisy ones
    batch = forensics.residual_spectra(imgs)
    for k in range(5):
        np.testing.assert_allclose(batch[k], _spectrum_one_at_a_time(imgs[k]), rtol=0, atol=1e-12)
    assert np.allclose(batch[2], 0.0)                             # its neighbours' noise did not leak in
    for i in range(7):
        _save(smooth_image(rng), tmp_path / "REAL" / f"{i}.png", "PNG")
        _save(Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)), tmp_path / "FAKE" / f"{i}.png", "PNG")
    (tmp_path / "manifest.csv").write_text("file,label,source\n" + "".join(
        f"REAL/{i}.png,0,{'a' if i % 2 else 'b'}\nFAKE/{i}.png,1,{'c' if i < 3 else ''}\n" for i in range(7)))
    ds = open_dataset(tmp_path)
    monkeypatch.setattr(forensics, "SPECTRA_PIXELS", 3 * 32 * 32)        # batches of 3 images
    sp = forensics.dataset_spectra(ds, crop=32)
    want, counts = {}, {}
    for i in range(len(ds)):
        _, label, source = ds.items[i][:3]
        s = _spectrum_one_at_a_time(np.asarray(ds.load(i).image))
        for name in (forensics.CLASS_NAMES[int(label)], f"source:{source}" if source else None):
            if name:
                want.setdefault(name, []).append(s)
                counts[name] = counts.get(name, 0) + 1
    assert sp["count"] == {k: v for k, v in counts.items() if not k.startswith("source:")}
    assert list(sp["count"]) == [k for k in counts if not k.startswith("source:")]
    assert sp["source_count"] == {k[7:]: v for k, v in counts.items() if k.startswith("source:")}
    assert list(sp["source_count"]) == [k[7:] for k in counts if k.startswith("source:")]
    for name, specs in want.items():
        got = sp["source_mean"][name[7:]] if name.startswith("source:") else sp["mean"][name]
        np.testing.assert_allclose(got, np.mean(specs, axis=0), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- file properties

@pytest.mark.parametrize("quality", [10, 35, 50, 51, 75, 90, 95, 100])
def test_jpeg_quality_estimated_exactly_for_libjpeg_files(quality):
    img = smooth_image(np.random.default_rng(quality), 48)
    props = forensics.file_properties(_bytes(img, quality=quality))
    assert props["format"] == "JPEG"
    assert (props["jpeg_quality"], props["jpeg_quality_exact"]) == (quality, True)
    assert props["width"] == props["height"] == 48


def test_jpeg_quality_of_foreign_tables_is_nearest_not_exact():
    luma, chroma = forensics.ijg_tables(80)
    tables = {0: list(luma + 1), 1: list(chroma)}     # off by one everywhere: not libjpeg's own
    assert forensics.estimate_jpeg_quality(tables) == (80, False) or \
        forensics.estimate_jpeg_quality(tables)[1] is False


def test_file_properties_subsampling_exif_png_and_unreadable():
    img = smooth_image(np.random.default_rng(1), 40)
    assert forensics.file_properties(_bytes(img, quality=90, subsampling=0))["subsampling"] == "4:4:4"
    assert forensics.file_properties(_bytes(img, quality=90, subsampling=1))["subsampling"] == "4:2:2"
    assert forensics.file_properties(_bytes(img, quality=90, subsampling=2))["subsampling"] == "4:2:0"
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    with_exif = forensics.file_properties(_bytes(img, quality=90, exif=exif.tobytes()))
    assert with_exif["has_exif"] is True
    assert forensics.file_properties(_bytes(img, quality=90))["has_exif"] is False
    png = _bytes(img, "PNG")
    p = forensics.file_properties(png)
    assert (p["format"], p["jpeg_quality"], p["subsampling"]) == ("PNG", None, None)
    assert p["bytes_per_pixel"] == pytest.approx(len(png) / 1600)
    bad = forensics.file_properties(b"hello, this is text")
    assert bad["error"] == "a text file, not an image"


def _jpeg_corpus() -> dict[str, bytes]:
    """JPEGs of every kind file_properties meets: qualities, subsamplings, grey, progressive, EXIF, XMP, custom and
    16-bit quantisation tables, odd sizes, an ICC profile, a CMYK file, a truncated header, an MPO-style segment."""
    rng = np.random.default_rng(7)
    img = smooth_image(rng, 37)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = {f"q{q}-s{s}": _bytes(img, quality=q, subsampling=s) for q in (5, 50, 90, 100) for s in (0, 1, 2)}
    out["grey"] = _bytes(img.convert("L"), quality=80)
    out["progressive"] = _bytes(img, quality=70, progressive=True)
    out["optimized"] = _bytes(img, quality=70, optimize=True)
    out["exif"] = _bytes(img, quality=90, exif=exif.tobytes())
    out["xmp"] = _bytes(img, quality=90, xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><tiff:Orientation>6'
                                            b'</tiff:Orientation></x:xmpmeta>')
    out["custom tables"] = _bytes(img, qtables=[list(range(1, 65)), [3] * 64])
    out["16-bit tables"] = _bytes(img, qtables=[[300] * 64, [2] * 64])
    out["wide"] = _bytes(smooth_image(rng, 64).resize((301, 17)), quality=85)
    out["icc"] = _bytes(img, quality=85, icc_profile=b"\0" * 300)
    out["cmyk"] = _bytes(img.convert("CMYK"), quality=85)
    whole = out["q90-s2"]
    out["truncated header"] = whole[:40]
    out["truncated scan"] = whole[:-20]
    app2 = b"\xff\xe2" + (4 + 2 + 8).to_bytes(2, "big") + b"MPF\x00" + b"\0" * 8
    out["mpf segment"] = whole[:2] + app2 + whole[2:]
    return out


def test_jpeg_headers_read_without_pillow_equal_pillows_reading():
    """file_properties reads a plain JPEG's header itself (core.data.images.read_jpeg_header) and gives Pillow's answers
    to the last field on every kind of file, sending what it does not read (XMP, CMYK, MPF, truncated) to Pillow."""
    from core.data.images import read_jpeg_header

    def pillow(data):
        return forensics._file_properties_pillow(data, {**dict.fromkeys(forensics.PROPERTY_COLUMNS[3:]),
                                                         "bytes": len(data)})
    read = []
    for name, data in _jpeg_corpus().items():
        assert forensics.file_properties(data) == pillow(data), name
        if read_jpeg_header(data) is not None:
            read.append(name)
    assert sorted(read) == sorted(n for n in _jpeg_corpus() if n not in ("xmp", "cmyk", "truncated header", "mpf segment")), read
    h = read_jpeg_header(_jpeg_corpus()["16-bit tables"])
    assert (h.quantization[0][:3], h.quantization[1][:3]) == ([300, 300, 300], [2, 2, 2])
    h = read_jpeg_header(_jpeg_corpus()["wide"])
    assert (h.width, h.height, h.components, h.sampling) == (301, 17, 3, ((2, 2), (1, 1), (1, 1)))
    # natural (row-major) order, as Pillow gives them: the table written is read back in the order written
    assert read_jpeg_header(_jpeg_corpus()["custom tables"]).quantization[0] == list(range(1, 65))


def test_plain_jpeg_headers_are_not_parsed_by_pillow(monkeypatch):
    """The shortcut check's and the slices' per-file header read never opens a plain JPEG with Pillow (whose
    Python marker parsing cost about twice as much per file)."""
    import PIL.Image
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("Pillow opened a plain JPEG"))
    p = forensics.file_properties(_jpeg_corpus()["q90-s1"])
    assert (p["format"], p["jpeg_quality"], p["jpeg_quality_exact"], p["subsampling"], p["width"]) == \
        ("JPEG", 90, True, "4:2:2", 37)


# ----------------------------------------------------------------------------- shortcut check

def _two_pipelines(root, n=30, seed=0):
    """REAL saved as PNG, FAKE as JPEG q75; the same kind of content (smooth images) in both."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        _save(smooth_image(rng), root / "REAL" / f"{i:03d}.png", "PNG")
        _save(smooth_image(rng), root / "FAKE" / f"{i:03d}.jpg", quality=75)
    return root


def test_shortcut_check_flags_png_real_vs_jpeg_fake(tmp_path):
    ds = open_dataset(_two_pipelines(tmp_path))
    props = forensics.scan_files(ds)
    s = forensics.shortcut_check(props)
    assert s["metadata_only_accuracy"] == pytest.approx(1.0)
    assert s["flagged"] is True
    assert s["per_feature_accuracy"]["format"] == pytest.approx(1.0)
    assert s["per_feature_accuracy"]["pixel_size"] == pytest.approx(0.5)     # same size: says nothing
    assert s["per_class"]["REAL"]["format"] == {"PNG": 30}
    assert s["per_class"]["FAKE"]["format"] == {"JPEG": 30}
    assert s["per_class"]["FAKE"]["jpeg_quality"] == {"75": 30}
    assert s["per_class"]["REAL"]["jpeg_quality"] == {"n/a": 30}
    assert s["per_class"]["FAKE"]["subsampling"] == {"4:2:0": 30}


def test_shortcut_check_does_not_flag_identical_encoding(tmp_path):
    """Both classes hold the same images, encoded identically: the files cannot tell the classes apart."""
    rng = np.random.default_rng(3)
    for i in range(30):
        data = _bytes(smooth_image(rng), quality=90)
        for cls in ("REAL", "FAKE"):
            (tmp_path / cls).mkdir(exist_ok=True)
            (tmp_path / cls / f"{i:03d}.jpg").write_bytes(data)
    s = forensics.shortcut_check(forensics.scan_files(open_dataset(tmp_path)))
    assert s["metadata_only_accuracy"] <= forensics.FLAG_THRESHOLD
    assert s["flagged"] is False


def test_reencoding_removes_the_pipeline_difference(tmp_path):
    ds = open_dataset(_two_pipelines(tmp_path / "data", n=12))
    rds, skipped = forensics.reencode_dataset(ds, tmp_path / "re", size=16, quality=80)
    assert skipped == [] and len(rds) == 24
    props = forensics.scan_files(rds)
    assert set(props["format"]) == {"JPEG"} and set(props["jpeg_quality"]) == {80}
    assert set(props["subsampling"]) == {"4:2:0"} and set(zip(props["width"], props["height"])) == {(16, 16)}
    assert sorted(rds.labels) == sorted(ds.labels)
    s = forensics.shortcut_check(props)
    assert s["per_class"]["REAL"]["format"] == s["per_class"]["FAKE"]["format"] == {"JPEG": 12}
    assert s["per_feature_accuracy"]["format"] <= forensics.FLAG_THRESHOLD      # was 1.0 before re-encoding


def test_reencoding_control_numbers_are_core_evaluate_numbers(trained_ckpt, tiny_cifake, tmp_path):
    from core.model.checkpoint import load_checkpoint
    from core.inference.evaluate import evaluate
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    rc = forensics.reencoding_control(lm, ds, quality=50)
    clean_df, clean = evaluate(lm, ds)
    re_df, _, _ = forensics.reencoded_predictions(lm, ds, quality=50)
    assert sorted(re_df["path"]) == sorted(clean_df["path"])         # copies keep their originals' ids
    assert rc["clean"]["accuracy"] == clean["accuracy"] and rc["clean"]["roc_auc"] == clean["roc_auc"]
    rds, _ = forensics.reencode_dataset(ds, tmp_path / "re", size=lm.preprocess.size, quality=50)
    _, re = evaluate(lm, rds)
    assert rc["reencoded"]["accuracy"] == re["accuracy"]
    assert rc["delta_accuracy"] == pytest.approx(re["accuracy"] - clean["accuracy"])
    assert rc["delta_roc_auc"] == pytest.approx(re["roc_auc"] - clean["roc_auc"])
    cached = forensics.cached_reencoding(lm, ds, tmp_path / "runs", quality=50)
    assert cached["delta_accuracy"] == pytest.approx(rc["delta_accuracy"])
    assert (tmp_path / "runs").is_dir() and forensics.reencoding_dir(lm, ds, tmp_path / "runs", 50).is_dir()


def test_forensics_cli_writes_every_output(tmp_path, capsys):
    data = _two_pipelines(tmp_path / "data", n=10)
    out = tmp_path / "out"
    assert forensics.main(["--data", str(data), "--out", str(out), "--no-reencode"]) == 0
    for name in ("spectra.npz", "spectrum_REAL.png", "spectrum_FAKE.png", "spectrum_diff.png", "spectrum_1d.png",
                 "spectrum_1d.csv", "file_properties.csv", "shortcut_distributions.csv", "shortcuts.json"):
        assert (out / name).is_file(), name
    s = json.loads((out / "shortcuts.json").read_text())
    assert isinstance(s["metadata_only_accuracy"], float) and s["flagged"] is True
    assert set(s["per_class"]) == {"REAL", "FAKE"}
    assert Image.open(out / "spectrum_diff.png").format == "PNG"
    assert "file-level features alone separate the classes" in capsys.readouterr().err
    assert forensics.main(["--data", str(tmp_path / "nope"), "--out", str(out), "--no-reencode"]) == 2


def test_forensics_and_slices_on_hemg_parquet(tmp_path):
    """A user's Hugging Face parquet: file properties come from the stored bytes, every row is measured."""
    from conftest import make_hemg_parquet
    from core.audits import slices
    ds = open_dataset(make_hemg_parquet(tmp_path / "pq", n_per_class=6))
    res = forensics.analyse(ds)
    assert res["shortcuts"]["per_class"]["FAKE"]["format"] == {"JPEG": 6}
    assert res["shortcuts"]["per_class"]["REAL"]["jpeg_quality"] == {"90": 6}
    assert res["spectra"]["count"] == {"REAL": 6, "FAKE": 6}
    props = slices.image_properties(ds)
    assert len(props) == 12 and (props["error"] == "").all() and (props["jpeg_quality"] == 90).all()


def test_jpeg_quality_search_equals_the_plain_loop():
    # The memoised, vectorised search (core.audits.forensics._nearest_ijg_quality) against the definition written as a
    # loop: nearest IJG quality by summed absolute difference, the lowest quality on ties; luma-only tables too.
    def loop(luma, chroma):
        best, best_d = None, None
        for q in range(1, 101):
            lt, ct = forensics.ijg_tables(q)
            d = int(np.abs(np.asarray(luma) - lt).sum()) + (int(np.abs(np.asarray(chroma) - ct).sum())
                                                            if chroma is not None else 0)
            if best_d is None or d < best_d:
                best, best_d = q, d
        return best, best_d == 0
    rng = np.random.default_rng(0)
    cases = [forensics.ijg_tables(q) for q in (1, 7, 50, 99, 100)]
    cases += [(rng.integers(1, 256, 64), rng.integers(1, 256, 64)) for _ in range(20)]
    cases += [(forensics.ijg_tables(60)[0] + rng.integers(-3, 4, 64), forensics.ijg_tables(60)[1]) for _ in range(10)]
    for luma, chroma in cases:
        tables = {0: [int(v) for v in luma], 1: [int(v) for v in chroma]}
        assert forensics.estimate_jpeg_quality(tables) == loop(luma, chroma)
        assert forensics.estimate_jpeg_quality({0: tables[0]}) == loop(luma, None)
    assert forensics.estimate_jpeg_quality({0: [1] * 63}) == (None, False)
    assert forensics.estimate_jpeg_quality({}) == (None, False)
