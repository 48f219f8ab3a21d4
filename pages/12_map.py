"""Map page: every image of the evaluation placed in 2-D by its features (core.audits.embedding), coloured by
label, right/wrong, verdict, source or P(AI). A box or lasso selection shows the selected images with their
label, P(AI) and verdict, and downloads as CSV. The same rows as
`python -m core embedding --weights W --data PATH --split S --out DIR` (DIR/embedding.csv).

The chart is plotly's: Streamlit's selection events on a plotly chart give box and lasso selection (Vega-Lite
has no lasso), at the cost of plotly.js on this page's first chart.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core.audits.embedding import (EMBEDDING_COLUMNS, cached_layout, embedding_dir, embedding_table,
                                   projection_for, read_layout)
from core.audits.features import content_encoder
from core.data.labels import CLASS_NAMES
from pages_support.common import RUNS_DIR, context_and_evaluation_or_stop
from pages_support.views import gallery

COLOURS = {"label": "True label", "correct": "Right or wrong", "verdict": "Verdict", "source": "Source",
           "prob_fake": "P(AI)"}
PALETTE = {"REAL": "#1f77b4", "FAKE": "#d62728", "UNSURE": "#ff9f1c", "right": "#7f7f7f", "wrong": "#d62728"}
MAX_SVG_POINTS = 5000      # above this the points are drawn with WebGL (plotly's scattergl)


def layout_ui(ctx, kind: str, seed: int):
    """The stored layout, or a button that computes it with a progress bar (None until then)."""
    method = projection_for(len(ctx.ds))
    out = embedding_dir(RUNS_DIR, ctx.lm, ctx.ds, kind, method, seed)
    stored = read_layout(out)
    if stored is not None:
        return stored
    st.info(f"No map of these {len(ctx.ds):,} images is stored yet: it takes a pass of the model over them and a "
            f"{method} layout of its features.")
    if not st.button("Compute the map", key="map_compute", type="primary"):
        return None
    bar = st.progress(0.0, text="Map...")
    cached_layout(ctx.lm, ctx.ds, RUNS_DIR, kind, seed, method,
                  progress=lambda f, text: bar.progress(min(1.0, f), text=text))
    # Drawn from the stored map on a fresh run: a chart drawn below this run's notice and button would move up on
    # the next run, and the browser would drop a selection made meanwhile.
    st.rerun()


def figure(table, colour: str) -> go.Figure:
    """One trace per category (a continuous colour scale for P(AI)); customdata holds each point's row."""
    scatter = go.Scatter if len(table) <= MAX_SVG_POINTS else go.Scattergl
    hover = "%{text}<extra></extra>"
    text = [f"{p}<br>true {CLASS_NAMES[int(lab)]} · P(AI) {q:.3f} · {v}" for p, lab, q, v in
            zip(table["path"], table["label"], table["prob_fake"], table["verdict"])]
    fig = go.Figure()
    if colour == "prob_fake":
        fig.add_trace(scatter(x=table["x"], y=table["y"], mode="markers", customdata=table.index, text=text,
                              hovertemplate=hover, marker=dict(size=6, color=table["prob_fake"], cmin=0, cmax=1,
                                                               colorscale="RdBu_r", colorbar=dict(title="P(AI)"))))
    else:
        groups = categories(table, colour)
        for name in sorted(groups.unique()):
            part = groups == name
            fig.add_trace(scatter(x=table["x"][part], y=table["y"][part], mode="markers", name=str(name),
                                  customdata=table.index[part], text=[t for t, k in zip(text, part) if k],
                                  hovertemplate=hover, marker=dict(size=6, color=PALETTE.get(str(name)))))
    fig.update_layout(dragmode="lasso", height=620, margin=dict(l=10, r=10, t=30, b=10), legend_title=COLOURS[colour],
                      xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))
    return fig


def categories(table, colour: str):
    if colour == "label":
        return table["label"].map(lambda v: CLASS_NAMES[int(v)])
    if colour == "correct":
        return table["correct"].map({True: "right", False: "wrong"})
    return table[colour].astype(str).replace("", "n/a")


def selected_rows(table, event):
    """The table's rows under the chart's selection (points carry their row in customdata), in table order."""
    points = event["selection"]["points"] if event and "selection" in event else []
    rows = sorted({int(p["customdata"][0] if isinstance(p["customdata"], list) else p["customdata"])
                   for p in points if "customdata" in p})
    return table.loc[rows]


def main() -> None:
    st.title("Map")
    ctx, df, stored = context_and_evaluation_or_stop()
    has_content = content_encoder(ctx.lm) is not None
    a, b, c = st.columns([2, 2, 1])
    kind = a.radio("Features", ["model", "content"], horizontal=True, key="map_features",
                   format_func={"model": "the model's", "content": "content (familiarity)"}.get,
                   disabled=not has_content,
                   help="The detector's own pooled features, or the familiarity's content-encoder features.")
    if not has_content:
        a.caption("This checkpoint's familiarity has no content encoder: only the model's features can be mapped.")
        kind = "model"
    colour = b.selectbox("Colour by", list(COLOURS), format_func=COLOURS.get, key="map_colour")
    seed = int(c.number_input("Seed", 0, 10_000, 0, 1, key="map_seed", help="Seed of the PCA and the layout."))
    res = layout_ui(ctx, kind, seed)
    if res is None:
        st.stop()
    layout, meta = res
    table = embedding_table(layout, df, ctx.lm, ctx.threshold)
    st.caption(f"{stored.get('dataset', '')} · {len(table):,} images · {meta['features']} features "
               f"({meta['features_shape'][1]} numbers each), PCA to {meta['pca_dims']}, {meta['projection']} layout, "
               f"seed {meta['seed']} · verdicts at threshold {ctx.threshold:.2f}. Drag a lasso (or pick the box in "
               "the chart's toolbar) to see the images; double-click clears the selection.")
    event = st.plotly_chart(figure(table, colour), key="map_chart", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    st.download_button("The whole map (CSV)", table[EMBEDDING_COLUMNS].to_csv(index=False).encode(),
                       "embedding.csv", "text/csv", key="map_csv")
    chosen = selected_rows(table, event)
    if chosen.empty:
        st.caption("No images selected.")
        return
    wrong = int((~chosen["correct"]).sum())
    st.subheader(f"{len(chosen):,} selected images ({wrong:,} wrong at the threshold)")
    st.download_button("The selection (CSV)", chosen[EMBEDDING_COLUMNS].to_csv(index=False).encode(),
                       "selection.csv", "text/csv", key="map_selection_csv")
    gallery(ctx, chosen, caption=lambda r: f"true {CLASS_NAMES[int(r['label'])]} · P(AI) {r['prob_fake']:.3f} · "
                                           f"verdict {r['verdict']}")


main()
