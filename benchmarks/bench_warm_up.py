"""What each page's first result costs to compute: run_app.py's warm-up steps, one by one, timed.

    python benchmarks/bench_warm_up.py [--threads 2] [--out warm_up]

Every step is the core call a page makes on a fresh server (run_app.warm_up_steps: the test and ood
evaluations, Limitations' sweep, stability battery and Grad-CAM audit, Forensics' analysis, Compare's
model B, Error slices' image properties, then the other splits), into an empty runs/ folder, in
WARM_UP_ORDER, at the calling thread's priority (no nice). Per step: wall seconds and CPU seconds of
the process (all threads; on a shared machine CPU seconds move less than wall seconds). Also printed:
Limitations' forward passes (core.audits.limitations.first_view_forwards). Writes benchmarks/results/<out>.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import print_table, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    ap.add_argument("--out", default="warm_up", help="results name under benchmarks/results/ (default: warm_up)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    import pages_support.paths as paths
    import run_app
    from core.data.datasets import open_dataset
    from core.audits.limitations import first_view_forwards, subsample_sizes
    runs = Path(tempfile.mkdtemp(prefix="bench-warm-up-"))
    paths.RUNS_DIR = runs                      # the steps read RUNS_DIR when they are built
    rows = []
    load = os.getloadavg()[0]
    try:
        for name, step in run_app.warm_up_steps():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            rows.append({"step": name, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    n = len(open_dataset(str(paths.SAMPLE_DIR), split="test"))
    print_table(rows, ["step", "wall_s", "cpu_s"])
    print(f"Limitations on the sample's test split ({n:,} images): subsamples {subsample_sizes(n)}, "
          f"{first_view_forwards(n):,} forward passes")
    save(args.out, {"threads": args.threads, "load_before": load, "steps": rows,
                    "limitations_forwards": first_view_forwards(n), "limitations_subsamples": subsample_sizes(n)})


if __name__ == "__main__":
    main()
