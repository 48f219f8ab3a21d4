"""Error slices page: accuracy per source and per binned image property (brightness, saturation,
sharpness, JPEG quality, original size), worst first, each with its Wilson interval; pick a slice to
see its images. core.audits.slices computes everything (`python -m core slices --data PATH --out DIR`).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.report.audit_cache import result_dir
from core.inference.evaluate import dataset_fingerprint
from core.audits.slices import cached_properties, join, members, read_properties, slice_table
from core.data.labels import CLASS_NAMES
from pages_support import charts
from pages_support.common import RUNS_DIR, context_and_evaluation_or_stop
from pages_support.views import gallery, pct, static_table

N_CHART = 15


@st.cache_data(show_spinner=False, max_entries=16)
def _read_props(path: str) -> pd.DataFrame:
    return read_properties(path)


def properties_ui(ctx) -> pd.DataFrame:
    path = result_dir(RUNS_DIR, "properties", dataset_fingerprint(ctx.ds)) / "properties.csv"
    if not path.is_file():
        bar = st.progress(0.0, text=f"Measuring {len(ctx.ds):,} images...")
        cached_properties(ctx.ds, RUNS_DIR, progress=lambda d, t: bar.progress(min(1.0, d / max(t, 1)),
                                                                              text=f"Measuring: {d:,}/{t:,}"))
        bar.empty()
    return _read_props(str(path))


def main() -> None:
    st.title("Error slices")
    ctx, df, stored = context_and_evaluation_or_stop()
    props = properties_ui(ctx)
    merged = join(df, props)
    table = slice_table(merged, ctx.threshold)
    st.caption(f"{stored.get('dataset', '')} · threshold {ctx.threshold:.2f} · properties measured on the decoded "
               "original (before preprocessing): brightness = mean luma 0-255, saturation = mean HSV saturation "
               "0-1, sharpness = variance of the Laplacian; continuous properties in quartiles of this set. "
               "Worst first: lowest accuracy, larger slice first on ties; intervals are 95% Wilson.")
    worst = table.head(N_CHART)
    labels = [f"{d}: {s}" for d, s in zip(worst["dimension"], worst["slice"])]
    shown = worst.assign(slice_name=labels, label=[f"{pct(a)} of {n:,}" for a, n in zip(worst["accuracy"], worst["images"])])
    chart = charts.bars(shown, "slice_name", "accuracy", lo="ci_low", hi="ci_high", y_title="accuracy",
                        y_domain=[0, 1.02], horizontal=True, text="label", height=22 * len(worst) + 20)
    st.vega_lite_chart(chart.to_dict(), key="slices-chart")
    static_table(table, {"accuracy": pct}, height=400)
    st.download_button("Slices (CSV)", table.assign(threshold=ctx.threshold).to_csv(index=False).encode(),
                       "slices.csv", "text/csv", key="slices-csv")
    options = list(zip(table["dimension"], table["slice"]))
    pick = st.selectbox("Show the images of", options, format_func=lambda o: f"{o[0]}: {o[1]}", key="slice_pick")
    mem = members(merged, pick[0], pick[1], ctx.threshold)
    n_err = int((~mem["correct"]).sum())
    st.caption(f"{len(mem):,} images, {n_err:,} wrong; the wrong ones first, most confident first.")
    gallery(ctx, mem.head(24), caption=lambda r: (f"{'wrong' if not r['correct'] else 'right'} · P(AI) "
                                                  f"{r['prob_fake']:.3f} · true {CLASS_NAMES[int(r['label'])]}"))


main()
