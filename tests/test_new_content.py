"""The committed extra training domains (data/extra) and new-content probe (data/new_content), built by
data/build_new_content.py: format, labels, counts against their cards, and where their content comes from."""
from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "data"))
import build_new_content as bnc  # noqa: E402

SETS = {"extra": REPO / "data" / "extra", "probe": REPO / "data" / "new_content"}
SPLIT = {"extra": "train", "probe": "probe"}
RESERVED = ("lomiri-wallpapers", "plasma-workspace-wallpapers", "palapeli-data")


def rows_of(which: str) -> list[dict]:
    with open(SETS[which] / SPLIT[which] / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def summary_of(which: str) -> dict:
    return json.loads((SETS[which] / "card" / "counts.json").read_text())


def package_of(origin: str) -> str:
    """The package a real image (or the real image a regen fake re-synthesises) comes from; "" for a sample."""
    g = bnc.bs.group_of_origin(origin)
    return g.split(":", 1)[0] if ":" in g else ""


@pytest.mark.parametrize("which", SETS)
def test_manifest_matches_folders_and_format(which):
    root = SETS[which] / SPLIT[which]
    with open(root / "manifest.csv", newline="") as f:
        assert next(csv.reader(f)) == ["file", "label", "source", "origin", "group"]
    rows = rows_of(which)
    on_disk = {p.relative_to(root).as_posix() for p in root.glob("*/*.jpg")}
    assert {r["file"] for r in rows} == on_disk
    numbers = sorted(int(Path(r["file"]).stem) for r in rows)
    assert numbers == list(range(len(rows)))            # one numbering across both classes
    for r in rows:
        assert r["label"] == {"REAL": "0", "FAKE": "1"}[r["file"].split("/")[0]], r
        with Image.open(root / r["file"]) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32)), r["file"]
            assert "exif" not in im.info and "icc_profile" not in im.info
    # A domain is one class, and a real or regenerated image names its source group.
    for dom in {r["source"] for r in rows}:
        sub = [r for r in rows if r["source"] == dom]
        assert len({r["label"] for r in sub}) == 1, dom
        if sub[0]["label"] == "0" or dom.startswith("regen-"):
            assert all(r["group"] and r["group"] == bnc.group_of(r["origin"]) for r in sub), dom
        else:
            assert not any(r["group"] for r in sub), dom


@pytest.mark.parametrize("which", SETS)
def test_counts_are_those_of_the_card(which):
    rows, summary = rows_of(which), summary_of(which)
    counts = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    assert counts == {d: c["images"] for d, c in summary["domains"].items()}
    readme = (SETS[which] / "README.md").read_text()
    for d, c in summary["domains"].items():
        assert f"| `{d}` | {c['class']} |" in readme and f"| {c['images']:,} |" in readme, d
        assert (SETS[which] / "card" / f"{d}.png").is_file(), d
    want = {d: v["n"] for d, v in bnc.DOMAINS.items() if v["set"] == which}
    assert {d: counts[d] for d in want} == want


def test_no_image_is_shared_with_the_sample_or_between_sets():
    def digests(root):
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*/*/*.jpg")}
    sample = digests(REPO / "data" / "sample")
    extra, probe = digests(SETS["extra"]), digests(SETS["probe"])
    assert sample and extra and probe
    assert not (sample & extra) and not (sample & probe) and not (extra & probe)


def test_probe_packages_are_disjoint_from_extra_and_the_sample():
    used = {w: {package_of(r["origin"]) for r in rows_of(w)} - {""} for w in SETS}
    assert used["extra"] == set(summary_of("extra")["packages"])
    assert used["probe"] == set(summary_of("probe")["packages"])
    assert not used["extra"] & used["probe"]
    sample_pkgs = set(bnc.bs.DEBIAN) | set(bnc.bs.DEBIAN_V3) | set(bnc.bs.WHEELS) | set(bnc.bs.INSTALLED)
    for w in SETS:
        assert not used[w] & sample_pkgs, w
        assert not any(p.startswith(RESERVED) for p in used[w]), w
    # Regenerated reals re-synthesise their own set's images, never the sample's photos.
    for w in SETS:
        regen = [r for r in rows_of(w) if r["source"].startswith("regen-")]
        assert regen and all(package_of(r["origin"]) in used[w] for r in regen)


# ------------------------------------------------------------------ the builder's parts, on fixtures
def test_group_of_joins_variants_and_leaves_generated_images_out():
    bg = "usr/share/scratch/Media/Backgrounds/Outdoors"
    assert bnc.group_of(f"scratch:{bg}/city-with-water2.jpg box=(1, 2, 3, 4) @32") == f"scratch:{bg}/city-with-water"
    assert bnc.group_of(f"regen seed=1 index=0 of scratch:{bg}/city-with-water.jpg box=(0, 0, 9, 9) @64") \
        == f"scratch:{bg}/city-with-water"
    assert bnc.group_of("gnome-backgrounds:usr/share/backgrounds/gnome/wood-l.webp box=(0, 0, 32, 32) @32") \
        == "gnome-backgrounds:usr/share/backgrounds/gnome/wood"
    assert bnc.group_of("debian-edu-artwork-buster:usr/share/x/grub-4x3.png box=(0, 0, 32, 32) @32") \
        == "debian-edu-artwork-buster"
    assert bnc.group_of("probe_dcgan seed=5 index=3") == ""


def test_icon_placement_on_a_plain_background(tmp_path):
    # A 40x20 opaque red bar with a transparent margin: trimmed, its longer side scaled to `side`.
    im = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (10, 10, 50, 30))
    arr, how = bnc.icon_image(im, np.random.default_rng(0), 32, trim=True)
    side = int(how.split()[0].split("=")[1])
    grey = int(how.split("bg=")[1])
    assert arr.shape == (32, 32, 3) and 19 <= side <= 32 and grey in bnc.BACKGROUNDS
    red = (arr[..., 0] > 200) & (arr[..., 1] < 60)
    assert abs(int(red.sum()) - side * (side // 2)) <= 2 * side      # a side x side/2 bar
    assert (arr[~red & (np.abs(arr.astype(int) - grey).max(-1) > 40)]).size == 0   # the rest is the grey


def test_grey_check_and_source_choice():
    grey = np.full((4, 4, 3), 90, np.uint8)
    assert bnc.is_grey(grey)
    grey[0, 0] = (90, 95, 90)
    assert not bnc.is_grey(grey)
    rng = np.random.default_rng(1)
    picked = bnc.pick_sources(list(range(10)), 4, rng)
    assert len(picked) == 4 and picked == sorted(set(picked))
    assert bnc.pick_sources([1, 2], 4, rng) == [1, 2]
