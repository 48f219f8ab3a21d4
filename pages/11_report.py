"""Audit report page: build the one-file HTML report (core.report.report) for the sidebar's model, data and
threshold, and download it. The same file as `python -m core report --weights W --data PATH --out F`.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.report.report import build_report
from pages_support import common as _common
from pages_support.common import RUNS_DIR, get_context, training_data

LOGO_DIR = _common.WEIGHTS_DIR / "logo"


def main() -> None:
    st.title("Audit report")
    ctx = get_context()
    if ctx is None:
        st.stop()
    st.markdown("One self-contained HTML file with the model card, headline metrics, confusion matrix, calibration, "
                "the Limitations verdicts, the generalization leaderboard (when one is stored), residual spectra, "
                "the shortcut check with its re-encoding control, verdict stability, the worst slices and the data "
                "issues (label issues, near duplicates, outliers, leakage from the training split). Figures "
                "and thumbnails are embedded; it opens offline and makes no network request. Its numbers are the "
                "pages' numbers for this model, data and threshold.")
    st.caption(f"Model `{Path(ctx.weights_path).name}` · {ctx.ds.describe()} · threshold {ctx.threshold:.2f}")
    key = (ctx.lm.sha256, tuple(ctx.dataset_key), ctx.threshold)
    kept = st.session_state.get("_report")
    if not (kept and kept[0] == key):
        if not st.button("Build the report", key="report_build", type="primary"):
            st.caption("Uses the results already computed by the other pages (runs/); what is missing is computed "
                       "now, which on a new dataset takes as long as visiting every page.")
            return
        with st.status("Building the report...", expanded=True) as status:
            doc = build_report(ctx.lm, ctx.weights_path, ctx.ds, ctx.threshold, RUNS_DIR, _common.SAMPLE_DIR,
                               LOGO_DIR if (LOGO_DIR / "leaderboard.csv").is_file() else None,
                               log=lambda s: status.write(s), reference=training_data(ctx)[0])
            status.update(label="Report ready", state="complete")
        kept = (key, doc.encode("utf-8"))
        st.session_state["_report"] = kept
    name = f"audit-{Path(ctx.weights_path).stem}-t{ctx.threshold:.2f}.html"
    st.download_button("Download the report (HTML)", kept[1], name, "text/html", key="report_download", type="primary")
    st.caption(f"{len(kept[1]) / 1e6:.2f} MB")


main()
