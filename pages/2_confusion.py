"""Confusion matrix page: counts and row-normalised rates, per-class precision/recall/F1, ROC and PR
curves with the threshold's operating point, and the images behind each cell.

Everything follows the sidebar threshold: metrics are recomputed from the stored P(AI) of every
image (core.metrics.metrics.classification_metrics), which is cheap; the model does not run again.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.metrics.metrics import (CELLS, annotate_calls, classification_metrics, confusion_cells, operating_point, pr_curve,
                          roc_curve)
from pages_support import charts
from pages_support.common import context_and_evaluation_or_stop
from pages_support.views import gallery, num, pct, static_table


def cells_table(cm: list[list[int]]) -> pd.DataFrame:
    return pd.DataFrame(confusion_cells(cm))


def curves_charts(y, p, cm):
    """ROC and precision-recall curves with the threshold's operating point (Vega-Lite, pages_support.charts)."""
    roc, pr = roc_curve(y, p), pr_curve(y, p)
    op = operating_point(cm)
    fpr_t, tpr_t, prec_t = op["fpr"], op["tpr"], op["precision"]
    r = charts.thin(pd.DataFrame({"FPR": roc["fpr"], "TPR": roc["tpr"],
                                  "threshold": np.clip(roc["thresholds"], 0, 1)}))
    f1 = charts.diagonal("FPR", "TPR") + charts.lines(
        r.assign(curve="ROC"), "FPR", "TPR", x_title="false positive rate (REAL called FAKE)",
        y_title="true positive rate (FAKE caught)", height=340, y_domain=[0, 1],
        tooltip=[charts.tip("FPR:Q", ".3f"), charts.tip("TPR:Q", ".3f"),
                 charts.tip("threshold:Q", ".3f")])
    if fpr_t is not None and tpr_t is not None:
        f1 += charts.points(pd.DataFrame({"FPR": [fpr_t], "TPR": [tpr_t], "point": ["threshold"]}), "FPR", "TPR", "point")
    q = charts.thin(pd.DataFrame({"recall": pr["recall"], "precision": pr["precision"]}))
    base = float(np.mean(y)) if len(y) else 0
    f2 = charts.lines(q, "recall", "precision", x_title="recall of FAKE", y_title="precision of FAKE", height=340,
                      y_domain=[0, 1.02]) + charts.rule_y(base, "share of FAKE (chance)")
    if prec_t is not None and tpr_t is not None:
        f2 += charts.points(pd.DataFrame({"recall": [tpr_t], "precision": [prec_t], "point": ["threshold"]}),
                            "recall", "precision", "point")
    return f1, f2


def main() -> None:
    st.title("Confusion matrix")
    ctx, df, stored = context_and_evaluation_or_stop()
    if df.empty:
        st.error("No image of this dataset could be decoded; nothing to count.")
        st.stop()
    y, p = df["label"].to_numpy(), df["prob_fake"].to_numpy()
    m = classification_metrics(y, p, ctx.threshold)
    cm = m["confusion_matrix"]
    st.caption(f"{stored.get('dataset', '')} · threshold {ctx.threshold:.2f}: an image is called FAKE when "
               "P(AI) >= threshold.")
    cols = st.columns(5)
    cols[0].metric("Images", f"{m['n']:,}")
    cols[1].metric("Accuracy", pct(m["accuracy"]))
    cols[2].metric("ROC AUC", num(m["roc_auc"]))
    cols[3].metric("Average precision", num(m["average_precision"]))
    cols[4].metric("Unreadable (skipped)", stored.get("n_skipped", 0))

    counts, norm = np.array(cm), np.array(m["confusion_matrix_by_true_class"])
    a, b = st.columns(2)
    a.vega_lite_chart(charts.confusion_heatmap(counts, [[f"{v:,}" for v in r] for r in counts], "Counts").to_dict(),
                   key="cm_counts")
    shares = charts.confusion_heatmap(norm, [[f"{v:.1%}" for v in r] for r in norm], "Share of each true class", zmax=1)
    b.vega_lite_chart(shares.to_dict(), key="cm_norm")
    static_table(cells_table(cm), {"share_of_true_class": pct})

    st.subheader("Per class")
    per = pd.DataFrame([{"class": k, **v} for k, v in m["per_class"].items()])
    static_table(per, {c: "{:.3f}" for c in ("precision", "recall", "f1")})
    st.caption("Recall of REAL is the share of real images let through; recall of FAKE the share of AI images caught.")

    if m["roc_auc"] is None:
        st.warning("ROC and PR curves need both classes in the dataset.")
    else:
        f1, f2 = curves_charts(y, p, cm)
        a, b = st.columns(2)
        with a:
            st.markdown(f"**ROC curve** · AUC = {m['roc_auc']:.4f}")
            st.vega_lite_chart(f1.to_dict(), key="roc")
        with b:
            st.markdown(f"**Precision-recall curve (FAKE as positive)** · AP = {m['average_precision']:.4f}")
            st.vega_lite_chart(f2.to_dict(), key="pr")
        st.caption("The red dot is the operating point of the sidebar threshold.")

    st.subheader("Images in a cell")
    (tn, fp), (fn, tp) = cm
    cell = st.radio("Cell", list(CELLS), horizontal=True, key="cm_cell", index=1 if fp >= fn else 2,
                    format_func=lambda c: f"{c}: {CELLS[c][2]} ({cells_table(cm).set_index('cell').loc[c, 'count']:,})")
    t, pr_ = CELLS[cell][:2]
    calls = annotate_calls(df, ctx.threshold)
    sel = calls[(calls["label"] == t) & (calls["called"] == pr_)].sort_values("confidence", ascending=False)
    n_show = st.slider("Images to show (most confident first)", 6, 60, 18, 6, key="cm_n")
    st.caption(f"{len(sel):,} image(s) in {cell}; showing up to {n_show}.")
    gallery(ctx, sel.head(n_show))

    skipped = stored.get("skipped") or []
    if skipped:
        with st.expander(f"{len(skipped)} file(s) could not be decoded and are not counted"):
            st.dataframe(pd.DataFrame(skipped), hide_index=True)


main()
