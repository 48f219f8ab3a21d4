"""Frequency forensics and the shortcut check: is the detector looking at the image, or at the file?

    python -m core forensics --data data/sample/test --out runs/forensics
    python -m core forensics --data /data/hemg --class-map 'AiArtData=FAKE,RealArt=REAL' --weights W --out DIR

1. Spectra. For every image: a centre crop at native resolution, its high-pass residual (image minus
   a Gaussian-blurred copy, sigma 1 px, wrapped borders), the 2-D FFT, log(1 + |F|) averaged over the three channels,
   DC in the middle. Averaged per class and per source, with the azimuthal (1-D) average by integer
   radius. Generator upsampling leaves periodic peaks here (Frank et al. 2020, Durall et al. 2020).
2. Shortcut check. Per class, the distribution of file format, JPEG quality (estimated from the
   quantisation tables), chroma subsampling, pixel size, bytes per pixel and EXIF presence, and a
   cross-validated decision tree on those file-level features alone (balanced accuracy). Over 0.60 the
   check is flagged: the labels can be read off how the files were made.
3. Re-encoding control. Both classes re-encoded identically (resized to the model's input side with
   the project's preprocessing, JPEG at one quality, 4:2:0) and evaluated again with core.inference.evaluate;
   the change in accuracy and AUC says how much the model's score rested on the original files.

Writes DIR/spectra.npz, DIR/spectrum_*.png, DIR/spectrum_1d.{csv,png}, DIR/file_properties.csv,
DIR/shortcut_distributions.csv and DIR/shortcuts.json (metadata_only_accuracy, flagged, per_class,
per_feature_accuracy, reencoding_control).
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.report.audit_cache import json_bytes, result_dir, write_result_dir
from core.data.images import ImageError, load_image, read_jpeg_header
from core.data.labels import CLASS_NAMES
from core.data.preprocess import PreprocessConfig, preprocess_image

FLAG_THRESHOLD = 0.60          # balanced accuracy of the metadata-only classifier above which we warn
MAX_CROP = 256                 # px: spectra of larger crops cost more and average fewer artefacts away
RESIDUAL_SIGMA = 1.0           # px: the blur removed from the image leaves its high-pass residual
# Pixels per vectorised spectrum pass (residual_spectra): 256 crops of 32x32, 4 of 256x256 (about 6 MB of
# float64 per channel set, twice that for the FFT). One image at a time, the sample's 3,000 spectra were
# 1.8 s of the Forensics analysis' 5.9 s, mostly Python around 32x32 FFTs (cProfile, one core).
SPECTRA_PIXELS = 256 * 32 * 32

# libjpeg's (IJG) standard quantisation tables, natural (row-major) order: ITU-T T.81 Annex K.1.
IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
IJG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32)
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
PROPERTY_COLUMNS = ["path", "label", "source", "format", "jpeg_quality", "jpeg_quality_exact", "subsampling",
                    "width", "height", "bytes", "bytes_per_pixel", "has_exif", "error"]
# The file-level features of the shortcut check, grouped as the issue lists them.
FEATURE_GROUPS = ("format", "jpeg_quality", "subsampling", "pixel_size", "bytes_per_pixel", "exif")


# ----------------------------------------------------------------------------- JPEG quality

def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """libjpeg's (luma, chroma) tables at `quality` 1..100 (jcparam.c: jpeg_quality_scaling, baseline)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    f = lambda t: np.clip((t * scale + 50) // 100, 1, 255)      # noqa: E731
    return f(IJG_LUMA), f(IJG_CHROMA)


_IJG = {q: ijg_tables(q) for q in range(1, 101)}
# The same tables as two (100, 64) arrays, row q - 1 = quality q: the nearest quality in one numpy call.
_IJG_LUMA = np.stack([_IJG[q][0] for q in range(1, 101)]).astype(np.int64)
_IJG_CHROMA = np.stack([_IJG[q][1] for q in range(1, 101)]).astype(np.int64)


def estimate_jpeg_quality(tables: dict) -> tuple[int | None, bool]:
    """(quality, exact) from PIL's `im.quantization` ({0: luma[64], 1: chroma[64], ...}, natural order).

    The IJG quality whose scaled standard tables are nearest (sum of absolute differences over luma and,
    if present, chroma), as GIMP's and ImageMagick's estimators do; `exact` when they match entry for
    entry (files written by libjpeg/Pillow). Other encoders' tables get the nearest IJG quality.
    """
    if not tables or 0 not in tables:
        return None, False
    return _nearest_ijg_quality(tuple(map(int, tables[0])), tuple(map(int, tables[1])) if 1 in tables else None)


@functools.lru_cache(maxsize=1024)
def _nearest_ijg_quality(luma: tuple, chroma: tuple | None) -> tuple[int | None, bool]:
    # Memoised on the tables: a dataset's files share a few encoders' tables, and this search was half of the
    # Forensics analysis and of the slices' image properties (3,000 files: 5 s of 11 s, cProfile).
    lu = np.asarray(luma, dtype=np.int64)
    ch = np.asarray(chroma, dtype=np.int64) if chroma is not None else None
    if lu.shape != (64,) or (ch is not None and ch.shape != (64,)):
        return None, False
    d = np.abs(_IJG_LUMA - lu).sum(axis=1) + (np.abs(_IJG_CHROMA - ch).sum(axis=1) if ch is not None else 0)
    k = int(np.argmin(d))               # the first minimum: the lowest quality on ties, as the loop it replaces
    return k + 1, bool(d[k] == 0)


# ----------------------------------------------------------------------------- file properties

def item_bytes(ds, i: int) -> bytes:
    """The raw file bytes of dataset item i (folder/manifest paths are read; parquet cells are bytes)."""
    src = ds.read_bytes(ds.items[i][0])
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    try:
        with open(src, "rb") as f:
            return f.read()
    except OSError as e:
        raise ImageError(f"file could not be read ({e.strerror or e})") from None


# Pillow's chroma subsampling codes (JpegImagePlugin.get_sampling) by the first three components' sampling factors.
_SAMPLING_CODES = {((1, 1), (1, 1), (1, 1)): 0, ((2, 1), (1, 1), (1, 1)): 1, ((2, 2), (1, 1), (1, 1)): 2}


def file_properties(data: bytes) -> dict:
    """File-level facts from the header only (no pixel decoding): format, JPEG quality estimate,
    chroma subsampling, width, height, bytes, bytes per pixel, has_exif; `error` is a reason or None.

    A plain JPEG's header is read by core.data.images.read_jpeg_header (the sample's 3,000 test files: 0.17 CPU s
    against 0.39 s through PIL.Image.open, which parses the same markers in Python; measured once, under load);
    anything else by Pillow, with the same answers (tests/test_forensics.py checks both ways on every kind of file)."""
    out = {"format": None, "jpeg_quality": None, "jpeg_quality_exact": None, "subsampling": None, "width": None,
           "height": None, "bytes": len(data), "bytes_per_pixel": None, "has_exif": None, "error": None}
    head = read_jpeg_header(data)
    if head is not None:
        w, h = head.width, head.height
        q, exact = estimate_jpeg_quality(head.quantization)
        code = _SAMPLING_CODES.get(head.sampling[:3], -1) if head.components == 3 else -1
        out.update({"format": "JPEG", "width": w, "height": h, "bytes_per_pixel": len(data) / (w * h) if w * h else None,
                    "has_exif": head.has_exif, "jpeg_quality": q, "jpeg_quality_exact": exact,
                    "subsampling": SUBSAMPLING.get(code, "grayscale" if head.components == 1 else "other")})
        return out
    return _file_properties_pillow(data, out)


def _file_properties_pillow(data: bytes, out: dict) -> dict:
    """file_properties through PIL.Image.open (every format; any JPEG read_jpeg_header leaves to Pillow)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            out["format"] = im.format
            w, h = im.size
            out["width"], out["height"] = w, h
            out["bytes_per_pixel"] = len(data) / (w * h) if w * h else None
            out["has_exif"] = bool(im.info.get("exif")) or len(im.getexif()) > 0
            if im.format == "JPEG":
                from PIL.JpegImagePlugin import get_sampling
                q, exact = estimate_jpeg_quality(getattr(im, "quantization", None) or {})
                out["jpeg_quality"], out["jpeg_quality_exact"] = q, exact
                s = get_sampling(im)
                out["subsampling"] = SUBSAMPLING.get(s, "grayscale" if im.mode == "L" else "other")
    except Exception:
        # The decoder owns the reasons for refusing a file: ask it, so the wording is the same everywhere.
        try:
            load_image(data)
            out["error"] = "header could not be read"
        except ImageError as e:
            out["error"] = str(e)
    return out


def scan_files(ds, progress=None) -> pd.DataFrame:
    """`file_properties` of every item: one row per item (PROPERTY_COLUMNS), failures with their reason."""
    rows = []
    for i in range(len(ds)):
        _, label, source = ds.items[i][:3]
        try:
            props = file_properties(item_bytes(ds, i))
        except ImageError as e:
            props = {"error": str(e)}
        rows.append({"path": ds.item_id(i), "label": int(label), "source": source or "", **props})
        if progress and (i % 64 == 0 or i + 1 == len(ds)):
            progress(i + 1, len(ds))
    return pd.DataFrame(rows, columns=PROPERTY_COLUMNS)


# ----------------------------------------------------------------------------- spectra

def residual(arr: np.ndarray, sigma: float = RESIDUAL_SIGMA) -> np.ndarray:
    """uint8/float (H, W, 3) -> float64 (H, W, 3): the image minus its Gaussian blur (wrapped borders).

    The FFT treats the crop as periodic, so the blur does too: the residual's spectrum is then exactly
    the image's spectrum times (1 - Gaussian), with no border artefacts of its own (reflected borders
    spread low-frequency energy over the whole log spectrum, measured on planted patterns)."""
    from scipy.ndimage import gaussian_filter
    a = np.asarray(arr, dtype=np.float64)
    return a - gaussian_filter(a, sigma=(sigma, sigma, 0), mode="wrap")


def residual_spectrum(arr: np.ndarray, sigma: float = RESIDUAL_SIGMA) -> np.ndarray:
    """(H, W, 3) image -> (H, W) float64: log(1 + |FFT2(residual)|) averaged over channels, DC at
    (H // 2, W // 2). Frequency bin (dy, dx) from the centre means dx cycles across the width."""
    return residual_spectra(np.asarray(arr)[None], sigma)[0]


def residual_spectra(arrs: np.ndarray, sigma: float = RESIDUAL_SIGMA) -> np.ndarray:
    """(B, H, W, 3) images -> (B, H, W) float64: `residual_spectrum` of each, in one vectorised pass (the same
    blur, FFT and mean per image; the batch axis is never blurred)."""
    from scipy.ndimage import gaussian_filter
    a = np.asarray(arrs, dtype=np.float64)
    r = a - gaussian_filter(a, sigma=(0, sigma, sigma, 0), mode="wrap")   # sigma 0: that axis is left alone
    f = np.fft.fft2(r, axes=(1, 2))
    return np.fft.fftshift(np.log1p(np.abs(f)).mean(axis=3), axes=(1, 2))


def radial_profile(spec: np.ndarray) -> np.ndarray:
    """(H, W) centred spectrum -> (min(H, W) // 2 + 1,) mean over each integer radius from the centre."""
    h, w = spec.shape
    yy, xx = np.indices((h, w))
    r = np.rint(np.hypot(yy - h // 2, xx - w // 2)).astype(int)
    n = min(h, w) // 2 + 1
    keep = r < n
    sums = np.bincount(r[keep], weights=spec[keep], minlength=n)
    counts = np.bincount(r[keep], minlength=n)
    return sums / np.maximum(counts, 1)


def centre_crop(img: Image.Image, crop: int) -> tuple[np.ndarray, bool]:
    """RGB PIL -> (uint8 (crop, crop, 3), resized). The centre square at native resolution; an image
    smaller than the crop is enlarged first (bicubic), which blurs it: counted and reported."""
    w, h = img.size
    resized = min(w, h) < crop
    if resized:
        s = crop / min(w, h)
        img = img.resize((max(crop, round(w * s)), max(crop, round(h * s))), Image.Resampling.BICUBIC)
        w, h = img.size
    x0, y0 = (w - crop) // 2, (h - crop) // 2
    return np.asarray(img.crop((x0, y0, x0 + crop, y0 + crop)), dtype=np.uint8), resized


def image_spectrum(img: Image.Image, sigma: float = RESIDUAL_SIGMA) -> tuple[np.ndarray, int]:
    """One decoded RGB image -> (residual spectrum (c, c), c): the largest even centre crop up to MAX_CROP."""
    c = max(2, min(MAX_CROP, min(img.size)))
    c -= c % 2
    arr, _ = centre_crop(img, c)
    return residual_spectrum(arr, sigma), c


def auto_crop(props: pd.DataFrame) -> int:
    """Spectrum crop side: the 10th percentile of the images' shorter sides, even, in [8, MAX_CROP]."""
    sides = np.minimum(props["width"].dropna().to_numpy(float), props["height"].dropna().to_numpy(float))
    if len(sides) == 0:
        return 32
    c = int(np.percentile(sides, 10))
    return max(8, min(MAX_CROP, c - c % 2))


def dataset_spectra(ds, crop: int, sigma: float = RESIDUAL_SIGMA, progress=None) -> dict:
    """Mean residual spectra of a dataset per class and per source, and their 1-D radial averages.

    Returns {"crop", "sigma", "mean": {"REAL": (crop, crop), "FAKE": ...}, "count": {...},
    "source_mean": {source: (crop, crop)}, "source_count", "radial": {name: (crop//2+1,)},
    "diff": FAKE - REAL (crop, crop), "n_resized", "skipped": [(id, reason)]}. A class without images
    has no entry.
    """
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    src_sums: dict[str, np.ndarray] = {}
    src_counts: dict[str, int] = {}
    skipped, n_resized = [], 0
    batch: list[tuple[np.ndarray, str, str]] = []      # (crop (crop, crop, 3) uint8, class, source)

    def flush():
        spec = residual_spectra(np.stack([a for a, _, _ in batch]), sigma)        # (B, crop, crop)
        for store, count, key in ((sums, counts, 1), (src_sums, src_counts, 2)):
            names = np.array([b[key] for b in batch])
            for name in dict.fromkeys(names):
                if key == 2 and not name:
                    continue
                part = spec[names == name]
                store[name] = store.get(name, 0) + part.sum(axis=0)
                count[name] = count.get(name, 0) + len(part)
        batch.clear()
    for i in range(len(ds)):
        _, label, source = ds.items[i][:3]
        try:
            img = ds.load(i).image
        except ImageError as e:
            skipped.append((ds.item_id(i), str(e)))
            continue
        arr, resized = centre_crop(img, crop)
        n_resized += resized
        batch.append((arr, CLASS_NAMES[int(label)], source or ""))
        if len(batch) * crop * crop >= SPECTRA_PIXELS:
            flush()
        if progress and (i % 64 == 0 or i + 1 == len(ds)):
            progress(i + 1, len(ds))
    if batch:
        flush()
    mean = {k: sums[k] / counts[k] for k in CLASS_NAMES if k in sums}
    src_mean = {k: src_sums[k] / src_counts[k] for k in sorted(src_sums)}
    radial = {k: radial_profile(v) for k, v in mean.items()}
    radial.update({f"source:{k}": radial_profile(v) for k, v in src_mean.items()})
    out = {"crop": crop, "sigma": sigma, "mean": mean, "count": counts, "source_mean": src_mean,
           "source_count": src_counts, "radial": radial, "n_resized": n_resized, "skipped": skipped}
    out["diff"] = mean["FAKE"] - mean["REAL"] if {"REAL", "FAKE"} <= set(mean) else None
    return out


def radial_table(spectra: dict) -> pd.DataFrame:
    """The 1-D spectra as a table: radius (frequency bin), frequency (cycles/pixel), one column per curve."""
    crop = spectra["crop"]
    n = crop // 2 + 1
    df = pd.DataFrame({"radius": np.arange(n), "cycles_per_pixel": np.arange(n) / crop})
    for k, v in spectra["radial"].items():
        df[k] = v
    if spectra.get("diff") is not None:
        df["FAKE-REAL"] = radial_profile(spectra["diff"])
    return df


def spectra_npz_bytes(spectra: dict) -> bytes:
    arrays = {f"mean_{k}": v for k, v in spectra["mean"].items()}
    arrays.update({f"source_{k}": v for k, v in spectra["source_mean"].items()})
    arrays.update({f"radial_{k.replace('source:', 'source_')}": v for k, v in spectra["radial"].items()})
    if spectra.get("diff") is not None:
        arrays["diff_FAKE_minus_REAL"] = spectra["diff"]
    arrays["count_json"] = np.frombuffer(json.dumps({"class": spectra["count"], "source": spectra["source_count"],
                                                     "crop": spectra["crop"], "sigma": spectra["sigma"],
                                                     "n_resized": spectra["n_resized"]}).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load_spectra_npz(path) -> dict:
    """Inverse of spectra_npz_bytes (for the page and the report)."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["count_json"]).decode())
        mean = {k[5:]: z[k] for k in z.files if k.startswith("mean_")}
        src = {k[7:]: z[k] for k in z.files if k.startswith("source_")}
        radial = {k[7:].replace("source_", "source:", 1): z[k] for k in z.files if k.startswith("radial_")}
        diff = z["diff_FAKE_minus_REAL"] if "diff_FAKE_minus_REAL" in z.files else None
    return {"crop": meta["crop"], "sigma": meta["sigma"], "mean": mean, "count": meta["class"],
            "source_mean": src, "source_count": meta["source"], "radial": radial, "diff": diff,
            "n_resized": meta["n_resized"], "skipped": []}


def spectrum_figure_name(key: str) -> str:
    """The file name of one heat map of `spectrum_figures`: key a class name, "diff" or "source:NAME"."""
    if key.startswith("source:"):
        return "spectrum_source_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in key[7:]) + ".png"
    return f"spectrum_{key}.png"


def spectrum_figure(spectra: dict, key: str) -> bytes:
    """One heat map of `spectrum_figures` as PNG bytes (the Forensics page shows these files): a class's or a
    source's mean spectrum on the scale they all share, or "diff" (FAKE - REAL, centred on 0)."""
    from core.report.figures import heatmap_png
    if key == "diff":
        return heatmap_png(spectra["diff"], "FAKE - REAL", diverging=True)
    allv = list(spectra["mean"].values()) + list(spectra["source_mean"].values())
    lo, hi = float(min(v.min() for v in allv)), float(max(v.max() for v in allv))
    if key.startswith("source:"):
        name = key[7:]
        return heatmap_png(spectra["source_mean"][name], f"{name} (n = {spectra['source_count'][name]:,})",
                           vmin=lo, vmax=hi)
    return heatmap_png(spectra["mean"][key], f"{key} (n = {spectra['count'][key]:,})", vmin=lo, vmax=hi)


def spectrum_figures(spectra: dict) -> dict[str, bytes]:
    """{file name: PNG bytes}: per-class mean spectra on one shared scale, FAKE - REAL, each source, 1-D."""
    from core.report.figures import line_plot_png
    keys = list(spectra["mean"]) + (["diff"] if spectra.get("diff") is not None else []) + \
        [f"source:{k}" for k in spectra["source_mean"]]
    figs = {spectrum_figure_name(k): spectrum_figure(spectra, k) for k in keys}
    tab = radial_table(spectra)
    series = [{"x": tab["cycles_per_pixel"], "y": tab[c], "name": c, "dash": c.startswith("source:")}
              for c in tab.columns if c not in ("radius", "cycles_per_pixel", "FAKE-REAL")]
    figs["spectrum_1d.png"] = line_plot_png(series, "azimuthal mean of the residual spectrum",
                                            "frequency (cycles/pixel)", "mean log(1+|F|)")
    return figs


# ----------------------------------------------------------------------------- shortcut check

def feature_matrix(props: pd.DataFrame, groups=FEATURE_GROUPS) -> pd.DataFrame:
    """Numeric file-level features for the metadata-only classifier, columns prefixed by their group."""
    cols = {}
    if "format" in groups:
        for v in sorted(props["format"].fillna("none").astype(str).unique()):
            cols[f"format={v}"] = (props["format"].fillna("none").astype(str) == v).astype(float)
    if "jpeg_quality" in groups:
        cols["jpeg_quality"] = pd.to_numeric(props["jpeg_quality"], errors="coerce").fillna(-1).astype(float)
    if "subsampling" in groups:
        for v in sorted(props["subsampling"].fillna("none").astype(str).unique()):
            cols[f"subsampling={v}"] = (props["subsampling"].fillna("none").astype(str) == v).astype(float)
    if "pixel_size" in groups:
        cols["pixel_size=width"] = pd.to_numeric(props["width"], errors="coerce").fillna(0).astype(float)
        cols["pixel_size=height"] = pd.to_numeric(props["height"], errors="coerce").fillna(0).astype(float)
    if "bytes_per_pixel" in groups:
        cols["bytes_per_pixel"] = pd.to_numeric(props["bytes_per_pixel"], errors="coerce").fillna(0).astype(float)
    if "exif" in groups:
        cols["exif"] = props["has_exif"].fillna(False).astype(bool).astype(float)
    return pd.DataFrame(cols, index=props.index)


def metadata_only_accuracy(props: pd.DataFrame, groups=FEATURE_GROUPS, folds: int = 5, seed: int = 0) -> float | None:
    """Cross-validated balanced accuracy of a decision tree on file-level features alone (None when a
    class has fewer than 2 readable files). 0.5 = the files say nothing about the class.

    A depth-6 tree with balanced class weights: the features are few and mostly categorical, so the
    rules that give a class away ("PNG means REAL", "over 1.2 bytes per pixel means FAKE") are shallow
    splits; balanced weights make identical feature vectors in both classes score exactly 0.5."""
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    ok = props[props["error"].isna()] if "error" in props else props
    y = ok["label"].to_numpy(int)
    per_class = np.bincount(y, minlength=2)
    if per_class.min() < 2:
        return None
    X = feature_matrix(ok, groups).to_numpy()
    cv = StratifiedKFold(n_splits=int(min(folds, per_class.min())), shuffle=True, random_state=seed)
    clf = DecisionTreeClassifier(max_depth=6, min_samples_leaf=2, class_weight="balanced", random_state=seed)
    pred = cross_val_predict(clf, X, y, cv=cv)
    return float(balanced_accuracy_score(y, pred))


def _size_label(w, h) -> str:
    return f"{int(w)}x{int(h)}" if pd.notna(w) and pd.notna(h) else "unreadable"


def distributions(props: pd.DataFrame, bins: int = 10, top: int = 12) -> dict:
    """Per class, the distribution of every file property: {class: {property: {value: count}}}.

    Categorical properties count their values (the `top` most common pixel sizes, the rest as "other");
    bytes per pixel is binned on edges shared by both classes (so the bins line up).
    """
    p = props.copy()
    p["format"] = p["format"].fillna("unreadable").astype(str)
    p["jpeg_quality"] = [("n/a" if pd.isna(q) else f"{int(q)}" + ("" if e else " (approx.)"))
                         for q, e in zip(p["jpeg_quality"], p["jpeg_quality_exact"].fillna(False))]
    p["subsampling"] = p["subsampling"].fillna("n/a").astype(str)
    p["pixel_size"] = [_size_label(w, h) for w, h in zip(p["width"], p["height"])]
    common = p["pixel_size"].value_counts().index[:top]
    p["pixel_size"] = p["pixel_size"].where(p["pixel_size"].isin(common), "other")
    p["exif"] = p["has_exif"].map({True: "present", False: "absent"}).fillna("unreadable")
    bpp = pd.to_numeric(p["bytes_per_pixel"], errors="coerce")
    if bpp.notna().any():
        lo, hi = float(bpp.min()), float(bpp.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, bins + 1)
        idx = np.clip(np.searchsorted(edges, bpp.fillna(lo), side="right") - 1, 0, bins - 1)
        p["bytes_per_pixel_bin"] = [f"{edges[k]:.3f}-{edges[k + 1]:.3f}" if pd.notna(v) else "unreadable"
                                    for k, v in zip(idx, bpp)]
    else:
        p["bytes_per_pixel_bin"] = "unreadable"
    out = {}
    for k, name in enumerate(CLASS_NAMES):
        part = p[p["label"] == k]
        out[name] = {"n": int(len(part))}
        for prop, col in (("format", "format"), ("jpeg_quality", "jpeg_quality"), ("subsampling", "subsampling"),
                          ("pixel_size", "pixel_size"), ("bytes_per_pixel", "bytes_per_pixel_bin"), ("exif", "exif")):
            out[name][prop] = {str(v): int(c) for v, c in part[col].value_counts().sort_index().items()}
        b = pd.to_numeric(part["bytes_per_pixel"], errors="coerce").dropna()
        out[name]["bytes_per_pixel_summary"] = ({"mean": float(b.mean()), "median": float(b.median()),
                                                 "min": float(b.min()), "max": float(b.max())} if len(b) else None)
    return out


def distributions_table(per_class: dict) -> pd.DataFrame:
    """The distributions as one long table: property, value, class, count, share of the class."""
    rows = []
    for cls, d in per_class.items():
        for prop in FEATURE_GROUPS:
            for v, c in d.get(prop, {}).items():
                rows.append({"property": prop, "value": v, "class": cls, "count": c,
                             "share": c / d["n"] if d["n"] else None})
    return pd.DataFrame(rows, columns=["property", "value", "class", "count", "share"])


def shortcut_check(props: pd.DataFrame, seed: int = 0) -> dict:
    """The metadata-only classifier (all features, and each feature group alone) and the distributions.

    Returns {"metadata_only_accuracy", "flagged", "flag_threshold", "per_feature_accuracy", "per_class",
    "n", "n_unreadable"}: flagged when metadata_only_accuracy > FLAG_THRESHOLD.
    """
    acc = metadata_only_accuracy(props, seed=seed)
    per_feature = {g: metadata_only_accuracy(props, groups=(g,), seed=seed) for g in FEATURE_GROUPS}
    return {"metadata_only_accuracy": acc, "flagged": bool(acc is not None and acc > FLAG_THRESHOLD),
            "flag_threshold": FLAG_THRESHOLD, "per_feature_accuracy": per_feature,
            "per_class": distributions(props), "n": int(len(props)),
            "n_unreadable": int(props["error"].notna().sum())}


# ----------------------------------------------------------------------------- re-encoding control

def reencode_dataset(ds, out_dir, size: int, quality: int = 90, fit: str = "squash", progress=None):
    """Write every decodable item of ds, resized to size x size by the project's preprocessing and saved
    as JPEG at `quality` with 4:2:0 subsampling, as out_dir/{REAL,FAKE}/NNNNNN.jpg + manifest.csv.
    Returns (ManifestDataset over the copies, skipped [(id, reason)])."""
    from core.data.datasets import ManifestDataset
    from core.data.shifts import tensor_to_pil
    out_dir = Path(out_dir)
    rows, skipped = [], []
    cfg = PreprocessConfig(size=size, fit=fit)
    for i in range(len(ds)):
        _, label, source = ds.items[i][:3]
        try:
            img = tensor_to_pil(preprocess_image(ds.load(i).image, cfg))
        except ImageError as e:
            skipped.append((ds.item_id(i), str(e)))
            continue
        rel = f"{CLASS_NAMES[int(label)]}/{i:06d}.jpg"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(out_dir / rel, format="JPEG", quality=int(quality), subsampling=2)
        rows.append({"file": rel, "label": int(label), "source": source or "", "original": ds.item_id(i)})
        if progress and (i % 64 == 0 or i + 1 == len(ds)):
            progress(i + 1, len(ds))
    with open(out_dir / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "source", "original"])
        w.writeheader()
        w.writerows(rows)
    return ManifestDataset(out_dir / "manifest.csv"), skipped


def _summary(m: dict) -> dict:
    pc = m.get("per_class", {})
    return {"n": m.get("n"), "accuracy": m.get("accuracy"), "roc_auc": m.get("roc_auc"), "ece": m.get("ece"),
            "recall_REAL": pc.get("REAL", {}).get("recall"), "recall_FAKE": pc.get("FAKE", {}).get("recall")}


def reencoded_predictions(lm, ds, quality: int = 90, progress=None) -> tuple:
    """core.inference.evaluate's predictions on an identically re-encoded copy of ds (see reencode_dataset), the
    skipped items, and the metadata-only accuracy of the copies (near 0.5: one pipeline for both classes)."""
    from core.inference.evaluate import evaluate
    size = lm.preprocess.upsample_from or lm.preprocess.size
    with tempfile.TemporaryDirectory(prefix="reencode-") as tmp:
        rds, skipped = reencode_dataset(ds, tmp, size, quality, lm.preprocess.fit, progress)
        df, _ = evaluate(lm, rds)
        after_meta = metadata_only_accuracy(scan_files(rds))
    # Ids of the copies point back to the originals, so both tables join on `path`.
    originals = {f"{CLASS_NAMES[int(lab)]}/{i:06d}.jpg": ds.item_id(i) for i, (_, lab, *_) in enumerate(ds.items)}
    df["path"] = df["path"].map(lambda p: originals.get(p, p))
    return df, skipped, after_meta


def reencoding_summary(clean_df, re_df, threshold: float = 0.5, quality: int = 90, size: str = "",
                       metadata_after=None, skipped=()) -> dict:
    """Metrics (core.metrics.metrics) of the clean and the re-encoded predictions at `threshold`, and re-encoded - clean."""
    from core.metrics.metrics import classification_metrics
    clean = _summary(classification_metrics(clean_df["label"].to_numpy(), clean_df["prob_fake"].to_numpy(), threshold))
    re = _summary(classification_metrics(re_df["label"].to_numpy(), re_df["prob_fake"].to_numpy(), threshold))
    delta = lambda k: (re[k] - clean[k]) if re[k] is not None and clean[k] is not None else None   # noqa: E731
    return {"quality": int(quality), "subsampling": "4:2:0", "size": size, "threshold": threshold,
            "clean": clean, "reencoded": re, "delta_accuracy": delta("accuracy"), "delta_roc_auc": delta("roc_auc"),
            "delta_recall_REAL": delta("recall_REAL"), "delta_recall_FAKE": delta("recall_FAKE"),
            "metadata_only_accuracy_after": metadata_after,
            "skipped": [{"path": p, "reason": r} for p, r in skipped]}


def reencoding_control(lm, ds, quality: int = 90, threshold: float = 0.5, clean_df=None, progress=None) -> dict:
    """Re-encode both classes identically and evaluate again (core.inference.evaluate); deltas = re-encoded - clean.

    `clean_df` (core.inference.evaluate's predictions on ds) is computed when not given.
    """
    from core.inference.evaluate import evaluate
    if clean_df is None:
        clean_df, _ = evaluate(lm, ds)
    re_df, skipped, after = reencoded_predictions(lm, ds, quality, progress)
    size = lm.preprocess.upsample_from or lm.preprocess.size
    return reencoding_summary(clean_df, re_df, threshold, quality, f"{size}x{size}", after, skipped)


# ----------------------------------------------------------------------------- everything, cached

def analyse(ds, crop: int | None = None, sigma: float = RESIDUAL_SIGMA, progress=None, on_shortcuts=None) -> dict:
    """File properties, shortcut check and spectra of a dataset (model-independent).

    Returns {"props": DataFrame, "shortcuts": dict, "spectra": dict}. progress(done, total) covers both passes.
    on_shortcuts({"props", "shortcuts", "distributions"}), if given, is called with the shortcut check as soon
    as it is done, before the spectra (the second and longer pass): the Forensics page draws it meanwhile.
    """
    n = len(ds)
    props = scan_files(ds, progress=(lambda d, t: progress(d, 2 * t)) if progress else None)
    shortcuts = shortcut_check(props)
    if on_shortcuts is not None:
        on_shortcuts({"props": props, "shortcuts": dict(shortcuts),
                      "distributions": distributions_table(shortcuts["per_class"])})
    crop = crop or auto_crop(props[props["error"].isna()])
    spectra = dataset_spectra(ds, crop, sigma, progress=(lambda d, t: progress(n + d, 2 * t)) if progress else None)
    shortcuts["spectrum_crop"] = crop
    shortcuts["spectrum_images_enlarged"] = spectra["n_resized"]
    return {"props": props, "shortcuts": shortcuts, "spectra": spectra}


def result_files(res: dict) -> dict[str, bytes]:
    """The files of an analysis as {name: bytes} (see module docstring)."""
    files = {"spectra.npz": spectra_npz_bytes(res["spectra"]),
             "spectrum_1d.csv": radial_table(res["spectra"]).to_csv(index=False).encode(),
             "file_properties.csv": res["props"].to_csv(index=False).encode(),
             "shortcut_distributions.csv": distributions_table(res["shortcuts"]["per_class"]).to_csv(index=False).encode(),
             "shortcuts.json": json_bytes(res["shortcuts"])}
    files.update(spectrum_figures(res["spectra"]))
    return files


def cached_analysis(ds, runs_dir="runs", progress=None, on_shortcuts=None) -> Path:
    """`analyse` once per dataset fingerprint; returns the folder holding result_files (runs/forensics-*).
    on_shortcuts: see `analyse` (called only when the analysis is computed here)."""
    from core.model.checkpoint import result_lock
    out = analysis_dir(ds, runs_dir)
    with result_lock(out):           # a concurrent caller (the app's warm-up, another session) waits, then reads it
        if not (out / "shortcuts.json").is_file():
            write_result_dir(out, result_files(analyse(ds, progress=progress, on_shortcuts=on_shortcuts)))
    return out


def analysis_dir(ds, runs_dir="runs") -> Path:
    from core.inference.evaluate import dataset_fingerprint
    return result_dir(runs_dir, "forensics", dataset_fingerprint(ds), RESIDUAL_SIGMA)


def reencoding_dir(lm, ds, runs_dir="runs", quality: int = 90) -> Path:
    from core.inference.evaluate import dataset_fingerprint
    return result_dir(runs_dir, "reencode", lm.sha256, dataset_fingerprint(ds), quality)


def cached_reencoding(lm, ds, runs_dir="runs", quality: int = 90, threshold: float = 0.5, progress=None) -> dict:
    """`reencoding_control` against the cached clean evaluation (core.inference.evaluate.cached_evaluation); the
    re-encoded predictions are stored once per (weights, dataset, quality), any threshold is applied after."""
    from core.inference.evaluate import cached_evaluation
    out = reencoding_dir(lm, ds, runs_dir, quality)
    try:
        re_df = pd.read_csv(out / "predictions.csv", keep_default_na=False, dtype={"path": str, "source": str})
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        re_df, skipped, after = reencoded_predictions(lm, ds, quality, progress)
        size = lm.preprocess.upsample_from or lm.preprocess.size
        meta = {"size": f"{size}x{size}", "metadata_only_accuracy_after": after, "skipped": skipped}
        write_result_dir(out, {"predictions.csv": re_df.to_csv(index=False).encode(), "meta.json": json_bytes(meta)})
    clean_df, _ = cached_evaluation(lm, ds, runs_dir)
    return reencoding_summary(clean_df, re_df, threshold, quality, meta["size"], meta["metadata_only_accuracy_after"],
                              [tuple(x) for x in meta["skipped"]])


# ----------------------------------------------------------------------------- CLI

def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Residual spectra, shortcut check and re-encoding control of a dataset.")
    p.add_argument("--data", required=True, help="dataset path (CIFAKE root, class folder, manifest CSV, parquet)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--format", default="auto", choices=["auto", "cifake", "folder", "manifest", "parquet"],
                   help="force the dataset format (default: auto)")
    p.add_argument("--class-map", default=None, help="map class names to REAL/FAKE, e.g. 'AiArtData=FAKE,RealArt=REAL'")
    p.add_argument("--crop", type=int, default=None, help="spectrum crop side in px (default: 10th percentile of "
                                                           f"the shorter sides, at most {MAX_CROP})")
    p.add_argument("--weights", default="weights/default.pt",
                   help="checkpoint for the re-encoding control (default: weights/default.pt)")
    p.add_argument("--no-reencode", action="store_true", help="skip the re-encoding control (no model needed)")
    p.add_argument("--reencode-quality", type=int, default=90, help="JPEG quality of the re-encoding control (default: 90)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(FAKE) threshold (default: 0.5)")
    p.add_argument("--runs", default="runs", help="cache folder for the clean evaluation (default: runs)")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from tqdm import tqdm
    from core.model.checkpoint import CheckpointError, load_checkpoint
    from core.data.datasets import DatasetError, open_dataset
    from core.data.labels import LabelMappingError, parse_class_map
    try:
        ds = open_dataset(args.data, split=args.split, fmt=args.format, class_map=parse_class_map(args.class_map))
        lm = None if args.no_reencode else load_checkpoint(args.weights)
    except (DatasetError, LabelMappingError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"dataset: {ds.describe()}", file=sys.stderr)
    with tqdm(total=2 * len(ds), unit="img", desc="forensics") as bar:
        res = analyse(ds, crop=args.crop, progress=lambda d, t: bar.update(d - bar.n))
    if lm is not None:
        with tqdm(total=len(ds), unit="img", desc="re-encoding control") as bar:
            res["shortcuts"]["reencoding_control"] = cached_reencoding(
                lm, ds, args.runs, args.reencode_quality, args.threshold, progress=lambda d, t: bar.update(d - bar.n))
    files = result_files(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    s = res["shortcuts"]
    summary = {"n": s["n"], "metadata_only_accuracy": s["metadata_only_accuracy"], "flagged": s["flagged"],
               "per_feature_accuracy": s["per_feature_accuracy"], "spectrum_crop": s["spectrum_crop"]}
    rc = s.get("reencoding_control")
    if rc:
        summary.update({k: rc[k] for k in ("quality", "delta_accuracy", "delta_roc_auc", "metadata_only_accuracy_after")})
        summary["clean_accuracy"], summary["reencoded_accuracy"] = rc["clean"]["accuracy"], rc["reencoded"]["accuracy"]
    print(json.dumps(summary))
    if s["flagged"]:
        print(f"warning: file-level features alone separate the classes (balanced accuracy "
              f"{s['metadata_only_accuracy']:.3f} > {FLAG_THRESHOLD}): the detector may be learning how the files "
              "were made, not what they show", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
