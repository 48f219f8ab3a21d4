"""Does a second detector help the shipped one? The full-budget comparison behind the README's ensemble table.

    python benchmarks/ensemble_recipes.py                     # all steps; finished ones are reused
    python benchmarks/ensemble_recipes.py --weights 0.8,0.2   # one weighting
    python benchmarks/ensemble_recipes.py --second ts-seed1 --weights 0.5,0.5   # two seeds of the shipped recipe

Steps (each skipped when its output exists, so an interrupted run resumes):
1. the second member, seed-v21 with pseudo-fakes 0.3 on all of sample v2's train split, 30 + 3 epochs, seed 0
   (the shipped two-stream's recipe, data and split, so the two share their calibration split):
   `python -m core train --data data/sample --arch seed-v21 --pseudo-fakes 0.3 --epochs 30 --finetune-epochs 3
   --out runs/v21pf.pt`
2. its leave-one-generator-out folds at the shipped LOGO budget (20 + 2 epochs per fold):
   `python -m core generalize --data data/sample --arch seed-v21 --pseudo-fakes 0.3 --epochs 20
   --finetune-epochs 2 --out runs/logo-v21pf`
3. per weighting w (two-stream, seed-v21): the ensemble of the shipped weights/default.pt and the member
   (`python -m core ensemble --members weights/default.pt runs/v21pf.pt --weights w --out ...`), its verdict
   summary on test and ood, and the ensemble of the two recipes' LOGO folds
   (`python -m core ensemble --logo weights/logo runs/logo-v21pf --weights w --out ...`).
With `--second ts-seed1` the second member is instead the shipped recipe itself (two-stream, pseudo-fakes 0.3,
30 + 3 epochs) with model seed 1 on the same split (`--seed 1 --split-seed 0`): a seed ensemble. Its LOGO
folds are not trained by this script (5 x 20 + 2 epochs, over an hour here); without them the LOGO columns are
left out.
Writes benchmarks/results/ensemble.json (keys "WEIGHTS" or "SECOND:WEIGHTS") and prints one row per detector:
test accuracy, test UNSURE, test wrong-and-not-UNSURE, ood wrong-and-not-UNSURE, LOGO mean / min AUC,
held-out wrong-and-not-UNSURE.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.model.checkpoint import load_checkpoint  # noqa: E402
from core.data.datasets import open_dataset  # noqa: E402
from core.model.ensemble import build_ensemble, ensemble_logo  # noqa: E402
from core.inference.evaluate import evaluate  # noqa: E402
from core.audits.generalize import load_leaderboard, run_logo, summarize  # noqa: E402
from core.model.train import TrainConfig, train  # noqa: E402

SECONDS = {"v21pf": dict(data="data/sample", arch="seed-v21", pseudo_fakes=0.3, seed=0),
           "ts-seed1": dict(data="data/sample", arch="two-stream", pseudo_fakes=0.3, seed=1, split_seed=0)}
LOGO_TRAINED = ("v21pf",)    # second members whose LOGO folds this script trains
WEIGHTINGS = ("1,0", "0.8,0.2", "0.5,0.5", "0,1")


def split_summary(weights_path, data: str, split: str) -> dict:
    lm = load_checkpoint(weights_path)
    _, m = evaluate(lm, open_dataset(data, split=split))
    v = m["verdict"]
    return {"accuracy": m["accuracy"], "auc": m["roc_auc"], "share_unsure": v["share_unsure"],
            "share_unsure_band": v["share_unsure_band"], "share_unsure_unfamiliar": v["share_unsure_unfamiliar"],
            "share_wrong_decided": v["share_wrong_decided"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipped", default="weights/default.pt")
    ap.add_argument("--shipped-logo", default="weights/logo")
    ap.add_argument("--runs", default="runs", help="where the member and the ensembles go (default: runs)")
    ap.add_argument("--second", default="v21pf", choices=sorted(SECONDS), help="the second member (default: v21pf)")
    ap.add_argument("--weights", default=None, help=f"one weighting (default: each of {', '.join(WEIGHTINGS)})")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ensemble.json"))
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    log = lambda s: print(s, file=sys.stderr, flush=True)    # noqa: E731
    second = SECONDS[args.second]
    member = runs / f"{args.second}.pt"
    if not member.is_file():
        train(TrainConfig(**second, epochs=30, finetune_epochs=3, out=str(member), name=args.second), log=log)
    member_logo = runs / f"logo-{args.second}"
    if args.second in LOGO_TRAINED and load_leaderboard(member_logo) is None:
        run_logo(TrainConfig(**second, epochs=20, finetune_epochs=2, out=str(member_logo / "unused.pt")),
                 member_logo, log=log)
    has_logo = load_leaderboard(member_logo) is not None
    prefix = "" if args.second == "v21pf" else f"{args.second}:"
    rows = {}
    for w in ([args.weights] if args.weights else WEIGHTINGS):
        weights = [float(v) for v in w.split(",")]
        tag = prefix.replace(":", "-") + w.replace(",", "-")
        if weights == [1.0, 0.0]:            # the shipped detector alone
            path, logo = Path(args.shipped), Path(args.shipped_logo)
        elif weights == [0.0, 1.0]:          # the second member alone
            path, logo = member, member_logo
        else:
            path, logo = runs / f"ensemble-{tag}.pt", runs / f"logo-ensemble-{tag}"
            if not path.is_file():
                build_ensemble([args.shipped, member], path, weights, log=log)
            if has_logo:
                ensemble_logo([args.shipped_logo, member_logo], logo, weights, log=log)
        key = prefix + w
        rows[key] = r = {"weights": weights, "test": split_summary(path, "data/sample", "test"),
                         "ood": split_summary(path, "data/sample", "ood")}
        line = (f"{key:18s} test acc {r['test']['accuracy']:.4f} UNSURE {r['test']['share_unsure']:.4f} "
                f"wrong-decided {r['test']['share_wrong_decided']:.4f} | ood wrong-decided "
                f"{r['ood']['share_wrong_decided']:.4f}")
        if has_logo or weights == [1.0, 0.0]:
            board, _ = load_leaderboard(logo)
            r.update({"logo": summarize(board), "logo_auc": dict(zip(board["held_out"], board["auc"].astype(float))),
                      "logo_fake_unfamiliar": dict(zip(board["held_out"], board["fake_unfamiliar"].astype(float)))})
            line += (f" | LOGO mean {r['logo']['mean_auc']:.3f} min {r['logo']['min_auc']:.3f} "
                     f"({r['logo']['worst_family']}) held-out wrong-decided {r['logo']['mean_share_wrong_decided']:.4f}")
        print(line, flush=True)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps({**old, **rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
