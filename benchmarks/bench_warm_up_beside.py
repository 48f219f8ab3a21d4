"""A page's own computation beside run_app.py's warm-up: warm-up as threads of the page's process, or as a process.

    python benchmarks/bench_warm_up_beside.py [--trials 2] [--out warm_up_beside]

What a page opened at once on a fresh server computes itself (Forensics' analysis, Error slices' image
properties: mostly Python per file), timed in the main thread of a fresh process, with:

- `alone`: no warm-up running (the reference);
- `threads`: run_app.warm_up in a thread of the same process (its lanes in SCHED_IDLE
  threads after the first step), so the page's thread shares the interpreter lock with the lanes;
- `process`: run_app's warm-up process (run_app._warm_up_in_background, SCHED_IDLE lanes after the first
  step), as run_app.py starts it.

The warm-up works on the shipped default.pt and data/sample into a temporary runs/ of its own (so it never
finds the page's results), and the page's computation starts once the warm-up's first step (the test
evaluation) is stored, i.e. when the server would answer. Each (mode, trial) is a new process; modes
alternate within each trial, so all see the same machine. Writes benchmarks/results/<out>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import ROOT, print_table, save

MODES = ("alone", "threads", "process")


def run_one(mode: str) -> dict:
    """In this process: start the warm-up as `mode` says, then time the page's computations."""
    import threading

    import run_app
    from core.data.datasets import open_dataset
    from core.audits.forensics import analyse
    from core.audits.slices import image_properties
    from pages_support.paths import SAMPLE_DIR
    run_app.import_compute_modules()
    ds = open_dataset(str(SAMPLE_DIR), split="test", fmt="cifake")
    if mode == "threads":
        first = threading.Event()
        threading.Thread(target=run_app.warm_up, kwargs={"log": lambda m: None, "first_done": first},
                         daemon=True).start()
        first.wait()
    elif mode == "process":
        _, first = run_app._warm_up_in_background()
        first.wait()
    out = {"mode": mode}
    cpu0 = time.process_time()
    for name, fn in (("forensics_s", lambda: analyse(ds)), ("properties_s", lambda: image_properties(ds))):
        t0 = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t0
    out["page_cpu_s"] = time.process_time() - cpu0 if mode != "threads" else None   # threads: the lanes' CPU too
    out["load_after"] = os.getloadavg()[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=2, help="trials per mode (default: 2)")
    ap.add_argument("--out", default="warm_up_beside", help="results name under benchmarks/results/ "
                                                            "(default: warm_up_beside)")
    ap.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)      # internal: one measurement, JSON out
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)), flush=True)
        os._exit(0)                                     # the threads mode's warm-up dies with this process
    rows = []
    for trial in range(args.trials):
        for mode in (MODES if trial % 2 == 0 else MODES[::-1]):
            with tempfile.TemporaryDirectory(prefix="bench-beside-") as runs:
                load = os.getloadavg()[0]
                env = {**os.environ, "AUDIT_RUNS_DIR": runs, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
                p = subprocess.run([sys.executable, __file__, "--one", mode], cwd=ROOT, env=env, capture_output=True,
                                   text=True, timeout=1200)
                if p.returncode:
                    raise SystemExit(p.stderr)
                row = {"trial": trial, **json.loads(p.stdout.strip().splitlines()[-1]), "load_before": load}
                rows.append(row)
                print(row, flush=True)
    print()
    print_table(rows, ["trial", "mode", "forensics_s", "properties_s", "page_cpu_s", "load_before", "load_after"])
    med = {}
    for mode in MODES:
        for k in ("forensics_s", "properties_s"):
            vals = sorted(r[k] for r in rows if r["mode"] == mode)
            med[f"{mode}_{k}"] = vals[len(vals) // 2] if len(vals) % 2 else sum(vals[len(vals) // 2 - 1:][:2]) / 2
    for mode in ("threads", "process"):
        for k in ("forensics_s", "properties_s"):
            print(f"{mode:8s} {k}: {med[f'{mode}_{k}']:.2f} s, {med[f'{mode}_{k}'] / med[f'alone_{k}']:.2f}x alone")
    save(args.out, {"rows": rows, "medians": med, "trials": args.trials})


if __name__ == "__main__":
    main()
