"""Misclassifications page: the false positives (REAL called FAKE) and false negatives (FAKE called
REAL) at the sidebar threshold, most confident first, with their source and Grad-CAM on demand.

Filters by source, by verdict (REAL/FAKE/UNSURE, core.verdict.verdict) and by confidence; the filtered list
downloads as CSV.
"""
from __future__ import annotations

import streamlit as st

from core.inference.evaluate import add_verdicts
from core.data.labels import CLASS_NAMES
from core.metrics.metrics import HIGH_CONFIDENCE, annotate_calls
from pages_support.common import context_and_evaluation_or_stop
from pages_support.views import gallery, pct

KINDS = {"FP": ("False positives", "REAL images called FAKE (AI)", 0),
         "FN": ("False negatives", "FAKE (AI) images called REAL", 1)}


def main() -> None:
    st.title("Misclassifications")
    ctx, df, stored = context_and_evaluation_or_stop()
    df = annotate_calls(add_verdicts(df, ctx.lm, ctx.threshold), ctx.threshold)
    wrong = df[~df["correct"]].copy()
    wrong["error"] = wrong["label"].map({0: "FP", 1: "FN"})
    st.caption(f"{stored.get('dataset', '')} · threshold {ctx.threshold:.2f} · {len(wrong):,} of {len(df):,} images "
               f"misclassified ({pct(len(wrong) / len(df)) if len(df) else 'n/a'}). Confidence = P(AI) for images "
               "called FAKE, 1 - P(AI) for images called REAL.")

    a, v, b, c = st.columns([2, 1, 2, 1])
    sources = sorted(s for s in df["source"].astype(str).unique() if s)
    chosen = a.multiselect("Sources", sources, default=sources, key="mis_sources",
                           help="Where the images come from (the dataset's manifest).") if sources else []
    verdicts = v.multiselect("Verdicts", ["REAL", "FAKE", "UNSURE"], ["REAL", "FAKE", "UNSURE"], key="mis_verdicts",
                             help="UNSURE errors were flagged as not to be trusted; REAL/FAKE errors were not.")
    lo, hi = b.slider("Confidence in the (wrong) call", 0.0, 1.0, (0.0, 1.0), 0.01, key="mis_conf")
    show_cam = c.toggle("Grad-CAM", key="mis_cam", help="Overlay Grad-CAM of the wrong call on what the model sees.")
    alpha = c.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="mis_alpha", disabled=not show_cam)
    keep = wrong["confidence"].between(lo, hi) & wrong["verdict"].isin(verdicts)
    if sources:
        keep &= wrong["source"].astype(str).isin(chosen) | (wrong["source"].astype(str) == "")
    shown = wrong[keep].sort_values("confidence", ascending=False)

    cols = st.columns(4)
    cols[0].metric("False positives", int((shown["error"] == "FP").sum()),
                   help="after filters; of " + f"{int((wrong['error'] == 'FP').sum()):,} in total")
    cols[1].metric("False negatives", int((shown["error"] == "FN").sum()),
                   help="after filters; of " + f"{int((wrong['error'] == 'FN').sum()):,} in total")
    cols[2].metric(f"Wrong with confidence > {HIGH_CONFIDENCE}", int((shown["confidence"] > HIGH_CONFIDENCE).sum()))
    n_show = cols[3].number_input("Images per gallery", 6, 60, 18, 6, key="mis_n")

    table = shown[["path", "error", "label", "prob_fake", "confidence", "verdict", "source"]].copy()
    table["label"] = table["label"].map(lambda v: CLASS_NAMES[int(v)])
    st.download_button("Download the list (CSV)", table.assign(threshold=ctx.threshold).to_csv(index=False).encode(),
                       "misclassifications.csv", "text/csv", key="mis_csv")

    # The larger group first: st.tabs opens on the first tab.
    kinds = sorted(KINDS, key=lambda k: -int((shown["error"] == k).sum()))
    for kind, tab in zip(kinds, st.tabs([f"{KINDS[k][0]} ({int((shown['error'] == k).sum()):,})" for k in kinds])):
        title, meaning, _ = KINDS[kind]
        with tab:
            part = shown[shown["error"] == kind]
            st.caption(f"{meaning}, most confident first.")
            gallery(ctx, part.head(int(n_show)), cam=show_cam, alpha=alpha)
            if len(part):
                by_src = part.groupby("source").size().rename("images").reset_index()
                if len(by_src) > 1 or (len(by_src) == 1 and by_src["source"].iloc[0]):
                    st.dataframe(by_src, hide_index=True, key=f"mis-src-{kind}")
    with st.expander("The list as a table"):
        st.dataframe(table, hide_index=True, key="mis_table")


main()
