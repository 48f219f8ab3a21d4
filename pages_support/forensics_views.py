"""Rendering for the forensic additions to existing pages: the Predict page's residual spectrum and
verdict stability (one image and the batch column), and the Limitations page's flip-rate section.

Numbers come from core.audits.forensics and core.audits.stability; this module only caches, lays out and draws.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from core.report.figures import heatmap_png
from core.audits.forensics import image_spectrum
from core.data.images import ImageError, load_image
from core.data.labels import CLASS_NAMES
from core.audits.limitations import STABILITY_MAX_IMAGES
from core.audits.stability import (CHANGES, check_image, flip_table, flips, probs_of_sources, read_stability,
                            stability_result_dir, stability_verdict, cached_dataset_stability)
from pages_support import charts
from pages_support.common import RUNS_DIR, Context, load_model_cached, open_dataset_cached
from pages_support.views import gallery, pct


# ----------------------------------------------------------------------------- Predict: one image

@st.cache_data(show_spinner="Stability battery...", max_entries=64)
def _stability_detail(sha: str, weights_path: str, data: bytes, threshold: float) -> dict | None:
    lm = load_model_cached(weights_path, sha)
    try:
        img = load_image(data).image
    except ImageError:
        return None
    return check_image(lm, img, threshold)


@st.cache_data(show_spinner=False, max_entries=64)
def _spectrum(data: bytes) -> tuple[np.ndarray, int] | None:
    try:
        return image_spectrum(load_image(data).image)
    except ImageError:
        return None


def stability_ui(ctx: Context, name: str, data: bytes) -> None:
    """'Stable' or 'flips under: ...' for one image, with P(AI) under each change as a table."""
    res = _stability_detail(ctx.lm.sha256, ctx.weights_path, data, ctx.threshold)
    if res is None:
        return
    if res["stable"]:
        st.success(f"**Stable**: the {res['label']} call holds under all {len(CHANGES)} everyday changes "
                   f"({', '.join(CHANGES.values())}).")
    else:
        st.warning(f"**Flips under**: {', '.join(CHANGES[c] for c in res['flips_under'])} "
                   f"(the call is {res['label']} on the image as uploaded).")
    with st.expander("P(AI) under each change"):
        table = pd.DataFrame([{"change": "none (as uploaded)", "P(AI)": res["prob_fake"], "label": res["label"],
                               "flipped": False}] +
                             [{"change": c["description"], "P(AI)": c["prob_fake"], "label": c["label"],
                               "flipped": c["flipped"]} for c in res["changes"]])
        st.dataframe(table, hide_index=True, key=f"stab-{name}")


def spectrum_ui(name: str, data: bytes) -> None:
    """The image's residual spectrum (log(1 + |FFT|) of image minus blur), with its numbers as CSV."""
    res = _spectrum(data)
    if res is None:
        return
    spec, crop = res
    st.image(heatmap_png(spec, "", side=256), width="stretch",
             caption=f"log(1+|FFT|) of the high-pass residual, centre {crop}x{crop} crop at native "
                     "resolution; DC in the middle. Periodic generator artefacts show as bright dots.")
    csv = pd.DataFrame(spec).to_csv(index=False, header=False, float_format="%.5g").encode()
    st.download_button("Spectrum (CSV)", csv, f"spectrum-{crop}.csv", "text/csv", key=f"spec-csv-{name}")


# ----------------------------------------------------------------------------- Predict: batch column

def batch_stability_ui(ctx: Context, images: list[tuple[str, bytes]]) -> dict[str, str]:
    """{name: "stable" | "flips under: ..."} for a batch, at the sidebar threshold.

    P(AI) under every change is computed once per (model, uploads) and kept in session_state, like the
    batch predictions; a threshold change only re-applies the threshold.
    """
    h = hashlib.sha256()
    for n, b in images:
        h.update(n.encode() + b"\0" + hashlib.sha256(b).digest())
    key = (ctx.lm.sha256, h.hexdigest())
    kept = st.session_state.get("_predict_stability")
    if not (kept and kept[0] == key):
        bar = st.progress(0.0, text=f"Stability battery on {len(images)} images...")
        rows = probs_of_sources(ctx.lm, images, progress=lambda d, t: bar.progress(d / max(t, 1),
                                                                                   text=f"Stability: {d}/{t}"))
        bar.empty()
        kept = (key, rows)
        st.session_state["_predict_stability"] = kept
    out = {}
    for (n, _), row in zip(images, kept[1]):
        if row is not None:
            fl = flips(row, ctx.threshold)
            out[n] = "flips under: " + ", ".join(fl) if fl else "stable"
    return out


# ----------------------------------------------------------------------------- Limitations: flip rates

@st.cache_data(show_spinner=False, max_entries=16)
def _read_stability_cached(out_dir: str) -> pd.DataFrame | None:
    return read_stability(out_dir)


def dataset_stability_ui(ctx: Context) -> pd.DataFrame | None:
    """Per-image P(AI) under every change for the selected dataset (a stratified subsample of at most
    core.audits.limitations.STABILITY_MAX_IMAGES): from runs/, else computed with a bar."""
    out = stability_result_dir(ctx.lm, ctx.ds, RUNS_DIR, STABILITY_MAX_IMAGES)
    if not (out / "stability.csv").is_file():
        n = min(len(ctx.ds), STABILITY_MAX_IMAGES)
        bar = st.progress(0.0, text=f"Stability battery on {n:,} images...")
        cached_dataset_stability(ctx.lm, ctx.ds, RUNS_DIR, max_images=STABILITY_MAX_IMAGES,
                                 progress=lambda d, t: bar.progress(min(1.0, d / max(t, 1)), text=f"Stability: {d:,}/{t:,}"))
        bar.empty()
    return _read_stability_cached(str(out))


def flip_rate_section(ctx: Context, verdicts: list) -> None:
    """Limitations section: flip rate per everyday change, and a gallery of the images that flip."""
    st.header("Verdict stability under everyday changes")
    sub = (f" (a seeded subsample of {STABILITY_MAX_IMAGES:,} of its {len(ctx.ds):,} images, stratified by label; "
           "bars show 95% Wilson intervals)") if ctx.ds is not None and len(ctx.ds) > STABILITY_MAX_IMAGES else ""
    st.markdown(f"**Test.** Every image of the evaluation set{sub} is re-scored after each everyday change "
                f"({', '.join(CHANGES.values())}), applied to the decoded image before preprocessing "
                f"(core.audits.stability). A call *flips* when it differs from the call on the unchanged image at "
                f"threshold {ctx.threshold:.2f}, whether or not either call is right.")
    df = dataset_stability_ui(ctx)
    if df is None or df.empty:
        st.warning("The stability battery could not be computed for this dataset.")
        return
    table = flip_table(df, ctx.threshold)
    v = stability_verdict(table)
    verdicts.append({"limitation": "Verdict stability", "verdict": v})
    st.markdown(f"**Verdict.** {v}")
    rows = table[table["change"] != "any"]
    st.vega_lite_chart(charts.bars(rows.assign(label=[pct(v) for v in rows["flip_rate"]]), "description", "flip_rate",
                                lo="ci_low", hi="ci_high", x_title="change (bars: 95% Wilson interval)",
                                y_title="flip rate", y_format=".1%", text="label").to_dict(), key="flip_rates")
    st.dataframe(table, hide_index=True, key="flip_table")
    st.download_button("Flip rates (CSV)", table.to_csv(index=False).encode(), "flip_rates.csv", "text/csv",
                       key="flip_csv")
    options = [c for c in CHANGES if int(rows.set_index("change").loc[c, "flips"])]
    if not options:
        return
    change = st.selectbox("Images that flip under", options, format_func=lambda c: CHANGES[c], key="flip_change")
    base = df["prob_fake"] >= ctx.threshold
    moved = df[(df[f"p:{change}"] >= ctx.threshold) != base].copy()
    moved["shift"] = (moved[f"p:{change}"] - moved["prob_fake"]).abs()
    moved = moved.sort_values("shift", ascending=False)

    def caption(r):
        return (f"P(AI) {r['prob_fake']:.3f} -> {r[f'p:{change}']:.3f} · true {CLASS_NAMES[int(r['label'])]}"
                + (f" · {r['source']}" if r.get("source") else ""))
    st.caption(f"{len(moved):,} images flip under {CHANGES[change]}, largest change in P(AI) first "
               "(the unchanged image is shown).")
    gallery(ctx, moved.head(24), caption=caption)
