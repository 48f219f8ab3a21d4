"""The one-file audit report (core.report.report and the Audit report page) on the tiny app fixtures.

    python -m pytest -q tests/test_report.py
"""
from __future__ import annotations

import json
import re

import pytest

from test_app import _page, app, app_dirs  # noqa: F401  (fixtures)


def _audit_data(doc: str) -> dict:
    m = re.search(r"<script id='audit-data' type='application/json'>(.*?)</script>", doc, re.S)
    assert m, "no embedded numbers"
    return json.loads(m.group(1))


def _threshold_moving_cells(df) -> float:
    """A threshold other than 0.5 that changes some call of the fixture model (so using 0.5 would be caught)."""
    for t in (0.3, 0.4, 0.6, 0.7, 0.2, 0.8):
        if ((df["prob_fake"] >= t) != (df["prob_fake"] >= 0.5)).any():
            return t
    pytest.skip("fixture model has no threshold-sensitive image")


def test_report_is_offline_and_its_numbers_are_core_evaluate(app_dirs, tmp_path):
    from core.report import report
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    weights = app_dirs["weights"] / "default.pt"
    lm, ds = load_checkpoint(weights), open_dataset(app_dirs["sample"], split="test")
    df, _ = evaluate(lm, ds)
    t = _threshold_moving_cells(df)
    _, want = evaluate(lm, ds, threshold=t)
    out = tmp_path / "r" / "report.html"
    logo = tmp_path / "logo"            # a stored leave-one-generator-out leaderboard, as core.audits.generalize writes it
    logo.mkdir()
    (logo / "leaderboard.csv").write_text("held_out,n,auc\ngen-planted,48,0.6172\n")
    from core.inference.evaluate import RESULT_FORMAT
    (logo / "summary.json").write_text(f'{{"mean_auc": 0.6172, "result_format": {RESULT_FORMAT}}}')
    rc = report.main(["--weights", str(weights), "--data", str(app_dirs["sample"]), "--out", str(out),
                      "--threshold", str(t), "--runs", str(app_dirs["runs"]), "--sample", str(app_dirs["sample"]),
                      "--logo", str(logo)])
    assert rc == 0
    doc = out.read_text()
    assert not re.search(r"https?://", doc), "the report refers to a network address"
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=['\"](?!data:)", doc), "external resource"
    assert doc.count("src='data:image/png;base64,") >= 6      # spectra, reliability, thumbnails
    data = _audit_data(doc)
    assert data["threshold"] == t
    assert data["headline"]["accuracy"] == want["accuracy"]
    assert data["headline"]["ece"] == want["ece"]
    assert data["confusion_matrix"] == want["confusion_matrix"]
    # what a reader sees: the headline table's accuracy and ECE rows
    assert f"<td class='l'>accuracy</td><td class='l'>{want['accuracy']:.4f}</td>" in doc
    assert f"<td class='l'>ece</td><td class='l'>{want['ece']:.4f}</td>" in doc
    for title in ("Limitations verdicts", "Shortcut check", "Residual spectra", "Worst slices", "Data issues",
                  "Model card"):
        assert f">{title}</h2>" in doc
    # the data issues are core.audits.data_issues' on this split, with leakage checked against the root's train split
    from core.audits.data_issues import cached_data_issues, rescore_without
    issues, summary = cached_data_issues(lm, ds, open_dataset(app_dirs["sample"], split="train"), app_dirs["runs"])
    assert data["data_issues"]["counts"] == summary["counts"] and summary["counts"]["leakage"] is not None
    assert data["data_issues"]["rescore"] == rescore_without(df, issues["path"], t).to_dict("records")
    assert data["limitations"] and all(v["status"] for v in data["limitations"])
    assert "<td class='l'>gen-planted</td>" in doc and "0.6172" in doc
    assert set(data["flip_rates"]) >= {"jpeg:50", "hflip", "any"}
    assert len(data["worst_slices"]) == 3


def test_report_page_download(app, app_dirs):
    at = _page(app, "11_report")
    assert [t.value for t in at.title] == ["Audit report"]
    at.button(key="report_build").click().run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = [b for b in at.get("download_button") if b.label == "Download the report (HTML)"]
    assert buttons, "no download button after building"
