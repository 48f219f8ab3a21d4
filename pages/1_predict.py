"""Predict page: upload images (one, many, or a zip) and see what the model says about each, and why.

For every image: the label at the sidebar threshold, P(AI) with its confidence breakdown, what the
model sees (the preprocessed input at its real resolution and enlarged), the original, and a
Grad-CAM overlay of the last conv block. Batches get a sortable table, a P(AI) histogram and a CSV.
Files that cannot be read get a one-line reason in the table; nothing here raises.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data.archive import ArchiveError, read_zip_images
from core.model.gradcam import overlay_heatmap
from core.data.images import ImageError, load_image
from core.inference.predict import Prediction, predict_many, predict_one
from core.verdict.verdict import explain
from pages_support.common import Context, get_context, image_bytes, load_model_cached
from pages_support.forensics_views import batch_stability_ui, spectrum_ui, stability_ui
from pages_support.views import data_uri, display_scale, enlarged

NEAREST = 6                 # training images shown beside each upload (the familiarity's content space)
MAX_IMAGES = 500            # per run: a batch of 500 32x32 predictions takes a few seconds on 2 CPU cores


def expand_uploads(files: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """[(name, bytes)] of uploads -> ([(name, image bytes)], [(name, reason)]); zips are opened in memory."""
    images, errors = [], []
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                inside, skipped = read_zip_images(data)
            except ArchiveError as e:
                errors.append((name, str(e)))
                continue
            if not inside and not skipped:
                errors.append((name, "zip archive has no files"))
            images += [(f"{name}/{n}", b) for n, b in inside]
            errors += [(f"{name}/{n}", r) for n, r in skipped]
        else:
            images.append((name, data))
    return images, errors


def predict_batch_ui(ctx: Context, images: list[tuple[str, bytes]]) -> list[Prediction]:
    """predict_many with a progress bar, once per (model, uploaded bytes) in this session.

    The result (small arrays, no model) is kept in session_state, so moving a slider does not
    re-run 500 predictions; a new upload or another model replaces it.
    """
    key = (ctx.lm.sha256, _digest(images))
    kept = st.session_state.get("_predict_batch")
    if kept and kept[0] == key:
        return kept[1]
    bar = st.progress(0.0, text=f"Predicting {len(images)} images...")
    preds = predict_many(ctx.lm, images, progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Predicting: {d}/{t}"))
    bar.empty()
    st.session_state["_predict_batch"] = (key, preds)
    return preds


@st.cache_data(show_spinner="Grad-CAM...", max_entries=32)
def _predict_detail(sha: str, weights_path: str, name: str, data: bytes) -> tuple[Prediction, np.ndarray | None]:
    lm = load_model_cached(weights_path, sha)
    pred = predict_one(lm, name, data, with_cam=True, nearest=NEAREST)
    try:
        original = np.asarray(load_image(data).image)
    except ImageError:
        original = None
    return pred, original


def _digest(images: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for n, b in images:
        h.update(n.encode() + b"\0" + hashlib.sha256(b).digest())
    return h.hexdigest()


def confidence_figure(p: float, threshold: float) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Bar(y=["P"], x=[p], orientation="h", name="P(AI)", marker_color="#d62728",
                         text=[f"P(AI) {p:.3f}"], textposition="inside"))
    fig.add_trace(go.Bar(y=["P"], x=[1 - p], orientation="h", name="P(real)", marker_color="#1f77b4",
                         text=[f"P(real) {1 - p:.3f}"], textposition="inside"))
    fig.add_vline(x=threshold, line=dict(color="black", dash="dash", width=2), annotation_text=f"threshold {threshold:.2f}",
                  annotation_position="top", annotation_yshift=8)
    fig.update_layout(barmode="stack", height=150, margin=dict(l=10, r=10, t=40, b=10), showlegend=False,
                      xaxis=dict(range=[0, 1]), yaxis=dict(visible=False))
    return fig


def nearest_ui(pred: Prediction) -> None:
    """The training images nearest to the upload in the familiarity's content space, with labels and distances:
    what an "unlike the training data" verdict is unlike, and what a confident one resembles."""
    if pred.nearest is None:
        st.caption("Nearest training images: this checkpoint has no content part (python -m core recalibrate "
                   "--weights W --fit-content OUT adds one).")
        return
    st.markdown(f"**The {len(pred.nearest)} training images nearest to it** (content encoder's space; distance 0 "
                "is the same content, 2 the most different)")
    cols = st.columns(len(pred.nearest))
    for col, n in zip(cols, pred.nearest):
        with col:
            image = nearest_image(n["path"])
            caption = f"{n['label']} · d {n['distance']:.3f}"
            if image is None:
                st.caption(f"{caption} · {n['path']} (not on this machine)")
            else:
                st.image(enlarged(image, 96), caption=caption, width="stretch")


@st.cache_data(max_entries=256, show_spinner=False)
def nearest_image(path: str) -> np.ndarray | None:
    try:
        return np.asarray(load_image(path).image)
    except (ImageError, OSError, ValueError):
        return None


def detail_ui(ctx: Context, name: str, data: bytes) -> None:
    """Everything about one image: label, P(AI) breakdown, the model's input, the original, Grad-CAM."""
    pred, original = _predict_detail(ctx.lm.sha256, ctx.weights_path, name, data)
    st.subheader(name)
    if pred.error:
        st.error(f"{name}: cannot be used as an image: {pred.error}")
        return
    p, t = pred.prob_fake, ctx.threshold
    label = pred.label(t)
    verdict, why = pred.verdict(ctx.lm.verdict, t)
    text = explain(verdict, why, p, pred.familiarity, ctx.lm.verdict, t, ctx.lm.temperature, pred.colourfulness,
                   pred.familiarity_parts)
    # The verdict first, in words (st.error is reserved for failures, so colour, not alert boxes).
    colour = {"UNSURE": "orange", "FAKE": "red", "REAL": "green"}[verdict]
    st.markdown(f"**{verdict}** :{colour}[{text.split(': ', 1)[1]}]")
    a, b, c, d = st.columns(4)
    a.metric("Label at the threshold", label, help="FAKE = AI-generated; the image is called FAKE when P(AI) >= "
             "threshold. The verdict above adds UNSURE when that call should not be trusted.")
    b.metric("P(AI)", f"{p:.4f}")
    c.metric("Distance from threshold", f"{p - t:+.4f}", help="P(AI) minus the threshold: how far the call is "
             "from flipping. Small values are coin flips.")
    d.metric("Temperature", f"{ctx.lm.temperature:.3g}", help="P(AI) = sigmoid(logit / T); T > 1 softens "
             "an over-confident model (fitted on the Calibration page).")
    st.markdown(f"**{verdict}** · P(AI) = {p:.4f} · P(real) = {1 - p:.4f} · logit {pred.logit:+.3f}"
                + (f" · familiarity {pred.familiarity:.3f}" if pred.familiarity is not None else ""))
    for line in ctx.lm.verdict.describe(t, ctx.lm.temperature):
        st.caption(line)
    st.plotly_chart(confidence_figure(p, t), key=f"conf-{name}")
    nearest_ui(pred)
    stability_ui(ctx, name, data)
    for note in pred.notes:
        st.info(f"Decoding note: {note}")
    size = ctx.lm.preprocess.size
    alpha = st.slider("Grad-CAM opacity", 0.0, 1.0, 0.5, 0.05, key="cam_alpha")
    cols = st.columns(5)
    with cols[0]:
        st.markdown("**Original**")
        if original is not None:
            w, h = pred.original_size or (original.shape[1], original.shape[0])
            st.image(enlarged(original, 256), caption=f"{w}x{h} as uploaded", width="stretch")
    with cols[1]:
        st.markdown("**What the model sees**")
        st.image(image_bytes(pred.model_input), caption=f"{size}x{size}, real size", width=size)
        st.image(enlarged(pred.model_input, 256), caption=f"enlarged x{display_scale(pred.model_input, 256)} "
                 "(nearest neighbour)", width="stretch")
    with cols[2]:
        st.markdown("**Grad-CAM**")
        st.image(enlarged(overlay_heatmap(pred.model_input, pred.cam(t), alpha), 256), width="stretch",
                 caption=f"last conv block, explaining the {label} call (red = most influence)")
    with cols[3]:
        st.markdown("**Grad-CAM on the original**")
        if original is not None:
            st.image(enlarged(overlay_heatmap(original, pred.cam(t), alpha), 256), width="stretch",
                     caption="the same map, stretched to the original's shape")
    with cols[4]:
        st.markdown("**Residual spectrum**")
        spectrum_ui(name, data)
    st.caption(f"Preprocessing: {ctx.lm.preprocess.describe()}. Grad-CAM is computed at the model's "
               f"input resolution; on the original it is only stretched, it has no finer detail.")


def batch_table(preds: list[Prediction], errors: list[tuple[str, str]], threshold: float, vm=None) -> pd.DataFrame:
    rows = []
    for p in preds:
        ok = p.error is None
        verdict, why = p.verdict(vm, threshold) if ok else ("error", [])
        rows.append({"thumbnail": data_uri(p.model_input) if ok else None, "file": p.name,
                     "verdict": verdict, "why": "; ".join(why),
                     "familiarity": round(p.familiarity, 4) if ok and p.familiarity is not None else None,
                     "label": p.label(threshold) if ok else "error",
                     "P(AI)": round(p.prob_fake, 4) if ok else None,
                     "distance": round(p.prob_fake - threshold, 4) if ok else None,
                     "size": f"{p.original_size[0]}x{p.original_size[1]}" if ok and p.original_size else "",
                     "message": p.error or "; ".join(p.notes)})
    rows += [{"thumbnail": None, "file": n, "verdict": "error", "why": "", "familiarity": None, "label": "error",
              "P(AI)": None, "distance": None, "size": "", "message": r} for n, r in errors]
    return pd.DataFrame(rows)


def histogram_figure(probs: list[float], threshold: float) -> go.Figure:
    fig = go.Figure(go.Histogram(x=probs, xbins=dict(start=0, end=1.0001, size=0.05), marker_color="#7f7f7f"))
    fig.add_vline(x=threshold, line=dict(color="red", dash="dash"), annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), xaxis=dict(range=[0, 1], title="P(AI)"),
                      yaxis_title="images", bargap=0.05)
    return fig


def main() -> None:
    st.title("Predict")
    ctx = get_context(need_data=False)
    if ctx is None:
        st.stop()
    st.caption(f"Model `{ctx.lm.name}` · threshold {ctx.threshold:.2f} (sidebar) · P(AI) is the model's "
               "probability that the image is AI-generated.")
    uploads = st.file_uploader(
        "Images or a zip of images", accept_multiple_files=True, key="predict_upload",
        help=f"JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF, BMP, TIFF or a .zip of them; at most {MAX_IMAGES} images per run. "
             "Anything else gets a per-file reason in the results.")
    files = [(u.name, u.getvalue()) for u in uploads or []]
    if not files:
        st.info("Upload one image to see its prediction, Grad-CAM and what the model sees; upload many (or a zip) "
                f"for a table, a histogram and a CSV. Up to {MAX_IMAGES} images per run.")
        return
    images, errors = expand_uploads(files)
    if len(images) > MAX_IMAGES:
        st.warning(f"{len(images)} images were given; only the first {MAX_IMAGES} are processed per run.")
        images = images[:MAX_IMAGES]
    preds = predict_batch_ui(ctx, images)
    n_ok = sum(p.error is None for p in preds)

    if len(images) == 1 and not errors:
        detail_ui(ctx, *images[0])
        return

    st.subheader(f"{n_ok} of {len(preds) + len(errors)} files predicted")
    table = batch_table(preds, errors, ctx.threshold, ctx.lm.verdict)
    table.insert(7, "stability", table["file"].map(batch_stability_ui(ctx, images)).fillna(""))
    good = table[table["label"] != "error"]
    bad = table[table["label"] == "error"]
    if len(bad):
        st.warning(f"{len(bad)} file(s) could not be used; the reason is in the table's message column.")
    a, b, c, d = st.columns(4)
    a.metric("FAKE (AI)", int((good["verdict"] == "FAKE").sum()))
    b.metric("REAL", int((good["verdict"] == "REAL").sum()))
    c.metric("UNSURE", int((good["verdict"] == "UNSURE").sum()), help="calls not to trust: near the threshold "
             "or unlike the training data (the why column says which)")
    d.metric("Unreadable", len(bad))
    keep = st.multiselect("Show verdicts", ["FAKE", "REAL", "UNSURE", "error"], ["FAKE", "REAL", "UNSURE", "error"],
                          key="predict_verdicts")
    shown = table[table["verdict"].isin(keep)]
    st.dataframe(shown, key="predict_table", hide_index=True, column_config={
        "thumbnail": st.column_config.ImageColumn("input", help="what the model sees"),
        "P(AI)": st.column_config.ProgressColumn("P(AI)", min_value=0.0, max_value=1.0, format="%.3f"),
        "distance": st.column_config.NumberColumn("P(AI) - threshold", format="%+.3f")})
    if len(good):
        st.plotly_chart(histogram_figure(good["P(AI)"].tolist(), ctx.threshold), key="predict_hist")
    csv = table.drop(columns=["thumbnail"]).rename(columns={"P(AI)": "prob_fake"})
    csv.insert(4, "threshold", ctx.threshold)
    st.download_button("Download CSV", csv.to_csv(index=False).encode(), "predictions.csv", "text/csv")

    if len(good):
        st.divider()
        names = good.sort_values("P(AI)", ascending=False)["file"].tolist()
        choice = st.selectbox("Inspect one image (sorted by P(AI), highest first)", names, key="predict_pick")
        detail_ui(ctx, choice, dict(images)[choice])


main()
