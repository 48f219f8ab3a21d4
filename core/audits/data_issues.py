"""Data issues of a dataset split: wrong labels, near duplicates, outliers (cleanlab's Datalab) and train/test leakage.

    python -m core data-issues --weights weights/default.pt --data data/sample --split test --out runs/issues

Issue types (ISSUES), one row per flagged image in DIR/issues.csv (ISSUE_COLUMNS), worst first within a type:
- `label`: cleanlab's confident learning (Datalab, issue type "label") on out-of-sample P(REAL), P(FAKE). On a
  split the model never trained on, those are the model's own (`apply_temperature` of its logits, the evaluation's
  prob_fake); on the split it trained on (`trained_on`), cross-validated predictions of a logistic regression on
  the model's frozen features (CV_FOLDS folds), cleanlab's recommendation for images. summary.json says which.
  score: Datalab's label quality, 0-1, low = likely wrong; suggested_label: the class Datalab predicts.
- `near_duplicate` within the split: Datalab's near-duplicate check on the content thumbnails
  (core.audits.features, Euclidean). score: Datalab's near-duplicate score, low = closer; pair: its nearest image.
- `outlier`: Datalab's outlier check on the model's features. score: Datalab's outlier score, low = more atypical.
- `leakage`: an image of the split whose content thumbnail is within LEAK_RATIO of a training image's
  (`leakage_pairs`): RMS difference of the two 8 x 8 thumbnails over (the flatter one's detail + FLAT_LEVELS),
  which a JPEG re-encode or a resize leaves small and which a flat patch cannot pass by flatness alone.
  score: that ratio, 0 = identical; pair: the training image. Datalab compares images within one dataset only.

`rescore_without` recomputes accuracy, ROC AUC and ECE (core.metrics.metrics.classification_metrics) without the
flagged images. Results are cached under runs/data-issues-KEY (result format, weights, preprocessing, dataset,
training data, probabilities, seed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.labels import CLASS_NAMES

ISSUES = ("label", "near_duplicate", "outlier", "leakage")
ISSUE_COLUMNS = ["path", "issue", "score", "given_label", "suggested_label", "pair"]
ISSUE_TITLES = {"label": "Label issues", "near_duplicate": "Near duplicates within the split",
                "outlier": "Outliers", "leakage": "Leakage from the training data"}
PROBS = ("auto", "model", "cross-validated")
CV_FOLDS = 5
# Leakage (`leakage_pairs`), chosen on planted copies of training images in the sample's ood split and the clean
# ood split (`python benchmarks/data_issues.py --tune`), never on the test split it is reported on.
LEAK_RATIO = 0.6
FLAT_LEVELS = 2.0           # pixel levels added to the detail: two flat patches must match to ~1 level to count
MIN_IMAGES = 20            # Datalab's neighbour checks look at 10 neighbours per image
DATA_ISSUES_VERSION = 1     # bump when a definition above changes (part of the runs/ key)


def trained_on(lm, ds) -> bool:
    """Whether `ds` is the data the checkpoint was trained on: the folder or file of its training config's data (or
    that root's split). A relative training path (relative to wherever training ran) matches a dataset whose
    resolved path ends with it."""
    tc = lm.meta.get("train_config") or {}
    if not tc.get("data"):
        return False
    here = Path(ds.root).resolve()
    for trained in (Path(tc["data"]), Path(tc["data"]) / str(tc.get("split") or "train")):
        if trained.is_absolute():
            if here == trained.resolve():
                return True
        elif trained.parts and here.parts[-len(trained.parts):] == trained.parts:
            return True
    return False


def default_reference(path, split: str | None) -> str | None:
    """The split the leakage check compares `split` of the CIFAKE root `path` against: "train" when the root has a
    train split and `split` is another one, else None (no training split to leak from)."""
    from core.data.datasets import cifake_splits
    splits = {s.lower(): s for s in cifake_splits(path)}
    if split is None or "train" not in splits or split.lower() == "train":
        return None
    return splits["train"]


def out_of_sample_probs(lm, ds, table, how: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(P (N, 2) float64 of [P(REAL), P(FAKE)] in table order, which: "model" or "cross-validated").

    "model": the model's calibrated P(FAKE) (core.metrics.metrics.apply_temperature of its logits);
    "cross-validated": out-of-fold predictions of a standardised logistic regression on the model's features
    (stratified CV_FOLDS folds, seeded); "auto": cross-validated on the data the model trained on, else model.
    A split with fewer than 2 images of a class cannot be cross-validated: the model's P(FAKE) is used then."""
    from core.metrics.metrics import apply_temperature
    if how not in PROBS:
        raise ValueError(f"probabilities must be one of {PROBS}, not {how!r}")
    if how == "auto":
        how = "cross-validated" if trained_on(lm, ds) else "model"
    counts = np.bincount(table.labels, minlength=2)
    if how == "cross-validated" and counts.min() >= 2:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
        folds = StratifiedKFold(min(CV_FOLDS, int(counts.min())), shuffle=True, random_state=seed)
        p = cross_val_predict(clf, table.model.astype(np.float64), table.labels, cv=folds, method="predict_proba")
        return np.asarray(p, np.float64), "cross-validated"
    p = apply_temperature(table.logits, lm.temperature)
    return np.stack([1 - p, p], axis=1), "model"


def datalab_issues(table, pred_probs: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """Datalab's label, outlier (model features + pred_probs) and near-duplicate (thumbnails) issues of one table:
    (rows ISSUE_COLUMNS of the flagged images, {issue: Datalab's dataset-level quality score})."""
    from cleanlab import Datalab
    labels = pd.DataFrame({"label": table.labels})
    ids = np.asarray(table.ids, dtype=object)
    names = np.asarray(CLASS_NAMES, dtype=object)
    rows, quality = [], {}
    lab = Datalab(labels, label_name="label", verbosity=0)
    # n_jobs 1: cleanlab's label search otherwise forks a multiprocessing pool, which hung in the app's server
    # process (a fork of a process with many threads can inherit a lock held by one of them).
    lab.find_issues(features=table.model.astype(np.float32), pred_probs=pred_probs,
                    issue_types={"label": {"clean_learning_kwargs": {"find_label_issues_kwargs": {"n_jobs": 1}}},
                                 "outlier": {}})
    # A Datalab of its own: the near-duplicate check would otherwise reuse the model features' neighbour graph.
    dup = Datalab(labels, label_name="label", verbosity=0)
    dup.find_issues(features=table.thumbs.astype(np.float32), issue_types={"near_duplicate": {"metric": "euclidean"}})
    for issue, src in (("label", lab), ("outlier", lab), ("near_duplicate", dup)):
        found = src.get_issues(issue)
        quality[issue] = float(src.get_issue_summary(issue)["score"].iloc[0])
        flagged = np.flatnonzero(found[f"is_{issue}_issue"].to_numpy())
        score = found[f"{issue}_score"].to_numpy()
        pair = [""] * len(flagged)
        if issue == "near_duplicate":
            nearest = np.asarray(src.get_info(issue)["nearest_neighbor"])
            pair = ids[nearest[flagged]].tolist()
        suggested = names[found["predicted_label"].to_numpy()[flagged]].tolist() if issue == "label" \
            else [""] * len(flagged)
        rows.append(pd.DataFrame({"path": ids[flagged].tolist(), "issue": issue, "score": score[flagged],
                                  "given_label": names[table.labels[flagged]].tolist(),
                                  "suggested_label": suggested, "pair": pair}))
    return pd.concat(rows, ignore_index=True), quality


def leakage_ratios(query, reference, chunk_entries: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """For every query image, the reference image with the smallest leakage ratio: (ratio (N,) float64, index (N,)
    int64 into `reference`). ratio = RMS difference of the thumbnails (pixel levels) / (min of the two images'
    detail + FLAT_LEVELS). Both arguments are core.audits.features.FeatureTable (thumbs, detail)."""
    import torch
    q = torch.as_tensor(query.thumbs, dtype=torch.float32)
    r = torch.as_tensor(reference.thumbs, dtype=torch.float32)
    dq = torch.as_tensor(query.detail, dtype=torch.float32)
    dr = torch.as_tensor(reference.detail, dtype=torch.float32)
    if len(q) == 0 or len(r) == 0:
        return np.full(len(q), np.inf), np.full(len(q), -1, np.int64)
    step = max(1, chunk_entries // len(r))
    ratios, index = [], []
    for i in range(0, len(q), step):
        rms = torch.cdist(q[i:i + step], r) / np.sqrt(q.shape[1])                     # (n, M) pixel levels
        ratio = rms / (torch.minimum(dq[i:i + step, None], dr[None, :]) + FLAT_LEVELS)
        best = ratio.min(dim=1)
        ratios.append(best.values)
        index.append(best.indices)
    return torch.cat(ratios).double().numpy(), torch.cat(index).numpy().astype(np.int64)


def leakage_pairs(query, reference, ratio: float = LEAK_RATIO) -> pd.DataFrame:
    """Rows ISSUE_COLUMNS, one per query image whose nearest reference image (`leakage_ratios`) is within `ratio`,
    closest first; `pair` is the reference image's id."""
    r, idx = leakage_ratios(query, reference)
    hit = np.flatnonzero(r <= ratio)
    hit = hit[np.argsort(r[hit], kind="stable")]
    names = np.asarray(CLASS_NAMES, dtype=object)
    return pd.DataFrame({"path": np.asarray(query.ids, dtype=object)[hit].tolist(), "issue": "leakage",
                         "score": r[hit], "given_label": names[query.labels[hit]].tolist(), "suggested_label": "",
                         "pair": np.asarray(reference.ids, dtype=object)[idx[hit]].tolist()}, columns=ISSUE_COLUMNS)


def find_data_issues(lm, ds, reference=None, runs_dir="runs", probs: str = "auto", seed: int = 0,
                     progress=None) -> tuple[pd.DataFrame, dict]:
    """(issues DataFrame ISSUE_COLUMNS, summary dict) of `ds`; leakage against `reference` (training data) when
    given. `progress(fraction, text)` after each stage. Features come from runs/ (core.audits.features)."""
    from threadpoolctl import threadpool_limits
    from core.audits.features import cached_features
    from core.inference.evaluate import RESULT_FORMAT, dataset_fingerprint
    tell = progress or (lambda f, t: None)
    if len(ds) < MIN_IMAGES:
        raise ValueError(f"the data-issue checks need at least {MIN_IMAGES} images; this data has {len(ds)}")
    if reference is not None and dataset_fingerprint(reference) == dataset_fingerprint(ds):
        raise ValueError("the leakage check compares a split with the training data, and both are the same data here")
    t0 = time.perf_counter()
    share = 0.6 if reference is not None else 0.8
    table = cached_features(lm, ds, runs_dir, progress=lambda d, t: tell(share * d / max(t, 1),
                                                                          f"Features: {d:,}/{t:,} images"))
    ref = None
    if reference is not None:
        ref = cached_features(lm, reference, runs_dir, progress=lambda d, t: tell(
            0.6 + 0.2 * d / max(t, 1), f"Features of the training data: {d:,}/{t:,} images"))
    tell(0.8, "Probabilities" if probs == "model" else "Out-of-sample probabilities")
    # One thread for BLAS and OpenMP (core.audits.embedding.project says why).
    with threadpool_limits(limits=1):
        pred_probs, used = out_of_sample_probs(lm, ds, table, probs, seed)
        tell(0.85, "cleanlab Datalab: label issues, outliers, near duplicates")
        found, quality = datalab_issues(table, pred_probs)
    parts = [found]
    if ref is not None:
        tell(0.95, "Leakage from the training data")
        parts.append(leakage_pairs(table, ref))
    issues = pd.concat(parts, ignore_index=True)
    issues["issue"] = pd.Categorical(issues["issue"], ISSUES, ordered=True)
    issues = issues.sort_values(["issue", "score"], kind="stable").reset_index(drop=True)
    issues["issue"] = issues["issue"].astype(str)
    counts = {k: int((issues["issue"] == k).sum()) for k in ISSUES}
    if ref is None:
        counts["leakage"] = None
    summary = {
        "result_format": RESULT_FORMAT, "data_issues_version": DATA_ISSUES_VERSION, "weights_sha256": lm.sha256,
        "dataset": ds.describe(), "images": len(table), "counts": counts,
        "flagged_images": int(issues["path"].nunique()), "pred_probs": used,
        "pred_probs_meaning": ("the model's own P(FAKE): it never trained on this data" if used == "model" else
                               f"out-of-fold P(FAKE) of a logistic regression on the model's features, {CV_FOLDS}-fold "
                               "cross-validated: the model trained on this data"),
        "datalab_quality": quality, "reference": None if reference is None else reference.describe(),
        "reference_images": None if ref is None else len(ref), "leak_ratio": LEAK_RATIO, "flat_levels": FLAT_LEVELS,
        "seed": seed, "skipped": [list(s) for s in table.skipped], "seconds": round(time.perf_counter() - t0, 3)}
    return issues, summary


def data_issues_dir(runs_dir, lm, ds, reference, probs: str, seed: int) -> Path:
    from core.audits.features import FEATURES_VERSION
    from core.inference.evaluate import dataset_fingerprint
    from core.report.audit_cache import result_dir
    return result_dir(runs_dir, "data-issues", DATA_ISSUES_VERSION, FEATURES_VERSION, lm.sha256,
                      json.dumps(lm.preprocess.to_dict(), sort_keys=True), dataset_fingerprint(ds),
                      dataset_fingerprint(reference) if reference is not None else "none", probs, seed)


def read_data_issues(out_dir) -> tuple[pd.DataFrame, dict] | None:
    out_dir = Path(out_dir)
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
        issues = pd.read_csv(out_dir / "issues.csv", keep_default_na=False,
                             dtype={"path": str, "issue": str, "given_label": str, "suggested_label": str, "pair": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return issues, summary


def write_data_issues(out_dir, issues: pd.DataFrame, summary: dict) -> Path:
    """issues.csv and summary.json into out_dir, atomically."""
    from core.report.audit_cache import json_bytes, write_result_dir
    return write_result_dir(out_dir, {"issues.csv": issues[ISSUE_COLUMNS].to_csv(index=False).encode(),
                                      "summary.json": json_bytes(summary)})


def cached_data_issues(lm, ds, reference=None, runs_dir="runs", probs: str = "auto", seed: int = 0,
                       progress=None) -> tuple[pd.DataFrame, dict]:
    """`find_data_issues` once per key (`data_issues_dir`); later calls read runs/data-issues-KEY."""
    from core.model.checkpoint import result_lock
    out = data_issues_dir(runs_dir, lm, ds, reference, probs, seed)
    with result_lock(out):
        hit = read_data_issues(out)
        if hit is not None:
            return hit
        issues, summary = find_data_issues(lm, ds, reference, runs_dir, probs, seed, progress)
        write_data_issues(out, issues, summary)
        return read_data_issues(out) or (issues, summary)


def rescore_without(predictions: pd.DataFrame, hidden, threshold: float = 0.5) -> pd.DataFrame:
    """Accuracy, ROC AUC and ECE (core.metrics.metrics.classification_metrics) of the evaluation's predictions on
    every image and without the `hidden` paths: rows "all images" and "without the flagged images", columns
    images, accuracy, roc_auc, ece."""
    from core.metrics.metrics import classification_metrics
    keep = ~predictions["path"].isin(set(hidden))
    rows = []
    for name, part in (("all images", predictions), ("without the flagged images", predictions[keep])):
        m = classification_metrics(part["label"].to_numpy(), part["prob_fake"].to_numpy(), threshold)
        rows.append({"images": name, "n": int(m["n"]), "accuracy": m.get("accuracy"), "roc_auc": m.get("roc_auc"),
                     "ece": m.get("ece")})
    return pd.DataFrame(rows)


def open_reference(data: str, split: str | None, reference: str | None, class_map=None):
    """The training data for the leakage check: `reference` "none" -> None; a split name of the CIFAKE root
    `data`, else a dataset path; None -> `default_reference`. Raises core.data.datasets.DatasetError."""
    from core.data.datasets import DatasetError, cifake_splits, open_dataset
    if reference is not None and reference.lower() == "none":
        return None
    if reference is None:
        reference = default_reference(data, split)
        if reference is None:
            return None
    if reference.lower() in {s.lower() for s in cifake_splits(data)}:
        return open_dataset(data, split=reference, class_map=class_map)
    if Path(reference).exists():
        return open_dataset(reference, class_map=class_map)
    raise DatasetError(f"--reference {reference!r} is neither a split of {data} nor a dataset path")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Data issues of a dataset split: label issues, near duplicates, "
                                            "outliers (cleanlab) and leakage from the training data.")
    from core.audits.features import add_input_args
    add_input_args(p)
    p.add_argument("--reference", default=None,
                   help="training data for the leakage check: a split of the same root or a dataset path, or 'none' "
                        "(default: the root's train split when --split is another one)")
    p.add_argument("--probs", default="auto", choices=PROBS,
                   help="P(FAKE) for the label issues: the model's, or cross-validated on its features; auto: "
                        "cross-validated on the data the model trained on (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default: 0)")
    p.add_argument("--out", required=True, help="folder for issues.csv and summary.json")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from core.audits.features import run_cli, write_files
    res = run_cli(args, "data issues", lambda lm, ds, class_map, progress: cached_data_issues(
        lm, ds, open_reference(args.data, args.split, args.reference, class_map), args.runs, args.probs, args.seed,
        progress))
    if res is None:
        return 2
    issues, summary = res
    from core.report.audit_cache import json_bytes
    write_files(args.out, {"issues.csv": issues[ISSUE_COLUMNS].to_csv(index=False).encode(),
                           "summary.json": json_bytes(summary)}, summary["skipped"])
    print(json.dumps({k: summary[k] for k in ("images", "counts", "flagged_images", "pred_probs", "reference")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
