"""What one element costs a first view in a real browser: a one-page Streamlit app that draws a single kind of
element, opened in a new headless Chromium context per trial (nothing cached), against the same app drawing
only text.

    python benchmarks/bench_frontend.py [--trials 3] [--out frontend]

Kinds: text (the baseline), metric, st.dataframe, st.table, two plotly line charts of 3,000 points, the same
two charts in Vega-Lite (st.altair_chart) and one static PNG (core.report.figures.line_plot_png through st.image).
"complete" is bench_browser.first_view's: the script run finished and no spinner or stSkeleton left (the
frontend's placeholder while it loads an element's code). Trials are interleaved (kind by kind, trial by
trial) so a machine's load falls on every kind alike; the table gives each kind's median and its median
extra time over the text-only page of the same trial. Writes benchmarks/results/<out>.json.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, print_table, save

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_browser import CHROMIUM, FLAGS, _free_port, _wait_http, first_view, stop  # noqa: E402

APP = '''
import sys
import numpy as np
import pandas as pd
import streamlit as st
sys.path.insert(0, {root!r})
kind = st.query_params.get("k", "text")
st.title("One element")
x = np.linspace(0, 1, 3000)
y = np.sqrt(x)
if kind == "metric":
    st.metric("accuracy", "96.1%")
elif kind == "dataframe":
    st.dataframe(pd.DataFrame({{"x": x[:20], "y": y[:20]}}))
elif kind == "table":
    st.table(pd.DataFrame({{"x": x[:20], "y": y[:20]}}))
elif kind == "plotly":
    import plotly.graph_objects as go
    for i in range(2):
        st.plotly_chart(go.Figure(go.Scatter(x=x, y=y)), key=f"p{{i}}")
elif kind == "vega-lite":
    import altair as alt
    for i in range(2):
        st.altair_chart(alt.Chart(pd.DataFrame({{"x": x, "y": y}})).mark_line().encode(x="x", y="y",
                                                                                    tooltip=["x", "y"]), key=f"a{{i}}")
elif kind == "png":
    from core.report.figures import line_plot_png
    st.image(line_plot_png([{{"x": x, "y": y, "name": "y"}}], "y", "x", "y"))
else:
    st.write("Only text.")
'''
KINDS = ["text", "metric", "dataframe", "table", "plotly", "vega-lite", "png"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="trials per kind (default: 3)")
    ap.add_argument("--out", default="frontend", help="results name under benchmarks/results/ (default: frontend)")
    args = ap.parse_args()
    import os

    from playwright.sync_api import sync_playwright
    tmp = Path(tempfile.mkdtemp(prefix="bench-frontend-"))
    (tmp / "app.py").write_text(APP.format(root=str(ROOT)))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.fileWatcherType", "none",
                               "--browser.gatherUsageStats", "false"], cwd=tmp, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    times = {k: [] for k in KINDS}
    load = os.getloadavg()[0]
    try:
        _wait_http(f"http://localhost:{port}/_stcore/health")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            first_view(browser, f"http://localhost:{port}/?k=text")          # the server's own first run
            for trial in range(args.trials):
                for k in KINDS:
                    res = first_view(browser, f"http://localhost:{port}/?k={k}")
                    times[k].append(res["complete_s"])
                    print(trial, k, res["complete_s"], flush=True)
            browser.close()
    finally:
        stop(server)
    rows = []
    for k in KINDS:
        ok = [(t, b) for t, b in zip(times[k], times["text"]) if t is not None and b is not None]
        rows.append({"element": k, "complete_s_median": statistics.median(t for t, _ in ok) if ok else None,
                     "extra_over_text_s_median": statistics.median(t - b for t, b in ok) if ok else None,
                     "trials": len(ok), "complete_s": times[k]})
    print_table(rows, ["element", "complete_s_median", "extra_over_text_s_median", "trials"])
    save(args.out, {"trials": args.trials, "load_before": load, "rows": rows})


if __name__ == "__main__":
    main()
