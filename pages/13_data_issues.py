"""Data issues page: label issues, near duplicates and outliers (cleanlab's Datalab) of the selected split, and the
images it shares with the training split (leakage), counted, shown worst first, leakage pairs side by side, and the
evaluation re-scored without the flagged images. core.audits.data_issues computes everything: the same rows as
`python -m core data-issues --weights W --data PATH --split S --out DIR` (DIR/issues.csv, DIR/summary.json).
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from core.audits.data_issues import (ISSUE_COLUMNS, ISSUE_TITLES, ISSUES, cached_data_issues, data_issues_dir,
                                     read_data_issues, rescore_without)
from core.data.labels import CLASS_NAMES
from pages_support.common import RUNS_DIR, context_and_evaluation_or_stop, training_data
from pages_support.views import gallery, load_array, enlarged, num, pct, static_table

N_SHOWN = 18          # images per issue type on the page (the CSV has them all)
N_PAIRS = 9           # pairs per issue type


def issues_ui(ctx, reference):
    """The stored issues, or a button that finds them with a progress bar (None until then)."""
    stored = read_data_issues(data_issues_dir(RUNS_DIR, ctx.lm, ctx.ds, reference, "auto", 0))
    if stored is not None:
        return stored
    what = f"these {len(ctx.ds):,} images" + (f" and the {len(reference):,} training images" if reference else "")
    st.info(f"No data-issue check of {what} is stored yet: it takes a pass of the model over them, cleanlab's "
            "Datalab and the leakage search.")
    if not st.button("Find data issues", key="issues_compute", type="primary"):
        return None
    bar = st.progress(0.0, text="Data issues...")
    try:
        cached_data_issues(ctx.lm, ctx.ds, reference, RUNS_DIR,
                           progress=lambda f, text: bar.progress(min(1.0, f), text=text))
    except ValueError as e:
        bar.empty()
        st.error(f"Cannot check this data: {e}")
        return None
    st.rerun()          # drawn from the stored result, as on any later visit


def caption(r) -> str:
    """The image's path, its issue score (low = worse) and its labels: the CSV row, as text."""
    given = r["given_label"]
    if r["issue"] == "label":
        return (f"{r['path']} · score {r['score']:.3f} · labelled {given}, looks {r['suggested_label']} · "
                f"P(AI) {r['prob_fake']:.3f}")
    return f"{r['path']} · score {r['score']:.3f} · {given} · P(AI) {r['prob_fake']:.3f}"


def pairs_ui(ctx, pair_ctx, rows, n_per_row: int = 3) -> None:
    """Each row's image beside its pair (from `pair_ctx`'s dataset), n_per_row pairs to a line."""
    rows = rows.head(N_PAIRS)
    for start in range(0, len(rows), n_per_row):
        cols = st.columns(2 * n_per_row)
        for k, (_, r) in enumerate(rows.iloc[start:start + n_per_row].iterrows()):
            for col, c, item, text in ((cols[2 * k], ctx, r["path"], caption(r)),
                                       (cols[2 * k + 1], pair_ctx, r["pair"], f"its pair: {r['pair']}")):
                arr = load_array(c, item)
                with col:
                    if arr is None:
                        st.warning(f"{item}: could not be read")
                    else:
                        st.image(enlarged(arr), caption=text)


def main() -> None:
    st.title("Data issues")
    ctx, df, stored = context_and_evaluation_or_stop()
    reference, ref_key = training_data(ctx)
    res = issues_ui(ctx, reference)
    if res is None:
        st.stop()
    issues, summary = res
    st.caption(f"{summary['dataset']} · label issues from {summary['pred_probs_meaning']} · "
               + (f"leakage checked against {summary['reference']}" if summary.get("reference") else
                  "no training split beside this data, so leakage is not checked (`python -m core data-issues "
                  "--reference PATH` checks it against any dataset)"))
    counts = summary["counts"]
    cols = st.columns(len(ISSUES) + 1)
    for col, issue in zip(cols, ISSUES):
        col.metric(ISSUE_TITLES[issue], "n/a" if counts.get(issue) is None else f"{counts[issue]:,}")
    cols[-1].metric("Images flagged", f"{summary['flagged_images']:,}", help=f"of {summary['images']:,}")
    st.download_button("Every flagged image (CSV)", issues[ISSUE_COLUMNS].to_csv(index=False).encode(),
                       "issues.csv", "text/csv", key="issues_csv")

    st.subheader("What the issues cost")
    present = [k for k in ISSUES if counts.get(k)]
    hide = st.multiselect("Hide the images flagged as", present, default=present, format_func=ISSUE_TITLES.get,
                          key="issues_hide")
    scores = rescore_without(df, issues.loc[issues["issue"].isin(hide), "path"], ctx.threshold)
    static_table(scores, {"accuracy": pct, "roc_auc": num, "ece": num})
    st.caption(f"The evaluation's accuracy, ROC AUC and ECE (core.metrics) at threshold {ctx.threshold:.2f}, on every "
               "image and without the hidden ones.")

    shown = issues.merge(df[["path", "prob_fake", "label", "source"]], on="path", how="left")
    pair_ctx = dataclasses.replace(ctx, ds=reference, dataset_key=ref_key) if reference is not None else ctx
    tabs = st.tabs([f"{ISSUE_TITLES[k]} ({'n/a' if counts.get(k) is None else format(counts[k], ',')})" for k in ISSUES])
    for issue, tab in zip(ISSUES, tabs):
        part = shown[shown["issue"] == issue]
        with tab:
            if counts.get(issue) is None:
                st.info("Not checked: no training split beside this data.")
            elif part.empty:
                st.info("None found.")
            elif issue in ("leakage", "near_duplicate"):
                st.caption("Worst first: each image beside its " +
                           ("training image." if issue == "leakage" else "nearest image in the split."))
                pairs_ui(ctx, pair_ctx if issue == "leakage" else ctx, part)
            else:
                st.caption("Worst first (lowest Datalab score).")
                gallery(ctx, part.head(N_SHOWN), caption=caption)


main()
