"""Compare two models on the same data: paired metrics with bootstrap intervals, ROC curves, the
disagreement table, McNemar's exact test and per-source deltas.

    python -m core.compare --weights weights/default.pt weights/seed-v1.pt --data data/sample/test --out runs/compare

Both models are evaluated by core.evaluate (cached under --runs, as the app does), joined on the image
id, and cut at the same threshold. Bootstrap intervals are percentile intervals over 1,000 paired
resamples, stratified by class, seed 0: model A and B are scored on the same resamples, so the
interval of the difference B - A is paired too. McNemar's exact test asks whether the two error rates
differ, using only the images on which exactly one model is right.

Writes DIR/compare.json (n, both_right, only_a, only_b, both_wrong, mcnemar_p, metrics of A and B with
intervals, deltas, per-source table), DIR/disagreements.csv (one row per image), DIR/per_source.csv,
DIR/roc.csv and DIR/roc.png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .labels import CLASS_NAMES
from .metrics import classification_metrics, expected_calibration_error, roc_curve
from .stats import bootstrap_indices, mcnemar_exact, percentile_interval, wilson_interval

CELLS = ("both_right", "only_a", "only_b", "both_wrong")
CELL_MEANING = {"both_right": "both models right", "only_a": "only A right", "only_b": "only B right",
                "both_wrong": "both models wrong"}


class CompareError(ValueError):
    """Two evaluations that cannot be compared (no common images, conflicting labels)."""


def join_predictions(df_a: pd.DataFrame, df_b: pd.DataFrame) -> pd.DataFrame:
    """Inner join of two core.evaluate prediction tables on `path`: path, label, source, prob_a, prob_b."""
    m = df_a[["path", "label", "source", "prob_fake"]].merge(
        df_b[["path", "label", "prob_fake"]], on="path", suffixes=("_a", "_b"), validate="one_to_one")
    if m.empty:
        raise CompareError("the two evaluations have no image in common")
    if (m["label_a"] != m["label_b"]).any():
        raise CompareError(f"{int((m['label_a'] != m['label_b']).sum())} images have different labels in the two "
                           "evaluations: they were not run on the same data")
    return m.rename(columns={"label_a": "label", "prob_fake_a": "prob_a", "prob_fake_b": "prob_b"}).drop(
        columns="label_b")


def _auc(y, p):
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


STATS = {   # name -> f(y, p, threshold); one definition each, shared with core.metrics
    "accuracy": lambda y, p, t: float(((p >= t).astype(int) == y).mean()),
    "roc_auc": lambda y, p, t: _auc(y, p),
    "ece": lambda y, p, t: expected_calibration_error(y, p),
    "recall_REAL": lambda y, p, t: float((p[y == 0] < t).mean()) if (y == 0).any() else None,
    "recall_FAKE": lambda y, p, t: float((p[y == 1] >= t).mean()) if (y == 1).any() else None,
}


def compare_predictions(joined: pd.DataFrame, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict:
    """Everything the Compare page and compare.json show, from a `join_predictions` table (see module docstring).

    Returns {"n", "threshold", both_right/only_a/only_b/both_wrong (counts), "mcnemar_p", "metrics": {"a": {stat:
    {"value", "ci_low", "ci_high"}}, "b": ..., "delta": ...}, "full_metrics": {"a", "b"} (core.metrics),
    "per_source": [rows]}.
    """
    y = joined["label"].to_numpy(np.int64)
    pa, pb = joined["prob_a"].to_numpy(float), joined["prob_b"].to_numpy(float)
    ra = (pa >= threshold).astype(int) == y
    rb = (pb >= threshold).astype(int) == y
    counts = {"both_right": int((ra & rb).sum()), "only_a": int((ra & ~rb).sum()),
              "only_b": int((~ra & rb).sum()), "both_wrong": int((~ra & ~rb).sum())}
    reps = {k: {"a": [], "b": [], "delta": []} for k in STATS}
    for idx in bootstrap_indices(len(y), n_boot, seed, strata=y):
        for k, f in STATS.items():
            va, vb = f(y[idx], pa[idx], threshold), f(y[idx], pb[idx], threshold)
            reps[k]["a"].append(va)
            reps[k]["b"].append(vb)
            reps[k]["delta"].append(None if va is None or vb is None else vb - va)
    metrics = {"a": {}, "b": {}, "delta": {}}
    for k, f in STATS.items():
        va, vb = f(y, pa, threshold), f(y, pb, threshold)
        for side, v in (("a", va), ("b", vb), ("delta", None if va is None or vb is None else vb - va)):
            lo, hi = percentile_interval(reps[k][side])
            metrics[side][k] = {"value": v, "ci_low": lo, "ci_high": hi}
    per_source = []
    for src, g in joined.assign(ra=ra, rb=rb).groupby("source", sort=True):
        if not str(src):
            continue
        n = len(g)
        a_lo, a_hi = wilson_interval(int(g["ra"].sum()), n)
        b_lo, b_hi = wilson_interval(int(g["rb"].sum()), n)
        labels = sorted({CLASS_NAMES[int(v)] for v in g["label"]})
        per_source.append({"source": src, "classes": "/".join(labels), "n": n,
                           "accuracy_a": float(g["ra"].mean()), "ci_low_a": a_lo, "ci_high_a": a_hi,
                           "accuracy_b": float(g["rb"].mean()), "ci_low_b": b_lo, "ci_high_b": b_hi,
                           "delta": float(g["rb"].mean() - g["ra"].mean()),
                           "only_a": int((g["ra"] & ~g["rb"]).sum()), "only_b": int((~g["ra"] & g["rb"]).sum())})
    return {"n": int(len(y)), "threshold": threshold, **counts,
            "mcnemar_p": mcnemar_exact(counts["only_a"], counts["only_b"]),
            "n_boot": n_boot, "seed": seed, "metrics": metrics,
            "full_metrics": {"a": classification_metrics(y, pa, threshold), "b": classification_metrics(y, pb, threshold)},
            "per_source": per_source}


def disagreement_cells(joined: pd.DataFrame, threshold: float = 0.5) -> pd.Series:
    """Per image: which of CELLS it falls in at `threshold`."""
    y = joined["label"].to_numpy()
    ra = (joined["prob_a"].to_numpy() >= threshold).astype(int) == y
    rb = (joined["prob_b"].to_numpy() >= threshold).astype(int) == y
    cell = np.where(ra & rb, "both_right", np.where(ra, "only_a", np.where(rb, "only_b", "both_wrong")))
    return pd.Series(cell, index=joined.index, name="cell")


def metrics_table(res: dict, name_a: str = "A", name_b: str = "B") -> pd.DataFrame:
    """Side-by-side metrics with their intervals, one row per statistic."""
    rows = []
    for k in STATS:
        a, b, d = (res["metrics"][s][k] for s in ("a", "b", "delta"))
        rows.append({"metric": k, f"{name_a}": a["value"], f"{name_a} 95% CI": _ci(a), f"{name_b}": b["value"],
                     f"{name_b} 95% CI": _ci(b), "B - A": d["value"], "B - A 95% CI": _ci(d)})
    return pd.DataFrame(rows)


def _ci(d) -> str:
    if d["value"] is None or np.isnan(d["ci_low"]):
        return "n/a"
    return f"[{d['ci_low']:.4f}, {d['ci_high']:.4f}]"


def roc_table(joined: pd.DataFrame) -> pd.DataFrame:
    """Both ROC curves in one long table: model, fpr, tpr, threshold."""
    parts = []
    for side in ("a", "b"):
        r = roc_curve(joined["label"].to_numpy(), joined[f"prob_{side}"].to_numpy())
        parts.append(pd.DataFrame({"model": side.upper(), "fpr": r["fpr"], "tpr": r["tpr"], "threshold": r["thresholds"]}))
    return pd.concat(parts, ignore_index=True)


def compare_files(joined: pd.DataFrame, res: dict, name_a: str, name_b: str) -> dict[str, bytes]:
    from .audit_cache import json_bytes
    from .figures import line_plot_png
    roc = roc_table(joined)
    auc = {s: res["metrics"][s.lower()]["roc_auc"]["value"] for s in ("A", "B")}
    png = line_plot_png([{"x": g["fpr"], "y": g["tpr"], "name": f"{m} AUC {auc[m]:.3f}" if auc[m] is not None else m}
                         for m, g in roc.groupby("model")], f"ROC: A = {name_a}, B = {name_b}",
                        "false positive rate", "true positive rate", xlim=(0, 1), ylim=(0, 1), diagonal=True)
    per_image = joined.assign(cell=disagreement_cells(joined, res["threshold"]))
    return {"compare.json": json_bytes({"model_a": name_a, "model_b": name_b, **res}),
            "disagreements.csv": per_image.to_csv(index=False).encode(),
            "per_source.csv": pd.DataFrame(res["per_source"]).to_csv(index=False).encode(),
            "metrics.csv": metrics_table(res, "A", "B").to_csv(index=False).encode(),
            "roc.csv": roc.to_csv(index=False).encode(), "roc.png": png}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compare two checkpoints on the same data.")
    p.add_argument("--weights", nargs=2, required=True, metavar=("A", "B"), help="the two checkpoints")
    p.add_argument("--data", required=True, help="dataset path (any supported format)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--class-map", default=None, help="map class names to REAL/FAKE, e.g. 'AiArtData=FAKE,RealArt=REAL'")
    p.add_argument("--threshold", type=float, default=0.5, help="P(FAKE) threshold for both models (default: 0.5)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--runs", default="runs", help="evaluation cache folder (default: runs)")
    args = p.parse_args(argv)
    from .checkpoint import CheckpointError, load_checkpoint
    from .datasets import DatasetError, open_dataset
    from .evaluate import cached_evaluation
    from .labels import LabelMappingError, parse_class_map
    try:
        lms = [load_checkpoint(w) for w in args.weights]
        ds = open_dataset(args.data, split=args.split, class_map=parse_class_map(args.class_map))
        dfs = [cached_evaluation(lm, ds, args.runs)[0] for lm in lms]
        joined = join_predictions(*dfs)
    except (CheckpointError, DatasetError, LabelMappingError, CompareError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = compare_predictions(joined, args.threshold, args.n_boot)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in compare_files(joined, res, *args.weights).items():
        (out / name).write_bytes(data)
    print(metrics_table(res, "A", "B").to_string(index=False), file=sys.stderr)
    summary = {k: res[k] for k in ("n", *CELLS, "mcnemar_p")}
    summary.update({f"{k}_{s}": res["metrics"][s][k]["value"] for s in ("a", "b") for k in ("accuracy", "roc_auc")})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
