"""The audit additions in the app (AppTest): Predict's stability and residual spectrum, Limitations' flip
rates, and the Forensics, Compare, Error slices and Audit report pages. Numbers shown are checked
against the core functions the pages call, on the tiny fixtures of tests/test_app.py.

    python -m pytest -q tests/test_app_audit.py
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_app import _encode, _noise, _page, _smooth, _table, app, app_dirs, assert_first_view_charts  # noqa: F401  (fixtures)


def _lm_ds(app_dirs, split="test"):
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    return load_checkpoint(app_dirs["weights"] / "default.pt"), open_dataset(app_dirs["sample"], split=split)


def test_predict_one_image_shows_stability_and_spectrum(app, app_dirs):
    from core.audits import stability
    from core.data.images import load_image
    at = _page(app, "1_predict")
    data = _encode(_noise(np.random.default_rng(5), 48), "PNG")
    at.file_uploader(key="predict_upload").set_value(("upload_me.png", data, "image/png")).run()
    assert not at.exception and not at.error
    lm, _ = _lm_ds(app_dirs)
    expected = stability.check_image(lm, load_image(data).image, 0.5)
    shown = [m.value for m in at.success] + [w.value for w in at.warning]
    if expected["stable"]:
        assert any(s.startswith("**Stable**") for s in shown), shown
    else:
        line = next(s for s in shown if s.startswith("**Flips under**"))
        assert all(stability.CHANGES[c] in line for c in expected["flips_under"])
    table = _table(at, "flipped")
    assert len(table) == 1 + len(stability.CHANGES)
    np.testing.assert_allclose(table["P(AI)"].iloc[1:], [c["prob_fake"] for c in expected["changes"]], rtol=1e-6)
    assert any(b.label == "Spectrum (CSV)" for b in at.get("download_button"))
    assert len(at.image) >= 6        # the five image columns, the model's input twice


def test_predict_batch_table_has_stability_column(app, app_dirs):
    from core.audits import stability
    at = _page(app, "1_predict")
    rng = np.random.default_rng(1)
    files = [(f"img{i}.jpg", _encode(_noise(rng) if i % 2 else _smooth(rng)), "image/jpeg") for i in range(4)]
    files.append(("bad.txt", b"hello", "text/plain"))
    at.file_uploader(key="predict_upload").set_value(files).run()
    assert not at.exception
    table = _table(at, "stability").set_index("file")
    lm, _ = _lm_ds(app_dirs)
    for (name, data, _), fl in zip(files, stability.stability_of_sources(lm, [(n, d) for n, d, _ in files], 0.5)):
        want = "" if fl is None else ("flips under: " + ", ".join(fl) if fl else "stable")
        assert table.loc[name, "stability"] == want


def test_limitations_flip_rates_equal_core(app, app_dirs):
    from core.audits.stability import dataset_stability, flip_table
    at = _page(app, "5_limitations")
    assert "Verdict stability under everyday changes" in [h.value for h in at.header]
    shown = _table(at, "flip_rate").set_index("change")
    lm, ds = _lm_ds(app_dirs)
    df, _ = dataset_stability(lm, ds)
    want = flip_table(df, 0.5).set_index("change")
    assert shown["flips"].tolist() == want["flips"].tolist()
    verdicts = at.table[0].value
    assert "Verdict stability" in verdicts.index


# ----------------------------------------------------------------------------- new pages

@pytest.mark.parametrize("page,title", [("8_forensics", "Forensics"), ("9_compare", "Compare models"),
                                        ("10_slices", "Error slices")])
def test_new_pages_render(app, page, title):
    at = _page(app, page)
    assert [t.value for t in at.title] == [title]
    assert not at.error, [e.value for e in at.error]
    # Compare's fixture has no second shipped model, so its first view has no chart (tested below, with one).
    assert_first_view_charts(at, page if page != "9_compare" else "compare without model B")


def test_forensics_page_draws_the_shortcut_check_before_the_spectra_then_the_stored_heat_maps(
        app_dirs, tmp_path, monkeypatch):
    """On a first view (nothing stored) the shortcut check, which needs only the files' headers, is drawn as
    soon as it is computed, before the spectra pass (made to fail here: the metric is there all the same);
    the spectra's heat maps are sent as the stored files `python -m core forensics --out DIR` writes."""
    from streamlit.elements.lib import image_utils
    from streamlit.testing.v1 import AppTest

    from core.audits import forensics
    from test_app import ROOT, _point_app_at
    _point_app_at(monkeypatch, app_dirs["weights"], app_dirs["sample"], tmp_path / "runs")
    real_spectra = forensics.dataset_spectra

    def failing(*a, **k):
        raise RuntimeError("spectra pass")
    monkeypatch.setattr(forensics, "dataset_spectra", failing)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    at.switch_page("pages/8_forensics.py").run()
    assert at.exception                                             # the spectra pass failed ...
    _, ds = _lm_ds(app_dirs)
    acc = forensics.metadata_only_accuracy(forensics.scan_files(ds))
    assert {m.label: m.value for m in at.metric}["Metadata-only balanced accuracy"] == f"{acc:.3f}"   # ... after
    monkeypatch.setattr(forensics, "dataset_spectra", real_spectra)
    forensics.cached_analysis(ds, tmp_path / "runs")                 # stored (as by the warm-up) ...
    monkeypatch.setattr(forensics, "spectrum_figure", lambda *a: pytest.fail("heat map drawn again"))   # ... read
    sent = []
    real = image_utils._ensure_image_size_and_format
    monkeypatch.setattr(image_utils, "_ensure_image_size_and_format",
                        lambda data, *a, **k: sent.append(data) or real(data, *a, **k))
    at = _page(at, "8_forensics")
    stored = forensics.analysis_dir(ds, tmp_path / "runs")
    heat = [f.read_bytes() for f in sorted(stored.glob("spectrum_*.png")) if f.name != "spectrum_1d.png"]
    assert len(heat) == 3 + len(set(ds.sources()) - {""})         # REAL, FAKE, FAKE - REAL, each source
    assert sorted(sent) == sorted(heat)


def test_forensics_page_numbers_equal_core(app, app_dirs):
    from core.audits import forensics
    at = _page(app, "8_forensics")
    _, ds = _lm_ds(app_dirs)
    res = forensics.analyse(ds)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Metadata-only balanced accuracy"] == f"{res['shortcuts']['metadata_only_accuracy']:.3f}"
    spec = _table(at, "cycles_per_pixel")
    np.testing.assert_allclose(spec["REAL"], forensics.radial_table(res["spectra"])["REAL"], rtol=1e-9)
    # the re-encoding control runs on request and shows core's deltas
    at.button(key="reencode_run").click().run()
    assert not at.exception
    lm, _ = _lm_ds(app_dirs)
    rc = forensics.reencoding_control(lm, ds, quality=90)
    shown = _table(at, "re-encoded").set_index("metric")
    assert shown.loc["accuracy", "change"] == pytest.approx(rc["delta_accuracy"])
    assert shown.loc["roc_auc", "re-encoded"] == pytest.approx(rc["reencoded"]["roc_auc"])


def test_compare_page_against_itself_and_core(app, app_dirs, monkeypatch):
    """The fixture has one shipped model: compare it with itself through the path option."""
    from core.audits import compare
    at = _page(app, "9_compare")
    at.selectbox(key="compare_b").set_value("Checkpoint path").run()
    at.text_input(key="compare_b_path").set_value(str(app_dirs["weights"] / "default.pt")).run()
    assert not at.exception and not at.error
    assert_first_view_charts(at, "9_compare")
    assert len(at.dataframe) == 0          # static tables (st.table): no data grid's code on a first view
    cells = _table(at, "meaning").set_index("cell")["images"]
    assert cells["only_a"] == cells["only_b"] == 0 and cells.sum() == 48
    assert any("p = 1;" in m.value for m in at.markdown)
    metrics = _table(at, "B - A").set_index("metric")
    from core.inference.evaluate import evaluate
    lm, ds = _lm_ds(app_dirs)
    _, m = evaluate(lm, ds)
    assert metrics.loc["accuracy", "A"] == pytest.approx(m["accuracy"]) and metrics.loc["accuracy", "B - A"] == 0


def test_slices_page_equals_core(app, app_dirs):
    from core.audits import slices
    from core.inference.evaluate import evaluate
    at = _page(app, "10_slices")
    shown = _table(at, "dimension")
    lm, ds = _lm_ds(app_dirs)
    df, _ = evaluate(lm, ds)
    want = slices.slice_table(slices.join(df, slices.image_properties(ds)), 0.5)
    assert shown[["dimension", "slice", "images", "errors"]].values.tolist() == \
        want[["dimension", "slice", "images", "errors"]].values.tolist()
    at.selectbox(key="slice_pick").set_value(tuple(want.iloc[0][["dimension", "slice"]])).run()
    assert not at.exception
