"""Error slices: where in the data does the model fail? Accuracy per source and per binned image property.

    python -m core slices --weights weights/default.pt --data data/sample/test --out runs/slices

Properties of every image (`image_properties`, measured on the decoded original, before preprocessing):
brightness (mean luma, ITU-R BT.601, 0-255), saturation (mean HSV saturation, 0-1), sharpness (variance
of the 4-neighbour Laplacian of the luma), JPEG quality (estimated from the quantisation tables by
core.audits.forensics) and original size (width x height). Continuous properties are cut into quartiles of
the evaluation set; the JPEG quality and the size are used as they are when they take at most
MAX_LEVELS values, else cut into quartiles too.

Each slice: images, errors (false positives, false negatives), accuracy and its 95% Wilson interval,
worst first (lowest accuracy; equal accuracy, larger slice first). The predictions are
core.inference.evaluate's, at the given threshold. Writes DIR/slices.csv, DIR/properties.csv, DIR/members.csv.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.images import ImageError
from core.metrics.metrics import annotate_calls
from core.metrics.stats import wilson_interval

PROPERTIES = ("brightness", "saturation", "sharpness", "jpeg_quality", "original_size")
DIMENSIONS = ("source",) + PROPERTIES
MAX_LEVELS = 8       # a discrete property with more distinct values than this is binned into quartiles
N_BINS = 4


def measure(img) -> dict:
    """Brightness, saturation and sharpness of one decoded RGB PIL image (see module docstring)."""
    b, s, k = measure_batch(np.asarray(img, dtype=np.uint8)[None])
    return {"brightness": float(b[0]), "saturation": float(s[0]), "sharpness": float(k[0])}


def measure_batch(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (B, H, W, 3) images of one size -> (brightness, saturation, sharpness), each float64 (B,).

    Saturation is Pillow's HSV S channel (Convert.c rgb2hsv: S = trunc(255 * float32((max - min) / max)), 0 for
    grey), computed here for the whole batch: the same byte as img.convert("HSV") for every one of the 2^24
    colours (checked once); tests/test_compare_slices.py checks it against Pillow on random images."""
    from scipy.ndimage import correlate1d
    x = np.asarray(rgb, dtype=np.uint8)
    luma = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])             # (B, H, W)
    mx, mn = x.max(axis=3), x.min(axis=3)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (mx.astype(np.float32) - mn.astype(np.float32)) / mx.astype(np.float32)
    sat = np.where(mx == mn, 0, np.clip(np.floor(s.astype(np.float64) * 255.0), 0, 255)).astype(np.uint8)
    # scipy.ndimage.laplace(luma, mode="reflect") per image: [1, -2, 1] along H, plus the same along W
    lap = correlate1d(luma, [1, -2, 1], axis=1, mode="reflect") + correlate1d(luma, [1, -2, 1], axis=2, mode="reflect")
    return (luma.mean(axis=(1, 2)), (sat.astype(np.float64) / 255.0).mean(axis=(1, 2)), lap.var(axis=(1, 2)))


# Pixels per vectorised measure_batch call: the sample's 3,000 images one at a time were 2.2 s of the slices'
# 6.1 s of image properties (cProfile, one core, under load), mostly Python and Pillow's per-call overhead.
MEASURE_PIXELS = 512 * 32 * 32


def image_properties(ds, progress=None) -> pd.DataFrame:
    """One row per item: path, brightness, saturation, sharpness, jpeg_quality, width, height,
    original_size ("WxH"), error (reason, or "" when measured)."""
    from core.audits.forensics import file_properties, item_bytes
    from core.data.images import load_image
    rows = []
    pending: dict[tuple, list] = {}           # decoded size -> [(row index, uint8 (H, W, 3))]

    def flush(shape):
        items = pending.pop(shape)
        for (k, _), b, s, sh in zip(items, *measure_batch(np.stack([a for _, a in items]))):
            rows[k].update({"brightness": float(b), "saturation": float(s), "sharpness": float(sh)})
    for i in range(len(ds)):
        row = {"path": ds.item_id(i), "error": ""}
        rows.append(row)
        try:
            data = item_bytes(ds, i)
            loaded = load_image(data)
            arr = loaded.pixels.permute(1, 2, 0).numpy()                   # (H, W, 3) uint8
            row["jpeg_quality"] = file_properties(data)["jpeg_quality"]
            w, h = loaded.original_size
            row.update({"width": w, "height": h, "original_size": f"{w}x{h}"})
            pending.setdefault(arr.shape, []).append((i, arr))
            if len(pending[arr.shape]) * arr.shape[0] * arr.shape[1] >= MEASURE_PIXELS:
                flush(arr.shape)
        except ImageError as e:
            row["error"] = str(e)
        if progress and (i % 64 == 0 or i + 1 == len(ds)):
            progress(i + 1, len(ds))
    for shape in list(pending):
        flush(shape)
    cols = ["path", "brightness", "saturation", "sharpness", "jpeg_quality", "width", "height", "original_size", "error"]
    return pd.DataFrame(rows, columns=cols)


def _quartiles(values: pd.Series, fmt: str) -> pd.Series:
    """Quartile bins labelled "lo-hi" (with the property's own number format); ties may merge bins."""
    v = pd.to_numeric(values, errors="coerce")
    if v.notna().sum() == 0:
        return pd.Series("n/a", index=values.index)
    cats = pd.qcut(v, N_BINS, duplicates="drop")
    labels = {c: f"{format(c.left if k else v.min(), fmt)}-{format(c.right, fmt)}"
              for k, c in enumerate(cats.cat.categories)}
    return cats.map(labels).astype(object).where(v.notna(), "n/a")


def assign_slices(merged: pd.DataFrame) -> pd.DataFrame:
    """Per image, the slice it belongs to along each dimension (columns `slice:<dimension>`)."""
    out = pd.DataFrame(index=merged.index)
    if "source" in merged:
        out["slice:source"] = merged["source"].astype(str).replace("", "n/a")
    out["slice:brightness"] = _quartiles(merged["brightness"], ".1f")
    out["slice:saturation"] = _quartiles(merged["saturation"], ".3f")
    out["slice:sharpness"] = _quartiles(merged["sharpness"], ".1f")
    q = pd.to_numeric(merged["jpeg_quality"], errors="coerce")
    out["slice:jpeg_quality"] = (q.map(lambda x: "not JPEG" if np.isnan(x) else f"{int(x)}")
                                 if q.nunique() <= MAX_LEVELS else _quartiles(q, ".0f"))
    if merged["original_size"].nunique() <= MAX_LEVELS:
        out["slice:original_size"] = merged["original_size"].fillna("n/a").astype(str)
    else:
        pixels = pd.to_numeric(merged["width"], errors="coerce") * pd.to_numeric(merged["height"], errors="coerce")
        out["slice:original_size"] = _quartiles(pixels, ",.0f").map(lambda s: s if s == "n/a" else f"{s} px")
    return out


def join(preds: pd.DataFrame, props: pd.DataFrame) -> pd.DataFrame:
    """Predictions (core.inference.evaluate) joined with image properties on `path`, plus the slice columns."""
    m = preds.merge(props.drop(columns=["error"]), on="path", how="left")
    return pd.concat([m, assign_slices(m)], axis=1)


def slice_table(merged: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per (dimension, slice): images, errors, false_positives, false_negatives, accuracy, ci_low,
    ci_high, mean_prob_fake; worst first (see module docstring). `merged` comes from `join`."""
    pred = (merged["prob_fake"] >= threshold).astype(int)
    correct = pred == merged["label"]
    rows = []
    for dim in DIMENSIONS:
        col = f"slice:{dim}"
        if col not in merged:
            continue
        for value, g in merged.groupby(col, sort=True):
            if dim == "source" and value == "n/a":
                continue
            ok = correct.loc[g.index]
            n, k = len(g), int(ok.sum())
            lo, hi = wilson_interval(k, n)
            rows.append({"dimension": dim, "slice": str(value), "images": n, "errors": n - k,
                         "false_positives": int(((pred.loc[g.index] == 1) & (g["label"] == 0)).sum()),
                         "false_negatives": int(((pred.loc[g.index] == 0) & (g["label"] == 1)).sum()),
                         "accuracy": k / n, "ci_low": lo, "ci_high": hi,
                         "mean_prob_fake": float(g["prob_fake"].mean())})
    df = pd.DataFrame(rows, columns=["dimension", "slice", "images", "errors", "false_positives", "false_negatives",
                                     "accuracy", "ci_low", "ci_high", "mean_prob_fake"])
    return df.sort_values(["accuracy", "images"], ascending=[True, False], kind="stable").reset_index(drop=True)


def members(merged: pd.DataFrame, dimension: str, value: str, threshold: float = 0.5) -> pd.DataFrame:
    """The images of one slice, errors first (most confident error first), then the rest."""
    g = annotate_calls(merged[merged[f"slice:{dimension}"].astype(str) == str(value)], threshold)  # core.metrics.metrics.confidence
    return g.sort_values(["correct", "confidence"], ascending=[True, False], kind="stable")


def cached_properties(ds, runs_dir="runs", progress=None) -> pd.DataFrame:
    """`image_properties` once per dataset fingerprint (runs/properties-*/properties.csv)."""
    from core.report.audit_cache import result_dir, write_result_dir
    from core.inference.evaluate import dataset_fingerprint
    from core.model.checkpoint import result_lock
    out = result_dir(runs_dir, "properties", dataset_fingerprint(ds))
    path = out / "properties.csv"
    with result_lock(out):           # a concurrent caller (the app's warm-up, another session) waits, then reads it
        if path.is_file():
            try:
                return read_properties(path)
            except (OSError, ValueError):
                pass
        props = image_properties(ds, progress)
        write_result_dir(out, {"properties.csv": props.to_csv(index=False).encode()})
        return props


def read_properties(path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values={"brightness": [""], "saturation": [""],
                                                               "sharpness": [""], "jpeg_quality": [""],
                                                               "width": [""], "height": [""]},
                       dtype={"path": str, "original_size": str, "error": str})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Accuracy per source and per binned image property, worst first.")
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--data", required=True, help="dataset path (any supported format)")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--class-map", default=None, help="map class names to REAL/FAKE, e.g. 'AiArtData=FAKE,RealArt=REAL'")
    p.add_argument("--threshold", type=float, default=0.5, help="P(FAKE) threshold (default: 0.5)")
    p.add_argument("--out", default=None, help="folder for slices.csv, properties.csv, members.csv (default: print)")
    p.add_argument("--runs", default="runs", help="evaluation cache folder (default: runs)")
    p.add_argument("--top", type=int, default=10, help="slices printed (default: 10)")
    args = p.parse_args(argv)
    from core.model.checkpoint import CheckpointError, load_checkpoint
    from core.data.datasets import DatasetError, open_dataset
    from core.inference.evaluate import cached_evaluation
    from core.data.labels import LabelMappingError, parse_class_map
    try:
        lm = load_checkpoint(args.weights)
        ds = open_dataset(args.data, split=args.split, class_map=parse_class_map(args.class_map))
    except (CheckpointError, DatasetError, LabelMappingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preds, _ = cached_evaluation(lm, ds, args.runs)
    props = cached_properties(ds, args.runs)
    merged = join(preds, props)
    table = slice_table(merged, args.threshold)
    print(table.head(args.top).to_string(index=False), file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "slices.csv", index=False)
        props.to_csv(out / "properties.csv", index=False)
        merged.to_csv(out / "members.csv", index=False)
    worst = table.head(3)[["dimension", "slice", "images", "accuracy", "ci_low", "ci_high"]].to_dict("records")
    print(json.dumps({"n": len(merged), "threshold": args.threshold, "worst": worst}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
