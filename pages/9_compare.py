"""Compare page: the sidebar's model (A) against a second model (B) on the same data and threshold.

Metrics side by side with paired bootstrap intervals, a ROC overlay, the disagreement table with the
images of each cell, McNemar's exact test and per-source deltas: core.audits.compare, the same numbers as
`python -m core compare --weights A B --data PATH --out DIR`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.model.checkpoint import CheckpointError
from core.audits.compare import (CELL_MEANING, CELLS, CompareError, cached_comparison, disagreement_cells, metrics_table,
                          roc_table)
from core.data.labels import CLASS_NAMES
from pages_support import charts
from pages_support.common import (RUNS_DIR, Context, _file_sha, evaluation_ui, get_context, load_model_cached,
                                  shipped_weights)
from pages_support.views import gallery, num, pct, static_table

N_BOOT = 1000          # core.audits.compare's default, as `python -m core compare` uses


def compare_ui(ctx: Context, lm_b) -> tuple[pd.DataFrame, dict]:
    """core.audits.compare.cached_comparison (stored under runs/; the app's warm-up stores the default pair's at 0.5)."""
    with st.spinner(f"Bootstrap intervals ({N_BOOT:,} paired resamples)..."):
        return cached_comparison(ctx.lm, lm_b, ctx.ds, RUNS_DIR, ctx.threshold, N_BOOT)


def model_b_ui(ctx: Context) -> tuple[object, str] | None:
    options = [p for p in shipped_weights() if str(p) != str(Path(ctx.weights_path))]
    labels = [p.name for p in options] + ["Checkpoint path"]
    choice = st.selectbox("Model B", labels, key="compare_b",
                          help="Model A is the sidebar's model; B is scored on the same data at the same threshold.")
    if choice == "Checkpoint path":
        path = st.text_input("Path to checkpoint B", key="compare_b_path")
        if not path:
            return None
    else:
        path = str(options[labels.index(choice)])
    try:
        if not Path(path).is_file():
            raise CheckpointError(f"no file at {path}")
        return load_model_cached(path, _file_sha(path)), path
    except CheckpointError as e:
        st.error(f"Cannot use model B: {e}")
        return None


def main() -> None:
    st.title("Compare models")
    ctx = get_context()
    if ctx is None:
        st.stop()
    picked = model_b_ui(ctx)
    if picked is None:
        st.stop()
    lm_b, path_b = picked
    res_a = evaluation_ui(ctx)
    ctx_b = Context(lm=lm_b, weights_path=path_b, ds=ctx.ds, dataset_key=ctx.dataset_key, threshold=ctx.threshold)
    res_b = evaluation_ui(ctx_b)
    if res_a is None or res_b is None:
        st.stop()
    name_a, name_b = Path(ctx.weights_path).name, Path(path_b).name
    try:
        joined, res = compare_ui(ctx, lm_b)
    except CompareError as e:
        st.error(f"These evaluations cannot be compared: {e}")
        st.stop()
    st.caption(f"A = `{name_a}`, B = `{name_b}` · {res['n']:,} images · threshold {ctx.threshold:.2f} · intervals: "
               f"95% percentile bootstrap, {res['n_boot']:,} paired resamples stratified by class, seed {res['seed']}.")

    st.header("Metrics side by side")
    table = metrics_table(res, f"A", f"B")
    static_table(table)

    st.header("ROC curves")
    roc = roc_table(joined)
    names = {m: f"{m} = {name_a if m == 'A' else name_b} (AUC {num(res['metrics'][m.lower()]['roc_auc']['value'], '.4f')})"
             for m in roc["model"].unique()}
    curves = pd.concat([charts.thin(g).assign(curve=names[m]) for m, g in roc.groupby("model")])
    st.vega_lite_chart((charts.diagonal("fpr", "tpr") + charts.lines(
        curves, "fpr", "tpr", series="curve", x_title="false positive rate", y_title="true positive rate", height=340,
        y_domain=[0, 1])).to_dict(), key="cmp-roc")
    st.download_button("ROC curves (CSV)", roc.to_csv(index=False).encode(), "roc.csv", "text/csv", key="cmp-roc-csv")

    st.header("Where they disagree")
    cells = pd.DataFrame([{"cell": c, "meaning": CELL_MEANING[c], "images": res[c],
                           "share": res[c] / res["n"] if res["n"] else None} for c in CELLS])
    static_table(cells, {"share": pct})
    p = res["mcnemar_p"]
    verdict = ("the two error rates differ (p < 0.05)" if p < 0.05 else "no evidence that the error rates differ (p >= 0.05)")
    st.markdown(f"**McNemar's exact test** on the {res['only_a'] + res['only_b']:,} images where exactly one model is "
                f"right ({res['only_a']:,} only A, {res['only_b']:,} only B): p = {p:.3g}; {verdict}.")
    per_image = joined.assign(cell=disagreement_cells(joined, ctx.threshold))
    st.download_button("Every image's cell (CSV)", per_image.to_csv(index=False).encode(), "disagreements.csv",
                       "text/csv", key="cmp-dis-csv")
    choice = st.selectbox("Show the images of", list(CELLS), index=1, format_func=lambda c: f"{CELL_MEANING[c]} "
                          f"({res[c]:,})", key="cmp-cell")
    part = per_image[per_image["cell"] == choice].copy()
    part["gap"] = (part["prob_a"] - part["prob_b"]).abs()
    part = part.sort_values("gap", ascending=False).rename(columns={"prob_a": "prob_fake"})

    def caption(r):
        return (f"A {r['prob_fake']:.3f} · B {r['prob_b']:.3f} · true {CLASS_NAMES[int(r['label'])]}"
                + (f" · {r['source']}" if r.get("source") else ""))
    st.caption("Largest disagreement in P(AI) first.")
    gallery(ctx, part.head(24), caption=caption)

    st.header("Per source")
    per = pd.DataFrame(res["per_source"])
    if per.empty:
        st.info("The dataset gives no sources (no manifest with a source column).")
    else:
        long = pd.concat([pd.DataFrame({"source": per["source"].astype(str), "model": m, "accuracy": per[f"accuracy_{k}"],
                                        "ci_low": per[f"ci_low_{k}"], "ci_high": per[f"ci_high_{k}"]})
                          for m, k in (("A", "a"), ("B", "b"))])
        st.vega_lite_chart(charts.bars(long, "source", "accuracy", series="model", lo="ci_low", hi="ci_high",
                                    y_title="accuracy (95% Wilson)", y_domain=[0, 1.05]).to_dict(), key="cmp-src")
        static_table(per, height=400)
        st.download_button("Per source (CSV)", per.to_csv(index=False).encode(), "per_source.csv", "text/csv",
                           key="cmp-src-csv")
    st.download_button("Everything (compare.json)", json.dumps({"model_a": name_a, "model_b": name_b, **res},
                                                               default=float, indent=2).encode(),
                       "compare.json", "application/json", key="cmp-json")


main()
