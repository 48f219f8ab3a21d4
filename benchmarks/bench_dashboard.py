"""Time for each dashboard page to appear: first ever (evaluation computed), from disk, and warm.

    python benchmarks/bench_dashboard.py

Uses Streamlit's AppTest on the shipped defaults (weights/default.pt, data/sample/test), in a fresh
runs/ folder:
- first: nothing cached anywhere, the page computes its evaluation/sweep (progress bar path);
- from disk: st.cache_data / st.cache_resource cleared, results present under runs/ (a new server process);
- warm: the page run again in the same session (what a user sees when switching pages).
Target: warm under 1 s.
"""
from __future__ import annotations

import os
import tempfile
import time

from common import ROOT, print_table, save

PAGES = ["pages/1_predict.py", "pages/2_confusion.py", "pages/3_calibration.py", "pages/4_misclassifications.py",
         "pages/5_limitations.py", "pages/6_model_data.py"]


def main():
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    os.chdir(ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        os.environ["AUDIT_RUNS_DIR"] = runs

        def timed(at, page):
            t0 = time.perf_counter()
            if page == PAGES[0]:
                at.run()
            else:
                at.switch_page(page).run()
            dt = time.perf_counter() - t0
            assert not at.exception, (page, at.exception)
            return dt

        for page in PAGES:
            st.cache_data.clear()
            st.cache_resource.clear()
            at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
            if page != PAGES[0]:
                at.run()                 # the entrypoint's first run; the page switch is what we time
            first = timed(at, page)
            st.cache_data.clear()
            st.cache_resource.clear()
            at2 = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
            if page != PAGES[0]:
                at2.run()
            disk = timed(at2, page)
            warm = min(timed(at2, page) for _ in range(3))
            rows.append({"page": page.split("/")[1][:-3], "first_s": first, "from_disk_s": disk, "warm_s": warm})
            print(rows[-1], flush=True)
    print()
    print_table(rows, ["page", "first_s", "from_disk_s", "warm_s"])
    save("dashboard", {"rows": rows})


if __name__ == "__main__":
    main()
