"""Build the two image sets of new content, in the sample's format, from Debian packages the sample does not use.

``data/extra/train``: extra training domains (REAL photos, icons and renders; FAKE regenerated reals and two
generators trained here on the icons and renders) that widen what a detector trains on.

``data/new_content/probe``: the "new content" probe, content that neither ``data/sample`` nor ``data/extra``
holds (other photos, another icon family, clipart, art, and fakes of that content), for measuring how a
detector's verdict behaves on what it never saw. Its card is ``data/new_content/README.md``.

Both are written exactly like the sample (``data/build_sample.py``'s ``write_split``): 32x32 RGB JPEG,
quality 90, 4:2:0, no metadata; ``manifest.csv`` with ``file,label,source,origin,group`` (label 0 = REAL,
1 = FAKE; ``source`` = the domain; ``group`` = the source image a real image or its regenerated copy was cut
from, so grouped splits hold out whole source images); one shuffled numbering across both classes.

Each domain's package, path, selection rule and count is in ``DOMAINS``; every left-out file of a kept
folder is in ``DROPPED`` with its reason. Packages are fetched with ``apt-get download`` and unpacked with
``dpkg -x`` into ``--pkgs`` when missing there. Generators are trained from scratch here (``data/generators.py``)
unless their weights exist (``--retrain`` trains them again); the ``regen`` autoencoder is the sample's own,
``weights/generators/regen.pt``.

How to run, from the repository root::

    python data/build_new_content.py --what extra --pkgs DIR            # data/extra (trains its DCGAN and VAE if missing)
    python data/build_new_content.py --what probe --pkgs DIR            # data/new_content (+ card sheets and counts)
    python data/build_new_content.py --what all --retrain                      # both, generators trained again
    python data/build_new_content.py --what extra --out /tmp/x --gen-minutes 0.2   # smoke test
    python data/build_new_content.py --what all --card-only                    # rewrite the READMEs from card/counts.json

Generator training uses one thread (``--threads``) and the wall-time caps in ``GEN_MINUTES``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_sample as bs  # noqa: E402  (data/build_sample.py: crops, JPEG writing, contact sheets)
import generators as gen  # noqa: E402

REPO = bs.REPO
SEED = 20261204
GEN_DIR = REPO / "weights" / "generators"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
# Icons and clipart are drawn on a plain, opaque background (their transparent parts composited over it);
# one of these grey levels per image, drawn by the seeded generator, so no single colour marks a class.
BACKGROUNDS = (255, 224, 160, 96, 32)

# --------------------------------------------------------------------------- what each domain takes
# kind "crops": multi-scale square crops of each source image (data/build_sample.py's crop_photo);
# kind "icons": each source image whole, scaled to 60-100% of the canvas at a random place on a plain
# background. `files`: glob patterns inside the unpacked package; `groups`: a function of the package path
# giving the source group (several files of one artwork or icon share it); `n`: images in the set.
SCRATCH_BG = "usr/share/scratch/Media/Backgrounds"
EDU_THEMES = ("buster", "emerald", "homeworld", "softwaves", "spacefun")
CLIPART = ("animals", "buildings", "food", "people", "plants", "transportation", "tools")

DOMAINS = {
    # ---- data/extra (REAL)
    "photos-scratch": dict(set="extra", kind="crops", pkg="scratch", n=1000,
                           files=[f"{SCRATCH_BG}/*/*.jpg"],
                           what="photographs: the Scratch 1.4 stage backgrounds that are JPEG photos (rooms, "
                                "streets, buildings, parks, sports fields, landscapes), 480x360; its GIF and PNG "
                                "backgrounds, nearly all drawings, are not taken"),
    "icons-tango": dict(set="extra", kind="icons", pkg="tango-icon-theme", n=500,
                        files=["usr/share/icons/Tango/32x32/*/*.png"],
                        what="Tango desktop icons (32x32 PNG, every context but animations)"),
    "icons-gnome": dict(set="extra", kind="icons", pkg="gnome-icon-theme", n=500,
                        files=["usr/share/icons/gnome/256x256/*/*.png", "usr/share/icons/gnome/48x48/*/*.png"],
                        what="GNOME 3.12 desktop icons (the 256 px PNG where there is one, else 48 px)"),
    "renders-gnome": dict(set="extra", kind="crops", pkg="gnome-backgrounds", n=250,
                          files=["usr/share/backgrounds/gnome/*.webp"],
                          what="GNOME 43 wallpapers: 3D renders and abstract patterns, 4096x4096"),
    "renders-debian-edu": dict(set="extra", kind="crops", pkg=[f"debian-edu-artwork-{t}" for t in EDU_THEMES],
                               n=250,
                               files=["usr/share/plymouth/themes/*/background.png",
                                      "usr/share/desktop-base/*/grub/grub-*.png", "usr/share/pixmaps/*-syslinux.png"],
                               what="Debian Edu theme artwork (boot and login backgrounds of five releases)"),
    # ---- data/new_content/probe (REAL)
    "photos-new": dict(set="probe", kind="icons", pkg="tuxpaint-stamps-default", n=400, square=False, trim=True,
                       files=[f"usr/share/tuxpaint/stamps/{c}/**/*.png" for c in ("animals", "food", "plants")],
                       what="photographs of single animals, fruit, vegetables, flowers and plants, cut out "
                            "(Tux Paint's photo stamps; its cartoon stamps left out)"),
    "icons-new": dict(set="probe", kind="icons", pkg="oxygen-icon-theme", n=400,
                      files=[f"usr/share/icons/oxygen/base/{s}/*/*.png" for s in ("256x256", "128x128", "64x64", "48x48")],
                      what="KDE Oxygen desktop icons (the largest PNG of each, 48-256 px)"),
    "clipart": dict(set="probe", kind="icons", pkg="openclipart-png", n=400, square=False, trim=True,
                    files=[f"usr/share/openclipart/png/{c}/**/*.png" for c in CLIPART],
                    what="Open Clip Art Library drawings (" + ", ".join(CLIPART) + ")"),
    "art": dict(set="probe", kind="crops", pkg=["ukui-wallpapers", "sway-backgrounds"], n=400,
                files=["usr/share/backgrounds/*.jpg", "usr/share/backgrounds/*.png",
                       "usr/share/backgrounds/sway/Sway_Wallpaper_Blue_2048x1536.png"],
                what="illustrated and rendered wallpapers (UKUI's ribbons, fish, mouse, paper shapes; sway's "
                     "logo wallpaper, its largest size)"),
}
# data/extra (FAKE): regen of every REAL domain, and two generators trained here on the icons and renders.
EXTRA_REGEN = {"photos-scratch": 400, "icons-tango": 200, "icons-gnome": 200,
               "renders-gnome": 125, "renders-debian-edu": 125}
EXTRA_GEN = {"dcgan": 900, "vae": 550}
EXTRA_GEN_ON = ("icons-tango", "icons-gnome", "renders-gnome", "renders-debian-edu")
GEN_MINUTES = {"dcgan": 10, "vae": 5}
# data/new_content/probe (FAKE): fakes of new content. regen of the probe's clipart and icons, a DCGAN trained
# on clipart and a VAE trained on art crops (pools of PROBE_POOL images cut from every source of the domain).
PROBE_REGEN = {"clipart": ("regen-clipart", 400), "icons-new": ("regen-icons", 400)}
PROBE_GEN = {"gan-clipart": ("dcgan", "clipart", 400), "vae-art": ("vae", "art", 400)}
PROBE_POOL = 4000
# Licences as each package's /usr/share/doc/PACKAGE/copyright states them (Files: * unless said).
LICENCES = {
    "scratch": "CC-BY-SA-3.0 (Files: Help/* Media/*)",
    "tango-icon-theme": "public-domain",
    "gnome-icon-theme": "GPL-2+",
    "gnome-backgrounds": "GPL-2+ (package); the image credits it lists are CC-BY-SA-3.0 / CC-BY-2.0",
    **{f"debian-edu-artwork-{t}": "GPL-2+" for t in EDU_THEMES},
    "tuxpaint-stamps-default": "GPL-2",
    "oxygen-icon-theme": "LGPL-3+",
    "openclipart-png": "Creative Commons Public Domain Dedication",
    "ukui-wallpapers": "CC-BY-SA-3.0",
    "sway-backgrounds": "Expat",
}

# Files of a kept folder that are left out, with why (checked on contact sheets).
DRAWN = "drawing, not a photograph"
DROPPED = {
    "scratch": {**{f"{SCRATCH_BG}/{n}": DRAWN for n in (
        "Indoors/chalkboard.jpg", "Indoors/party-room.jpg", "Indoors/room1.jpg", "Indoors/room2.jpg",
        "Indoors/room3.jpg", "Indoors/spotlight-stage.jpg", "Nature/woods-and-bench.jpg", "Outdoors/school2.jpg")},
                f"{SCRATCH_BG}/Nature/moon.jpg": bs.GRAY},
    "tuxpaint-stamps-default": {f"usr/share/tuxpaint/stamps/{n}": DRAWN for n in (
        "animals/fish/bluegroper.png", "animals/fish/butterflyfish.png", "animals/fish/clownfish.png",
        "animals/fish/coraltrout.png", "animals/fish/dolphinfish.png", "animals/fish/moonwrasse.png",
        "animals/fish/seahorse.png", "animals/fish/stripedfish.png", "animals/insects/bee.png",
        "animals/insects/fly.png", "animals/mammals/aquatic/dolphin.png", "animals/mammals/aquatic/orca.png",
        "animals/mammals/aquatic/whale.png", "animals/mammals/echidna.png", "animals/mammals/hedgehog.png",
        "food/pizza.png", "plants/trees/holly_leaves.png")},
    "gnome-backgrounds": {"usr/share/backgrounds/gnome/vnc-d.webp": "one flat colour (256 px)",
                          "usr/share/backgrounds/gnome/vnc-l.webp": "one flat colour (256 px)"},
}
# Icons left out because they are grey (R = G = B), filled in by domain_sources.
AUTO_DROPPED: dict[str, list[str]] = {}
# Folders skipped whole, with why.
SKIPPED_DIRS = {"animations": "spinner frame strips, not one icon",
                "cartoon": "Tux Paint's drawn stamps"}


# --------------------------------------------------------------------------- packages
def package_root(pkg: str, pkgs: Path) -> Path:
    """The unpacked tree of Debian package `pkg` under PKGS/x/PKG, fetched with apt-get download and
    unpacked with dpkg -x the first time."""
    root = pkgs / "x" / pkg
    if root.is_dir():
        return root
    pkgs.mkdir(parents=True, exist_ok=True)
    if not sorted(pkgs.glob(f"{pkg}_*.deb")):
        bs.log(f"[packages] {pkg}: apt-get download into {pkgs}")
        subprocess.run(["apt-get", "download", pkg], cwd=pkgs, check=True)
    deb = sorted(pkgs.glob(f"{pkg}_*.deb"))[-1]
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    bs.log(f"[packages] {pkg}: dpkg -x {deb.name}")
    subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
    tmp.rename(root)
    return root


def package_version(pkg: str, pkgs: Path) -> str:
    deb = sorted(pkgs.glob(f"{pkg}_*.deb"))[-1]
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def packages_of(dom: dict) -> list[str]:
    return dom["pkg"] if isinstance(dom["pkg"], list) else [dom["pkg"]]


# --------------------------------------------------------------------------- sources
def flatten(img: Image.Image, grey: int) -> Image.Image:
    """RGB; a transparent image is composited over a plain grey background first."""
    img.seek(0)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (grey, grey, grey, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def is_grey(arr: np.ndarray) -> bool:
    """R = G = B everywhere (within 2 levels): a grey image would only ever be REAL, a class shortcut."""
    a = arr.astype(np.int16)
    return bool(np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2)


def domain_sources(name: str, pkgs: Path) -> list[tuple[str, Path]]:
    """[(origin name 'PACKAGE:path', file)] of a domain, deduplicated by content, in a fixed order.
    Transparent renders/wallpapers are fine; icons need a square image of at least 32 px."""
    dom = DOMAINS[name]
    out, seen, stems = [], set(), set()
    for pkg in packages_of(dom):
        root = package_root(pkg, pkgs)
        dropped = DROPPED.get(pkg, {})
        for pattern in dom["files"]:
            for f in sorted(root.glob(pattern)):
                rel = f.relative_to(root).as_posix()
                if rel in dropped or f.parent.name in SKIPPED_DIRS or f.is_symlink():
                    continue     # (a symlink is another name of an icon that is there as a file)
                digest = hashlib.sha256(f.read_bytes()).hexdigest()
                stem = f"{f.parent.name}/{f.stem}"     # an icon's context and name, whatever its size
                if digest in seen or (dom["kind"] == "icons" and stem in stems):
                    continue
                if dom["kind"] == "icons":
                    with Image.open(f) as im:
                        if (dom.get("square", True) and im.width != im.height) or max(im.size) < 32:
                            continue
                        if is_grey(np.asarray(flatten(im, 128))):
                            AUTO_DROPPED.setdefault(name, []).append(rel)
                            continue
                seen.add(digest)
                stems.add(stem)
                out.append((f"{pkg}:{rel}", f))
    return out


def icon_image(img: Image.Image, rng: np.random.Generator, size: int, trim: bool = False) -> tuple[np.ndarray, str]:
    """One placement of a whole icon or cut-out: its longer side scaled to 60-100% of a size x size canvas, at a
    random place on a plain grey background (BACKGROUNDS); returns the array and its description. `trim`
    first cuts the image to its opaque part."""
    grey = int(rng.choice(BACKGROUNDS))
    rgba = img.convert("RGBA")
    if trim and rgba.getchannel("A").getbbox():
        rgba = rgba.crop(rgba.getchannel("A").getbbox())
    side = int(round(size * rng.uniform(0.6, 1.0)))
    w, h = rgba.size
    w, h = (side, side) if w == h else (max(1, round(w * side / max(w, h))), max(1, round(h * side / max(w, h))))
    icon = rgba.resize((w, h), Image.LANCZOS, reducing_gap=3.0)
    x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    canvas = Image.new("RGBA", (size, size), (grey, grey, grey, 255))
    canvas.alpha_composite(icon, (x, y))
    return np.asarray(canvas.convert("RGB")), f"side={side} at=({x},{y}) bg={grey}"


def pick_sources(sources: list, n: int, rng: np.random.Generator) -> list:
    """At most n of a domain's sources (a seeded random choice, in their order), so n images come from n
    different source images when there are more sources than images."""
    if len(sources) <= n:
        return sources
    return [sources[i] for i in sorted(rng.choice(len(sources), n, replace=False))]


def domain_images(name: str, pkgs: Path, n: int, size: int, rng: np.random.Generator,
                  sources=None) -> list[tuple[np.ndarray, str, str]]:
    """n images of `size` px of a domain, spread evenly over its source images: [(array, domain, origin)].
    Origins name 'PACKAGE:path' first, so core.datasets.group_of_origin finds the source image."""
    dom = DOMAINS[name]
    sources = sources if sources is not None else domain_sources(name, pkgs)
    out = []
    for (origin, f), k in zip(sources, bs.even_counts(n, len(sources))):
        if k == 0:
            continue
        with Image.open(f) as im:
            if dom["kind"] == "icons":
                got = []
                for _ in range(20 * k):
                    arr, how = icon_image(im, rng, size, dom.get("trim", False))
                    if how not in {h for _, h in got}:
                        got.append((arr, how))
                    if len(got) == k:
                        break
                out += [(a, name, f"{origin} {how} @{size}") for a, how in got]
            else:
                img = flatten(im, int(rng.choice(BACKGROUNDS)))
                try:
                    cands = bs.crop_photo(img, 2 * k, rng, 5, 4.0, size)
                except RuntimeError:     # a smooth render has fewer distinct textured crops: take k
                    cands = bs.crop_photo(img, k, rng, 5, 4.0, size)
                crops = [(a, b) for a, b in cands if not is_grey(a)][:k]
                out += [(a, name, f"{origin} box={b} @{size}") for a, b in crops]
    return out


# --------------------------------------------------------------------------- generators
def regen_fakes(name: str, pkgs: Path, n: int, seed: int, sources=None, out_name: str | None = None
                ) -> list[tuple[np.ndarray, str, str]]:
    """n regenerated reals of a domain: fresh 64-px images of its sources through the sample's regen
    autoencoder, downscaled to 32 px. Each origin names the source image it re-synthesises."""
    model, cfg, _ = load_cached("regen")
    rng = np.random.default_rng(seed)
    inputs = domain_images(name, pkgs, n, 64, rng, sources)
    fakes = gen.generate("regen", model, cfg, len(inputs), seed, gen.to_tensor([a for a, _, _ in inputs]))
    return [(a, out_name or f"regen-{name}", f"{o} of {src_origin}") for (a, o), (_, _, src_origin) in zip(fakes, inputs)]


_LOADED: dict = {}


def load_cached(kind: str, path: Path | None = None):
    path = path or GEN_DIR / f"{kind}.pt"
    if path not in _LOADED:
        _LOADED[path] = gen.load_generator(path, kind)
    return _LOADED[path]


def trained_generator(kind: str, path: Path, x: torch.Tensor, args, seed: int, log_rows: list):
    """The generator at `path`, trained from scratch on x (float crops in [-1, 1]) when missing or --retrain."""
    trained = args.retrain or not path.exists()
    if trained:
        bs.log(f"[{path.stem}] training {kind} on {len(x)} images, cap {args.gen_minutes or GEN_MINUTES[kind]} min")
        model, cfg, steps, secs = gen.train_family(kind, x, 10 ** 6, args.gen_minutes or GEN_MINUTES[kind], seed)
        gen.save_generator(path, model, kind, cfg, steps, secs)
        _LOADED.pop(path, None)
    model, cfg, ck = load_cached(kind, path)
    log_rows.append(dict(generator=path.stem, kind=kind, trained_on=len(x), steps=ck["steps"],
                         seconds=ck["train_seconds"], parameters=sum(p.numel() for p in model.parameters()),
                         trained_in_this_run=bool(trained)))
    return model, cfg


# --------------------------------------------------------------------------- writing
# Files that are variants of one artwork or scene share a group: PACKAGE -> rule on the file's stem.
VARIANTS = {
    "scratch": r"(-?[0-9]+|-[ab])+$",           # city-with-water / city-with-water2, basketball-court1-a / -b
    "gnome-backgrounds": r"-[dl]$",             # the dark and light version of one wallpaper
}
WHOLE_PACKAGE_GROUPS = tuple(f"debian-edu-artwork-{t}" for t in EDU_THEMES)   # one theme's boot/login art


def group_of(origin: str) -> str:
    """The source group of the image an origin names ('PACKAGE:path'), "" for a generated image."""
    g = bs.group_of_origin(origin)
    if Path(g).suffix.lower() not in IMAGE_SUFFIXES or ":" not in g:
        return ""
    pkg, rel = g.split(":", 1)
    if pkg in WHOLE_PACKAGE_GROUPS:
        return pkg
    if pkg in VARIANTS:
        return f"{pkg}:{re.sub(VARIANTS[pkg], '', str(Path(rel).with_suffix('')))}"
    return g


def write_set(out: Path, split: str, reals, fakes, rng, card: Path, summary: dict) -> list:
    """The split's JPEGs and manifest (data/build_sample.py's write_split), a contact sheet per domain under
    `card`, and counts.json (the summary with per-domain counts and source images) there."""
    rows = bs.write_split(out, split, reals, fakes, rng, group_of=group_of)
    card.mkdir(parents=True, exist_ok=True)
    for old in card.glob("*.png"):
        old.unlink()
    for dom in sorted({r[2] for r in rows}):
        files = [out / split / r[0] for r in rows if r[2] == dom]
        pick = rng.choice(len(files), size=min(128, len(files)), replace=False)
        bs.contact_sheet([files[i] for i in sorted(pick)], card / f"{dom}.png")
    counts = {}
    for r in rows:
        c = counts.setdefault(r[2], {"label": r[1], "images": 0, "groups": set()})
        c["images"] += 1
        c["groups"].add(group_of(r[3]))
    summary["domains"] = {d: {"class": "FAKE" if c["label"] else "REAL", "images": c["images"],
                              "source_groups": len(c["groups"] - {""})} for d, c in sorted(counts.items())}
    (card / "counts.json").write_text(json.dumps(summary, indent=1) + "\n")
    bs.log(f"[write] {out / split}: {len(rows)} images; " + ", ".join(f"{d} {c['images']}" for d, c in sorted(counts.items())))
    return rows


def package_rows(names, pkgs: Path) -> dict:
    return {p: package_version(p, pkgs) for d in names for p in packages_of(DOMAINS[d])}


def dropped_of(names) -> dict[str, list[str]]:
    """What a set's domains left out, by reason: DROPPED entries, grey icons, and skipped folders."""
    out: dict[str, list[str]] = {}
    for d in names:
        for pkg in packages_of(DOMAINS[d]):
            for rel, why in DROPPED.get(pkg, {}).items():
                out.setdefault(why, []).append(f"{pkg}:{rel}")
        for rel in AUTO_DROPPED.get(d, []):
            out.setdefault("grey (R = G = B): a grey image would only ever be REAL", []).append(f"{packages_of(DOMAINS[d])[0]}:{rel}")
    return out


# --------------------------------------------------------------------------- cards
EXTRA_INTRO = """# Extra training domains (`data/extra`)

Images of content the sample (`data/sample`) lacks, for widening what a detector trains on: photographs of
other scenes, desktop icons and rendered wallpapers as REAL; as FAKE, the same domains' images regenerated by
the sample's `regen` autoencoder (content-matched fakes of new content) and samples of a DCGAN and a VAE trained
here, from scratch, on this set's icons and renders. One split, `train`, in the sample's format.

**What it is NOT.** Not a test set: it has no held-out split (a trainer's grouped calibration split holds out
whole source images through the `group` column). Not large: a few hundred source images make all of it, so
crops and placements of one source are correlated. Its generators are tiny and trained for minutes on a
shared CPU (steps and seconds below); their samples are not realistic. None of its packages is in
`data/new_content` (the probe), which measures content neither set holds.
"""

PROBE_INTRO = """# The new-content probe (`data/new_content`)

A held-out set of **content domains that neither the sample (`data/sample`) nor the extra training domains
(`data/extra`) contain**, for measuring what a detector's verdict does on content it never saw: photographs of
single animals, fruit and plants cut out of their background, another icon family, clipart drawings,
illustrated wallpapers, and **fakes of that new content** made by generators trained here from scratch on it
(a DCGAN on the clipart, a VAE on the art) or by the sample's `regen` autoencoder applied to the probe's
clipart and icons. One split, `probe`, in the sample's format; `source` is the domain. Report it per domain.

**What it is NOT.**
- Not a training set: no detector should train or tune on it. No package of it is used by `data/sample` or
  `data/extra` (tested: `tests/test_new_content.py`).
- Not natural scenes: `photos-new` are real photographs, but of one object each, cut out and put on a plain
  grey background (the stamps ship with a transparent background).
- No faces or people photographs: no allowed package outside the two training sets has enough of them (Tux
  Paint has a handful of people stamps; the Scratch costumes' photos of people are in `scratch`, which
  `data/extra` uses; Open Clip Art's people are drawings, and some are in `clipart`).
- Its generators are tiny and under-trained (minutes on a shared CPU core; steps and seconds below). Their
  samples are blotchy textures or blurry shapes, not plausible clipart or art; `regen` fakes are the
  plausible ones, by construction.
- Not the team's held-out check set, and not CIFAKE; it has their 32x32 JPEG format only.
"""

FAKE_HOW = {
    "regen": "{src}'s source images, freshly cut or placed at 64 px by the same rule, passed through the sample's "
             "`regen` autoencoder (`weights/generators/regen.pt`, trained on the sample's photos only) and "
             "downscaled to 32 px (Lanczos)",
    "dcgan": "samples of a DCGAN (`data/generators.py` family `dcgan`: transposed-conv generator, spectral-norm "
             "discriminator, hinge loss, EMA) trained here from scratch on {src}",
    "vae": "prior samples of a convolutional VAE (`data/generators.py` family `vae`) trained here from scratch on {src}",
}


def domain_how(dom: str, summary: dict) -> str:
    for g in summary["generators"]:
        if g["domain"] == dom:
            return FAKE_HOW[g["kind"]].format(src=" + ".join(f"`{d}`" for d in g["trained_on_domains"])
                                              + f" ({g['trained_on']:,} images)")
    src = dom[len("regen-"):]
    src = {"icons": "icons-new"}.get(src, src)
    return FAKE_HOW["regen"].format(src=f"`{src}`")


def write_card(path: Path, summary: dict, intro: str, split_dir: str, card_dir: str) -> None:
    """The set's README: intro, domains with package, version, path and licence, generators, what was left
    out, contact sheets and the rebuild commands. Every number comes from `summary` (card/counts.json)."""
    doms = summary["domains"]
    which = summary["set"]
    lines = [intro.rstrip(), "", "## Layout", "", "```",
             f"{split_dir}/{{REAL,FAKE}}/NNNNNN.jpg   {sum(d['images'] for d in doms.values()):,} images "
             f"({sum(d['images'] for d in doms.values() if d['class'] == 'REAL'):,} REAL, "
             f"{sum(d['images'] for d in doms.values() if d['class'] == 'FAKE'):,} FAKE)",
             f"{split_dir}/manifest.csv           file,label,source,origin,group", "```", "",
             "Every image, REAL and FAKE alike: 32x32 RGB JPEG, quality 90, 4:2:0, no metadata, written by "
             "`data/build_sample.py`'s `write_split` (the sample's own call); one shuffled numbering across both "
             "classes. `label` 0 = REAL, 1 = FAKE; `source` is the domain; `origin` names the package and file an "
             "image comes from (`PACKAGE:path`) with its crop box or placement, or the generator, seed and index; "
             "`group` is the source image (variants of one artwork or scene share one), empty for a generated image.",
             "", "Transparent images (icons, stamps, clipart, a few wallpapers) are composited over a plain grey "
             f"background, one of {', '.join(map(str, BACKGROUNDS))} (R = G = B) drawn per image. `crops` domains are "
             "multi-scale square crops of each source (`data/build_sample.py`'s `crop_photo`: 5 log-spaced sides from "
             "32 px to the short side, near-flat crops skipped); `icons` domains place each whole source, its longer "
             "side at 60-100% of the canvas, at a random spot. A domain with more sources than images uses a seeded "
             "random choice of them, one image each.", "",
             "## Domains", "",
             "| domain | class | what | package (version) | path inside the package | licence | images | source groups |",
             "|---|---|---|---|---|---|---:|---:|"]
    for d, c in doms.items():
        if d in DOMAINS:
            dom = DOMAINS[d]
            pk = ", ".join(f"{p} {summary['packages'][p]}" for p in packages_of(dom))
            paths = "<br>".join(f"`{f}`" for f in dom["files"])
            lic = "; ".join(sorted({LICENCES[p] for p in packages_of(dom)}))
            src = summary["sources"][d]
            what = f"{dom['what']} ({dom['kind']}; {src['used']} of {src['found']} source files used)"
            lines.append(f"| `{d}` | REAL | {what} | {pk} | {paths} | {lic} | {c['images']:,} | {c['source_groups']:,} |")
        else:
            lines.append(f"| `{d}` | FAKE | {domain_how(d, summary)} | | | | {c['images']:,} | {c['source_groups'] or '-'} |")
    lines += ["", "## Generators trained here", "",
              "Trained from scratch by this script on one CPU thread (`--threads 1`) with a wall-time cap, on a "
              "machine shared with other jobs; the weights are plain dicts (load with `torch.load(..., "
              "weights_only=True)`).", "",
              "| generator | weights | kind | trained on | images | parameters | training steps | training seconds | sampling seconds |",
              "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for g in summary["generators"]:
        lines.append(f"| `{g['domain']}` | `weights/generators/{g['generator']}.pt` | {g['kind']} | "
                     f"{', '.join(g['trained_on_domains'])} | {g['trained_on']:,} | {g['parameters']:,} | "
                     f"{g['steps']:,} | {g['seconds']:.0f} | {g.get('sampling_seconds', 0):.0f} |")
    trained = [g["domain"] for g in summary["generators"] if g["trained_in_this_run"]]
    lines += ["", "Time of the run that wrote this set, seconds: "
              + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items())
              + (f" (the total includes training {', '.join(trained)})." if trained
                 else " (every generator's weights were there: no training)."), "",
              "## Left out", "", "Every photo, wallpaper and Tux Paint stamp source was looked at on a contact sheet; the "
              "icon themes and clipart through contact sheets of what each domain kept (below). Files of the kept "
              "folders left out, by reason (every file is listed in `card/counts.json`, key `dropped`):", ""]
    for why, files in summary["dropped"].items():
        if len(files) <= 30:
            lines.append(f"- {why} ({len(files)}): " + ", ".join(f"`{f.split('/')[-1]}`" for f in files))
        else:
            per = {}
            for f in files:
                per[f.split(":")[0]] = per.get(f.split(":")[0], 0) + 1
            lines.append(f"- {why} ({len(files)}: " + ", ".join(f"{k} {v}" for k, v in per.items()) + ")")
    lines += [f"- whole folders named {', '.join(f'`{k}`' for k in SKIPPED_DIRS)}: " + "; ".join(SKIPPED_DIRS.values())
              + "; symbolic links (other names of an icon that is there as a file); an icon smaller than 32 px or, "
              "in the icon themes, not square; a smaller size of an icon already taken; byte-identical copies.", "",
              "## Contact sheets", "", "Up to 128 random images per domain, shown 2x (nearest neighbour), exactly as saved.", ""]
    lines += [f"- `{d}`<br>![{d}]({card_dir}/{d}.png)" for d in doms]
    lines += ["", "## How to rebuild", "", "```",
              f"python data/build_new_content.py --what {which} --pkgs DIR       # reuses the generators' weights",
              f"python data/build_new_content.py --what {which} --pkgs DIR --retrain   # trains them again (caps: GEN_MINUTES)",
              f"python -m pytest -q tests/test_new_content.py", "```", "",
              "`--pkgs DIR` is where the `.deb` files are fetched (`apt-get download`) and unpacked (`dpkg -x`); "
              "it defaults to `data/_cache/deb` (git-ignored). With the same packages and weights a rebuild writes "
              "the same files. Per-domain counts, versions and timings: "
              f"[`{card_dir}/counts.json`]({card_dir}/counts.json), written by the same run."]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- the two sets
def real_domains(which: str, pkgs: Path, rng: np.random.Generator):
    """Every REAL domain of a set: (images, {domain: all sources}, {domain: sources used})."""
    reals, sources, used = [], {}, {}
    for name in (d for d, v in DOMAINS.items() if v["set"] == which):
        sources[name] = domain_sources(name, pkgs)
        used[name] = pick_sources(sources[name], DOMAINS[name]["n"], rng)
        got = domain_images(name, pkgs, DOMAINS[name]["n"], 32, rng, used[name])
        bs.log(f"[{which}] {name}: {len(got)} images from {len(used[name])} of {len(sources[name])} source images")
        reals += got
    return reals, sources, used


def set_summary(which: str, sources: dict, used: dict, gen_rows: list, seconds: dict, pkgs: Path) -> dict:
    return dict(set=which, seed=SEED, packages=package_rows(sources, pkgs),
                sources={d: {"found": len(s), "used": len(used[d])} for d, s in sources.items()},
                generators=gen_rows, seconds={k: round(v, 1) for k, v in seconds.items()},
                dropped=dropped_of(sources))


def generator_fakes(kind: str, name: str, dom: str, x: torch.Tensor, on: list, n: int, seed: int, args,
                    gen_rows: list) -> list[tuple[np.ndarray, str, str]]:
    """n samples of the generator weights/generators/NAME.pt (trained from scratch on x when missing or
    --retrain; training seed `seed`, sampling seed seed + 100) as domain `dom`; its row goes to gen_rows."""
    model, cfg = trained_generator(kind, args.weights / f"{name}.pt", x, args, seed, gen_rows)
    gen_rows[-1].update(domain=dom, trained_on_domains=list(on))
    t = time.time()
    fakes = [(a, dom, o.replace(kind, name, 1)) for a, o in gen.generate(kind, model, cfg, n, seed + 100)]
    gen_rows[-1]["sampling_seconds"] = round(time.time() - t, 1)
    return fakes


def finish_set(which: str, folder: str, split: str, intro: str, parts: tuple, rng, t0: float, args) -> dict:
    """Write a set's split, contact sheets, counts.json and README; parts = (reals, fakes, sources, used,
    gen_rows, seconds)."""
    reals, fakes, sources, used, gen_rows, seconds = parts
    out = args.out / folder
    summary = set_summary(which, sources, used, gen_rows, seconds, args.pkgs)
    write_set(out, split, reals, fakes, rng, out / "card", summary)
    summary["seconds"]["total"] = round(time.time() - t0, 1)
    (out / "card" / "counts.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_card(out / "README.md", summary, intro, f"data/{folder}/{split}", "card")
    bs.log(f"[{which}] done in {time.time() - t0:.0f} s")
    return summary


def build_extra(args) -> dict:
    t0 = time.time()
    rng = np.random.default_rng(SEED)
    reals, sources, used = real_domains("extra", args.pkgs, rng)
    seconds = {"real images": time.time() - t0}
    t = time.time()
    fakes = []
    for i, (name, n) in enumerate(EXTRA_REGEN.items()):
        fakes += regen_fakes(name, args.pkgs, n, SEED + 100 + i, pick_sources(used[name], n, rng))
    seconds["regen fakes"] = time.time() - t
    train_x = gen.to_tensor([a for a, d, _ in reals if d in EXTRA_GEN_ON])
    gen_rows = []
    for i, (kind, n) in enumerate(EXTRA_GEN.items()):
        fakes += generator_fakes(kind, f"extra_{kind}", f"{kind}-extra", train_x, EXTRA_GEN_ON, n, SEED + 200 + i,
                                 args, gen_rows)
    return finish_set("extra", "extra", "train", EXTRA_INTRO, (reals, fakes, sources, used, gen_rows, seconds),
                      rng, t0, args)


def build_probe(args) -> dict:
    t0 = time.time()
    rng = np.random.default_rng(SEED + 1)
    reals, sources, used = real_domains("probe", args.pkgs, rng)
    seconds = {"real images": time.time() - t0}
    t = time.time()
    fakes = []
    for i, (name, (out_name, n)) in enumerate(PROBE_REGEN.items()):
        fakes += regen_fakes(name, args.pkgs, n, SEED + 400 + i, pick_sources(used[name], n, rng), out_name)
    seconds["regen fakes"] = time.time() - t
    gen_rows = []
    for i, (dom, (kind, on, n)) in enumerate(PROBE_GEN.items()):
        pool = domain_images(on, args.pkgs, PROBE_POOL, 32, np.random.default_rng(SEED + 500 + i), sources[on])
        fakes += generator_fakes(kind, f"probe_{kind}", dom, gen.to_tensor([a for a, _, _ in pool]), [on], n,
                                 SEED + 600 + i, args, gen_rows)
    return finish_set("probe", "new_content", "probe", PROBE_INTRO, (reals, fakes, sources, used, gen_rows, seconds),
                      rng, t0, args)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Build data/extra (extra training domains) and data/new_content "
                                            "(the new-content probe) from Debian packages.")
    p.add_argument("--what", choices=["extra", "probe", "all"], default="all")
    p.add_argument("--out", type=Path, default=REPO / "data", help="folder that gets extra/ and new_content/ (default: data)")
    p.add_argument("--pkgs", type=Path, default=bs.CACHE / "deb", help="where .deb files are fetched and unpacked "
                   "(default: data/_cache/deb, git-ignored)")
    p.add_argument("--weights", type=Path, default=GEN_DIR, help="generator weights folder (default: weights/generators)")
    p.add_argument("--retrain", action="store_true", help="train the set's generators again even if their weights exist")
    p.add_argument("--gen-minutes", type=float, default=None, help="wall-time cap per generator (default: GEN_MINUTES)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--card-only", action="store_true", help="only rewrite the README of the set(s) from card/counts.json")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.card_only:
        for which, folder, split_dir, intro in (("extra", "extra", "data/extra/train", EXTRA_INTRO),
                                                ("probe", "new_content", "data/new_content/probe", PROBE_INTRO)):
            if args.what in (which, "all"):
                counts = args.out / folder / "card" / "counts.json"
                if not counts.is_file():
                    print(f"{counts}: not found; build the set first (without --card-only)", file=sys.stderr)
                    return 2
                write_card(args.out / folder / "README.md", json.loads(counts.read_text()), intro, split_dir, "card")
        return 0
    if args.what in ("extra", "all"):
        build_extra(args)
    if args.what in ("probe", "all"):
        build_probe(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
