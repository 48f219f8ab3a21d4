"""Generalization page: how the detector does on each generator, and on generators it never saw.

1. Per source of the current evaluation (core.audits.generalize.source_table): every REAL image against
   one FAKE source at a time: AP, accuracy at the sidebar threshold, TPR at 5% FPR, FAKE recall,
   UNSURE share, wrong-and-decided share, with counts. Select a row to see its images.
2. New content (core.audits.new_content): the verdicts on the probe's content domains, which the training data
   lacks (data/new_content/README.md says what each is); select a domain to see its images.
3. The stored leave-one-generator-out leaderboard of the shipped recipe (weights/logo/, written by
   `python -m core generalize`): one model per held-out family, evaluated on that family only.
   Select a row to see the held-out family's images as that model judged them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.audits.generalize import load_leaderboard, same_test_data, source_table
from core.audits.new_content import DEFAULT_PROBE, evaluate_new_content, probe_available
from core.data.datasets import open_dataset
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


NEW_CONTENT_COLUMNS = {"domain": "domain", "class": "class", "n": "images", "auc": "ROC AUC",
                       "auc_against": "AUC against", "acc": "accuracy", "share_unsure": "UNSURE",
                       "share_wrong_decided": "wrong, not UNSURE", "share_unfamiliar": "unlike the training data",
                       "by_features": "flagged: model features", "by_content": "flagged: content",
                       "by_colour": "flagged: colour"}


def new_content_section(ctx) -> None:
    st.subheader("New content: domains the training data lacks")
    probe = ROOT / DEFAULT_PROBE
    if not probe_available(str(probe)):
        st.info(f"No new-content probe at {DEFAULT_PROBE} (python data/build_new_content.py --what probe builds it).")
        return
    bar = st.progress(0.0, text="Evaluating the new-content probe...")
    table, summary = evaluate_new_content(ctx.lm, str(probe), runs_dir=str(ROOT / "runs"), threshold=ctx.threshold,
                                          progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Probe: {d}/{t}"))
    bar.empty()
    a, b, c = st.columns(3)
    a.metric("Worst domain: wrong, not UNSURE", pct(summary["worst_wrong_decided"]), help=summary["worst_domain"])
    b.metric("REAL images UNSURE", pct(summary["real_unsure"]))
    c.metric("ROC AUC, whole probe", num(summary["auc"]))
    st.caption("Leave-one-generator-out tests a new generator on old content; this tests new content (drawings, "
               "icons, art, new photographs, fakes of them from generators trained here). A FAKE domain KIND-CONTENT "
               "is scored against the REAL domain CONTENT. 'flagged: ...' is the share each familiarity part flagged. "
               "`python -m core new-content` prints the same table.")
    shown = table.rename(columns=NEW_CONTENT_COLUMNS)
    ev = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                      column_config=_fmt(shown), key="gen_new_content")
    i = _selected_row(ev)
    if i is None or str(table.loc[i, "domain"]).startswith("all"):
        return
    dom = str(table.loc[i, "domain"])
    from core.inference.evaluate import cached_evaluation
    df, _ = cached_evaluation(ctx.lm, open_dataset(str(probe)), runs_dir=str(ROOT / "runs"))
    part = df[df["source"].astype(str) == dom]
    fam = part["familiarity"].to_numpy(np.float64) if "familiarity" in part else None
    part = part.assign(verdict=decide(part["logit"], None if fam is None or np.isnan(fam).all() else fam,
                                      ctx.lm.verdict, ctx.threshold, ctx.lm.temperature)[0],
                       _right=np.where(part["label"] == 1, part["prob_fake"], 1 - part["prob_fake"]))
    st.markdown(f"**{dom}**: {len(part):,} images, the most confidently wrong first")
    file_gallery([str(probe / p) for p in part.sort_values("_right")["path"].head(24)],
                 [f"P(AI) {r.prob_fake:.3f} · {r.verdict}" for r in part.sort_values("_right").head(24).itertuples()])


def file_gallery(paths: list[str], captions: list[str], n_cols: int = 6) -> None:
    """Images read from files (a stored evaluation of other data than the sidebar's), with captions."""
    cols = st.columns(n_cols)
    for k, (path, text) in enumerate(zip(paths, captions)):
        with cols[k % n_cols]:
            try:
                arr = np.asarray(load_image(path).image)
            except (ImageError, OSError):
                st.caption(f"{path}: not found")
                continue
            st.image(enlarged(arr), caption=text)


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
    top = fakes.head(24)
    file_gallery([str(root / p) for p in top["path"]], [f"P(AI) {r.prob_fake:.3f} · {r.verdict}" for r in top.itertuples()])


def main() -> None:
    st.title("Generalization")
    ctx, df, stored = context_and_evaluation_or_stop()
    st.caption("A detector trained on some generators is judged on the ones it never saw: leave-one-"
               "generator-out is the honest number; in-distribution accuracy is not. Labels: "
               f"{CLASS_NAMES[0]} = 0, {CLASS_NAMES[1]} = 1; P(AI) = P(FAKE).")
    per_source_section(ctx, df)
    new_content_section(ctx)
    logo_section(ctx.threshold)


main()
