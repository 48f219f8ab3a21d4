"""What Platt calibration changed: the same models' verdicts with and without the calibrated logit offset.

    python benchmarks/platt_effect.py            # weights/default.pt on test and ood, the folds of weights/logo
    python benchmarks/platt_effect.py --weights W --logo DIR --results OUT.json

A Platt-calibrated checkpoint (core.model.checkpoint.platt_calibrated) carries its offset in the bias of the
layer that outputs the logit and records it in metrics["platt"]["logit_offset"]. Subtracting it from
the stored predictions' logits and from the checkpoint's calibration logits gives, exactly, the verdicts
the model made before calibration (no forward pass: the offset is added after every feature). At threshold
0.5 the temperature moves neither the call nor the band (scores and quantile scale together), so both
columns use the checkpoint's own T and its stored conformal level and flag rate, and the one verdict
definition (core.verdict.verdict_summary). Every LOGO fold is calibrated on its own calibration split.

The offset narrows the band (the calibration split's errors stop leaning one way), so at one conformal
level the two versions sit at different operating points. Each version is therefore reported at the
level the shipped rule picks for it: the smallest alpha of ALPHAS whose share UNSURE on the first split
(test) is 5% or less at the stored flag rate, the same alpha for the default and every fold.

Writes benchmarks/results/platt_effect.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.model.checkpoint import load_checkpoint  # noqa: E402
from core.data.datasets import open_dataset  # noqa: E402
from core.inference.evaluate import cached_evaluation, load_evaluation  # noqa: E402
from core.verdict.verdict import verdict_summary  # noqa: E402

ALPHAS = (0.01, 0.02, 0.03, 0.05, 0.1)
MAX_TEST_UNSURE = 0.05


def offset_of(lm) -> float:
    return float(((lm.meta.get("metrics") or {}).get("platt") or {}).get("logit_offset", 0.0))


def row(df, lm, shift: float, alpha: float, held_out: str | None = None) -> dict:
    """Verdict numbers of stored predictions `df` with `shift` subtracted from every logit (and from the
    calibration logits of the band), band at `alpha`; recall per class at the threshold."""
    vm = lm.verdict
    if vm.has_band:
        vm = replace(vm, cal_logits=vm.cal_logits - shift, alpha=alpha)
    z = df["logit"].to_numpy(float) - shift
    y = df["label"].to_numpy()
    fam = df["familiarity"].to_numpy(float) if "familiarity" in df else None
    s = verdict_summary(y, z, fam, vm, 0.5, lm.temperature)
    called = z > 0
    out = {"n": s["n"], "alpha": alpha, "accuracy": s["accuracy"], "recall_real": float((~called[y == 0]).mean()),
           "recall_fake": float(called[y == 1].mean()), "share_unsure": s["share_unsure"],
           "share_wrong_decided": s["share_wrong_decided"]}
    if held_out:
        src = df["source"].astype(str).to_numpy()
        out["held_out_fake_recall"] = float(called[(y == 1) & (src == held_out)].mean())
    return out


def best_cut_accuracy(df) -> float:
    """The highest accuracy any single cut on the logit reaches on `df` (chosen on df itself: a ceiling for
    every threshold or offset, not an estimate of one)."""
    z, y = df["logit"].to_numpy(float), df["label"].to_numpy()
    order = np.argsort(z)
    ys = y[order]
    # cut after position k (k = 0..n): the first k called REAL, the rest FAKE
    real_right = np.r_[0, np.cumsum(ys == 0)]
    fake_right = (ys == 1).sum() - np.r_[0, np.cumsum(ys == 1)]
    return float((real_right + fake_right).max() / len(y))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(REPO / "weights" / "default.pt"))
    p.add_argument("--data", default=str(REPO / "data" / "sample"))
    p.add_argument("--splits", nargs="+", default=["test", "ood"])
    p.add_argument("--logo", default=str(REPO / "weights" / "logo"), help="LOGO output folder of the same recipe")
    p.add_argument("--runs", default=str(REPO / "runs"), help="cache of evaluations (default: runs/)")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "platt_effect.json"))
    args = p.parse_args(argv)

    lm = load_checkpoint(args.weights)
    off = offset_of(lm)
    results = {"weights": Path(args.weights).name, "logit_offset": off, "temperature": lm.temperature,
               "alpha": lm.verdict.alpha, "splits": {}, "folds": {}}
    lines = ["| model | data | version | accuracy | recall REAL | recall FAKE | UNSURE | wrong, not UNSURE |",
             "|---|---|---|---:|---:|---:|---:|---:|"]

    def show(name, data, r):
        for version in ("before", "after"):
            v = r[version]
            lines.append(f"| {name} | {data} | {version} Platt, alpha {v['alpha']:g} | {v['accuracy']:.2%} | {v['recall_real']:.2%} | "
                         f"{v['recall_fake']:.2%} | {v['share_unsure']:.2%} | {v['share_wrong_decided']:.2%} |")

    frames = {split: cached_evaluation(lm, open_dataset(args.data, split=split), runs_dir=args.runs)[0]
              for split in args.splits}
    shifts = {"before": off, "after": 0.0}
    first = frames[args.splits[0]]
    alpha = {v: next((a for a in ALPHAS if row(first, lm, sh, a)["share_unsure"] <= MAX_TEST_UNSURE), ALPHAS[-1])
             for v, sh in shifts.items()}
    results["alpha_by_rule"] = alpha
    results["best_cut_accuracy"] = {split: best_cut_accuracy(df) for split, df in frames.items()}
    if lm.verdict.has_band:
        zc, yc = lm.verdict.cal_logits, lm.verdict.cal_labels
        results["calibration_split"] = {
            v: {"n": int(len(yc)), "accuracy": float(((zc - sh > 0) == (yc == 1)).mean()),
                "recall_real": float((zc[yc == 0] - sh <= 0).mean()), "recall_fake": float((zc[yc == 1] - sh > 0).mean())}
            for v, sh in shifts.items()}
    for split, df in frames.items():
        r = {v: row(df, lm, sh, alpha[v]) for v, sh in shifts.items()}
        results["splits"][split] = r
        show(Path(args.weights).name, split, r)
    for d in sorted(Path(args.logo).iterdir()) if Path(args.logo).is_dir() else []:
        ev = load_evaluation(d / "eval") if d.is_dir() else None
        if ev is None or not (d / "model.pt").is_file():
            continue
        flm = load_checkpoint(d / "model.pt")
        fo = offset_of(flm)
        r = {"logit_offset": fo, "temperature": flm.temperature,
             **{v: row(ev[0], flm, fo if v == "before" else 0.0, alpha[v], d.name) for v in shifts}}
        results["folds"][d.name] = r
        show(f"fold without {d.name} (offset {fo:+.2f})", f"test REAL + {d.name}", r)
    if results["folds"]:
        mean = {v: {k: float(np.mean([f[v][k] for f in results["folds"].values()]))
                    for k in ("accuracy", "held_out_fake_recall", "recall_real", "share_unsure", "share_wrong_decided")}
                for v in ("before", "after")}
        results["folds_mean"] = mean
        for v in ("before", "after"):
            m = mean[v]
            lines.append(f"| LOGO mean | held-out | {v} Platt, alpha {alpha[v]:g} | {m['accuracy']:.2%} | {m['recall_real']:.2%} | "
                         f"{m['held_out_fake_recall']:.2%} | {m['share_unsure']:.2%} | {m['share_wrong_decided']:.2%} |")
    print(f"{Path(args.weights).name}: logit offset {off:+.4f}, T {lm.temperature:.4f}, stored alpha "
          f"{lm.verdict.alpha}; alpha by the rule (test UNSURE <= {MAX_TEST_UNSURE:.0%}): before {alpha['before']}, "
          f"after {alpha['after']}")
    print("\n".join(lines))
    for v, c in results.get("calibration_split", {}).items():
        print(f"calibration split ({c['n']:,} images) {v} Platt: accuracy {c['accuracy']:.2%}, recall REAL "
              f"{c['recall_real']:.2%}, FAKE {c['recall_fake']:.2%}")
    print("best accuracy of any cut on the logit (a ceiling, chosen on the data itself): "
          + ", ".join(f"{k} {v:.2%}" for k, v in results["best_cut_accuracy"].items()))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
