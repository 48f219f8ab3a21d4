"""What each of run_app.py's warm-up mechanisms buys the first views: each switched off in turn, in one run.

    python benchmarks/bench_warm_up_ablation.py [--trials 2] [--pages limitations,model_data,...] [--without a,b]

Variants: `full` (run_app.py as it is), one per mechanism switched off (run_app.py reads RUN_APP_WITHOUT), and
`plain` (`streamlit run dashboard.py`, no warm-up at all). Each view is bench_browser.fresh_view: a fresh
clone, the server started, the page opened at once in a new headless Chromium. Per trial, per page, every
variant, in an order rotated by page and trial so that none always goes first on a shared machine. Writes
benchmarks/results/warm_up_ablation.json (every row, and per variant and page the median over the trials).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench_browser import CHROMIUM, FLAGS, PAGES, fresh_view
from common import save

MECHANISMS = ["process", "nice", "idle", "autogroup", "waiters", "gc_freeze", "prime", "while_waiting", "lanes"]


def medians(rows: list[dict]) -> list[dict]:
    out = {}
    for r in rows:
        out.setdefault((r["version"], r["page"]), []).append(r)
    return [{"variant": v, "page": p, "trials": len(rs),
             **{k: statistics.median(x[k] for x in rs) if all(x[k] is not None for x in rs) else None
                for k in ("first_numbers_s", "complete_s", "server_start_s", "from_command_s")},
             "meets_all": all(x["meets"] for x in rs)} for (v, p), rs in out.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", default="limitations,model_data,forensics,compare,slices,confusion",
                    help="comma-separated url paths (default: the pages a fresh server's warm-up affects)")
    ap.add_argument("--without", default=",".join(MECHANISMS), help="mechanisms to switch off one at a time")
    ap.add_argument("--trials", type=int, default=2, help="default: 2")
    ap.add_argument("--out", default="warm_up_ablation", help="results name (default: warm_up_ablation)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright
    pages = ["" if p == "predict" else p for p in args.pages.split(",")]
    variants = ["full"] + [f"without {m}" for m in args.without.split(",") if m] + ["plain"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        for trial in range(args.trials):
            for k, path in enumerate(pages):
                shift = (k + trial * len(pages)) % len(variants)
                for v in variants[shift:] + variants[:shift]:
                    env = {"RUN_APP_WITHOUT": v.removeprefix("without ")} if v.startswith("without ") else {}
                    try:
                        row = fresh_view(browser, Path(tmp), path, launcher=v != "plain", env=env, version=v)
                    except Exception as e:         # a server that never answered: a row with its reason
                        row = {"page": PAGES[path], "version": v, "first_numbers_s": None, "complete_s": None,
                               "server_start_s": None, "from_command_s": None, "meets": False, "error": repr(e)}
                    rows.append({**row, "trial": trial})
                    save(args.out, {"pages": [PAGES[p] for p in pages], "variants": variants, "rows": rows,
                                    "medians": medians(rows)})
        browser.close()
    for m in medians(rows):
        print(m)


if __name__ == "__main__":
    main()
