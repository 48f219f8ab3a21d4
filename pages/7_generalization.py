"""Generalization page: how the detector does on each generator, and on generators it never saw.

1. Per source of the current evaluation (core.audits.generalize.source_table): every REAL image against
   one FAKE source at a time: AP, accuracy at the sidebar threshold, TPR at 5% FPR, FAKE recall,
   UNSURE share, wrong-and-decided share, with counts. Select a row to see its images.
2. The stored leave-one-generator-out leaderboard of the shipped recipe (weights/logo/, written by
   `python -m core generalize`): one model per held-out family, evaluated on that family only.
   Select a row to see the held-out family's images as that model judged them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.audits.generalize import load_leaderboard, same_test_data, source_table
from core.data.images import ImageError, load_image
from core.data.labels import CLASS_NAMES
from core.verdict.verdict import UNSURE, VerdictModel, decide
from pages_support.common import ROOT, WEIGHTS_DIR, context_and_evaluation_or_stop
from pages_support.views import enlarged, gallery, num, pct

LOGO_DIR = WEIGHTS_DIR / "logo"
COLUMNS = {"n": "images", "n_fake": "FAKE images", "auc": "ROC AUC", "ap": "AP", "acc": "accuracy",
           "tpr_at_5pct_fpr": "TPR at 5% FPR", "fake_recall": "FAKE recall", "share_unsure": "UNSURE",
           "share_wrong_decided": "wrong, not UNSURE", "fake_unsure": "FAKEs UNSURE",
           "fake_unfamiliar": "FAKEs unfamiliar"}


def _fmt(df: pd.DataFrame) -> dict:
    return {v: st.column_config.NumberColumn(v, format="%.3f") for k, v in COLUMNS.items()
            if k not in ("n", "n_fake")}


def _selected_row(event) -> int | None:
    rows = getattr(getattr(event, "selection", None), "rows", None) or []
    return rows[0] if rows else None


def per_source_section(ctx, df: pd.DataFrame) -> None:
    st.subheader("Per source, current evaluation")
    table = source_table(df, ctx.lm.verdict, ctx.threshold, ctx.lm.temperature)
    if table.empty:
        st.info("This evaluation has no FAKE sources (a manifest `source` column, or a parquet "
                "`source`/`generator` column, gives per-generator rows).")
        return
    st.caption(f"Each row: all {int((df['label'] == 0).sum()):,} REAL images against one FAKE source; worst AP "
               f"first; threshold {ctx.threshold:.2f}. Select a row to see that source's images.")
    shown = table.rename(columns=COLUMNS)
    ev = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                      column_config=_fmt(shown), key="gen_sources")
    st.download_button("Download (CSV)", table.to_csv(index=False).encode(), "per_source.csv", "text/csv",
                       key="gen_sources_csv")
    i = _selected_row(ev)
    if i is not None:
        src = table.loc[i, "source"]
        part = df[(df["label"] == 1) & (df["source"].astype(str) == ("" if src == "(none)" else src))]
        part = part.sort_values("prob_fake")            # the most convincing fakes first
        st.markdown(f"**{src}**: {len(part):,} FAKE images, most convincing (lowest P(AI)) first")
        gallery(ctx, part.head(24))


@st.cache_data(ttl=60, show_spinner=False)
def _same_test_data(fingerprint: str | None, root: str) -> bool | None:
    return same_test_data({"test_fingerprint": fingerprint}, root)


def logo_section(threshold: float) -> None:
    st.subheader("Leave one generator out: the shipped recipe")
    res = load_leaderboard(LOGO_DIR)
    if res is None:
        st.info(f"No stored leaderboard of the current result format in {LOGO_DIR}. Make one with `python -m core "
                f"generalize --data data/sample --out {LOGO_DIR}` (one training run per family; fold models "
                "already there are re-evaluated, not retrained).")
        return
    board, summary = res
    cfg = summary.get("config", {})
    root = Path(summary.get("test_root", ""))
    root = root if root.is_absolute() else ROOT / root
    same = _same_test_data(summary.get("test_fingerprint"), str(root))
    a, b, c = st.columns(3)
    a.metric("Mean AUC on unseen families", num(summary["mean_auc"]))
    b.metric("Worst family AUC", num(summary["min_auc"]), help=f"held out: {summary['worst_family']}")
    c.metric("Wrong and not UNSURE (mean)", pct(summary["mean_share_wrong_decided"]))
    st.caption("Each row: a model trained without that family's fakes, tested on the test REAL images plus "
               "that family's test fakes (threshold 0.5, as stored). "
               + (f"Recipe: {cfg.get('recipe', '')}." if cfg.get("recipe") else ""))
    if same is False:
        st.warning(f"This leaderboard was evaluated on other files than those now in {summary.get('test_root')} "
                   "(the data was rebuilt since): its numbers describe the data it was run on, and its images are "
                   "not shown. `python -m core generalize` with the same options on the current data makes a new one.")
    shown = board.rename(columns=COLUMNS)
    ev = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                      column_config=_fmt(shown), key="gen_logo")
    i = _selected_row(ev)
    if i is None:
        return
    fam = board.loc[i, "held_out"]
    if same is False:
        st.info(f"{fam}: the images this row was measured on are no longer in {summary.get('test_root')}.")
        return
    from core.model.checkpoint import read_checkpoint
    from core.inference.evaluate import load_evaluation
    fold = LOGO_DIR / fam
    res = load_evaluation(fold / "eval")
    if res is None:
        st.warning(f"{fold}/eval is missing or incomplete.")
        return
    pdf, m = res
    try:
        ck, _ = read_checkpoint(fold / "model.pt")
        vm, temp = VerdictModel.from_checkpoint_meta(ck), float(ck.get("temperature", 1.0))
    except Exception:                                      # a fold stored without its model: label only
        vm, temp = None, 1.0
    fam_col = pdf["familiarity"].to_numpy(np.float64) if "familiarity" in pdf else None
    if fam_col is not None and np.isnan(fam_col).all():
        fam_col = None
    pdf = pdf.assign(verdict=decide(pdf["logit"], fam_col, vm, threshold, temp)[0])
    fakes = pdf[pdf["label"] == 1].sort_values("prob_fake")
    v = fakes["verdict"].value_counts()
    st.markdown(f"**{fam}** held out: {len(fakes):,} fakes at threshold {threshold:.2f}: "
                f"{v.get('FAKE', 0):,} FAKE, {v.get(UNSURE, 0):,} UNSURE, {v.get('REAL', 0):,} called REAL. "
                "Most convincing first.")
    cols = st.columns(6)
    for k, (_, r) in enumerate(fakes.head(24).iterrows()):
        with cols[k % 6]:
            try:
                arr = np.asarray(load_image(str(root / r["path"])).image)
            except (ImageError, OSError):
                st.caption(f"{r['path']}: not found under {root}")
                continue
            st.image(enlarged(arr), caption=f"P(AI) {r['prob_fake']:.3f} · {r['verdict']}")


def main() -> None:
    st.title("Generalization")
    ctx, df, stored = context_and_evaluation_or_stop()
    st.caption("A detector trained on some generators is judged on the ones it never saw: leave-one-"
               "generator-out is the honest number; in-distribution accuracy is not. Labels: "
               f"{CLASS_NAMES[0]} = 0, {CLASS_NAMES[1]} = 1; P(AI) = P(FAKE).")
    per_source_section(ctx, df)
    logo_section(ctx.threshold)


main()
