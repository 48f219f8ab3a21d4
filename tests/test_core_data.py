"""Image decoding, the preprocessing contract, and every dataset format on fixtures in its on-disk format."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import jpeg_bytes, make_hemg_parquet, noise_image
from core.data.datasets import DatasetError, collate_records, detect_format, open_dataset
from core.data.images import ImageError, load_image
from core.data.labels import FAKE, REAL, LabelMappingError, parse_class_map
from core.data.preprocess import SEED_V21_PREPROCESS, PreprocessConfig, preprocess_image


# ----------------------------------------------------------------------------- preprocessing

@pytest.mark.parametrize("size", [(32, 32), (640, 480), (7, 300), (1, 1)])
def test_preprocess_shape_dtype_range(size):
    img = Image.new("RGB", size, (10, 200, 30))
    x = preprocess_image(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    # A flat colour stays that colour after antialiased resizing.
    assert x[:, 5, 5].tolist() == [10, 200, 30]


def test_preprocess_seed_pipeline_is_32_then_128():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (200, 200, 3)).astype(np.uint8))
    x = preprocess_image(img, SEED_V21_PREPROCESS)
    assert x.shape == (3, 128, 128)
    # Exactly the seed's two steps: antialiased resize to 32, then bicubic upscale to 128.
    two_step = img.resize((32, 32), Image.Resampling.BICUBIC, reducing_gap=3.0).resize((128, 128), Image.Resampling.BICUBIC)
    assert np.array_equal(x.permute(1, 2, 0).numpy(), np.asarray(two_step))
    # ... which is not what a direct resize to 128 gives (so the comparison can tell the two apart).
    direct = np.asarray(img.resize((128, 128), Image.Resampling.BICUBIC), np.float32)
    assert np.abs(x.permute(1, 2, 0).numpy().astype(np.float32) - direct).mean() > 20


def test_preprocess_native_32_input_is_identity():
    img = noise_image(np.random.default_rng(1))
    x = preprocess_image(img)
    assert np.array_equal(x.permute(1, 2, 0).numpy(), np.asarray(img))


def test_preprocess_does_not_modify_input():
    img = noise_image(np.random.default_rng(2), 64)
    before = img.tobytes()
    preprocess_image(img)
    preprocess_image(img, PreprocessConfig(size=32, fit="center"))
    assert img.tobytes() == before and img.size == (64, 64)


def test_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError):
        preprocess_image(Image.new("L", (32, 32)))


# ----------------------------------------------------------------------------- decoding: modes and EXIF

def _png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "CMYK", "1", "I;16", "I", "F"])
def test_load_image_any_mode_gives_rgb(mode):
    if mode == "CMYK":
        img = Image.new("CMYK", (20, 10), (0, 255, 255, 0))      # pure red in CMYK
        buf = io.BytesIO(); img.save(buf, format="JPEG"); data = buf.getvalue()
    elif mode in ("I;16", "I", "F"):
        arr = (np.arange(200).reshape(10, 20) * 300).astype(np.uint16)
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
        if mode != "I;16":
            img = img.convert(mode)
        buf = io.BytesIO(); img.save(buf, format="TIFF"); data = buf.getvalue()
    else:
        img = Image.new(mode, (20, 10))
        data = _png(img)
    out = load_image(data)
    assert out.image.mode == "RGB" and out.image.size == (20, 10)
    if mode == "CMYK":
        r, g, b = out.image.getpixel((5, 5))
        assert r > 200 and g < 60 and b < 60
    if mode == "I;16":
        # 16-bit data is scaled, not clipped: the brightest pixel (59700) maps near 232, not 255.
        arr = np.asarray(out.image)[..., 0]
        assert arr.max() == round(199 * 300 * 255 / 65535) and arr.min() == 0


def test_load_image_flattens_transparency_onto_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))       # fully transparent red
    out = load_image(_png(img))
    assert out.image.getpixel((0, 0)) == (255, 255, 255)
    assert any("transparency" in n for n in out.notes)


def test_load_image_honours_exif_orientation():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))          # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6                                     # rotate 90 degrees clockwise on display
    buf = io.BytesIO(); img.save(buf, format="JPEG", exif=exif, quality=95)
    out = load_image(buf.getvalue())
    assert out.image.size == (20, 40)
    # After a 90-degree clockwise turn the left stripe is at the top.
    assert np.asarray(out.image)[2, 10].mean() > 200 and np.asarray(out.image)[35, 10].mean() < 50


def test_load_image_animated_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), (80 * i, 0, 0)) for i in range(3)]
    buf = io.BytesIO(); frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = load_image(buf.getvalue())
    assert any("first frame" in n for n in out.notes)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"hello, I am text", "text file"),
    (b"%PDF-1.4 blah", "PDF"),
    (b"<!DOCTYPE html><html></html>", "HTML"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00", "HEIC"),
])
def test_load_image_refuses_non_images_with_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(data)


def test_load_image_truncated_jpeg():
    data = jpeg_bytes(noise_image(np.random.default_rng(0), 64))
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(data[: len(data) // 2])


# ----------------------------------------------------------------------------- dataset formats

def test_cifake_layout_detected_and_split_chosen(tiny_cifake):
    assert detect_format(tiny_cifake) == "cifake"
    test = open_dataset(tiny_cifake)                 # evaluation default: test
    train = open_dataset(tiny_cifake, split="train")
    assert test.counts() == {"REAL": 24, "FAKE": 24} and train.counts() == {"REAL": 64, "FAKE": 64}
    assert test.label_mapping == {"FAKE": FAKE, "REAL": REAL}
    rec = test[0]
    assert rec["image"].shape == (3, 32, 32) and rec["label"] in (0, 1) and rec["error"] is None
    with pytest.raises(DatasetError, match="no split folder 'valid'"):
        open_dataset(tiny_cifake, split="valid")


def test_single_split_folder_and_case_insensitive_names(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("real", "Fake"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.jpg").write_bytes(jpeg_bytes(noise_image(rng)))
    ds = open_dataset(tmp_path)
    assert ds.format == "folder" and ds.counts() == {"REAL": 1, "FAKE": 1}
    with pytest.raises(DatasetError, match="not REAL/FAKE names"):
        open_dataset(tmp_path, case_sensitive=True)


def test_class_per_folder_with_user_mapping(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("photos", 2), ("midjourney", 3), ("sd15", 1), ("notes", 1)):
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{i}.png").write_bytes(jpeg_bytes(noise_image(rng)))
    with pytest.raises(DatasetError, match="not REAL/FAKE names"):
        open_dataset(tmp_path)
    ds = open_dataset(tmp_path, class_map=parse_class_map("photos=REAL,midjourney=FAKE,SD15=FAKE"))
    assert ds.counts() == {"REAL": 2, "FAKE": 4}
    assert any("'notes' is not in the class mapping" in w for w in ds.warnings)


def test_empty_and_one_class_folders(tmp_path):
    with pytest.raises(DatasetError, match="no class subfolders"):
        open_dataset(tmp_path, fmt="folder")
    (tmp_path / "REAL").mkdir()
    (tmp_path / "FAKE").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        open_dataset(tmp_path)
    (tmp_path / "REAL" / "a.jpg").write_bytes(jpeg_bytes(noise_image(np.random.default_rng(0))))
    (tmp_path / "REAL" / "logo.svg").write_text("<svg></svg>")
    (tmp_path / "REAL" / "notes.txt").write_text("x")
    ds = open_dataset(tmp_path)
    assert any("no FAKE images" in w for w in ds.warnings)
    # Files that are not used are named, not only counted.
    assert any(w.startswith("2 file(s) without an image extension") and "REAL/logo.svg" in w and "REAL/notes.txt" in w
               for w in ds.warnings), ds.warnings


def test_manifest_csv(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(jpeg_bytes(noise_image(rng)))
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "source"])
        w.writerows([["imgs/0.jpg", "0", "camera"], ["imgs/1.jpg", "FAKE", "sd"], ["imgs/2.jpg", "cat", "x"],
                     ["imgs/missing.jpg", "1", "sd"]])
    ds = open_dataset(tmp_path / "list.csv")
    assert ds.format == "manifest" and ds.counts() == {"REAL": 1, "FAKE": 2}
    assert any("line 4: label 'cat'" in w for w in ds.warnings)
    batch = collate_records([ds[i] for i in range(len(ds))])
    assert batch["sources"] == ["camera", "sd"] and batch["y"].tolist() == [0, 1]
    assert batch["skipped"] == [("imgs/missing.jpg", "file not found")]


def test_hemg_parquet_labels_by_name_lazily(tmp_path):
    folder = make_hemg_parquet(tmp_path / "hemg", n_per_class=10, shards=2, row_group_size=4)
    assert detect_format(folder) == "parquet"
    ds = open_dataset(folder)
    # 0 is AiArtData (FAKE), 1 is RealArt (REAL): mapped by name, not by position.
    assert ds.label_mapping == {"0 (AiArtData)": FAKE, "1 (RealArt)": REAL}
    assert ds.counts() == {"REAL": 10, "FAKE": 10}
    # Row groups of 4 rows: items point into (shard, row group, row) and only that group is read.
    assert {ref[1] for ref, *_ in ds.items} == {0, 1, 2}
    recs = [ds[i] for i in range(len(ds))]
    assert all(r["error"] is None and r["image"].shape == (3, 32, 32) for r in recs)
    assert ds._local.rows is not None and len(ds._local.rows) <= 4     # this thread's one row group
    # FAKE rows are the noise images: much higher pixel variance than the smooth REAL ones.
    def roughness(x):
        return (x[:, :, 1:].float() - x[:, :, :-1].float()).abs().mean().item()
    var = {lab: np.mean([roughness(r["image"]) for r in recs if r["label"] == lab]) for lab in (0, 1)}
    assert var[FAKE] > var[REAL]


def test_parquet_override_and_missing_names(tmp_path):
    folder = make_hemg_parquet(tmp_path / "p", with_metadata=False)
    with pytest.raises(DatasetError, match="cannot be mapped to REAL/FAKE without guessing"):
        open_dataset(folder)
    ds = open_dataset(folder, class_map=parse_class_map("0=FAKE,1=REAL"))
    assert ds.label_mapping == {"0": FAKE, "1": REAL}
    # A user override wins over the metadata names.
    meta = make_hemg_parquet(tmp_path / "q")
    flipped = open_dataset(meta, class_map=parse_class_map("AiArtData=REAL,RealArt=FAKE"))
    assert flipped.label_mapping == {"0 (AiArtData)": REAL, "1 (RealArt)": FAKE}


def test_corrupt_files_are_skipped_and_reported(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("REAL", "FAKE"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "ok.jpg").write_bytes(jpeg_bytes(noise_image(rng)))
    good = jpeg_bytes(noise_image(rng))
    (tmp_path / "FAKE" / "trunc.jpg").write_bytes(good[:100])
    (tmp_path / "REAL" / "text.jpg").write_bytes(b"not an image")
    (tmp_path / "REAL" / "empty.png").write_bytes(b"")
    ds = open_dataset(tmp_path)
    batch = collate_records([ds[i] for i in range(len(ds))])
    assert len(batch["ids"]) == 2
    reasons = dict(batch["skipped"])
    assert set(reasons) == {"FAKE/trunc.jpg", "REAL/text.jpg", "REAL/empty.png"}
    assert "empty file" in reasons["REAL/empty.png"] and "text file" in reasons["REAL/text.jpg"]
    assert "truncated" in reasons["FAKE/trunc.jpg"] or "corrupt" in reasons["FAKE/trunc.jpg"]


def test_parse_class_map_errors():
    assert parse_class_map("a=REAL, b = fake ,c=1") == {"a": 0, "b": 1, "c": 1}
    with pytest.raises(LabelMappingError):
        parse_class_map("a=maybe")
    with pytest.raises(LabelMappingError):
        parse_class_map("nonsense")


def test_groups_from_manifest_group_or_origin(tmp_path):
    from core.data.datasets import group_of_origin
    assert group_of_origin("baboon.jpg box=(1, 2, 3, 4) @32") == "baboon.jpg"
    assert group_of_origin("regen seed=7 index=3 of opencv-doc baboon.jpg box=(1, 2, 3, 4) @64") == "baboon.jpg"
    assert group_of_origin("dcgan seed=7 index=3") == "dcgan seed=7 index=3"
    for c in ("REAL", "FAKE"):
        (tmp_path / c).mkdir()
        for k in range(2):
            Image.new("RGB", (8, 8), (k * 50, 0, 0)).save(tmp_path / c / f"{k}.png")
    (tmp_path / "manifest.csv").write_text(
        "file,label,source,origin,group\n"
        "REAL/0.png,0,p,left.jpg box=(0),books\n"
        "REAL/1.png,0,p,right.jpg box=(0),\n"
        "FAKE/0.png,1,regen,regen seed=1 index=0 of p left.jpg box=(0),\n"
        "FAKE/1.png,1,gan,gan seed=1 index=9,\n")
    ds = open_dataset(tmp_path)
    by_id = dict(zip([ds.item_id(i) for i in range(len(ds))], ds.groups()))
    # the group column wins; else the photo the origin names; else the origin itself
    assert by_id == {"REAL/0.png": "books", "REAL/1.png": "right.jpg", "FAKE/0.png": "left.jpg",
                     "FAKE/1.png": "gan seed=1 index=9"}
    sub = ds.subset([i for i in range(len(ds)) if ds.item_id(i).startswith("REAL")])
    assert sorted(sub.groups()) == ["books", "right.jpg"]
    (tmp_path / "manifest.csv").write_text("file,label,source\nREAL/0.png,0,p\n")
    assert open_dataset(tmp_path).groups() is None          # nothing names a photo
