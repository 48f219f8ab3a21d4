"""What UNSURE costs and buys at other operating points: conformal level x familiarity flag rate.

    python benchmarks/verdict_operating_points.py            # shipped weights, test split, weights/logo
    python benchmarks/verdict_operating_points.py --weights W --logo DIR --results OUT.json

The verdict has two settings stored in the checkpoint: the conformal miscoverage alpha of the
"near the threshold" band (default 0.05) and the familiarity flag rate of "unlike the training data"
(default 0.05, the share of held-out in-distribution images it may flag). This script re-decides
stored predictions (no forward pass) on a grid of both, with the one verdict definition
(`core.verdict.verdict_summary`), and reports per operating point:

- in distribution (the `test` split, shipped model): share UNSURE, share wrong and not UNSURE;
- on held-out generator families (each LOGO fold's evaluation, decided with that fold model's own
  verdict data): mean share UNSURE and mean share wrong and not UNSURE, and its maximum (family);
- the calibration split's own band share (from the logits stored in the checkpoint), the number an
  operating point can be chosen on without looking at test.

Writes benchmarks/results/verdict_operating_points.json and prints a table.
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
from core.verdict.verdict import UNSURE, decide, verdict_summary  # noqa: E402

ALPHAS = (0.01, 0.02, 0.03, 0.05, 0.1)
FLAG_RATES = (0.0, 0.01, 0.02, 0.03, 0.05)


def at(vm, alpha: float, flag_rate: float):
    """The verdict model with its two settings replaced (a copy: the loaded one is not changed)."""
    fam = None if vm.familiarity is None else replace(vm.familiarity, flag_rate=flag_rate)
    return replace(vm, alpha=alpha, familiarity=fam)


def summary_at(df, lm, alpha: float, flag_rate: float) -> dict:
    fam = df["familiarity"].to_numpy(float) if "familiarity" in df else None
    return verdict_summary(df["label"].to_numpy(), df["logit"].to_numpy(float), fam,
                           at(lm.verdict, alpha, flag_rate), 0.5, lm.temperature)


def calibration_band_share(lm, alpha: float) -> float:
    """Share of the calibration split itself that the band makes UNSURE at alpha (no familiarity)."""
    vm = replace(lm.verdict, alpha=alpha, familiarity=None)
    v, _ = decide(vm.cal_logits, None, vm, 0.5, lm.temperature)
    return float(np.mean(np.asarray(v) == UNSURE))


def _shown(path: str) -> str:
    """A path as the results file records it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(REPO / "weights" / "default.pt"))
    p.add_argument("--data", default=str(REPO / "data" / "sample"))
    p.add_argument("--logo", default=str(REPO / "weights" / "logo"), help="LOGO output folder of the same recipe")
    p.add_argument("--runs", default=str(REPO / "runs"), help="cache of evaluations (default: runs/)")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "verdict_operating_points.json"))
    args = p.parse_args(argv)

    lm = load_checkpoint(args.weights)
    test, _ = cached_evaluation(lm, open_dataset(args.data, split="test"), runs_dir=args.runs)
    folds = []
    for d in sorted(Path(args.logo).iterdir()):
        ev = load_evaluation(d / "eval") if d.is_dir() else None
        if ev is not None and (d / "model.pt").is_file():
            folds.append((d.name, load_checkpoint(d / "model.pt"), ev[0]))
    if not folds:
        print(f"no LOGO fold evaluations under {args.logo}", file=sys.stderr)
        return 2

    rows = []
    for a in ALPHAS:
        for f in FLAG_RATES:
            t = summary_at(test, lm, a, f)
            held = {name: summary_at(df, flm, a, f) for name, flm, df in folds}
            wd = {k: v["share_wrong_decided"] for k, v in held.items()}
            worst = max(wd, key=wd.get)
            rows.append({
                "alpha": a, "flag_rate": f,
                "calibration_share_band": calibration_band_share(lm, a),
                "test_share_unsure": t["share_unsure"], "test_share_wrong_decided": t["share_wrong_decided"],
                "test_errors_caught_by_unsure": t["errors_caught_by_unsure"],
                "held_out_mean_share_unsure": float(np.mean([v["share_unsure"] for v in held.values()])),
                "held_out_mean_share_wrong_decided": float(np.mean(list(wd.values()))),
                "held_out_max_share_wrong_decided": wd[worst], "held_out_worst": worst,
                "held_out_share_wrong_decided": wd,
            })
    out = {"weights": _shown(args.weights), "weights_sha256": lm.sha256, "logo": _shown(args.logo), "test_n": int(len(test)),
           "calibration_n": int(len(lm.verdict.cal_logits)),
           "calibration_error_rate": float(np.mean((np.asarray(lm.verdict.cal_logits) >= 0).astype(int)
                                                   != np.asarray(lm.verdict.cal_labels))),
           "test_error_rate": float(np.mean((test["logit"].to_numpy(float) >= 0).astype(int) != test["label"].to_numpy())),
           "shipped": {"alpha": lm.verdict.alpha,
                       "flag_rate": None if lm.verdict.familiarity is None else lm.verdict.familiarity.flag_rate},
           "rows": rows}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(out, indent=2))
    print(f"errors at threshold 0.5: calibration split {out['calibration_error_rate']:.2%} of {out['calibration_n']:,}, "
          f"test {out['test_error_rate']:.2%} of {out['test_n']:,}")
    print("| alpha | flag rate | calibration band | test UNSURE | test wrong, not UNSURE | held-out UNSURE (mean) "
          "| held-out wrong, not UNSURE (mean) | worst family |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['alpha']:g} | {r['flag_rate']:g} | {r['calibration_share_band']:.1%} | {r['test_share_unsure']:.1%} | "
              f"{r['test_share_wrong_decided']:.2%} | {r['held_out_mean_share_unsure']:.1%} | "
              f"{r['held_out_mean_share_wrong_decided']:.1%} | {r['held_out_worst']} "
              f"{r['held_out_max_share_wrong_decided']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
