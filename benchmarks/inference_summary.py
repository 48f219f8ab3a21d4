"""Several bench_inference.py results side by side: one column per run, each row's img/s and ratio to that run's limit.

    python benchmarks/inference_summary.py inference inference_t2 [...]     # names in benchmarks/results/

Prints a Markdown table (what the README quotes) and, per row, the range of the ratio over the runs.
"""
from __future__ import annotations

import argparse
import json

from common import ROOT


def short(pipeline: str) -> str:
    """A row's name without the run-specific details (the limit's batch and arrangement, the default's schedule)."""
    if pipeline.startswith("fused forward"):
        return "fused forward: the limit"
    if pipeline.startswith("unfused forward"):
        return "unfused forward"
    if pipeline.startswith("end-to-end evaluate"):
        return "end-to-end, the default schedule"
    if pipeline.startswith("seed V2.1 pipeline"):
        return "seed V2.1 pipeline (32 -> 128)"
    return pipeline


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="+", help="results files benchmarks/results/NAME.json of bench_inference.py")
    args = ap.parse_args()
    runs = [json.loads((ROOT / "benchmarks" / "results" / f"{n}.json").read_text()) for n in args.names]
    rows = {}                                   # row name -> {run position: row}
    for k, run in enumerate(runs):
        for r in run["throughput"]:
            rows.setdefault(short(r["pipeline"]), {})[k] = r
    print("| pipeline | " + " | ".join(f"{n} ({(run.get('commit') or '?')[:8]})" for n, run in zip(args.names, runs))
          + " | ratio range |")
    print("|---|" + "---|" * len(runs) + "---|")
    for name, by_run in rows.items():
        cells = [f"{by_run[k]['images_per_s']:,.0f} ({by_run[k]['ratio_to_fused']:.2f})" if k in by_run else "-"
                 for k in range(len(runs))]
        ratios = [r["ratio_to_fused"] for r in by_run.values()]
        print(f"| {name} | " + " | ".join(cells) + f" | {min(ratios):.2f}-{max(ratios):.2f} |")
    print()
    for n, run in zip(args.names, runs):
        limit = run["throughput"][0]["pipeline"]
        print(f"{n}: {run['when']}, limit = {limit}; end-to-end vs seed pipeline {run['speedup_vs_seed']:.1f}x; "
              f"roofline {run['roofline']['achieved_gflops']:.1f} GFLOP/s = "
              f"{run['roofline']['share_of_matmul_peak']:.0%} of a measured matmul "
              f"({run['roofline']['matmul_peak_gflops']:.1f})")


if __name__ == "__main__":
    main()
