"""Medians over repeated bench_browser.py runs: per page and version, first numbers / script done / complete.

    python benchmarks/browser_medians.py s9_first_views_t1 s9_first_views_t2 s9_first_views_t3 [--out NAME]

Each argument is a results name under benchmarks/results/ (a run of bench_browser.py, typically with
--baseline REV, so every file holds HEAD and the baseline measured side by side). Prints, per page and
version, the median of each time over the runs, the number of runs, and the ratio HEAD / baseline of the
median complete time; a run whose page had an error counts as missing. With --out, writes the table (and
the inputs' HEADs and baselines) as benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import json
import statistics

from common import ROOT, print_table, save

TIMES = ("first_numbers_s", "script_done_s", "complete_s")


def medians(runs: list[dict]) -> list[dict]:
    """[{"page", "version", "runs", "<time>_median" for TIMES, "complete_s_all", "meets_all"}], in first-seen
    order; version "HEAD" or the baseline's name as bench_browser.py wrote it."""
    rows: dict[tuple, dict] = {}
    for run in runs:
        for r in run["pages"]:
            key = (r["page"], r["version"])
            row = rows.setdefault(key, {"page": r["page"], "version": r["version"], **{t: [] for t in TIMES},
                                        "meets": []})
            if r.get("error") is None:
                for t in TIMES:
                    if r.get(t) is not None:
                        row[t].append(r[t])
                row["meets"].append(bool(r.get("meets")))
    out = []
    for row in rows.values():
        out.append({"page": row["page"], "version": row["version"], "runs": len(row["complete_s"]),
                    **{f"{t}_median": statistics.median(row[t]) if row[t] else None for t in TIMES},
                    "complete_s_all": row["complete_s"], "meets_all": row["meets"]})
    base = {r["page"]: r["complete_s_median"] for r in out if r["version"] != "HEAD"}
    for r in out:
        if r["version"] == "HEAD" and base.get(r["page"]) and r["complete_s_median"] is not None:
            r["ratio_to_baseline"] = r["complete_s_median"] / base[r["page"]]
    return sorted(out, key=lambda r: (r["page"], r["version"] != "HEAD"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="+", help="results names under benchmarks/results/ (bench_browser.py --out)")
    ap.add_argument("--out", default=None, help="write the medians as benchmarks/results/OUT.json (default: print only)")
    args = ap.parse_args()
    runs = [json.loads((ROOT / "benchmarks" / "results" / f"{n}.json").read_text()) for n in args.names]
    rows = medians(runs)
    print_table(rows, ["page", "version", "runs", "first_numbers_s_median", "script_done_s_median",
                       "complete_s_median", "ratio_to_baseline"])
    if args.out:
        save(args.out, {"inputs": args.names, "heads": sorted({r["head"] for r in runs}),
                        "baselines": sorted({str(r["baseline"]) for r in runs}), "medians": rows})


if __name__ == "__main__":
    main()
