"""Altair code for the charts pages_support.charts writes as Vega-Lite dicts, kept as the reference
tests/test_charts.py checks the dicts against: the same specification for every chart kind and option the pages use.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from pages_support.charts import SEVERITY_MEASURES, histogram_rows, history_frames, severity_rows

HEIGHT = 300
GRAY = "#888888"


def _axis(title: str | None = None, fmt: str | None = None, **kw) -> alt.Axis:
    return alt.Axis(title=title, format=fmt, **kw) if fmt else alt.Axis(title=title, **kw)


def lines(df: pd.DataFrame, x: str, y: str, series: str | None = None, x_title: str = "", y_title: str = "",
          height: int = HEIGHT, points: bool = False, y_domain=None, x_reverse: bool = False, x_log: bool = False,
          y_log: bool = False, dashed: dict | None = None, tooltip: list | None = None, title: str | None = None,
          sort_series: list | None = None) -> alt.Chart:
    """One line per value of `series` (long format); `dashed`: {series value: True} for dotted lines."""
    enc = {"x": alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(reverse=x_reverse, type="log" if x_log else "linear",
                                                                zero=False)),
           "y": alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(domain=y_domain, type="log" if y_log else "linear",
                                                                zero=False) if y_domain or y_log
                      else alt.Scale(zero=False)),
           "tooltip": tooltip or [alt.Tooltip(f"{x}:Q", format=".4g"), alt.Tooltip(f"{y}:Q", format=".4f")]
           + ([series] if series else [])}
    if series:
        enc["color"] = alt.Color(f"{series}:N", title=None, sort=sort_series, legend=alt.Legend(orient="bottom"))
        if dashed:
            enc["strokeDash"] = alt.condition(
                alt.FieldOneOfPredicate(field=series, oneOf=[k for k, v in dashed.items() if v]),
                alt.value([4, 3]), alt.value([1, 0]))
    chart = alt.Chart(df).mark_line(point=points).encode(**enc).properties(height=height)
    return chart.properties(title=title) if title else chart


def points(df: pd.DataFrame, x: str, y: str, label: str, color: str = "red", size: int = 120) -> alt.Chart:
    """Marked points (an operating point) with a tooltip; df has x, y and `label` columns."""
    return alt.Chart(df).mark_point(filled=True, size=size, color=color).encode(
        x=f"{x}:Q", y=f"{y}:Q", tooltip=[label, alt.Tooltip(f"{x}:Q", format=".4f"), alt.Tooltip(f"{y}:Q", format=".4f")])


def rule_y(value: float, text: str | None = None) -> alt.Chart:
    """A dotted horizontal reference line, labelled."""
    base = alt.Chart(pd.DataFrame({"y": [value], "text": [text or ""]}))
    rule = base.mark_rule(color=GRAY, strokeDash=[3, 3]).encode(y="y:Q", tooltip=["text"])
    if not text:
        return rule
    return rule + base.mark_text(align="right", baseline="bottom", dy=-2, x="width", color=GRAY).encode(
        y="y:Q", text="text")


def rule_x(value: float, text: str | None = None) -> alt.Chart:
    base = alt.Chart(pd.DataFrame({"x": [value], "text": [text or ""]}))
    rule = base.mark_rule(color=GRAY, strokeDash=[3, 3]).encode(x="x:Q", tooltip=["text"])
    if not text:
        return rule
    return rule + base.mark_text(align="left", baseline="top", dx=3, y=0, color=GRAY).encode(x="x:Q", text="text")


def diagonal(x: str, y: str, lo: float = 0.0, hi: float = 1.0, name: str = "chance") -> alt.Chart:
    """The dotted y = x line from lo to hi, on the fields (x, y) of the chart it is layered with."""
    return alt.Chart(pd.DataFrame({x: [lo, hi], y: [lo, hi], "line": [name, name]})).mark_line(
        color=GRAY, strokeDash=[2, 3]).encode(x=f"{x}:Q", y=f"{y}:Q", tooltip=["line"])


def bars(df: pd.DataFrame, x: str, y: str, series: str | None = None, lo: str | None = None, hi: str | None = None,
         x_title: str = "", y_title: str = "", height: int = HEIGHT, y_format: str | None = None, y_domain=None,
         horizontal: bool = False, text: str | None = None, sort=None, tooltip: list | None = None,
         title: str | None = None) -> alt.Chart:
    """Bars of `y` per category `x` (grouped by `series`), with an interval [lo, hi] drawn as error bars.

    horizontal: categories on the y axis, in `sort` order (default: the frame's order)."""
    cat, val = (alt.Y, alt.X) if horizontal else (alt.X, alt.Y)
    order = sort if sort is not None else list(dict.fromkeys(df[x].astype(str)))
    tips = tooltip or ([x] + ([series] if series else []) + [alt.Tooltip(f"{y}:Q", format=y_format or ".4f")]
                       + ([alt.Tooltip(f"{lo}:Q", format=y_format or ".4f"), alt.Tooltip(f"{hi}:Q", format=y_format or ".4f")]
                          if lo and hi else []))
    scale = alt.Scale(domain=y_domain) if y_domain else alt.Scale()
    enc = {("y" if horizontal else "x"): cat(f"{x}:N", title=x_title, sort=order,
                                            axis=alt.Axis(labelLimit=400) if horizontal else alt.Axis(labelAngle=-30)),
           ("x" if horizontal else "y"): val(f"{y}:Q", title=y_title, scale=scale, axis=_axis(y_title, y_format)),
           "tooltip": tips}
    if series:
        enc["color"] = alt.Color(f"{series}:N", title=None, legend=alt.Legend(orient="bottom"))
        enc["xOffset" if not horizontal else "yOffset"] = alt.XOffset(f"{series}:N") if not horizontal \
            else alt.YOffset(f"{series}:N")
    base = alt.Chart(df)
    chart = base.mark_bar(opacity=0.85).encode(**enc)
    if lo and hi:
        err = {k: v for k, v in enc.items() if k not in ("tooltip",)}
        err.pop("color", None)
        val_key = "x" if horizontal else "y"
        err[val_key] = val(f"{lo}:Q", title=y_title, scale=scale)
        err[val_key + "2"] = f"{hi}:Q"
        if series:
            err["detail"] = f"{series}:N"
        chart = chart + base.mark_rule(color="black").encode(**err)
    if text:
        chart = chart + base.mark_text(align="left" if horizontal else "center", baseline="middle" if horizontal
                                       else "bottom", dx=3 if horizontal else 0, dy=0 if horizontal else -3,
                                       color="black").encode(**{k: v for k, v in enc.items()
                                                                if k not in ("tooltip", "color")},
                                                             text=f"{text}:N")
    chart = chart.properties(height=height)
    return chart.properties(title=title) if title else chart


def histogram(values: dict[str, np.ndarray], bins: np.ndarray, x_title: str, y_title: str = "images",
              normalize: bool = False, height: int = HEIGHT, colors: dict | None = None) -> alt.Chart:
    """Overlaid histograms of each named array on fixed `bins` (edges); counts are binned here, so the chart
    carries one row per bin, not one per image. normalize: percent of each group."""
    df = histogram_rows(values, bins)              # the rows, as before (not what this reference checks)
    y = "percent" if normalize else "images"
    enc = {"x": alt.X("from:Q", title=x_title, bin="binned", scale=alt.Scale(domain=[float(bins[0]), float(bins[-1])])),
           "x2": "to:Q", "y": alt.Y(f"{y}:Q", title=y_title, stack=None),
           "color": alt.Color("group:N", title=None, legend=alt.Legend(orient="bottom"),
                              scale=alt.Scale(domain=list(colors), range=list(colors.values())) if colors else alt.Scale()),
           "tooltip": ["group", alt.Tooltip("from:Q", format=".3f"), alt.Tooltip("to:Q", format=".3f"), "images",
                       alt.Tooltip("percent:Q", format=".1f")]}
    return alt.Chart(df).mark_bar(opacity=0.6, binSpacing=0).encode(**enc).properties(height=height)


def confusion_heatmap(z, text, title: str, zmax=None, scheme: str = "blues") -> alt.Chart:
    """A 2x2 confusion heat map: rows = true REAL/FAKE, columns = predicted REAL/FAKE, each cell labelled."""
    z = np.asarray(z, dtype=np.float64)
    rows = [{"true": f"true {t}", "predicted": f"pred {p}", "value": float(z[i, j]), "text": text[i][j]}
            for i, t in enumerate(("REAL", "FAKE")) for j, p in enumerate(("REAL", "FAKE"))]
    df = pd.DataFrame(rows)
    top = zmax if zmax is not None else float(z.max()) or 1.0
    base = alt.Chart(df).encode(x=alt.X("predicted:N", title=None, sort=["pred REAL", "pred FAKE"],
                                        axis=alt.Axis(orient="top", labelAngle=0)),
                                y=alt.Y("true:N", title=None, sort=["true REAL", "true FAKE"]))
    rect = base.mark_rect().encode(color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme, domain=[0, top]),
                                                   legend=None), tooltip=["true", "predicted", "text"])
    label = base.mark_text(fontSize=16).encode(text="text:N", color=alt.condition(
        alt.datum.value > top / 2, alt.value("white"), alt.value("black")))
    return (rect + label).properties(title=title, height=220)


def severity(df: pd.DataFrame, x_title: str, clean_accuracy: float, reverse: bool = False) -> alt.LayerChart:
    """Accuracy (with its 95% interval as a band, when the rows carry one), ECE and per-class recall against
    shift level (df: rows of one shift, clean row included); a dotted rule at the clean accuracy."""
    cols = SEVERITY_MEASURES
    long = severity_rows(df)                       # the rows, as before (not what this reference checks)
    chart = lines(long, "level", "value", series="measure", x_title=x_title, y_title="value", height=280,
                  points=True, y_domain=[0, 1], x_reverse=reverse, sort_series=[n for _, n in cols],
                  dashed={"recall REAL": True, "recall FAKE": True, "ECE": True},
                  tooltip=["measure", alt.Tooltip("level:Q", format="g"), alt.Tooltip("value:Q", format=".3f"), "images"])
    layers = [chart, rule_y(clean_accuracy, "clean accuracy")]
    if {"accuracy_ci_low", "accuracy_ci_high"} <= set(df.columns) and df["accuracy_ci_low"].notna().any():
        band = alt.Chart(df.astype({"level": float})).mark_area(opacity=0.15).encode(
            x=alt.X("level:Q", scale=alt.Scale(reverse=reverse, zero=False)), y="accuracy_ci_low:Q",
            y2="accuracy_ci_high:Q", tooltip=[alt.Tooltip("level:Q", format="g"),
                                              alt.Tooltip("accuracy_ci_low:Q", format=".3f"),
                                              alt.Tooltip("accuracy_ci_high:Q", format=".3f")])
        layers.insert(0, band)
    return alt.layer(*layers)


def reliability(curves: dict[str, list[dict]]) -> alt.VConcatChart:
    """curves: {name: reliability bins}; accuracy vs confidence on top, images per bin below (log scale)."""
    pts = pd.DataFrame([{"curve": name, "confidence": b["confidence"], "accuracy": b["accuracy"], "images": b["count"]}
                        for name, bins in curves.items() for b in bins if b["count"]])
    counts = pd.DataFrame([{"curve": name, "from": b["lo"], "to": b["hi"], "images": b["count"]}
                           for name, bins in curves.items() for b in bins if b["count"]])
    x = alt.Scale(domain=[0.5, 1.0], nice=False)
    top = alt.Chart(pts).mark_line(point=True).encode(
        x=alt.X("confidence:Q", scale=x, title=None), y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1], nice=False),
                                                             title="accuracy"),
        color=alt.Color("curve:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["curve", alt.Tooltip("confidence:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f"), "images"])
    bottom = alt.Chart(counts).mark_bar(opacity=0.6).encode(
        x=alt.X("from:Q", bin="binned", scale=x, title="confidence of the predicted class"), x2="to:Q",
        y=alt.Y("images:Q", scale=alt.Scale(type="log"), title="images", stack=None),
        color=alt.Color("curve:N", title=None), tooltip=["curve", "from", "to", "images"])
    top = top + diagonal("confidence", "accuracy", 0.5, 1.0, "perfect calibration")
    return alt.vconcat(top.properties(height=300, width=620), bottom.properties(height=100, width=620)
                       ).resolve_scale(color="shared")


def history(hist: pd.DataFrame) -> alt.HConcatChart:
    """Loss, accuracy and validation ECE / learning rate per epoch, side by side; a dashed rule marks the first
    fine-tuning epoch."""
    panels = []
    ft, frames = history_frames(hist)              # the frames, as before (not what this reference checks)
    for title, long in frames:
        enc = dict(x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
                   color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
                   tooltip=["series", "epoch", alt.Tooltip("value:Q", format=".4g"), "phase"])
        if title.startswith("validation"):
            # ECE and learning rate differ by orders of magnitude: each on its own axis (left ECE, right lr).
            ece = alt.Chart(long[long["series"] == "val ECE"]).mark_line(point=True).encode(
                y=alt.Y("value:Q", title="val ECE"), **enc)
            lr = alt.Chart(long[long["series"] == "learning rate"]).mark_line(strokeDash=[4, 3]).encode(
                y=alt.Y("value:Q", title="learning rate", axis=alt.Axis(orient="right", format=".1e")), **enc)
            chart = alt.layer(ece, lr).resolve_scale(y="independent")
        else:
            chart = alt.Chart(long).mark_line(point=True).encode(y=alt.Y("value:Q", title=None,
                                                                         scale=alt.Scale(zero=False)), **enc)
        if ft is not None:
            chart = alt.layer(chart, rule_x(ft))
        panels.append(chart.properties(title=title, height=260, width=230))
    return alt.hconcat(*panels).resolve_scale(color="independent")
