"""New content: how a model's verdicts hold on content domains its training data lacks (the probe).

    python -m core new-content --weights weights/default.pt [--data data/new_content/probe] [--out DIR]

The probe (data/new_content, built by data/build_new_content.py; its card says what each domain is) is
evaluated like any dataset, through the evaluation cache. One row per domain (the `source` of its images):
its images, class, accuracy, share UNSURE, share wrong and not UNSURE, share flagged "unlike the training
data" and which familiarity part flagged them. A FAKE domain named `KIND-CONTENT` (`gan-clipart`) also gets
the ROC AUC against the REAL domain `CONTENT` (`clipart`), the same content, real against made; any other
FAKE domain against every REAL image of the probe. Leave-one-generator-out measures a new generator on
old content; this measures new content, the case users meet first.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.datasets import DatasetError, open_dataset
from core.inference.evaluate import cached_evaluation
from core.model.checkpoint import CheckpointError, load_checkpoint
from core.verdict.verdict import PART_COLUMN, UNSURE, WHY_UNFAMILIAR, VerdictModel, decide

DEFAULT_PROBE = "data/new_content/probe"

NEW_CONTENT_COLUMNS = ["domain", "class", "n", "auc", "auc_against", "acc", "share_unsure",
                       "share_wrong_decided", "share_unfamiliar"]


def _auc(y, p) -> float | None:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def new_content_table(df: pd.DataFrame, vm: VerdictModel | None, threshold: float = 0.5,
                      temperature: float = 1.0) -> pd.DataFrame:
    """df: an evaluation of the probe (columns label, logit, prob_fake, source, familiarity[, familiarity_PART]).
    Rows (NEW_CONTENT_COLUMNS plus one `by_PART` column per familiarity part: the share that part flagged): one
    per domain, then `all REAL`, `all FAKE` and `all` (AUC over the whole probe)."""
    fam = df["familiarity"].to_numpy() if "familiarity" in df and df["familiarity"].notna().any() else None
    verdicts, reasons = decide(df["logit"].to_numpy(), fam, vm, threshold, temperature)
    part_cols = [c for c in df.columns if c.startswith(PART_COLUMN)]
    flag_rate = vm.familiarity.flag_rate if vm is not None and vm.familiarity is not None else None
    y = df["label"].to_numpy().astype(int)
    p = df["prob_fake"].to_numpy(np.float64)
    src = df["source"].astype(str).to_numpy()
    unsure = np.asarray(verdicts) == UNSURE
    unfamiliar = np.array([WHY_UNFAMILIAR in r for r in reasons], bool)
    wrong = (p >= threshold).astype(int) != y
    real_domains = set(src[y == 0])

    def row(name, m, auc=None, against=None):
        cls = sorted({("REAL", "FAKE")[v] for v in y[m]})
        return {"domain": name, "class": "/".join(cls), "n": int(m.sum()), "auc": auc, "auc_against": against,
                "acc": float((~wrong[m]).mean()), "share_unsure": float(unsure[m].mean()),
                "share_wrong_decided": float((wrong[m] & ~unsure[m]).mean()),
                "share_unfamiliar": float(unfamiliar[m].mean()),
                **{f"by_{c[len(PART_COLUMN):]}": float((df[c].to_numpy()[m] < flag_rate).mean())
                   for c in part_cols if flag_rate is not None}}

    rows = []
    for dom in sorted(set(src)):
        m = src == dom
        auc = against = None
        if (y[m] == 1).all():
            content = dom.split("-", 1)[1] if "-" in dom else None
            ref = (src == content) & (y == 0) if content in real_domains else (y == 0)
            against = content if content in real_domains else "all REAL"
            both = m | ref
            auc = _auc(y[both], p[both]) if ref.any() else None
        rows.append(row(dom, m, auc, against))
    for name, m in (("all REAL", y == 0), ("all FAKE", y == 1)):
        if m.any():
            rows.append(row(name, m))
    rows.append(row("all", np.ones(len(y), bool), _auc(y, p), "all" if len(np.unique(y)) == 2 else None))
    return pd.DataFrame(rows)


def new_content_summary(table: pd.DataFrame) -> dict:
    """The numbers the issue's targets are stated in: the worst domain's share wrong and not UNSURE, the REAL
    images' share UNSURE, the probe's AUC."""
    domains = table[~table["domain"].str.startswith("all")]
    real = table[table["domain"] == "all REAL"]
    allrow = table[table["domain"] == "all"].iloc[0]
    worst = domains.sort_values("share_wrong_decided").iloc[-1]
    return {"worst_domain": str(worst["domain"]), "worst_wrong_decided": float(worst["share_wrong_decided"]),
            "wrong_decided": float(allrow["share_wrong_decided"]), "auc": allrow["auc"],
            "real_unsure": float(real["share_unsure"].iloc[0]) if len(real) else None}


def evaluate_new_content(lm, data: str = DEFAULT_PROBE, runs_dir="runs", threshold: float = 0.5, progress=None
                         ) -> tuple[pd.DataFrame, dict]:
    """The probe's table for a loaded model (evaluated through the evaluation cache) and its summary."""
    ds = open_dataset(data)
    df, _ = cached_evaluation(lm, ds, runs_dir=runs_dir, progress=progress)
    table = new_content_table(df, lm.verdict, threshold, lm.temperature)
    return table, new_content_summary(table)


def probe_available(data: str = DEFAULT_PROBE) -> bool:
    return (Path(data) / "manifest.csv").is_file()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="New content: a model's verdicts per content domain of the probe.")
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--data", default=DEFAULT_PROBE, help=f"the probe (default: {DEFAULT_PROBE})")
    p.add_argument("--threshold", type=float, default=0.5, help="default: 0.5")
    p.add_argument("--runs", default="runs", help="evaluation cache folder (default: runs)")
    p.add_argument("--out", default=None, help="also write DIR/new_content.csv and DIR/summary.json")
    args = p.parse_args(argv)
    try:
        lm = load_checkpoint(args.weights)
        table, summary = evaluate_new_content(lm, args.data, args.runs, args.threshold)
    except (CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "new_content.csv", index=False)
        (out / "summary.json").write_text(json.dumps({"weights": args.weights, "data": args.data, **summary}, indent=1))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(4).to_string(index=False))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
