"""The audit additions in the app (AppTest): Predict's stability and residual spectrum, Limitations' flip
rates, and the Forensics, Compare, Error slices and Audit report pages. Numbers shown are checked
against the core functions the pages call, on the tiny fixtures of tests/test_app.py.

    python -m pytest -q tests/test_app_audit.py
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_app import _encode, _noise, _page, _smooth, _table, app, app_dirs  # noqa: F401  (fixtures)


def _lm_ds(app_dirs, split="test"):
    from core.checkpoint import load_checkpoint
    from core.datasets import open_dataset
    return load_checkpoint(app_dirs["weights"] / "default.pt"), open_dataset(app_dirs["sample"], split=split)


def test_predict_one_image_shows_stability_and_spectrum(app, app_dirs):
    from core import stability
    from core.images import load_image
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
    from core import stability
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
    from core.stability import dataset_stability, flip_table
    at = _page(app, "5_limitations")
    assert "Verdict stability under everyday changes" in [h.value for h in at.header]
    shown = _table(at, "flip_rate").set_index("change")
    lm, ds = _lm_ds(app_dirs)
    df, _ = dataset_stability(lm, ds)
    want = flip_table(df, 0.5).set_index("change")
    assert shown["flips"].tolist() == want["flips"].tolist()
    verdicts = at.table[0].value
    assert "Verdict stability" in verdicts.index
