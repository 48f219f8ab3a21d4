"""Shared widgets and cached accessors for every page: the model, the dataset, evaluations, threshold.

The selection (paths, options) lives in st.session_state; the model and the dataset index live in
st.cache_resource (shared by all sessions, read-only), and evaluations are computed once by core,
stored on disk under runs/ and read through st.cache_data. The entrypoint calls `sidebar_ui()`;
pages call `get_context()` (or `context_and_evaluation_or_stop()`).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.model.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from core.data.datasets import DatasetError, ImageDataset, cifake_splits, open_dataset
from core.inference.evaluate import cached_evaluation, evaluation_dir, load_evaluation
from core.data.labels import LabelMappingError, describe_mapping, parse_class_map
from core.audits.robustness import cached_sweep, sweep_path
from core.data.shifts import Shift

from pages_support import paths as _paths
from pages_support.paths import DEFAULT_WEIGHTS, ROOT, RUNS_DIR, SAMPLE_DIR, WEIGHTS_DIR  # noqa: F401 (re-exported)

MAX_CHECKPOINT_BYTES = 50 * 1024 * 1024


@dataclass
class Context:
    lm: LoadedModel
    weights_path: str
    ds: ImageDataset | None
    dataset_key: tuple
    threshold: float


# ----------------------------------------------------------------------------- cached resources

@st.cache_resource(show_spinner="Loading model...", max_entries=8)
def load_model_cached(path: str, sha256: str) -> LoadedModel:
    """One model object per checkpoint content, shared by every session (read-only after load)."""
    return load_checkpoint(path, "cpu")


@st.cache_resource(show_spinner="Indexing dataset...", max_entries=16)
def open_dataset_cached(path: str, split: str | None, fmt: str, class_map: str | None, stamp: float):
    return open_dataset(path, split=split, fmt=fmt, class_map=parse_class_map(class_map))


@st.cache_data(show_spinner=False, max_entries=64)
def read_evaluation_cached(out_dir: str) -> tuple[pd.DataFrame, dict] | None:
    return load_evaluation(out_dir)


def _file_sha(path: str) -> str:
    p = Path(path)
    st_ = p.stat()
    return _sha_cached(str(p), st_.st_size, st_.st_mtime_ns)


@st.cache_data(show_spinner=False, max_entries=64)
def _sha_cached(path: str, size: int, mtime: int) -> str:
    from core.model.checkpoint import file_sha256
    return file_sha256(path)


def shipped_weights() -> list[Path]:
    return _paths.shipped_weights(WEIGHTS_DIR)


def sample_splits() -> list[str]:
    return cifake_splits(SAMPLE_DIR)


# ----------------------------------------------------------------------------- sidebar

def _model_ui() -> tuple[LoadedModel, str] | None:
    st.sidebar.subheader("Model")
    options = [p.name for p in shipped_weights()] + ["Upload a checkpoint", "Checkpoint path"]
    choice = st.sidebar.selectbox("Checkpoint", options, key="model_choice",
                                  help="Shipped checkpoints live in weights/; see the Model & data page.")
    path = None
    if choice == "Upload a checkpoint":
        up = st.sidebar.file_uploader("Checkpoint (.pt saved by core.model.train)", type=["pt", "pth", "ckpt"], key="ckpt_upload")
        if up is None:
            st.sidebar.info("Upload a checkpoint, or pick a shipped one.")
            return None
        data = up.getvalue()
        if len(data) > MAX_CHECKPOINT_BYTES:
            st.sidebar.error(f"Checkpoint is {len(data) / 1e6:.0f} MB, over the {MAX_CHECKPOINT_BYTES / 1e6:.0f} MB limit.")
            return None
        sha = hashlib.sha256(data).hexdigest()
        dest = RUNS_DIR / "uploads" / f"{sha[:20]}.pt"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        path = str(dest)
    elif choice == "Checkpoint path":
        text = st.sidebar.text_input("Path to a checkpoint", key="ckpt_path")
        if not text:
            return None
        path = text
    else:
        path = str(WEIGHTS_DIR / choice)
    try:
        if not Path(path).is_file():
            raise CheckpointError(f"no file at {path}")
        lm = load_model_cached(path, _file_sha(path))
    except CheckpointError as e:
        st.sidebar.error(f"Cannot use this checkpoint: {e}")
        return None
    st.sidebar.caption(f"`{lm.arch}` · input {lm.preprocess.describe()} · T = {lm.temperature:.3g} · "
                       f"sha256 `{lm.sha256[:12]}`")
    return lm, path


def _dataset_ui():
    st.sidebar.subheader("Evaluation data")
    splits = sample_splits()
    options = [f"Sample: {s}" for s in sorted(splits, key=lambda s: (s != "test", s != "ood", s))] + ["Dataset path"]
    choice = st.sidebar.selectbox("Dataset", options, key="data_choice",
                                  help="The embedded sample (data/sample), or a CIFAKE root, class folder, "
                                       "Hugging Face parquet folder or manifest CSV on this machine.")
    if choice.startswith("Sample: "):
        key = (str(SAMPLE_DIR), choice[len("Sample: "):], "cifake", None)
    else:
        path = st.sidebar.text_input("Path", key="data_path", placeholder="/data/cifake  or  /data/hemg  or  list.csv")
        fmt = st.sidebar.selectbox("Format", ["auto", "cifake", "folder", "parquet", "manifest"], key="data_fmt")
        split = None
        if path and (fmt in ("auto", "cifake")) and cifake_splits(path):
            split = st.sidebar.selectbox("Split", cifake_splits(path), key="data_split",
                                         index=cifake_splits(path).index("test") if "test" in cifake_splits(path) else 0)
        class_map = st.sidebar.text_input("Class mapping (optional)", key="data_class_map",
                                          placeholder="AiArtData=FAKE,RealArt=REAL  or  0=REAL,1=FAKE",
                                          help="Maps folder names or label values to REAL/FAKE. Needed when "
                                               "names are not REAL/FAKE-like; overrides the metadata.")
        if not path:
            st.sidebar.info("Enter a dataset path.")
            return None, None
        key = (path, split, fmt, class_map or None)
    try:
        stamp = Path(key[0]).stat().st_mtime
        ds = open_dataset_cached(*key, stamp)
    except (DatasetError, LabelMappingError, OSError) as e:
        st.sidebar.error(f"Cannot use this dataset: {e}")
        return None, key
    c = ds.counts()
    st.sidebar.caption(f"{ds.format}: {c['REAL']:,} REAL, {c['FAKE']:,} FAKE")
    st.sidebar.markdown(f"**Label mapping:** {describe_mapping(ds.label_mapping)}  \n"
                        "0 = REAL, 1 = FAKE; probabilities are P(FAKE).")
    for w in ds.warnings:
        st.sidebar.warning(w)
    return ds, key


def navigation_ui(pages: list) -> None:
    """The page menu at the top of the sidebar: one st.page_link per st.Page, in order (the current one marked)."""
    with st.sidebar.container(key="page_menu"):
        for p in pages:
            st.page_link(p, label=p.title, icon=p.icon)
        st.divider()


def sidebar_ui() -> None:
    """Draw the shared sidebar (model, data, threshold); the entrypoint calls it on every run.

    Only plain values go into st.session_state["selection"]; the model and dataset stay in
    st.cache_resource, and `get_context()` looks them up again (a dictionary hit).
    """
    m = _model_ui()
    ds, key = _dataset_ui()
    st.sidebar.subheader("Decision")
    threshold = st.sidebar.slider("Threshold on P(AI)", 0.0, 1.0, 0.5, 0.01, key="threshold",
                                  help="An image is called FAKE (AI-generated) when P(FAKE) >= threshold. "
                                       "Applies on every page.")
    st.session_state["selection"] = {
        "weights_path": m[1] if m else None, "sha256": m[0].sha256 if m else None,
        "dataset_key": key if ds is not None else None, "threshold": threshold}


def _ensure_entrypoint() -> None:
    """Rerun through dashboard.py when Streamlit ran a page file on its own.

    A folder named pages/ next to the entrypoint makes Streamlit start in its old pages-directory
    mode, which it leaves only at the first st.navigation call. Until then (a fresh server whose
    first visitor opens a deep link such as /confusion, and every AppTest run) the page file runs
    alone: no sidebar, no selection. Leaving that mode and rerunning lands on the same page (same
    URL path) through dashboard.py's st.navigation. (Its automatic page list is hidden by
    client.showSidebarNavigation = false and lists no helper: they live in pages_support/. The deep
    link itself still needs this rerun: Streamlit has no public switch for the mode.)
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:          # internal module moved: nothing to repair
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def get_context(need_data: bool = True) -> Context | None:
    """The current selection as live objects; shows why and returns None when it is not usable."""
    _ensure_entrypoint()
    sel = st.session_state.get("selection") or {}
    if not sel.get("weights_path"):
        st.warning("No usable model is selected: pick one in the sidebar.")
        return None
    lm = load_model_cached(sel["weights_path"], sel["sha256"])
    ds = None
    if sel.get("dataset_key"):
        key = sel["dataset_key"]
        ds = open_dataset_cached(*key, Path(key[0]).stat().st_mtime)
    elif need_data:
        st.warning("No usable evaluation dataset is selected: pick one in the sidebar.")
        return None
    return Context(lm=lm, weights_path=sel["weights_path"], ds=ds, dataset_key=sel.get("dataset_key") or (),
                   threshold=float(sel.get("threshold", 0.5)))


# ----------------------------------------------------------------------------- evaluations

def evaluation_ui(ctx: Context, shift: Shift | None = None) -> tuple[pd.DataFrame, dict] | None:
    """The evaluation of (model, dataset, shift): from memory, else from runs/, else computed with a progress bar."""
    if ctx.ds is None:
        st.info("Choose an evaluation dataset in the sidebar.")
        return None
    out = evaluation_dir(RUNS_DIR, ctx.lm, ctx.ds, shift)
    if not (out / "metrics.json").is_file():
        bar = st.progress(0.0, text=f"Evaluating {len(ctx.ds):,} images" + (f" under {shift}" if shift else "") + "...")
        cached_evaluation(ctx.lm, ctx.ds, RUNS_DIR, shift,
                          progress=lambda d, t: bar.progress(min(1.0, d / max(t, 1)), text=f"Evaluating: {d:,}/{t:,}"))
        bar.empty()
    res = read_evaluation_cached(str(out))
    if res is None:
        st.error("The stored evaluation could not be read; delete the folder and retry: " + str(out))
    return res


def sweep_ui(ctx: Context) -> pd.DataFrame | None:
    if ctx.ds is None:
        st.info("Choose an evaluation dataset in the sidebar.")
        return None
    return _sweep_from_disk(ctx.lm.sha256, ctx.weights_path, ctx.dataset_key)


SWEEP_LIVE_COLUMNS = ["shift", "level", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "recall_REAL",
                      "recall_FAKE", "ece"]


def _sweep_from_disk(sha, weights_path, dataset_key):
    # The sweep's own disk cache (runs/sweep-*.csv) makes a warm call a CSV read. A first sweep shows each
    # shift level in a table as soon as it is measured, then the table gives way to the page's sections.
    lm = load_model_cached(weights_path, sha)
    ds = open_dataset_cached(*dataset_key, Path(dataset_key[0]).stat().st_mtime)
    if sweep_path(RUNS_DIR, lm, ds).is_file():
        return cached_sweep(lm, ds, RUNS_DIR)
    bar = st.progress(0.0, text="Robustness sweep...")
    live, rows = st.empty(), []

    def on_row(row):
        rows.append(row)
        # st.table: redrawn once per level, a static table costs the browser less than a data grid each time
        live.table(pd.DataFrame(rows)[SWEEP_LIVE_COLUMNS], hide_index=True, height=300)

    df = cached_sweep(lm, ds, RUNS_DIR, on_row=on_row,
                      progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Sweep: {d}/{t} levels measured"))
    bar.empty()
    live.empty()
    return df


def image_bytes(arr: np.ndarray, scale: int = 1) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes, optionally enlarged with nearest-neighbour (to show pixels as pixels)."""
    from PIL import Image
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def context_and_evaluation_or_stop():
    """(ctx, predictions DataFrame, stored metrics) for the page's selection, or stop the page with a message."""
    ctx = get_context()
    if ctx is None:
        st.stop()
    res = evaluation_ui(ctx)
    if res is None:
        st.stop()
    return ctx, res[0], res[1]


def training_data(ctx: Context) -> tuple[ImageDataset | None, tuple | None]:
    """(dataset, dataset key) of the training split of the sidebar's CIFAKE root, the data the leakage check
    compares the selected split with (core.audits.data_issues.default_reference); (None, None) without one."""
    from core.audits.data_issues import default_reference
    if not ctx.dataset_key:
        return None, None
    path, split, fmt, class_map = ctx.dataset_key
    ref = default_reference(path, split) if fmt in ("auto", "cifake") else None
    if ref is None:
        return None, None
    key = (path, ref, fmt, class_map)
    return open_dataset_cached(*key, Path(path).stat().st_mtime), key
