"""The limitations page's robustness sweep (every shift, every level), batched vs image by image.

    python benchmarks/bench_sweep.py [--weights weights/default.pt] [--data data/sample/test]

Batched: the set is decoded once and each shift is applied to whole batches of tensors
(core.audits.robustness.sweep's fast path). Baseline, measured on a few levels and scaled: each image is
decoded, shifted and preprocessed per level through the dataset (the generic path).
"""
from __future__ import annotations

import argparse
import time

from common import ROOT, print_table, save

from core.model.checkpoint import load_checkpoint
from core.data.datasets import open_dataset
from core.inference.evaluate import predict_dataset
from core.audits.robustness import sweep
from core.data.shifts import SWEEP_LEVELS, Shift


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"), help="default: weights/default.pt")
    ap.add_argument("--data", default=str(ROOT / "data" / "sample" / "test"), help="default: data/sample/test")
    args = ap.parse_args()
    lm = load_checkpoint(args.weights)
    ds = open_dataset(args.data)
    n_levels = sum(len(v) for v in SWEEP_LEVELS.values())
    t0 = time.perf_counter()
    df = sweep(lm, ds, max_images=None)       # every image: the page uses a 500-image subsample (SWEEP_MAX_IMAGES)
    t_batched = time.perf_counter() - t0
    per_shift = df.groupby("shift")["seconds"].sum().to_dict()
    # Generic path on one level per shift, scaled to the full sweep.
    t_generic_levels = 0.0
    for name, levels in SWEEP_LEVELS.items():
        t1 = time.perf_counter()
        predict_dataset(lm, ds, 256, shift=Shift(name, levels[-1]))
        t_generic_levels += (time.perf_counter() - t1) * len(levels)
    rows = [{"path": "batched on decoded tensors (used)", "seconds": t_batched, "ratio": 1.0},
            {"path": "per image through the dataset (estimated from 1 level per shift)", "seconds": t_generic_levels,
             "ratio": t_generic_levels / t_batched}]
    print(f"{len(ds)} images x {n_levels} shift levels (+ clean)\n")
    print_table(rows, ["path", "seconds", "ratio"])
    print("\nseconds per shift (batched):", {k: round(v, 2) for k, v in per_shift.items()})
    save("sweep", {"images": len(ds), "levels": n_levels, "rows": rows, "per_shift_seconds": per_shift})


if __name__ == "__main__":
    main()
