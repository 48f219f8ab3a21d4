"""pages_support.charts writes Vega-Lite dicts: the same specifications, data included, as the Altair code it
replaced (tests/altair_charts_reference.py) produced through st.altair_chart, for every chart kind and option the
pages use, layered as the pages layer them. Compared as the browser receives them: Streamlit's conversion of the
Altair chart (datasets as Arrow bytes) against the dict with its frames converted by Streamlit the same way; the
datasets' names (Streamlit's hash, ours) are replaced by a hash of their Arrow bytes."""
from __future__ import annotations

import hashlib
import json
import threading

import altair as alt
import numpy as np
import pandas as pd
import pytest
from streamlit import dataframe_util
from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec

import altair_charts_reference as ref
from pages_support import charts

RNG = np.random.default_rng(0)
U50, U30, V30 = RNG.random(50), RNG.random(30), RNG.random(30)
CURVE = pd.DataFrame({"FPR": np.linspace(0, 1, 30), "TPR": np.sqrt(np.linspace(0, 1, 30)),
                      "threshold": np.linspace(1, 0, 30)}).assign(curve="ROC")
BARS = pd.DataFrame({"source": ["a", "b", "c", "a", "b", "c"], "model": ["A"] * 3 + ["B"] * 3,
                     "accuracy": [0.9, 0.8, 0.7, 0.85, 0.75, 0.65], "ci_low": [0.8, 0.7, 0.6, 0.75, 0.65, 0.55],
                     "ci_high": [0.95, 0.9, 0.8, 0.9, 0.85, 0.75], "count": [10, 20, 30, 10, 20, 30]})
SWEEP = pd.DataFrame({"level": [1.0, 0.5, 0.0], "n": [200, 200, 200], "accuracy": [0.95, 0.9, 0.7],
                      "recall_REAL": [0.96, 0.9, 0.8], "recall_FAKE": [0.94, 0.9, 0.6], "ece": [0.02, 0.04, 0.2],
                      "accuracy_ci_low": [0.91, 0.85, 0.63], "accuracy_ci_high": [0.97, 0.93, 0.76]})

BINS = {name: [{"lo": lo, "hi": lo + 0.1, "confidence": lo + 0.05, "accuracy": min(1.0, lo + d), "count": c}
               for lo, c in zip(np.arange(0.5, 1.0, 0.1), (0, 3, 10, 40, 200))] for name, d in (("before", 0.0),
                                                                                                 ("after", 0.04))}
HISTORY = pd.DataFrame({"epoch_index": np.arange(6), "train_loss": np.linspace(0.7, 0.2, 6),
                        "val_loss": np.linspace(0.75, 0.3, 6), "train_acc": np.linspace(0.5, 0.95, 6),
                        "val_acc": np.linspace(0.5, 0.9, 6), "val_ece": np.linspace(0.1, 0.02, 6),
                        "lr": np.geomspace(1e-3, 1e-5, 6), "phase": ["train"] * 4 + ["finetune"] * 2})


def _tips(mod):
    return (lambda s, f: alt.Tooltip(s, format=f)) if mod is ref else charts.tip


CASES = {
    "lines, series dashed, log x": lambda m, T: m.lines(
        pd.DataFrame({"k": [1.0, 2.0, 4.0] * 2, "v": [0.1, 0.2, 0.3, 0.3, 0.2, 0.1], "s": ["a"] * 3 + ["b"] * 3}),
        "k", "v", series="s", dashed={"b": True, "a": False}, x_log=True, title="t", sort_series=["b", "a"]),
    "lines, y log with a domain, reversed x": lambda m, T: m.lines(
        CURVE, "FPR", "TPR", y_log=True, y_domain=[0.01, 1], x_reverse=True, points=True, height=200),
    "ROC: diagonal + lines + points (Confusion)": lambda m, T: m.diagonal("FPR", "TPR") + m.lines(
        CURVE, "FPR", "TPR", x_title="fpr", y_title="tpr", height=340, y_domain=[0, 1],
        tooltip=[T("FPR:Q", ".3f"), T("TPR:Q", ".3f"), T("threshold:Q", ".3f")]) + m.points(
        pd.DataFrame({"FPR": [0.1], "TPR": [0.8], "point": ["threshold"]}), "FPR", "TPR", "point"),
    "lines + rule_y": lambda m, T: m.lines(CURVE, "FPR", "TPR", tooltip=["curve", T("FPR:Q", ".3f")]) + m.rule_y(0.5),
    "bars, series, interval, text": lambda m, T: m.bars(BARS, "source", "accuracy", series="model", lo="ci_low",
                                                        hi="ci_high", text="model", y_format=".1%", y_domain=[0, 1],
                                                        title="per source"),
    "bars, horizontal, interval, sorted": lambda m, T: m.bars(BARS[:3], "source", "accuracy", lo="ci_low",
                                                              hi="ci_high", horizontal=True, sort=["c", "b", "a"],
                                                              x_title="x", y_title="y"),
    "bars, tooltip given (Forensics)": lambda m, T: m.bars(
        BARS.assign(value=BARS["count"].astype(str)), "value", "accuracy", series="model", y_format=".0%",
        tooltip=["value", "model", "count", T("accuracy:Q", ".1%")]),
    "histogram + rule_x (Limitations)": lambda m, T: m.histogram(
        {"images": U50}, np.linspace(0, 1, 41), "concentration", height=240) + m.rule_x(0.1, "uniform"),
    "histogram, two groups, colours, normalised": lambda m, T: m.histogram(
        {"REAL": U30, "FAKE": np.r_[V30, np.nan]}, np.linspace(-0.5, 1, 11), "p", "share",
        normalize=True, colors={"REAL": "#1f77b4", "FAKE": "#d62728"}),
    "rule_x without text": lambda m, T: m.rule_x(0.3),
    "confusion heat map, counts": lambda m, T: m.confusion_heatmap([[50, 3], [7, 40]], [["50", "3"], ["7", "40"]],
                                                                    "Counts"),
    "confusion heat map, shares": lambda m, T: m.confusion_heatmap([[0.9, 0.1], [1 / 3, 2 / 3]],
                                                                    [["a", "b"], ["c", "d"]], "Share", zmax=1),
    "severity with its interval band": lambda m, T: m.severity(SWEEP, "jpeg quality", 0.95, reverse=True),
    "severity without intervals": lambda m, T: m.severity(SWEEP.drop(columns=["accuracy_ci_low", "accuracy_ci_high"]),
                                                          "blur", 0.95),
    "reliability, two curves (Calibration)": lambda m, T: m.reliability(BINS),
    "history, two phases (Model & data)": lambda m, T: m.history(HISTORY),
    "history, one phase, no learning rate": lambda m, T: m.history(HISTORY[HISTORY["phase"] == "train"].drop(columns="lr")),
}


def _named_by_content(spec: dict) -> dict:
    """The spec with every dataset (Arrow bytes) renamed by its hash, so two specs compare by content."""
    sets = {name: data if isinstance(data, bytes) else dataframe_util.convert_anything_to_arrow_bytes(data)
            for name, data in spec.pop("datasets").items()}
    rename = {name: hashlib.sha256(data).hexdigest() for name, data in sets.items()}

    def walk(o):
        if isinstance(o, dict):
            return {k: ({"name": rename[v["name"]]} if k == "data" and set(v) == {"name"} else walk(v))
                    for k, v in o.items()}
        return [walk(v) for v in o] if isinstance(o, list) else o
    return {**walk(json.loads(json.dumps(spec))), "datasets": sorted(rename.values())}


@pytest.mark.parametrize("case", list(CASES))
def test_the_dicts_are_the_specifications_altair_made(case):
    ours = _named_by_content(CASES[case](charts, _tips(charts)).to_dict())
    theirs = _named_by_content(_convert_altair_to_vega_lite_spec(CASES[case](ref, _tips(ref))))
    assert ours == theirs


def test_layering_leaves_its_parts_unchanged_and_is_thread_safe():
    """`+` and properties() return new charts (a chart object may be reused, e.g. from a cache); building the same
    chart in 8 threads at once gives 8 equal specifications."""
    base = charts.lines(CURVE, "FPR", "TPR")
    before = json.dumps(_named_by_content(base.to_dict()))
    layered = (base + charts.rule_y(0.5, "half")).properties(title="x")
    assert json.dumps(_named_by_content(base.to_dict())) == before
    assert "layer" in layered.to_dict() and "layer" not in base.to_dict()
    out = [None] * 8

    def build(k):
        out[k] = json.dumps(_named_by_content(charts.severity(SWEEP, "jpeg", 0.95, reverse=True).to_dict()))
    threads = [threading.Thread(target=build, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 1


def test_dataset_names_follow_content():
    a = pd.DataFrame({"x": [1.0, 2.0], "s": ["a", "b"]})
    assert charts.dataset_name(a) == charts.dataset_name(a.copy())
    assert charts.dataset_name(a) != charts.dataset_name(a.assign(x=[1.0, 2.5]))
    assert charts.dataset_name(a) != charts.dataset_name(a.astype({"x": np.float32}))
