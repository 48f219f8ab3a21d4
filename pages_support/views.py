"""Rendering helpers shared by the pages: image galleries (with Grad-CAM on demand), thumbnails, number formats.

Nothing here computes a metric: numbers come from core; this module only looks images up in the
selected dataset, draws them, and formats numbers the same way on every page (charts: pages_support.charts).
"""
from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.model.gradcam import overlay_heatmap
from core.data.images import ImageError
from core.data.labels import CLASS_NAMES
from core.inference.predict import predict_many
from pages_support.common import Context, image_bytes

DISPLAY_SIDE = 128      # px: small images are enlarged (nearest-neighbour) to about this side
MAX_GALLERY = 60        # images drawn at once; more would make every rerun slow


# ----------------------------------------------------------------------------- dataset lookups

@st.cache_resource(show_spinner=False, max_entries=16)
def _id_index(dataset_key: tuple, stamp: float, _ds) -> dict[str, int]:
    return {_ds.item_id(i): i for i in range(len(_ds))}


def id_index(ctx: Context) -> dict[str, int]:
    """{prediction id -> dataset index} for ctx.ds (ids are relative paths for folder datasets)."""
    return _id_index(tuple(ctx.dataset_key), _stamp(ctx), ctx.ds)


def _stamp(ctx: Context) -> float:
    try:
        return Path(ctx.dataset_key[0]).stat().st_mtime
    except (OSError, IndexError, TypeError):
        return 0.0


def load_array(ctx: Context, item_id: str) -> np.ndarray | None:
    """The decoded RGB image of a prediction id as uint8 (H, W, 3), or None when it cannot be read."""
    i = id_index(ctx).get(item_id)
    if i is None:
        return None
    try:
        return np.asarray(ctx.ds.load(i).image)
    except (ImageError, OSError):
        return None


def display_scale(arr: np.ndarray, side: int = DISPLAY_SIDE) -> int:
    """Integer nearest-neighbour factor that brings the longer side of arr to about `side` pixels."""
    return max(1, side // max(arr.shape[:2]))


def enlarged(arr: np.ndarray, side: int = DISPLAY_SIDE) -> bytes:
    return image_bytes(arr, display_scale(arr, side))


def data_uri(arr: np.ndarray, side: int = 48) -> str:
    """A small PNG thumbnail as a data: URI, for st.column_config.ImageColumn."""
    from PIL import Image
    img = Image.fromarray(arr)
    if max(img.size) > side:
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        arr = np.asarray(img)
        return "data:image/png;base64," + base64.b64encode(image_bytes(arr)).decode()
    return "data:image/png;base64," + base64.b64encode(image_bytes(arr, max(1, side // max(img.size)))).decode()


@st.cache_data(show_spinner="Computing Grad-CAM...", max_entries=32)
def _cams(sha: str, weights_path: str, dataset_key: tuple, stamp: float, ids: tuple[str, ...]) -> dict:
    from pages_support.common import load_model_cached, open_dataset_cached
    lm = load_model_cached(weights_path, sha)
    ds = open_dataset_cached(*dataset_key, stamp)
    index = _id_index(tuple(dataset_key), stamp, ds)
    sources = []
    for i in ids:
        if i in index:
            sources.append((i, ds.read_bytes(ds.items[index[i]][0])))
    preds = predict_many(lm, sources, with_cam=True)
    return {p.name: p for p in preds if p.error is None}


def cams_for(ctx: Context, ids: list[str]) -> dict:
    """{id: core.inference.predict.Prediction with both classes' Grad-CAM} for the given prediction ids."""
    return _cams(ctx.lm.sha256, ctx.weights_path, tuple(ctx.dataset_key), _stamp(ctx), tuple(ids))


# ----------------------------------------------------------------------------- galleries

def gallery(ctx: Context, rows: pd.DataFrame, n_cols: int = 6, cam: bool = False,
            alpha: float = 0.5, caption=None) -> None:
    """Draw rows (columns path, label, prob_fake[, source]) as an image grid, in the given order.

    With cam=True each tile is the model's input with its Grad-CAM overlay, explaining the class called
    at the sidebar threshold (the call in the caption).
    """
    rows = rows.head(MAX_GALLERY)
    if rows.empty:
        st.info("No images to show.")
        return
    cams = cams_for(ctx, rows["path"].tolist()) if cam else {}
    cols = st.columns(n_cols)
    for k, (_, r) in enumerate(rows.iterrows()):
        with cols[k % n_cols]:
            if cam:
                hit = cams.get(r["path"])
                arr = overlay_heatmap(hit.model_input, hit.cam(ctx.threshold), alpha) if hit else None
            else:
                arr = load_array(ctx, r["path"])
            text = caption(r) if caption else default_caption(r, ctx.threshold)
            if arr is None:
                st.warning(f"{r['path']}: could not be read")
                continue
            st.image(enlarged(arr), caption=text)


def default_caption(r, threshold: float) -> str:
    called = CLASS_NAMES[int(r["prob_fake"] >= threshold)]
    src = f" · {r['source']}" if r.get("source") else ""
    # The verdict column is present when the frame went through core.inference.evaluate.add_verdicts at this threshold.
    verdict = f" · verdict {r['verdict']}" if r.get("verdict") == "UNSURE" else ""
    return f"P(AI) {r['prob_fake']:.3f} · true {CLASS_NAMES[int(r['label'])]} · called {called}{verdict}{src}"


def static_table(df, formats: dict | None = None, height: int | None = None) -> None:
    """A short table that needs no sorting or scrolling, as st.table (HTML) with `formats` ({column: format
    string or callable}, pandas Styler.format). Why not st.dataframe: its grid's code is a first view's most
    expensive element (+1.0 s against +0.4 s for st.table, a text-only page as reference:
    benchmarks/results/frontend.json); a page with no st.dataframe never loads that code.
    `height` (px): a taller table scrolls, with its header kept in view."""
    df = pd.DataFrame(df)
    style = df.style.format(_short_number, na_rep="n/a")
    if formats:
        style = style.format(formats, na_rep="n/a")
    st.table(style, hide_index=True, height=height or "content")


def _short_number(v):
    # Floats without a stated format: 4 significant digits (1.2e-05 for a learning rate), thousands grouped.
    if isinstance(v, (float, np.floating)) and math.isfinite(v):
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return v


def pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def num(v, fmt=".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
