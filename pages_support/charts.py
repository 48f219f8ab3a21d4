"""The app's charts as Vega-Lite specifications: lines, bars with intervals, 2x2 heat maps, binned histograms
and small-multiple panels, each with its numbers in the hover tooltip.

Why not plotly: a page's first plotly chart makes the browser load, parse and compile plotly.js (about
4.5 MB) before anything of the chart is drawn; Streamlit shows a skeleton meanwhile. A page with two
plotly charts finished 2.5 s after a text-only page, against 0.6 s with the same two charts in Vega-Lite
and 0.2 s with a PNG (medians of 3, `python benchmarks/bench_frontend.py`, on the 2 cores partly loaded:
benchmarks/results/frontend.json; docs/performance.md). Every chart is built from the page's core results,
so its numbers can also be printed by the core CLIs. Functions only lay out: they never compute a metric.

Why dicts, not Altair: the specifications are written here as Vega-Lite dicts (`Chart`, drawn with
st.vega_lite_chart(chart.to_dict())). Altair builds the same specifications (tests/test_charts.py checks them
against the Altair code in tests/altair_charts_reference.py), but building and validating one of each of the 17
kinds and options the pages draw took 1,672 ms against 116 ms here (`python benchmarks/bench_charts.py`,
benchmarks/results/charts.json). Layering follows Altair's rules (`Chart.__add__`, `layer`).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

SCHEMA = "https://vega.github.io/schema/vega-lite/v6.4.1.json"     # the Vega-Lite version Streamlit's frontend draws


class Chart:
    """A Vega-Lite view with its data: a unit (`spec` holds mark and encoding), or charts (`layer`) drawn over each
    other (`kind` "layer"), or side by side ("hconcat") or stacked ("vconcat").

    `data` is a DataFrame, or None for a view that takes its enclosing layer's. `a + b` layers b over a and
    `properties(**kw)` sets top-level properties, with Altair's rules: a layer's children that share one data
    frame (the same object) leave it to the layer, and height, width and view move from children to the layer
    when it is made. Charts are never modified: both return a new one. `to_dict()`: the specification, data frames
    in "datasets" (Streamlit sends them to the browser as Arrow)."""

    def __init__(self, data: pd.DataFrame | None = None, layer: list[Chart] | None = None, kind: str = "layer", **spec):
        self.data, self.layer, self.kind, self.spec = data, layer, kind, spec

    def _copy(self, **changes) -> Chart:
        out = Chart(self.data, None if self.layer is None else list(self.layer), self.kind, **self.spec)
        for k, v in changes.items():
            setattr(out, k, v)
        return out

    def properties(self, **kw) -> Chart:
        return self._copy(spec={**self.spec, **kw})

    def resolve_scale(self, **kw) -> Chart:
        return self.properties(resolve={"scale": kw})

    def __add__(self, other: Chart) -> Chart:
        if self.layer is None or self.kind != "layer":
            return layer(self, other)
        out = self._copy(layer=self.layer + [other])
        out.data, out.layer = _combine_data(out.data, out.layer)
        return out

    def to_dict(self) -> dict:
        datasets: dict[str, pd.DataFrame] = {}
        return {"$schema": SCHEMA, **self._dict(datasets), "datasets": datasets}

    def _dict(self, datasets: dict) -> dict:
        out = {}
        if self.data is not None:
            name = dataset_name(self.data)
            datasets[name] = self.data
            out["data"] = {"name": name}
        if self.layer is not None:
            out[self.kind] = [c._dict(datasets) for c in self.layer]
        return {**out, **self.spec}


def layer(*charts: Chart) -> Chart:
    """The charts drawn over each other, the first at the bottom (Altair's alt.layer)."""
    out = Chart(layer=list(charts))
    out.data, out.layer = _combine_data(None, out.layer)
    for prop in ("height", "width", "view"):
        values = [c.spec[prop] for c in out.layer if prop in c.spec]
        if not values:
            continue
        if any(v != values[0] for v in values[1:]):
            raise ValueError(f"inconsistent values {values} for {prop}")
        out.spec[prop] = values[0]
        out.layer = [c.properties() if prop not in c.spec else
                     c._copy(spec={k: v for k, v in c.spec.items() if k != prop}) for c in out.layer]
    return out


def hconcat(*charts: Chart) -> Chart:
    """The charts side by side (Altair's alt.hconcat: children sharing one frame leave it to the whole)."""
    out = Chart(layer=list(charts), kind="hconcat")
    out.data, out.layer = _combine_data(None, out.layer)
    return out


def vconcat(*charts: Chart) -> Chart:
    """The charts one above the other (Altair's alt.vconcat)."""
    out = Chart(layer=list(charts), kind="vconcat")
    out.data, out.layer = _combine_data(None, out.layer)
    return out


def _combine_data(data, charts: list[Chart]):
    """(the layer's data, its children): children that all share one frame (or the layer's) leave it to the layer."""
    if not charts:
        return data, charts
    if data is None:
        first = charts[0].data
        if first is not None and all(c.data is first for c in charts):
            return first, [c._copy(data=None) for c in charts]
    elif all(c.data is None or c.data is data for c in charts):
        return data, [c._copy(data=None) for c in charts]
    return data, charts


def dataset_name(df: pd.DataFrame) -> str:
    """A name for df's content (same rows, columns and types: same name)."""
    h = hashlib.sha256(repr((list(map(str, df.columns)), list(map(str, df.dtypes)))).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return "data-" + h.hexdigest()[:32]


_TYPES = {"Q": "quantitative", "N": "nominal", "O": "ordinal", "T": "temporal"}


def infer_type(column: pd.Series) -> str:
    """The Vega-Lite type of a column, as Altair infers it for a field given without one."""
    kind = pd.api.types.infer_dtype(column, skipna=False)
    if kind in {"floating", "mixed-integer-float", "integer", "mixed-integer", "complex"}:
        return "quantitative"
    if kind in {"datetime", "datetime64", "timedelta", "timedelta64", "date", "time", "period"}:
        return "temporal"
    return "nominal"


def field(df: pd.DataFrame | None, shorthand, typed: bool = True, **props) -> dict:
    """An encoding of "name:T" (T one of Q, N, O, T), or of "name" with its type inferred from df; a dict (from
    `tip`) is taken as it is. typed=False: no type (Vega-Lite's x2/y2 take the type of x/y)."""
    if isinstance(shorthand, dict):
        return {**shorthand, **props}
    name, _, code = shorthand.partition(":")
    out = {"field": name}
    if typed:
        out["type"] = _TYPES[code] if code else infer_type(df[name])
    return {**out, **props}


def tip(shorthand: str, format: str | None = None) -> dict:
    """A tooltip entry "name:T" with a d3 format, e.g. tip("FPR:Q", ".3f")."""
    return field(None, shorthand, **({"format": format} if format is not None else {}))


def _axis(title: str | None = None, fmt: str | None = None, **kw) -> dict:
    return {"title": title, "format": fmt, **kw} if fmt else {"title": title, **kw}


HEIGHT = 300
GRAY = "#888888"


def _tips(df: pd.DataFrame, items: list) -> list[dict]:
    return [field(df, t) for t in items]


def lines(df: pd.DataFrame, x: str, y: str, series: str | None = None, x_title: str = "", y_title: str = "",
          height: int = HEIGHT, points: bool = False, y_domain=None, x_reverse: bool = False, x_log: bool = False,
          y_log: bool = False, dashed: dict | None = None, tooltip: list | None = None, title: str | None = None,
          sort_series: list | None = None) -> Chart:
    """One line per value of `series` (long format); `dashed`: {series value: True} for dotted lines."""
    y_scale = {"zero": False}
    if y_domain or y_log:
        y_scale = {**({"domain": y_domain} if y_domain is not None else {}), "type": "log" if y_log else "linear",
                   "zero": False}
    enc = {"x": field(df, f"{x}:Q", title=x_title, scale={"reverse": x_reverse, "type": "log" if x_log else "linear",
                                                           "zero": False}),
           "y": field(df, f"{y}:Q", title=y_title, scale=y_scale),
           "tooltip": _tips(df, tooltip or [tip(f"{x}:Q", ".4g"), tip(f"{y}:Q", ".4f")] + ([series] if series else []))}
    if series:
        enc["color"] = field(df, f"{series}:N", title=None, sort=sort_series, legend={"orient": "bottom"})
        if dashed:
            enc["strokeDash"] = {"condition": {"test": {"field": series, "oneOf": [k for k, v in dashed.items() if v]},
                                               "value": [4, 3]}, "value": [1, 0]}
    chart = Chart(df, mark={"type": "line", "point": points}, encoding=enc, height=height)
    return chart.properties(title=title) if title else chart


def points(df: pd.DataFrame, x: str, y: str, label: str, color: str = "red", size: int = 120) -> Chart:
    """Marked points (an operating point) with a tooltip; df has x, y and `label` columns."""
    return Chart(df, mark={"type": "point", "filled": True, "size": size, "color": color},
                 encoding={"x": field(df, f"{x}:Q"), "y": field(df, f"{y}:Q"),
                           "tooltip": _tips(df, [label, tip(f"{x}:Q", ".4f"), tip(f"{y}:Q", ".4f")])})


def rule_y(value: float, text: str | None = None) -> Chart:
    """A dotted horizontal reference line, labelled."""
    df = pd.DataFrame({"y": [value], "text": [text or ""]})
    rule = Chart(df, mark={"type": "rule", "color": GRAY, "strokeDash": [3, 3]},
                 encoding={"y": field(df, "y:Q"), "tooltip": _tips(df, ["text"])})
    if not text:
        return rule
    return rule + Chart(df, mark={"type": "text", "align": "right", "baseline": "bottom", "dy": -2, "x": "width",
                                  "color": GRAY}, encoding={"y": field(df, "y:Q"), "text": field(df, "text")})


def rule_x(value: float, text: str | None = None) -> Chart:
    df = pd.DataFrame({"x": [value], "text": [text or ""]})
    rule = Chart(df, mark={"type": "rule", "color": GRAY, "strokeDash": [3, 3]},
                 encoding={"x": field(df, "x:Q"), "tooltip": _tips(df, ["text"])})
    if not text:
        return rule
    return rule + Chart(df, mark={"type": "text", "align": "left", "baseline": "top", "dx": 3, "y": 0, "color": GRAY},
                        encoding={"x": field(df, "x:Q"), "text": field(df, "text")})


def diagonal(x: str, y: str, lo: float = 0.0, hi: float = 1.0, name: str = "chance") -> Chart:
    """The dotted y = x line from lo to hi, on the fields (x, y) of the chart it is layered with."""
    df = pd.DataFrame({x: [lo, hi], y: [lo, hi], "line": [name, name]})
    return Chart(df, mark={"type": "line", "color": GRAY, "strokeDash": [2, 3]},
                 encoding={"x": field(df, f"{x}:Q"), "y": field(df, f"{y}:Q"), "tooltip": _tips(df, ["line"])})


def bars(df: pd.DataFrame, x: str, y: str, series: str | None = None, lo: str | None = None, hi: str | None = None,
         x_title: str = "", y_title: str = "", height: int = HEIGHT, y_format: str | None = None, y_domain=None,
         horizontal: bool = False, text: str | None = None, sort=None, tooltip: list | None = None,
         title: str | None = None) -> Chart:
    """Bars of `y` per category `x` (grouped by `series`), with an interval [lo, hi] drawn as error bars.

    horizontal: categories on the y axis, in `sort` order (default: the frame's order)."""
    cat_key, val_key = ("y", "x") if horizontal else ("x", "y")
    order = sort if sort is not None else list(dict.fromkeys(df[x].astype(str)))
    tips = tooltip or ([x] + ([series] if series else []) + [tip(f"{y}:Q", y_format or ".4f")]
                       + ([tip(f"{lo}:Q", y_format or ".4f"), tip(f"{hi}:Q", y_format or ".4f")] if lo and hi else []))
    scale = {"domain": y_domain} if y_domain else {}
    enc = {cat_key: field(df, f"{x}:N", title=x_title, sort=order,
                          axis={"labelLimit": 400} if horizontal else {"labelAngle": -30}),
           val_key: field(df, f"{y}:Q", title=y_title, scale=scale, axis=_axis(y_title, y_format)),
           "tooltip": _tips(df, tips)}
    if series:
        enc["color"] = field(df, f"{series}:N", title=None, legend={"orient": "bottom"})
        enc["yOffset" if horizontal else "xOffset"] = field(df, f"{series}:N")
    chart = Chart(df, mark={"type": "bar", "opacity": 0.85}, encoding=enc)
    if lo and hi:
        err = {k: v for k, v in enc.items() if k not in ("tooltip", "color")}
        err[val_key] = field(df, f"{lo}:Q", title=y_title, scale=scale)
        err[val_key + "2"] = field(df, f"{hi}:Q", typed=False)
        if series:
            err["detail"] = field(df, f"{series}:N")
        chart = chart + Chart(df, mark={"type": "rule", "color": "black"}, encoding=err)
    if text:
        mark = {"type": "text", "align": "left" if horizontal else "center",
                "baseline": "middle" if horizontal else "bottom", "dx": 3 if horizontal else 0,
                "dy": 0 if horizontal else -3, "color": "black"}
        chart = chart + Chart(df, mark=mark, encoding={**{k: v for k, v in enc.items() if k not in ("tooltip", "color")},
                                                       "text": field(df, f"{text}:N")})
    chart = chart.properties(height=height)
    return chart.properties(title=title) if title else chart


def histogram(values: dict[str, np.ndarray], bins: np.ndarray, x_title: str, y_title: str = "images",
              normalize: bool = False, height: int = HEIGHT, colors: dict | None = None) -> Chart:
    """Overlaid histograms of each named array on fixed `bins` (edges); counts are binned here, so the chart
    carries one row per bin, not one per image. normalize: percent of each group."""
    df = histogram_rows(values, bins)
    y = "percent" if normalize else "images"
    enc = {"x": field(df, "from:Q", title=x_title, bin="binned", scale={"domain": [float(bins[0]), float(bins[-1])]}),
           "x2": field(df, "to:Q", typed=False), "y": field(df, f"{y}:Q", title=y_title, stack=None),
           "color": field(df, "group:N", title=None, legend={"orient": "bottom"},
                          scale={"domain": list(colors), "range": list(colors.values())} if colors else {}),
           "tooltip": _tips(df, ["group", tip("from:Q", ".3f"), tip("to:Q", ".3f"), "images", tip("percent:Q", ".1f")])}
    return Chart(df, mark={"type": "bar", "opacity": 0.6, "binSpacing": 0}, encoding=enc, height=height)


def histogram_rows(values: dict[str, np.ndarray], bins: np.ndarray) -> pd.DataFrame:
    """One row per (group, bin): from, to, images (NaN left out, values outside clipped into the end bins) and
    percent of the group."""
    rows = []
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        v = v[~np.isnan(v)]
        counts, _ = np.histogram(np.clip(v, bins[0], bins[-1]), bins=bins)
        share = counts / max(len(v), 1) * 100
        for a, b, c, s in zip(bins[:-1], bins[1:], counts, share):
            rows.append({"group": name, "from": float(a), "to": float(b), "images": int(c), "percent": float(s)})
    return pd.DataFrame(rows)


def confusion_heatmap(z, text, title: str, zmax=None, scheme: str = "blues") -> Chart:
    """A 2x2 confusion heat map: rows = true REAL/FAKE, columns = predicted REAL/FAKE, each cell labelled."""
    z = np.asarray(z, dtype=np.float64)
    rows = [{"true": f"true {t}", "predicted": f"pred {p}", "value": float(z[i, j]), "text": text[i][j]}
            for i, t in enumerate(("REAL", "FAKE")) for j, p in enumerate(("REAL", "FAKE"))]
    df = pd.DataFrame(rows)
    top = zmax if zmax is not None else float(z.max()) or 1.0
    base = {"x": field(df, "predicted:N", title=None, sort=["pred REAL", "pred FAKE"],
                       axis={"orient": "top", "labelAngle": 0}),
            "y": field(df, "true:N", title=None, sort=["true REAL", "true FAKE"])}
    rect = Chart(df, mark={"type": "rect"}, encoding={
        **base, "color": field(df, "value:Q", scale={"scheme": scheme, "domain": [0, top]}, legend=None),
        "tooltip": _tips(df, ["true", "predicted", "text"])})
    label = Chart(df, mark={"type": "text", "fontSize": 16}, encoding={
        **base, "text": field(df, "text:N"),
        "color": {"condition": {"test": f"(datum.value > {top / 2!r})", "value": "white"}, "value": "black"}})
    return (rect + label).properties(title=title, height=220)


def thin(df: pd.DataFrame, n: int = 600) -> pd.DataFrame:
    """At most about n rows of a curve, evenly spaced, first and last kept: a 3,000-point curve draws the same
    at the chart's width, for a fifth of the page's data."""
    if len(df) <= n:
        return df
    idx = np.unique(np.r_[np.linspace(0, len(df) - 1, n).round().astype(int), len(df) - 1])
    return df.iloc[idx]


SEVERITY_MEASURES = [("accuracy", "accuracy"), ("recall_REAL", "recall REAL"), ("recall_FAKE", "recall FAKE"),
                     ("ece", "ECE")]          # (sweep column, name in the chart), in the legend's order


def severity_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The sweep rows of one shift in long form: level, value, measure (SEVERITY_MEASURES' names), images."""
    return pd.concat([pd.DataFrame({"level": df["level"].astype(float), "value": df[c].astype(float), "measure": n,
                                    "images": df["n"] if "n" in df else np.nan}) for c, n in SEVERITY_MEASURES])


def severity(df: pd.DataFrame, x_title: str, clean_accuracy: float, reverse: bool = False) -> Chart:
    """Accuracy (with its 95% interval as a band, when the rows carry one), ECE and per-class recall against
    shift level (df: rows of one shift, clean row included); a dotted rule at the clean accuracy."""
    long = severity_rows(df)
    chart = lines(long, "level", "value", series="measure", x_title=x_title, y_title="value", height=280,
                  points=True, y_domain=[0, 1], x_reverse=reverse, sort_series=[n for _, n in SEVERITY_MEASURES],
                  dashed={"recall REAL": True, "recall FAKE": True, "ECE": True},
                  tooltip=["measure", tip("level:Q", "g"), tip("value:Q", ".3f"), "images"])
    layers = [chart, rule_y(clean_accuracy, "clean accuracy")]
    if {"accuracy_ci_low", "accuracy_ci_high"} <= set(df.columns) and df["accuracy_ci_low"].notna().any():
        band_df = df.astype({"level": float})
        band = Chart(band_df, mark={"type": "area", "opacity": 0.15}, encoding={
            "x": field(band_df, "level:Q", scale={"reverse": reverse, "zero": False}),
            "y": field(band_df, "accuracy_ci_low:Q"), "y2": field(band_df, "accuracy_ci_high:Q", typed=False),
            "tooltip": _tips(band_df, [tip("level:Q", "g"), tip("accuracy_ci_low:Q", ".3f"),
                                       tip("accuracy_ci_high:Q", ".3f")])})
        layers.insert(0, band)
    return layer(*layers)


def reliability(curves: dict[str, list[dict]]) -> Chart:
    """curves: {name: reliability bins}; accuracy vs confidence on top, images per bin below (log scale)."""
    pts = pd.DataFrame([{"curve": name, "confidence": b["confidence"], "accuracy": b["accuracy"], "images": b["count"]}
                        for name, bins in curves.items() for b in bins if b["count"]])
    counts = pd.DataFrame([{"curve": name, "from": b["lo"], "to": b["hi"], "images": b["count"]}
                           for name, bins in curves.items() for b in bins if b["count"]])
    x = {"domain": [0.5, 1.0], "nice": False}
    top = Chart(pts, mark={"type": "line", "point": True}, encoding={
        "x": field(pts, "confidence:Q", scale=x, title=None),
        "y": field(pts, "accuracy:Q", scale={"domain": [0, 1], "nice": False}, title="accuracy"),
        "color": field(pts, "curve:N", title=None, legend={"orient": "bottom"}),
        "tooltip": _tips(pts, ["curve", tip("confidence:Q", ".3f"), tip("accuracy:Q", ".3f"), "images"])})
    bottom = Chart(counts, mark={"type": "bar", "opacity": 0.6}, encoding={
        "x": field(counts, "from:Q", bin="binned", scale=x, title="confidence of the predicted class"),
        "x2": field(counts, "to:Q", typed=False),
        "y": field(counts, "images:Q", scale={"type": "log"}, title="images", stack=None),
        "color": field(counts, "curve:N", title=None), "tooltip": _tips(counts, ["curve", "from", "to", "images"])})
    top = top + diagonal("confidence", "accuracy", 0.5, 1.0, "perfect calibration")
    return vconcat(top.properties(height=300, width=620), bottom.properties(height=100, width=620)
                   ).resolve_scale(color="shared")


def history_frames(hist: pd.DataFrame) -> tuple[float | None, list[tuple[str, pd.DataFrame]]]:
    """(the epoch before which fine-tuning starts, minus 0.5, or None; [(panel title, long frame: epoch, value,
    series, phase)] for the loss, accuracy and validation ECE / learning rate panels the history has columns for)."""
    ft = None
    if "phase" in hist and hist["phase"].nunique() > 1:
        ft = float(hist.loc[hist["phase"] != hist["phase"].iloc[0], "epoch_index"].min()) - 0.5
    frames = []
    for title, cols in (("loss", (("train_loss", "train loss"), ("val_loss", "val loss"))),
                        ("accuracy", (("train_acc", "train acc"), ("val_acc", "val acc"))),
                        ("validation ECE / learning rate", (("val_ece", "val ECE"), ("lr", "learning rate")))):
        have = [(c, n) for c, n in cols if c in hist]
        if have:
            frames.append((title, pd.concat([pd.DataFrame({"epoch": hist["epoch_index"], "value": hist[c], "series": n,
                                                           "phase": hist["phase"] if "phase" in hist else ""})
                                             for c, n in have])))
    return ft, frames


def history(hist: pd.DataFrame) -> Chart:
    """Loss, accuracy and validation ECE / learning rate per epoch, side by side; a dashed rule marks the first
    fine-tuning epoch."""
    panels = []
    ft, frames = history_frames(hist)

    def enc(df):
        return {"x": field(df, "epoch:Q", title="epoch", axis={"tickMinStep": 1}),
                "color": field(df, "series:N", title=None, legend={"orient": "bottom"}),
                "tooltip": _tips(df, ["series", "epoch", tip("value:Q", ".4g"), "phase"])}
    for title, long in frames:
        if title.startswith("validation"):
            # ECE and learning rate differ by orders of magnitude: each on its own axis (left ECE, right lr).
            e, r = long[long["series"] == "val ECE"], long[long["series"] == "learning rate"]
            ece = Chart(e, mark={"type": "line", "point": True},
                        encoding={"y": field(e, "value:Q", title="val ECE"), **enc(e)})
            lr = Chart(r, mark={"type": "line", "strokeDash": [4, 3]}, encoding={
                "y": field(r, "value:Q", title="learning rate", axis={"orient": "right", "format": ".1e"}), **enc(r)})
            chart = layer(ece, lr).resolve_scale(y="independent")
        else:
            chart = Chart(long, mark={"type": "line", "point": True},
                          encoding={"y": field(long, "value:Q", title=None, scale={"zero": False}), **enc(long)})
        if ft is not None:
            chart = layer(chart, rule_x(ft))
        panels.append(chart.properties(title=title, height=260, width=230))
    return hconcat(*panels).resolve_scale(color="independent")
