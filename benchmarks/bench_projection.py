"""The embedding map's projection: scikit-learn PCA + t-SNE against umap-learn, on the same features, in one run.

    python benchmarks/bench_projection.py [--weights weights/default.pt] [--images 20000]

Builds a folder of --images images from data/sample (every split's images, then copies of the training images
with a small perturbation each: a horizontal flip, a brightness step of +-8 levels and a JPEG 90 re-encode, until
the count is reached), evaluates it (core.inference.evaluate.evaluate: the evaluation's own time), computes the
features (core.audits.features.compute_features) and lays them out with core.audits.embedding.project, each
projection in a fresh process (so umap-learn's first call pays its numba compilation, as the app's first map
does) on the full set and on the sample's test split (3,000 images, the app's default evaluation). Per run: seconds,
peak resident memory of the process and its growth during the projection, and two picture-quality measures on
a seeded 3,000-point subsample: scikit-learn's trustworthiness (k = 10) and the share of each point's 10 nearest
neighbours in feature space that stay among its 10 nearest on the map. Writes benchmarks/results/projection.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, print_table, save

QUALITY_POINTS = 3000
NEIGHBOURS = 10


def build_folder(dest: Path, n_images: int, seed: int = 0) -> int:
    """dest/{REAL,FAKE}/*.jpg: the sample's images, then perturbed copies of its training images, n_images in all."""
    from PIL import Image, ImageOps
    rng = np.random.default_rng(seed)
    originals = sorted((ROOT / "data" / "sample").glob("*/*/*.jpg"))
    train = [p for p in originals if p.parts[-3] == "train"]
    k = 0
    for cls in ("REAL", "FAKE"):
        (dest / cls).mkdir(parents=True, exist_ok=True)
    for p in originals[:n_images]:
        (dest / p.parent.name / f"{k:06d}.jpg").write_bytes(p.read_bytes())
        k += 1
    while k < n_images:
        p = train[rng.integers(len(train))]
        img = ImageOps.mirror(Image.open(p).convert("RGB"))
        step = int(rng.choice([-8, 8]))
        img = img.point(lambda v: max(0, min(255, v + step)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        (dest / p.parent.name / f"{k:06d}.jpg").write_bytes(buf.getvalue())
        k += 1
    return k


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MB: VmRSS (resident now), VmHWM (peak resident since this process's
    exec; unlike getrusage's ru_maxrss it does not count the parent's pages the child held between fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(method: str, features: str, out: str, seed: int, repeat: int) -> None:
    """One projection (twice with repeat=2: the second call is warm) in this fresh process; prints its JSON."""
    from core.audits.embedding import project
    x = np.load(features)
    before = status_mb("VmRSS")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        y = project(x, seed=seed, method=method)
        times.append(time.perf_counter() - t0)
    np.save(out, y)
    peak = status_mb("VmHWM")
    print(json.dumps({"seconds": times, "rss_before_mb": before, "peak_rss_mb": peak}))


def quality(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import NearestNeighbors
    idx = np.random.default_rng(seed).choice(len(x), min(len(x), QUALITY_POINTS), replace=False)
    xs, ys = x[idx].astype(np.float64), y[idx].astype(np.float64)
    nx = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(xs).kneighbors(xs, return_distance=False)[:, 1:]
    ny = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(ys).kneighbors(ys, return_distance=False)[:, 1:]
    kept = np.mean([len(set(a) & set(b)) / NEIGHBOURS for a, b in zip(nx, ny)])
    return {"trustworthiness": round(float(trustworthiness(xs, ys, n_neighbors=NEIGHBOURS)), 4),
            "knn_kept": round(float(kept), 4)}


def run_child(method: str, feats: np.ndarray, work: Path, seed: int, repeat: int) -> tuple[dict, np.ndarray]:
    f, out = work / f"x_{len(feats)}.npy", work / f"y_{method}_{len(feats)}.npy"
    np.save(f, feats)
    r = subprocess.run([sys.executable, __file__, "--child", method, "--features", str(f), "--layout", str(out),
                        "--seed", str(seed), "--repeat", str(repeat)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res, np.load(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"), help="default: weights/default.pt")
    ap.add_argument("--images", type=int, default=20000, help="images of the large set (default: 20000)")
    ap.add_argument("--seed", type=int, default=0, help="projection seed (default: 0)")
    ap.add_argument("--methods", default="tsne,umap", help="projections to measure (default: tsne,umap)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--features", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layout", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.features, args.layout, args.seed, args.repeat)
    from core.audits.features import compute_features
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    from core.model.checkpoint import load_checkpoint
    lm = load_checkpoint(args.weights)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n = build_folder(work / "images", args.images)
        ds = open_dataset(work / "images")
        t0 = time.perf_counter()
        evaluate(lm, ds)
        eval_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        big = compute_features(lm, ds).model
        feat_s = time.perf_counter() - t0
        test = compute_features(lm, open_dataset(ROOT / "data" / "sample", split="test")).model
        rows = []
        for feats, label in ((test, "sample test"), (big, f"{n:,} images")):
            for method in args.methods.split(","):
                res, y = run_child(method, feats, work, args.seed, repeat=2 if method == "umap" else 1)
                rows.append({"set": label, "images": len(feats), "projection": method,
                             "seconds_first": round(res["seconds"][0], 1),
                             "seconds_warm": round(res["seconds"][-1], 1) if len(res["seconds"]) > 1 else None,
                             "peak_rss_mb": round(res["peak_rss_mb"]), "rss_growth_mb":
                                 round(res["peak_rss_mb"] - res["rss_before_mb"]), **quality(feats, y, args.seed)})
                print_table(rows[-1:], list(rows[-1]))
    print(f"\nevaluation of {n:,} images: {eval_s:.1f} s; features: {feat_s:.1f} s; "
          f"load average at start {load_start[0]:.1f}, at end {os.getloadavg()[0]:.1f}\n")
    print_table(rows, list(rows[0]))
    save("projection", {"images": n, "evaluation_seconds": round(eval_s, 1), "features_seconds": round(feat_s, 1),
                        "load_average_start": load_start, "load_average_end": os.getloadavg(),
                        "quality_points": QUALITY_POINTS, "neighbours": NEIGHBOURS, "rows": rows})


if __name__ == "__main__":
    main()
