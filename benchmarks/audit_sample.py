"""The audit's headline numbers for the shipped models on the embedded sample, in one run.

    python benchmarks/audit_sample.py [--data data/sample/test] [--runs runs]

Prints, and writes to benchmarks/results/audit_sample.json:
- the shortcut check of the data (metadata-only balanced accuracy, per property; core.audits.forensics);
- the re-encoding control of every shipped checkpoint (JPEG 90, 4:2:0, the model's input size);
- the flip rate per everyday change of every shipped checkpoint (core.audits.stability);
- default.pt against seed-v1.pt (core.audits.compare: paired bootstrap, McNemar);
- the three worst slices of default.pt (core.audits.slices).
All at threshold 0.5. Each part is also one CLI call, with the same numbers:
    python -m core forensics --data data/sample/test --weights weights/default.pt --out DIR
    python -m core stability --weights weights/default.pt --data data/sample/test
    python -m core compare --weights weights/default.pt weights/seed-v1.pt --data data/sample/test --out DIR
    python -m core slices --weights weights/default.pt --data data/sample/test
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import ROOT, save

from core.model.checkpoint import load_checkpoint, file_sha256
from core.audits.compare import compare_predictions, join_predictions
from core.data.datasets import open_dataset
from core.inference.evaluate import cached_evaluation
from core.audits.forensics import analyse, cached_reencoding
from core.audits.slices import cached_properties, join, slice_table
from core.audits.stability import cached_dataset_stability, flip_table

THRESHOLD = 0.5


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "sample" / "test"), help="default: data/sample/test")
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="cache folder shared with the app (default: runs)")
    ap.add_argument("--weights", nargs="+", default=None, help="checkpoints (default: every weights/*.pt)")
    args = ap.parse_args()
    ds = open_dataset(args.data)
    paths = [Path(w) for w in args.weights] if args.weights else sorted((ROOT / "weights").glob("*.pt"))
    weights = {p.name: p for p in paths}
    lms = {name: load_checkpoint(p) for name, p in weights.items()}
    # the data's description names its folder relative to the repository, so the result holds on any clone
    out = {"data": ds.describe().replace(f"{ROOT}/", ""), "threshold": THRESHOLD,
           "weights_sha256": {n: file_sha256(p)[:16] for n, p in weights.items()}}

    s = analyse(ds)["shortcuts"]
    out["shortcut"] = {"metadata_only_accuracy": s["metadata_only_accuracy"], "flagged": s["flagged"],
                       "per_feature_accuracy": s["per_feature_accuracy"]}
    print(f"metadata-only balanced accuracy {s['metadata_only_accuracy']:.4f} (flagged: {s['flagged']}); per "
          "property: " + ", ".join(f"{k} {v:.4f}" for k, v in s["per_feature_accuracy"].items()))

    out["reencoding"], out["flip_rates"] = {}, {}
    for name, lm in lms.items():
        rc = cached_reencoding(lm, ds, args.runs, 90, THRESHOLD)
        out["reencoding"][name] = {"clean_accuracy": rc["clean"]["accuracy"], "reencoded_accuracy": rc["reencoded"]["accuracy"],
                                   "delta_accuracy": rc["delta_accuracy"], "clean_auc": rc["clean"]["roc_auc"],
                                   "reencoded_auc": rc["reencoded"]["roc_auc"], "delta_roc_auc": rc["delta_roc_auc"],
                                   "metadata_only_accuracy_after": rc["metadata_only_accuracy_after"]}
        print(f"{name}: re-encoding (JPEG 90, {rc['size']}): accuracy {rc['clean']['accuracy']:.4f} -> "
              f"{rc['reencoded']['accuracy']:.4f} ({rc['delta_accuracy']:+.4f}), AUC {rc['clean']['roc_auc']:.4f} -> "
              f"{rc['reencoded']['roc_auc']:.4f} ({rc['delta_roc_auc']:+.4f})")
        ft = flip_table(cached_dataset_stability(lm, ds, args.runs), THRESHOLD)
        out["flip_rates"][name] = {r["change"]: {"flip_rate": r["flip_rate"], "flips": r["flips"], "ci_low": r["ci_low"],
                                                 "ci_high": r["ci_high"]} for r in ft.to_dict("records")}
        print(f"{name}: flip rates: " + ", ".join(f"{r['change']} {r['flip_rate']:.4f}" for r in ft.to_dict("records")))

    if {"default.pt", "seed-v1.pt"} <= set(lms):
        joined = join_predictions(cached_evaluation(lms["default.pt"], ds, args.runs)[0],
                                  cached_evaluation(lms["seed-v1.pt"], ds, args.runs)[0])
        res = compare_predictions(joined, THRESHOLD, 1000, 0)
        out["compare_default_vs_seed_v1"] = {k: res[k] for k in ("n", "both_right", "only_a", "only_b", "both_wrong",
                                                                "mcnemar_p")}
        out["compare_default_vs_seed_v1"]["metrics"] = res["metrics"]
        acc = res["metrics"]
        print(f"compare default.pt (A) vs seed-v1.pt (B) on {res['n']}: both right {res['both_right']}, only A "
              f"{res['only_a']}, only B {res['only_b']}, both wrong {res['both_wrong']}, McNemar p {res['mcnemar_p']:.3g}; "
              f"accuracy A {acc['a']['accuracy']['value']:.4f} [{acc['a']['accuracy']['ci_low']:.4f}, "
              f"{acc['a']['accuracy']['ci_high']:.4f}], B {acc['b']['accuracy']['value']:.4f} "
              f"[{acc['b']['accuracy']['ci_low']:.4f}, {acc['b']['accuracy']['ci_high']:.4f}]; AUC A "
              f"{acc['a']['roc_auc']['value']:.4f}, B {acc['b']['roc_auc']['value']:.4f}")

    if "default.pt" in lms:
        merged = join(cached_evaluation(lms["default.pt"], ds, args.runs)[0], cached_properties(ds, args.runs))
        worst = slice_table(merged, THRESHOLD).head(3)
        out["worst_slices_default"] = worst.to_dict("records")
        for r in out["worst_slices_default"]:
            print(f"worst slice: {r['dimension']} {r['slice']}: {r['accuracy']:.4f} of {r['images']} "
                  f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}], {r['false_positives']} FP, {r['false_negatives']} FN")
    save("audit_sample", out)


if __name__ == "__main__":
    main()
