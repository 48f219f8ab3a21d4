"""The Map and Data issues pages (AppTest) against the command line's files, on the tiny fixtures of tests/test_app.py.

    python -m pytest -q tests/test_app_data.py
"""
from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from streamlit.testing.v1 import AppTest

from test_app import ROOT, _page, _point_app_at, _table, app, app_dirs  # noqa: F401  (fixtures)


def _values(v) -> np.ndarray:
    """A plotly array from the figure's JSON: a list, or {"dtype", "bdata"} (base64 of a typed array)."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def _points(at) -> pd.DataFrame:
    """Every point the page's plotly chart draws: its row (customdata), x, y and hover text."""
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    fig = json.loads(charts[0].proto.spec)
    rows = []
    for trace in fig["data"]:
        for k, x, y, text in zip(_values(trace["customdata"]).ravel(), _values(trace["x"]), _values(trace["y"]),
                                 trace["text"]):
            rows.append({"row": int(k), "x": float(x), "y": float(y), "text": text})
    return pd.DataFrame(rows).sort_values("row").reset_index(drop=True)


def _cli(module, app_dirs, out, *extra):
    """The tool's command line on the app's sample, model and runs/ folder; its files go to `out` (replaced)."""
    assert module.main(["--weights", str(app_dirs["weights"] / "default.pt"), "--data", str(app_dirs["sample"]),
                        "--split", "test", "--out", str(out), "--runs", str(app_dirs["runs"]), *extra]) == 0


def test_map_page_computes_on_request_and_draws_every_row_of_the_cli_csv(app, app_dirs, tmp_path):
    from core.audits import embedding
    at = _page(app, "12_map")
    assert [t.value for t in at.title] == ["Map"]
    assert not at.get("plotly_chart")                   # nothing stored yet: a button, not a computation
    assert any("only the model's features" in c.value for c in at.caption)   # the fixture has no content encoder
    at.button(key="map_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    points = _points(at)
    _cli(embedding, app_dirs, tmp_path / "cli")
    csv = pd.read_csv(tmp_path / "cli" / "embedding.csv", keep_default_na=False)
    assert points["row"].tolist() == list(range(len(csv))) and len(csv) == 48
    assert np.allclose(points["x"], csv["x"], atol=1e-4) and np.allclose(points["y"], csv["y"], atol=1e-4)
    for text, (_, r) in zip(points["text"], csv.iterrows()):
        assert text.startswith(r["path"]) and f"P(AI) {r['prob_fake']:.3f} · {r['verdict']}" in text
    # colouring by verdict draws one trace per verdict, the same points
    at.selectbox(key="map_colour").set_value("verdict").run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sorted(t["name"] for t in fig["data"]) == sorted(csv["verdict"].unique())
    assert _points(at)["row"].tolist() == list(range(len(csv)))


@pytest.fixture
def planted(app_dirs, tmp_path, monkeypatch):
    """The app on a copy of the fixture sample whose test split holds a training image (leakage) and one of its
    own images twice (a near duplicate); its own runs/ folder."""
    sample = tmp_path / "sample"
    shutil.copytree(app_dirs["sample"], sample)
    shutil.copy(sample / "train" / "REAL" / "0000.jpg", sample / "test" / "REAL" / "leak.jpg")
    shutil.copy(sample / "test" / "FAKE" / "0003.jpg", sample / "test" / "FAKE" / "dup.jpg")
    dirs = {"weights": app_dirs["weights"], "sample": sample, "runs": tmp_path / "runs"}
    _point_app_at(monkeypatch, dirs["weights"], dirs["sample"], dirs["runs"])
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    assert not at.exception
    return at, dirs


def test_data_issues_page_counts_galleries_and_rescore_equal_the_cli(planted, tmp_path):
    from core.audits import data_issues
    at, app_dirs = planted
    at = _page(at, "13_data_issues")
    assert [t.value for t in at.title] == ["Data issues"]
    at.button(key="issues_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    _cli(data_issues, app_dirs, tmp_path / "cli")
    issues = pd.read_csv(tmp_path / "cli" / "issues.csv", keep_default_na=False)
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["reference"] is not None and summary["counts"]["leakage"] is not None
    assert issues.loc[issues["issue"] == "leakage", ["path", "pair"]].values.tolist() == [["REAL/leak.jpg",
                                                                                          "REAL/0000.jpg"]]
    assert {"FAKE/dup.jpg", "FAKE/0003.jpg"} <= set(issues.loc[issues["issue"] == "near_duplicate", "path"])
    shown = {m.label: m.value for m in at.metric}
    for issue, title in data_issues.ISSUE_TITLES.items():
        assert shown[title] == f"{summary['counts'][issue]:,}"
    assert shown["Images flagged"] == f"{issues['path'].nunique():,}"
    # every image a gallery shows is a CSV row of its type, in the CSV's order (worst first)
    captions = [i.caption for el in at.get("image") for i in el.proto.imgs]
    for issue in data_issues.ISSUES:
        rows = issues[issues["issue"] == issue]
        on_page = [c for c in captions if any(c.startswith(p + " · score") for p in rows["path"])]
        assert [c.split(" · ")[0] for c in on_page] == rows["path"].head(len(on_page)).tolist()
        for c, (_, r) in zip(on_page, rows.iterrows()):
            assert f"score {r['score']:.3f}" in c
    assert "its pair: REAL/0000.jpg" in captions                   # the leaked image beside its training image
    # hide and re-score: the page's table is core's, for the flagged paths of the CSV
    from core.inference.evaluate import evaluation_dir, load_evaluation
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    lm = load_checkpoint(app_dirs["weights"] / "default.pt")
    preds, _ = load_evaluation(evaluation_dir(app_dirs["runs"], lm, open_dataset(app_dirs["sample"], split="test"),
                                              None))
    want = data_issues.rescore_without(preds, issues["path"])
    table = _table(at, "roc_auc")
    assert table["n"].tolist() == want["n"].tolist()
    assert np.allclose(table["accuracy"].astype(float), want["accuracy"].astype(float))


def test_data_issues_page_without_a_training_split_says_leakage_is_not_checked(app, app_dirs):
    at = _page(app, "13_data_issues")
    at.sidebar.selectbox(key="data_choice").set_value("Sample: ood").run()
    at.button(key="issues_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Leakage from the training data"] != "n/a"
    at.sidebar.selectbox(key="data_choice").set_value("Sample: train").run()
    at.button(key="issues_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Leakage from the training data"] == "n/a"
    assert any("leakage is not checked" in c.value for c in at.caption)
    assert any("cross-validated" in c.value for c in at.caption)            # the model trained on this split
