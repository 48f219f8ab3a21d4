"""The Limitations page's sweep as the app computes it: one worker on every torch thread, or N single-threaded workers.

    python benchmarks/bench_sweep_workers.py [--trials 2] [--busy] [--out sweep_workers]

The sweep of core.audits.robustness.sweep on its stated subsample (SWEEP_MAX_IMAGES of data/sample/test, shipped
weights/default.pt), computed (a) by one thread on the process's 2 torch threads (a page computing it) and
(b) by 2 workers on one torch thread each (`workers=2`, run_app's warm-up). Trials alternate a, b, a, b so
a shared machine's load falls on both. Per trial: wall seconds and the process's CPU seconds; the tables
of (a) and (b) must be equal number for number (the script stops otherwise).

--busy: a nice-0 Python thread spins on one core meanwhile (as the browser drawing a page, or a page's
own work, does during a first view), the case the single-threaded workers are for: a team of 2 torch
threads waits at every parallel region for the member whose core is taken. Writes
benchmarks/results/<out>.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import pandas as pd
import torch

from common import ROOT, print_table, save

from core.model.checkpoint import load_checkpoint
from core.data.datasets import open_dataset
from core.audits.robustness import SWEEP_MAX_IMAGES, sweep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=2, help="trials per way (default: 2)")
    ap.add_argument("--busy", action="store_true", help="a nice-0 thread spins on one core meanwhile (default: off)")
    ap.add_argument("--out", default="sweep_workers", help="results name under benchmarks/results/ (default: sweep_workers)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    lm = load_checkpoint(str(ROOT / "weights" / "default.pt"), "cpu")
    ds = open_dataset(str(ROOT / "data" / "sample"), split="test", fmt="cifake")
    stop = threading.Event()
    if args.busy:
        def spin():
            while not stop.is_set():
                sum(range(10_000))
        threading.Thread(target=spin, daemon=True).start()
    ways = {"1 worker on 2 torch threads (a page)": 1, "2 workers on 1 torch thread each (the warm-up)": 2}
    rows, tables = [], {}
    load = os.getloadavg()[0]
    try:
        for trial in range(args.trials):
            for way, workers in (ways.items() if trial % 2 == 0 else reversed(ways.items())):
                c0, t0 = time.process_time(), time.perf_counter()
                df = sweep(lm, ds, workers=workers)
                rows.append({"way": way, "trial": trial, "wall_s": time.perf_counter() - t0,
                             "cpu_s": time.process_time() - c0})
                print(rows[-1], flush=True)
                tables.setdefault(way, df.drop(columns="seconds"))
                pd.testing.assert_frame_equal(df.drop(columns="seconds"), next(iter(tables.values())), check_exact=True)
    finally:
        stop.set()
    summary = [{"way": way, "wall_s_median": statistics.median(r["wall_s"] for r in rows if r["way"] == way),
                "cpu_s_median": statistics.median(r["cpu_s"] for r in rows if r["way"] == way)} for way in ways]
    base = summary[0]["wall_s_median"]
    for s in summary:
        s["ratio_to_one_worker"] = s["wall_s_median"] / base
    print(f"\nsweep of {int(next(iter(tables.values()))['n'].iloc[0])} of {len(ds)} images (SWEEP_MAX_IMAGES = "
          f"{SWEEP_MAX_IMAGES}), 36 passes; tables equal number for number; busy core: {args.busy}; "
          f"load before {load:.1f}\n")
    print_table(summary, ["way", "wall_s_median", "cpu_s_median", "ratio_to_one_worker"])
    save(args.out, {"busy": args.busy, "trials": args.trials, "load_before": load, "rows": rows, "summary": summary,
                    "tables_equal": True})


if __name__ == "__main__":
    main()
