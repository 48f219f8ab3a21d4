"""Forensics page: residual spectra per class and source, the shortcut check (can the file pipeline
alone tell the classes apart?) and the re-encoding control.

Numbers come from core.audits.forensics (the same as `python -m core forensics --data PATH --out DIR`),
computed once per dataset and kept under runs/; every figure has its numbers as a table or CSV.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.audits.forensics import (FEATURE_GROUPS, FLAG_THRESHOLD, analysis_dir, cached_analysis, cached_reencoding,
                            load_spectra_npz, radial_table, reencoding_dir, spectrum_figure, spectrum_figure_name)
from core.data.labels import CLASS_NAMES
from pages_support import charts
from pages_support.common import RUNS_DIR, Context, get_context
from pages_support.views import num, pct, static_table

PROPERTY_TITLES = {"format": "File format", "jpeg_quality": "JPEG quality (estimated from the quantisation tables)",
                   "subsampling": "Chroma subsampling", "pixel_size": "Pixel size",
                   "bytes_per_pixel": "Bytes per pixel", "exif": "EXIF metadata"}
REENCODE_QUALITIES = (90, 75, 50)


@st.cache_data(show_spinner=False, max_entries=16)
def _read_analysis(out_dir: str) -> dict:
    d = Path(out_dir)
    return {"spectra": load_spectra_npz(d / "spectra.npz"),
            "shortcuts": json.loads((d / "shortcuts.json").read_text()),
            "props": pd.read_csv(d / "file_properties.csv", keep_default_na=False),
            "distributions": pd.read_csv(d / "shortcut_distributions.csv", keep_default_na=False),
            "npz": (d / "spectra.npz").read_bytes(),
            # The heat maps `python -m core forensics --out DIR` writes, stored with the analysis: drawing 18 of
            # them again was a tenth of this page's first script run (py-spy, fresh server).
            "figures": {f.name: f.read_bytes() for f in d.glob("spectrum_*.png")}}


def analysis_ui(ctx: Context, on_shortcuts=None) -> dict:
    """The stored analysis; computed here when missing, with on_shortcuts(part) called as soon as its shortcut
    check is done (core.audits.forensics.analyse), before the spectra."""
    out = analysis_dir(ctx.ds, RUNS_DIR)
    if not (out / "shortcuts.json").is_file():
        bar = st.progress(0.0, text=f"Reading {len(ctx.ds):,} files (headers, spectra)...")
        cached_analysis(ctx.ds, RUNS_DIR, progress=lambda d, t: bar.progress(min(1.0, d / max(t, 1)),
                                                                             text=f"Forensics: {d:,}/{t:,}"),
                        on_shortcuts=on_shortcuts)
        bar.empty()
    return _read_analysis(str(out))


def _heat(res: dict, key: str) -> bytes:
    # A static PNG (core.audits.forensics.spectrum_figure, the file `python -m core forensics --out DIR` writes): a
    # spectrum's hover values add little to the picture, and its numbers are in spectra.npz below.
    return res["figures"].get(spectrum_figure_name(key)) or spectrum_figure(res["spectra"], key)


def spectra_section(res: dict) -> None:
    sp = res["spectra"]
    st.header("Residual spectra")
    st.markdown(f"Mean of log(1 + |FFT|) of each image's high-pass residual (image minus a Gaussian blur, sigma "
                f"{sp['sigma']:g} px), centre {sp['crop']}x{sp['crop']} crop at native resolution, averaged over "
                "the colour channels; zero frequency in the middle. Generators that upsample leave periodic "
                "peaks here (Frank et al. 2020; Durall et al. 2020); a difference map that is flat means the "
                "classes do not differ in this respect."
                + (f" {sp['n_resized']:,} images smaller than the crop were enlarged first." if sp["n_resized"] else ""))
    means = sp["mean"]
    if not means:
        st.warning("No image could be decoded.")
        return
    cols = st.columns(3)
    for c, name in zip(cols, CLASS_NAMES):
        if name in means:
            c.image(_heat(res, name), width="stretch")
    if sp["diff"] is not None:
        cols[2].image(_heat(res, "diff"), width="stretch")
    if sp["source_mean"]:
        st.subheader("Per source")
        names = list(sp["source_mean"])
        for row in range(0, len(names), 4):
            cols = st.columns(4)
            for c, s in zip(cols, names[row:row + 4]):
                c.image(_heat(res, f"source:{s}"), width="stretch")
    st.subheader("1-D spectra (azimuthal mean)")
    tab = radial_table(sp)
    shown = [c for c in tab.columns[2:] if c != "FAKE-REAL"]
    long = pd.concat([pd.DataFrame({"cycles_per_pixel": tab["cycles_per_pixel"], "value": tab[c], "series": c})
                      for c in shown])
    chart = charts.lines(long, "cycles_per_pixel", "value", series="series", x_title="frequency (cycles/pixel)",
                         y_title="mean log(1+|F|)", height=340, sort_series=shown,
                         dashed={c: c.startswith("source:") for c in shown})
    st.vega_lite_chart(chart.to_dict(), key="spec-1d")
    with st.expander("1-D spectra: numbers"):
        static_table(tab, height=400)
    a, b = st.columns(2)
    a.download_button("1-D spectra (CSV)", tab.to_csv(index=False).encode(), "spectrum_1d.csv", "text/csv",
                      key="spec-csv")
    b.download_button("All spectra (spectra.npz)", res["npz"], "spectra.npz", "application/octet-stream", key="spec-npz")


def shortcut_section(res: dict) -> None:
    s = res["shortcuts"]
    st.header("Shortcut check: is the file pipeline giving the class away?")
    acc = s["metadata_only_accuracy"]
    st.markdown("A decision tree sees only file-level facts (format, JPEG quality, chroma subsampling, pixel size, "
                "bytes per pixel, EXIF), never the pixels; its 5-fold cross-validated balanced accuracy says how well "
                "they alone predict the class. 0.5 means they say nothing.")
    st.metric("Metadata-only balanced accuracy", num(acc))
    if acc is None:
        st.info("Not computed: each class needs at least two readable files.")
    elif s["flagged"]:
        st.warning(f"File-level features alone separate the classes (balanced accuracy {acc:.3f} > "
                   f"{FLAG_THRESHOLD:.2f}): the detector may be learning how the files were made, not what they show. "
                   "See which property gives it away below, and run the re-encoding control.")
    else:
        st.success(f"Not flagged: file-level features alone reach balanced accuracy {acc:.3f} "
                   f"(flagged above {FLAG_THRESHOLD:.2f}).")
    per = pd.DataFrame([{"property": PROPERTY_TITLES[g], "balanced accuracy alone": v}
                        for g, v in s["per_feature_accuracy"].items()])
    static_table(per)
    dist = res["distributions"]
    for g in FEATURE_GROUPS:
        part = dist[dist["property"] == g]
        if part.empty:
            continue
        st.vega_lite_chart(charts.bars(part.assign(value=part["value"].astype(str)), "value", "share", series="class",
                                    y_title="share of the class", y_format=".0%", height=240,
                                    title=PROPERTY_TITLES[g],
                                    tooltip=["value", "class", "count", charts.tip("share:Q", ".1%")]).to_dict(),
                        key=f"dist-{g}")
    with st.expander("Distributions: numbers"):
        static_table(dist, {"share": pct}, height=400)
    a, b = st.columns(2)
    a.download_button("Distributions (CSV)", dist.to_csv(index=False).encode(), "shortcut_distributions.csv",
                      "text/csv", key="dist-csv")
    b.download_button("Every file's properties (CSV)", res["props"].to_csv(index=False).encode(),
                      "file_properties.csv", "text/csv", key="props-csv")
    if s.get("n_unreadable"):
        st.caption(f"{s['n_unreadable']:,} file(s) could not be read; their reasons are in the CSV's error column.")


def reencoding_section(ctx: Context) -> None:
    st.header("Re-encoding control")
    size = ctx.lm.preprocess.upsample_from or ctx.lm.preprocess.size
    st.markdown(f"Both classes are re-encoded identically (resized to {size}x{size} by the project's preprocessing, "
                "saved as JPEG with 4:2:0 subsampling at one quality) and evaluated again. If accuracy or AUC fall, "
                "the model's score rested on how the original files were made.")
    q = st.selectbox("JPEG quality of the re-encoding", REENCODE_QUALITIES, key="reencode_q")
    done = (reencoding_dir(ctx.lm, ctx.ds, RUNS_DIR, q) / "predictions.csv").is_file()
    if not done and not st.button(f"Run the re-encoding control on {len(ctx.ds):,} images", key="reencode_run"):
        st.caption("Takes about as long as one evaluation of the dataset; the result is kept under runs/.")
        return
    bar = st.progress(0.0, text="Re-encoding...") if not done else None
    rc = cached_reencoding(ctx.lm, ctx.ds, RUNS_DIR, q, ctx.threshold,
                           progress=(lambda d, t: bar.progress(min(1.0, d / max(t, 1)), text=f"Re-encoding: {d:,}/{t:,}"))
                           if bar else None)
    if bar:
        bar.empty()
    rows = [{"metric": k, "original files": rc["clean"][k], "re-encoded": rc["reencoded"][k],
             "change": (rc["reencoded"][k] - rc["clean"][k]) if rc["reencoded"][k] is not None
             and rc["clean"][k] is not None else None}
            for k in ("accuracy", "roc_auc", "recall_REAL", "recall_FAKE", "ece")]
    c = st.columns(3)
    c[0].metric("Accuracy change", num(rc["delta_accuracy"], "+.4f"))
    c[1].metric("AUC change", num(rc["delta_roc_auc"], "+.4f"))
    c[2].metric("Metadata-only accuracy after", num(rc["metadata_only_accuracy_after"]),
                help="Should be near 0.5: both classes now share one pipeline; what remains is content (bytes per pixel).")
    table = pd.DataFrame(rows)
    static_table(table)
    st.download_button("Re-encoding control (CSV)", table.to_csv(index=False).encode(), "reencoding_control.csv",
                       "text/csv", key="reencode-csv")
    st.caption(f"At threshold {ctx.threshold:.2f}; {rc['clean']['n']:,} images; quality {rc['quality']}, "
               f"{rc['subsampling']}, {rc['size']}." + (f" {len(rc['skipped'])} unreadable file(s) skipped." if rc["skipped"] else ""))


def main() -> None:
    st.title("Forensics")
    ctx = get_context()
    if ctx is None:
        st.stop()
    st.caption(f"{ctx.ds.describe()} · the spectra and the shortcut check do not depend on the model; the "
               "re-encoding control uses the sidebar's model and threshold.")
    # The shortcut check needs only the files' headers: computed here, it is drawn as soon as it is done, while
    # the spectra (the longer pass over the decoded images) are computed.
    box, drawn = st.container(), []

    def draw_shortcuts(part: dict) -> None:
        with box:
            shortcut_section(part)
        drawn.append(True)
    res = analysis_ui(ctx, on_shortcuts=draw_shortcuts)
    if not drawn:
        with box:
            shortcut_section(res)
    reencoding_section(ctx)
    spectra_section(res)


main()
