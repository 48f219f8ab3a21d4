"""The data-issue checks (core.audits.data_issues) on planted errors and on the shipped sample itself.

    python benchmarks/data_issues.py [--weights weights/default.pt]
    python benchmarks/data_issues.py --tune     # the leakage constants' tuning run, on the ood split only

1. Planted label errors: the labels of 5% of a split flipped (seeded), through a manifest of the same files; the
   flipped images among the label issues Datalab flags, ranked by its score: precision and recall of the flagged
   set, and the recall at the deepest rank where precision is still >= 0.50. On the test split the
   probabilities are the model's (it never trained there). On the train split they are cross-validated on the
   model's features; that is optimistic, because the model learnt its features from the true labels of those
   very images, which a real training set's wrong labels would not have given it.
2. Planted leakage: 100 training images (seeded) copied into the test split after a JPEG 75 re-encode and a x0.9
   resize back to 32 px (core.data.shifts "jpeg" then "downscale"): found = the copy flagged with its own training
   image as its pair. False pairs: flagged images of the clean test split, which holds no copy.
3. The shipped sample: the issues of its test split (leakage against train) and the label issues of train, as
   found, with the leakage pairs listed.

--tune plants 100 other training images into the ood split and sweeps the leakage ratio and the flat-patch
allowance against the clean ood split: the constants in core.audits.data_issues come from that run, never from the
test split. Writes benchmarks/results/data_issues.json (or data_issues_tuning.json).
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import ROOT, print_table, save

SAMPLE = ROOT / "data" / "sample"
FLIP_SHARE = 0.05
N_PLANTED = 100


def flipped_manifest(split: str, dest: Path, seed: int = 0) -> tuple[Path, set[str]]:
    """dest/manifest.csv: the split's files by absolute path, 5% of them with the other label; (csv, flipped ids)."""
    m = pd.read_csv(SAMPLE / split / "manifest.csv")
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(m), int(round(FLIP_SHARE * len(m))), replace=False)
    m["file"] = [str((SAMPLE / split / f).resolve()) for f in m["file"]]
    m.loc[flip, "label"] = 1 - m.loc[flip, "label"]
    dest.mkdir(parents=True, exist_ok=True)
    m[["file", "label", "source"]].to_csv(dest / "manifest.csv", index=False)
    from core.data.datasets import open_dataset
    ds = open_dataset(dest / "manifest.csv")
    ids = {ds.item_id(i) for i in range(len(ds)) if ds.items[i][0] in set(m.loc[flip, "file"])}
    return dest / "manifest.csv", ids


def ranked_scores(issues: pd.DataFrame, truth: set[str]) -> dict:
    lab = issues[issues["issue"] == "label"].sort_values("score", kind="stable")
    hit = lab["path"].isin(truth).to_numpy()
    k = np.arange(1, len(hit) + 1)
    precision, recall = np.cumsum(hit) / k, np.cumsum(hit) / len(truth)
    ok = np.flatnonzero(precision >= 0.5)
    deepest = int(ok.max()) if len(ok) else None
    return {"planted": len(truth), "flagged": int(len(hit)), "flagged_planted": int(hit.sum()),
            "precision": round(float(hit.mean()), 4) if len(hit) else None,
            "recall": round(float(hit.sum() / len(truth)), 4),
            "deepest_rank_with_precision_0.5": None if deepest is None else deepest + 1,
            "recall_there": None if deepest is None else round(float(recall[deepest]), 4),
            "precision_there": None if deepest is None else round(float(precision[deepest]), 4)}


def planted_copy(path: Path) -> bytes:
    """PNG bytes of the image at `path` after a JPEG 75 re-encode and a x0.9 resize and back."""
    from PIL import Image
    from core.data.shifts import apply_shift, pil_to_tensor, tensor_to_pil
    x = pil_to_tensor(Image.open(path).convert("RGB"))
    x = apply_shift(apply_shift(x, "jpeg", 75), "downscale", 1 / 0.9)
    buf = io.BytesIO()
    tensor_to_pil(x).save(buf, format="PNG")
    return buf.getvalue()


def planted_split(split: str, dest: Path, seed: int) -> tuple[Path, dict[str, str]]:
    """dest/{REAL,FAKE}: the split's images plus N_PLANTED planted copies of training images; ({copy id: source id})."""
    train = sorted((SAMPLE / "train").glob("*/*.jpg"))
    for p in sorted((SAMPLE / split).glob("*/*.jpg")):
        (dest / p.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / p.parent.name / p.name).write_bytes(p.read_bytes())
    picks = np.random.default_rng(seed).choice(len(train), N_PLANTED, replace=False)
    planted = {}
    for k, i in enumerate(picks):
        src = train[i]
        name = f"{src.parent.name}/planted_{k:03d}.png"
        (dest / name).write_bytes(planted_copy(src))
        planted[name] = f"{src.parent.name}/{src.name}"
    return dest, planted


def leakage_scores(found: pd.DataFrame, planted: dict[str, str], control: pd.DataFrame) -> dict:
    leaked = found[found["path"].isin(planted)]
    right = int(sum(planted[p] == q for p, q in zip(leaked["path"], leaked["pair"])))
    return {"planted": len(planted), "found": right, "flagged_with_another_pair": int(len(leaked) - right),
            "flagged_unplanted_in_fixture": int((~found["path"].isin(planted)).sum()),
            "false_pairs_on_clean_control": int(len(control))}


def tune(lm, runs: Path, work: Path) -> None:
    from core.audits import data_issues as di
    from core.audits.features import cached_features
    from core.data.datasets import open_dataset
    train = cached_features(lm, open_dataset(SAMPLE, split="train"), runs)
    folder, planted = planted_split("ood", work / "tune", seed=1)
    fixture = cached_features(lm, open_dataset(folder), runs)
    clean = cached_features(lm, open_dataset(SAMPLE, split="ood"), runs)
    rows = []
    for flat in (1.0, 2.0, 4.0):
        di.FLAT_LEVELS = flat
        r_fix, i_fix = di.leakage_ratios(fixture, train)
        r_cln, _ = di.leakage_ratios(clean, train)
        ids = np.asarray(fixture.ids)
        is_planted = np.array([i in planted for i in ids])
        right = np.array([i in planted and planted[i] == train.ids[j] for i, j in zip(ids, i_fix)])
        for ratio in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0):
            rows.append({"flat_levels": flat, "ratio": ratio, "found": int((right & (r_fix <= ratio)).sum()),
                         "unplanted_flagged_in_fixture": int((~is_planted & (r_fix <= ratio)).sum()),
                         "false_pairs_clean_ood": int((r_cln <= ratio).sum())})
    print_table(rows, list(rows[0]))
    save("data_issues_tuning", {"split": "ood", "planted": N_PLANTED, "seed": 1, "rows": rows})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"), help="default: weights/default.pt")
    ap.add_argument("--tune", action="store_true", help="the leakage constants' tuning run on the ood split")
    args = ap.parse_args()
    from core.audits.data_issues import FLAT_LEVELS, LEAK_RATIO, find_data_issues, leakage_pairs
    from core.audits.features import cached_features
    from core.data.datasets import open_dataset
    from core.model.checkpoint import load_checkpoint
    lm = load_checkpoint(args.weights)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = work / "runs"
        if args.tune:
            return tune(lm, runs, work)
        t0 = time.perf_counter()
        train_ds, test_ds = open_dataset(SAMPLE, split="train"), open_dataset(SAMPLE, split="test")
        out = {"weights": Path(args.weights).name, "leak_ratio": LEAK_RATIO, "flat_levels": FLAT_LEVELS}
        # 1. planted label errors
        flips = {}
        for split in ("test", "train"):
            csv, truth = flipped_manifest(split, work / f"flipped-{split}")
            # the manifest is not the folder the model trained on, so the train split's probabilities are asked for
            probs = "cross-validated" if split == "train" else "auto"
            issues, summary = find_data_issues(lm, open_dataset(csv), None, runs, probs)
            flips[split] = {"pred_probs": summary["pred_probs"], **ranked_scores(issues, truth)}
            print(split, flips[split])
        out["planted_label_errors"] = flips
        # 2. planted leakage
        folder, planted = planted_split("test", work / "planted-test", seed=0)
        train = cached_features(lm, train_ds, runs)
        found = leakage_pairs(cached_features(lm, open_dataset(folder), runs), train)
        control = leakage_pairs(cached_features(lm, test_ds, runs), train)
        out["planted_leakage"] = leakage_scores(found, planted, control)
        print("leakage", out["planted_leakage"])
        # 3. the shipped sample
        issues, summary = find_data_issues(lm, test_ds, train_ds, runs)
        train_issues, train_summary = find_data_issues(lm, train_ds, None, runs)
        out["sample_test"] = {k: summary[k] for k in ("images", "counts", "flagged_images", "pred_probs",
                                                      "datalab_quality")}
        out["sample_test"]["leakage_pairs"] = issues[issues["issue"] == "leakage"][["path", "pair", "score"]] \
            .to_dict("records")
        out["sample_train"] = {k: train_summary[k] for k in ("images", "counts", "flagged_images", "pred_probs")}
        print("sample test", out["sample_test"]["counts"], "train", out["sample_train"]["counts"])
        out["seconds"] = round(time.perf_counter() - t0, 1)
    save("data_issues", {**out, "load_average_start": load_start, "load_average_end": os.getloadavg()})


if __name__ == "__main__":
    main()
