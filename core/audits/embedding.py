"""An embedding map of an evaluation: every image placed in 2-D by its features, with its label, P(FAKE) and verdict.

    python -m core embedding --weights weights/default.pt --data data/sample --split test --out runs/map

Features: the model's pooled last-block features (`--features model`, the default) or the familiarity's content
features where the checkpoint has a content encoder (`--features content`; core.audits.features). The layout is
PCA to PCA_DIMS dimensions, then scikit-learn's t-SNE up to TSNE_MAX_IMAGES images and umap-learn's UMAP above
(`projection_for`; `--projection` forces one), seeded: the same features and seed give the same map. P(FAKE) and the verdict are the evaluation's (core.inference.evaluate, cached under runs/),
joined on the image path, so the map's numbers are every page's numbers.

Writes DIR/embedding.csv (path, x, y, label, prob_fake, verdict, source; verdict at --threshold) and
DIR/embedding.json (features kind and sha256, projection and its settings, seed, seconds). The layout itself is
cached under runs/embedding-KEY, keyed by the result format, weights, preprocessing, dataset, features kind,
projection and seed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# `python benchmarks/bench_projection.py` measures both on the same features (benchmarks/results/projection.json;
# docs/audits.md): on the sample's 3,000 test images t-SNE took 11.3 s and kept 56% of each image's 10 nearest
# neighbours, UMAP 16.3 s from a fresh process and 44%; on 20,000 images t-SNE took 103 s, UMAP 34.9 s.
PROJECTIONS = ("tsne", "umap")
TSNE_MAX_IMAGES = 5000
PCA_DIMS = 50               # PCA before the projection: the neighbour search runs on 50 numbers per image, not 512
PERPLEXITY = 30.0           # t-SNE: about the number of neighbours each point keeps close (scikit-learn's default)
UMAP_NEIGHBOURS = 15        # UMAP: its default
EMBEDDING_VERSION = 1       # bump when the layout's definition changes (part of the runs/ key)
EMBEDDING_COLUMNS = ["path", "x", "y", "label", "prob_fake", "verdict", "source"]


def projection_for(n_images: int) -> str:
    """The projection of a map of n_images: "tsne" up to TSNE_MAX_IMAGES, else "umap"."""
    return "tsne" if n_images <= TSNE_MAX_IMAGES else "umap"


def project(features: np.ndarray, seed: int = 0, method: str | None = None, progress=None) -> np.ndarray:
    """(N, D) features -> (N, 2) float32 layout, the same for the same features and seed on one machine (t-SNE
    starts from the PCA, so its map does not depend on the seed; UMAP's does).

    Features are reduced by PCA to min(PCA_DIMS, N - 1, D) dimensions (centred, not scaled), then laid out by
    `method` (default `projection_for(N)`): "tsne" (scikit-learn, Barnes-Hut, perplexity min(PERPLEXITY, (N - 1) /
    3)) or "umap" (umap-learn). N < 4 gets the PCA's first two components. `progress(stage)` is called with a short text
    before each stage."""
    method = method or projection_for(len(features))
    if method not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, not {method!r}")
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits
    x = np.asarray(features, np.float64)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    say = progress or (lambda stage: None)
    # One thread for BLAS and OpenMP: on this 2-core machine, shared with torch and other processes, a second
    # thread that spins while waiting made a 3,000 x 512 PCA 14x slower (2.9 s against 0.2 s) and a 300-point
    # t-SNE 18x slower (35 s against 1.9 s), both measured at a load average of 6-7.
    with threadpool_limits(limits=1):
        say("PCA")
        dims = max(1, min(PCA_DIMS, n - 1, x.shape[1]))
        p = PCA(dims, random_state=seed).fit_transform(x) if n > 1 else np.zeros((1, 1))
        if n < 4 or p.shape[1] < 2:
            out = np.zeros((n, 2))
            out[:, :min(2, p.shape[1])] = p[:, :2]
            return out.astype(np.float32)
        say(f"{method} on {n:,} images")
        if method == "tsne":
            from sklearn.manifold import TSNE
            y = TSNE(2, perplexity=min(PERPLEXITY, (n - 1) / 3), init="pca", random_state=seed).fit_transform(p)
        else:
            import umap
            y = umap.UMAP(n_neighbors=min(UMAP_NEIGHBOURS, n - 1), random_state=seed, n_jobs=1).fit_transform(p)
    return np.asarray(y, np.float32)


def embedding_dir(runs_dir, lm, ds, kind: str, method: str, seed: int) -> Path:
    """runs/embedding-KEY for (weights, preprocessing, dataset, features kind, projection, seed)."""
    from core.audits.features import FEATURES_VERSION
    from core.inference.evaluate import dataset_fingerprint
    from core.report.audit_cache import result_dir
    return result_dir(runs_dir, "embedding", EMBEDDING_VERSION, FEATURES_VERSION, lm.sha256,
                      json.dumps(lm.preprocess.to_dict(), sort_keys=True), dataset_fingerprint(ds), kind, method, seed)


def cached_layout(lm, ds, runs_dir="runs", kind: str = "model", seed: int = 0, method: str | None = None,
                  progress=None) -> tuple[pd.DataFrame, dict]:
    """(layout DataFrame path, x, y; meta dict) once per key (`embedding_dir`); later calls read it from disk.
    `method`: default `projection_for(len(ds))`.

    `progress(fraction, text)`: the features pass reports 0-0.8, the projection 0.8 and 0.9 (it has no finer
    steps). Raises ValueError for a features kind the checkpoint lacks."""
    from core.audits.features import array_sha256, cached_features
    from core.model.checkpoint import result_lock
    from core.report.audit_cache import json_bytes, write_result_dir
    method = method or projection_for(len(ds))
    out = embedding_dir(runs_dir, lm, ds, kind, method, seed)
    tell = progress or (lambda f, t: None)
    with result_lock(out):
        hit = read_layout(out)
        if hit is not None:
            return hit
        table = cached_features(lm, ds, runs_dir,
                                progress=lambda d, t: tell(0.8 * d / max(t, 1), f"Features: {d:,}/{t:,} images"))
        feats = table.of_kind(kind)
        stages = iter((0.8, 0.9))
        t0 = time.perf_counter()
        xy = project(feats, seed, method, progress=lambda stage: tell(next(stages, 0.9), f"Layout: {stage}"))
        meta = {"features": kind, "features_sha256": array_sha256(feats), "features_shape": list(feats.shape),
                "projection": method, "pca_dims": PCA_DIMS, "perplexity": PERPLEXITY if method == "tsne" else None,
                "umap_neighbours": UMAP_NEIGHBOURS if method == "umap" else None, "seed": seed,
                "seconds": round(time.perf_counter() - t0, 3), "images": len(table),
                "skipped": [list(s) for s in table.skipped]}
        layout = pd.DataFrame({"path": table.ids, "x": xy[:, 0], "y": xy[:, 1]})
        write_result_dir(out, {"layout.csv": layout.to_csv(index=False).encode(), "embedding.json": json_bytes(meta)})
        return layout, meta


def read_layout(out_dir) -> tuple[pd.DataFrame, dict] | None:
    out_dir = Path(out_dir)
    try:
        meta = json.loads((out_dir / "embedding.json").read_text())
        layout = pd.read_csv(out_dir / "layout.csv", keep_default_na=False, dtype={"path": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return layout, meta


def embedding_table(layout: pd.DataFrame, predictions: pd.DataFrame, lm, threshold: float = 0.5) -> pd.DataFrame:
    """The map's rows (EMBEDDING_COLUMNS, then `correct`): the layout joined on `path` with the evaluation's
    predictions (core.inference.evaluate), the verdict at `threshold` (core.inference.evaluate.add_verdicts) and
    whether the call at `threshold` is right (core.metrics.metrics.annotate_calls). Rows follow the layout."""
    from core.inference.evaluate import add_verdicts
    from core.metrics.metrics import annotate_calls
    preds = annotate_calls(add_verdicts(predictions, lm, threshold), threshold)
    merged = layout.merge(preds.drop(columns=[c for c in ("x", "y") if c in preds]), on="path", how="inner")
    return merged[EMBEDDING_COLUMNS + ["correct"]].reset_index(drop=True)


def build_embedding(lm, ds, runs_dir="runs", kind: str = "model", seed: int = 0, threshold: float = 0.5,
                    method: str | None = None, progress=None) -> tuple[pd.DataFrame, dict]:
    """(embedding_table, layout meta) of (model, dataset), from runs/ where stored: the CLI's and the Map page's."""
    from core.inference.evaluate import cached_evaluation
    layout, meta = cached_layout(lm, ds, runs_dir, kind, seed, method, progress)
    preds, _ = cached_evaluation(lm, ds, runs_dir)
    return embedding_table(layout, preds, lm, threshold), meta


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="An embedding map of an evaluation: 2-D layout of the images' features.")
    from core.audits.features import add_input_args
    add_input_args(p)
    p.add_argument("--out", required=True, help="folder for embedding.csv and embedding.json")
    p.add_argument("--features", default="model", choices=["model", "content"],
                   help="the model's features, or the familiarity's content features (default: model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the PCA and the projection (default: 0)")
    p.add_argument("--projection", default=None, choices=PROJECTIONS,
                   help=f"default: tsne up to {TSNE_MAX_IMAGES:,} images, umap above")
    p.add_argument("--threshold", type=float, default=0.5, help="P(FAKE) threshold of the verdict (default: 0.5)")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from core.audits.features import run_cli, write_files
    res = run_cli(args, "embedding", lambda lm, ds, _, progress: build_embedding(
        lm, ds, args.runs, args.features, args.seed, args.threshold, args.projection, progress))
    if res is None:
        return 2
    table, meta = res
    write_files(args.out, {"embedding.csv": table[EMBEDDING_COLUMNS].to_csv(index=False).encode(),
                           "embedding.json": json.dumps({**meta, "threshold": args.threshold}, indent=2).encode()},
                meta["skipped"])
    print(json.dumps({"images": len(table), "features": meta["features"], "projection": meta["projection"],
                      "seed": meta["seed"], "seconds": meta["seconds"], "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
