"""Model & data page: the model card (read from the checkpoint itself) and the dataset card.

Model: architecture, parameter count, preprocessing, temperature, training configuration, training
history curves and the metrics stored at training time. Data: counts per split, class and source
(from each split's manifest.csv when the sample has one), example images per class, and the sample's
data card (data/README.md) when it exists.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.data.images import ImageError
from core.data.labels import CLASS_NAMES
from core.model.models import count_parameters
from pages_support import charts
from pages_support import common as _common
from pages_support.common import get_context
from pages_support.views import enlarged, static_table

N_EXAMPLES = 8      # example images per class


def _flatten(d: dict, prefix: str = "") -> list[dict]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append({"setting": f"{prefix}{k}", "value": json.dumps(v) if isinstance(v, (list, bool)) or v is None
                         else str(v)})
    return rows


def model_card(ctx) -> None:
    lm = ctx.lm
    st.header("Model card")
    cols = st.columns(4)
    cols[0].metric("Architecture", lm.arch)
    cols[1].metric("Parameters", f"{count_parameters(lm.model):,}")
    cols[2].metric("Input", f"{lm.preprocess.size}x{lm.preprocess.size} RGB")
    cols[3].metric("Temperature", f"{lm.temperature:.4g}")
    st.markdown(f"**Name:** `{lm.name}` · **file:** `{ctx.weights_path}` · **sha256:** `{lm.sha256[:16]}...` · "
                f"**created:** {lm.meta.get('created', 'unknown')}  \n"
                f"**Preprocessing:** {lm.preprocess.describe()}, fit `{lm.preprocess.fit}`; pixels scaled to [0, 1] "
                "and normalised inside the model.  \n"
                f"**Output:** one logit; P(AI) = sigmoid(logit / T). Labels: "
                f"{', '.join(f'{k} = {v}' for k, v in (lm.meta.get('label_map') or {}).items())}.  \n"
                f"**Model arguments:** `{json.dumps(lm.meta.get('model_args') or {})}`")
    hist = pd.DataFrame(lm.meta.get("history") or [])
    st.subheader("Training history")
    if hist.empty:
        st.info("This checkpoint stores no training history.")
    else:
        hist["epoch_index"] = np.arange(1, len(hist) + 1)
        st.vega_lite_chart(charts.history(hist).to_dict(), key="history")
        total = hist["seconds"].sum() if "seconds" in hist else None
        if total is not None:
            st.caption(f"{len(hist)} epochs, {total:,.1f} s of training"
                       + (f", {hist['images_per_second'].median():,.0f} images/s median" if "images_per_second" in hist
                          else "") + ". A dashed line marks the start of the fine-tuning phase.")
        with st.expander("History table"):
            static_table(hist.drop(columns=["epoch_index"]), height=400)
    a, b = st.columns(2)
    with a:
        st.subheader("Training configuration")
        cfg = lm.meta.get("train_config") or {}
        if cfg:
            static_table(_flatten(cfg), height=400)
        else:
            st.info("This checkpoint stores no training configuration.")
    with b:
        st.subheader("Metrics stored at training time")
        metrics = lm.meta.get("metrics") or {}
        if metrics:
            static_table(_flatten(metrics), height=400)
            st.caption("Measured when the checkpoint was written; the other pages measure the selected data live.")
        else:
            st.info("This checkpoint stores no metrics.")
    card = Path(_common.WEIGHTS_DIR) / "README.md"
    if card.is_file():
        with st.expander("Model cards of the shipped weights (weights/README.md)"):
            render_markdown_with_images(card)


def manifest_counts(sample_dir: Path) -> pd.DataFrame | None:
    """Rows split, class, source, images from SAMPLE_DIR/<split>/manifest.csv, or None when there are none."""
    frames = []
    for split in _common.sample_splits():
        m = sample_dir / split / "manifest.csv"
        if m.is_file():
            try:
                d = pd.read_csv(m, dtype=str, keep_default_na=False)
            except (OSError, ValueError):
                continue
            if "label" in d:
                d["split"] = split
                frames.append(d)
    if not frames:
        return None
    d = pd.concat(frames)
    d["class"] = d["label"].map(lambda v: CLASS_NAMES[1] if str(v).strip().upper() in ("1", "FAKE") else CLASS_NAMES[0])
    if "source" not in d:
        d["source"] = ""
    return d.groupby(["split", "class", "source"]).size().rename("images").reset_index()


# A fenced code block (``` or ~~~ on lines of their own), and a local image reference ![alt](rel/path.png).
FENCED_CODE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$\n?", re.M | re.S)
IMAGE_REF = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def render_markdown_with_images(path: Path) -> None:
    """st.markdown of a file, with its local images (![alt](rel/path.png)) drawn by st.image and its fenced code
    blocks by st.text.

    Why st.text: Streamlit's markdown draws a fenced block with its syntax highlighter, a 1.56 MB script the
    browser fetches, evaluates and runs only when a page first has such a block; in a browser trace of a
    fresh server's first view of this page (the data card's two command blocks) that took about 2 s of
    evaluation plus the highlighting, and every element of the page stayed a skeleton until it was done
    (script run finished at 5.9 s, first number drawn at 13.9 s). st.text is plain preformatted text."""
    text = path.read_text(encoding="utf-8", errors="replace")
    pos = 0
    for mt in FENCED_CODE.finditer(text):
        _markdown_with_images(text[pos:mt.start()], path)
        st.text(mt.group(2).rstrip("\n"))
        pos = mt.end()
    _markdown_with_images(text[pos:], path)


def _markdown_with_images(text: str, path: Path) -> None:
    pos = 0
    for mt in IMAGE_REF.finditer(text):
        if text[pos:mt.start()].strip():
            st.markdown(text[pos:mt.start()])
        img = (path.parent / mt.group(2)).resolve()
        if img.is_file() and path.parent.resolve() in img.parents:
            # The file's own bytes for a PNG: with output_format "auto" Streamlit decodes an RGB PNG and
            # re-encodes it as JPEG on every first run (the data card's nine figures: about half of this
            # page's script time in py-spy of a fresh server, under load).
            st.image(str(img), caption=mt.group(1) or None,
                     output_format="PNG" if img.suffix.lower() == ".png" else "auto")
        pos = mt.end()
    if text[pos:].strip():
        st.markdown(text[pos:])


def data_card(ctx) -> None:
    st.header("Dataset card")
    sample = Path(_common.SAMPLE_DIR)
    counts = manifest_counts(sample)
    if counts is not None:
        st.markdown(f"Embedded sample at `{sample}`: images per split and class (from each split's manifest.csv).")
        pivot = counts.pivot_table(index="split", columns="class", values="images", aggfunc="sum", fill_value=0)
        pivot["total"] = pivot.sum(axis=1)
        static_table(pivot.reset_index())
        with st.expander("Per source"):
            static_table(counts.pivot_table(index=["class", "source"], columns="split", values="images",
                                            aggfunc="sum", fill_value=0).reset_index())
    if ctx.ds is not None:
        c = ctx.ds.counts()
        st.markdown(f"**Selected evaluation data:** {ctx.ds.describe()}")
        if counts is None:
            static_table([{"class": k, "images": v} for k, v in c.items()])
        for w in ctx.ds.warnings:
            st.warning(w)
        st.subheader("Example images")
        labels = np.array(ctx.ds.labels)
        rng = np.random.default_rng(0)
        for k, name in enumerate(CLASS_NAMES):
            idx = np.flatnonzero(labels == k)
            if not len(idx):
                continue
            pick = np.sort(rng.choice(idx, size=min(N_EXAMPLES, len(idx)), replace=False))
            st.markdown(f"**{name}**")
            images, captions, unreadable = [], [], []
            for i in pick:
                try:
                    img = ctx.ds.load(int(i))
                except ImageError as e:
                    unreadable.append(f"{ctx.ds.item_id(int(i))}: {e}")
                    continue
                src = ctx.ds.items[int(i)][2]
                images.append(enlarged(np.asarray(img.image), 96))
                captions.append(f"{ctx.ds.item_id(int(i))}" + (f" · {src}" if src else ""))
            # One element per class (st.image of a list), not one column and element per image: the browser
            # lays out and draws each element separately (a fresh server's first view draws every element of
            # the page in one render).
            if images:
                st.image(images, caption=captions, width=96)
            for msg in unreadable:
                st.warning(msg)
    readme = sample.parent / "README.md"
    if readme.is_file():
        st.subheader("Data card (data/README.md)")
        # One toggle away, not drawn on every first view: its 14 KB of markdown and nine figures were most of
        # what the browser drew on this page, and until it had drawn everything no element was shown (browser
        # trace of a fresh server's first view: script done 8.6 s, first number 22.7 s under load).
        if st.toggle("Show the data card: how the sample was built, its generators and figures", value=False,
                     key="md_data_card"):
            with st.container(border=True):
                render_markdown_with_images(readme)
    elif counts is None and ctx.ds is None:
        st.info("No dataset selected and no sample data card found.")


def main() -> None:
    st.title("Model & data")
    ctx = get_context(need_data=False)
    if ctx is None:
        st.stop()
    model_card(ctx)
    st.divider()
    data_card(ctx)


main()
