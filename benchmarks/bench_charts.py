"""What a chart costs the server: each chart of tests/test_charts.py (every kind and option the pages draw), built
as a Vega-Lite dict (pages_support.charts) and, for comparison, with the Altair code it replaced
(tests/altair_charts_reference.py), each converted the way Streamlit sends it (datasets as Arrow bytes).

    python benchmarks/bench_charts.py [--repeats 5] [--out charts]

Per chart: the best of `repeats` (build + conversion) wall times, in ms, after one untimed round (Altair's first
conversion in a process loads its schema and validators: run_app primed that before; this measures what every
later chart costs). Both are measured in the same process, alternating chart by chart. Writes
benchmarks/results/<out>.json.
"""
from __future__ import annotations

import argparse
import sys

from common import ROOT, best_of, print_table, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per chart and version, best kept (default: 5)")
    ap.add_argument("--out", default="charts", help="results name under benchmarks/results/ (default: charts)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import altair_charts_reference as ref
    from streamlit import dataframe_util
    from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec
    from test_charts import CASES, _tips

    from pages_support import charts

    def as_sent_dict(case):
        spec = CASES[case](charts, _tips(charts)).to_dict()
        spec["datasets"] = {k: dataframe_util.convert_anything_to_arrow_bytes(v) for k, v in spec["datasets"].items()}
        return spec

    def as_sent_altair(case):
        return _convert_altair_to_vega_lite_spec(CASES[case](ref, _tips(ref)))
    rows = []
    for case in CASES:
        as_sent_dict(case), as_sent_altair(case)          # untimed round
        rows.append({"chart": case, "dict_ms": 1000 * best_of(lambda: as_sent_dict(case), args.repeats),
                     "altair_ms": 1000 * best_of(lambda: as_sent_altair(case), args.repeats)})
        rows[-1]["ratio"] = rows[-1]["dict_ms"] / rows[-1]["altair_ms"]
    total = {"chart": "all", "dict_ms": sum(r["dict_ms"] for r in rows), "altair_ms": sum(r["altair_ms"] for r in rows)}
    total["ratio"] = total["dict_ms"] / total["altair_ms"]
    print_table(rows + [total], ["chart", "dict_ms", "altair_ms", "ratio"])
    save(args.out, {"repeats": args.repeats, "charts": rows, "total": total})


if __name__ == "__main__":
    main()
