"""The six dashboard pages under streamlit.testing (AppTest), on tiny fixtures built in tmp_path.

    python -m pytest tests/test_app.py -q

Fixtures: a CIFAKE-layout sample with train/test/ood splits (24 REAL + 24 FAKE each, 32x32 JPEG;
REAL smooth, FAKE noise, manifest.csv with sources) and a small seed-v21 trained on it for a few
epochs. pages_support.common reads AUDIT_* at import time and AppTest runs the scripts in this process, so
the fixture sets the environment *and* patches the module's path attributes (monkeypatch restores
them). Uploads go through AppTest's own file_uploader support (streamlit >= 1.50).
The last test runs on the shipped weights/default.pt + data/sample and skips until they exist.
"""
from __future__ import annotations

import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

PAGES = {"1_predict": "Predict", "2_confusion": "Confusion matrix", "3_calibration": "Calibration",
         "4_misclassifications": "Misclassifications", "5_limitations": "Limitations", "6_model_data": "Model & data",
         "7_generalization": "Generalization"}
N_PER_CLASS = 24


def _smooth(rng, size=32):
    return Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)


def _noise(rng, size=32):
    return Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8))


def _encode(img, fmt="JPEG"):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_sample(root: Path, n=N_PER_CLASS, seed=0) -> Path:
    """root/{train,test,ood}/{REAL,FAKE}/NNNN.jpg + manifest.csv (file,label,source,origin) per split."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test", "ood"):
        rows = []
        for cls, make, label in (("REAL", _smooth, 0), ("FAKE", _noise, 1)):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i:04d}.jpg").write_bytes(_encode(make(rng)))
                src = ("photos-a" if i % 2 else "photos-b") if label == 0 else ("gen-ood" if split == "ood" else "gen")
                rows.append({"file": f"{cls}/{i:04d}.jpg", "label": label, "source": src, "origin": f"test {i}"})
        pd.DataFrame(rows).to_csv(root / split / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="session")
def app_dirs(tmp_path_factory):
    from core.model.train import TrainConfig, train
    base = tmp_path_factory.mktemp("app")
    sample = make_sample(base / "sample")
    weights = base / "weights"
    weights.mkdir()
    train(TrainConfig(data=str(sample), arch="seed-v21", epochs=3, finetune_epochs=1, batch_size=16, lr=3e-3,
                      val_fraction=0.25, out=str(weights / "default.pt"), seed=0, device="cpu",
                      model_args={"channels": [8, 16, 16, 32], "hidden": 16}), log=lambda *a: None)
    return {"weights": weights, "sample": sample, "runs": base / "runs"}


def _use_navigation(monkeypatch) -> None:
    """Make every AppTest run go through dashboard.py's st.navigation, as a live server does.

    AppTest resets PagesManager.uses_pages_directory before each run, so each run starts in
    Streamlit's old pages-directory mode (there is a pages/ folder); pages_support.common then reruns
    through dashboard.py (test_lone_page_file_reruns_through_dashboard), but that rerun drops
    a button click. A live server leaves the mode for good at the first st.navigation call.
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import app_test

    class NavigationPagesManager(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "uses_pages_directory", False)
    monkeypatch.setattr(app_test, "PagesManager", NavigationPagesManager)


def _point_app_at(monkeypatch, weights: Path, sample: Path, runs: Path, navigation: bool = True) -> None:
    if navigation:
        _use_navigation(monkeypatch)
    monkeypatch.setenv("AUDIT_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("AUDIT_SAMPLE_DIR", str(sample))
    monkeypatch.setenv("AUDIT_RUNS_DIR", str(runs))
    import pages_support.common as common
    monkeypatch.setattr(common, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(common, "SAMPLE_DIR", sample)
    monkeypatch.setattr(common, "RUNS_DIR", runs)
    monkeypatch.setattr(common, "DEFAULT_WEIGHTS", weights / "default.pt")


@pytest.fixture
def app(app_dirs, monkeypatch):
    _point_app_at(monkeypatch, app_dirs["weights"], app_dirs["sample"], app_dirs["runs"])
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _page(at, name):
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _table(at, column) -> pd.DataFrame:
    # st.dataframe or st.table (pages_support.views.static_table): the values the page passed, unformatted
    hits = [d.value for d in [*at.dataframe, *at.table] if column in d.value.columns]
    assert hits, f"no table with a {column!r} column"
    return hits[0]


def _predictions(app_dirs, split="test") -> pd.DataFrame:
    """The stored per-image predictions the app evaluated (the 'hand computation' starts here)."""
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluation_dir, load_evaluation
    lm = load_checkpoint(app_dirs["weights"] / "default.pt")
    ds = open_dataset(app_dirs["sample"], split=split)
    res = load_evaluation(evaluation_dir(app_dirs["runs"], lm, ds, None))
    assert res is not None, "the page did not store its evaluation"
    return res[0]


def _cells(df, t):
    pred = (df["prob_fake"] >= t).astype(int)
    y = df["label"]
    return {"TN": int(((y == 0) & (pred == 0)).sum()), "FP": int(((y == 0) & (pred == 1)).sum()),
            "FN": int(((y == 1) & (pred == 0)).sum()), "TP": int(((y == 1) & (pred == 1)).sum())}


def _second_threshold(df) -> float:
    """0.9 when it moves some image across the threshold (as it should), else the median P(AI)."""
    if _cells(df, 0.9) != _cells(df, 0.5):
        return 0.9
    return round(float(df["prob_fake"].median()), 2)


# ----------------------------------------------------------------------------- every page

# Pages whose first view has a chart: drawn with Vega-Lite (pages_support.charts), never plotly, whose 4.5 MB
# script kept the first views' skeletons up for seconds (README "First views"). Predict's charts come after an upload.
CHART_PAGES = {"2_confusion", "3_calibration", "5_limitations", "6_model_data", "8_forensics", "9_compare", "10_slices"}


def assert_first_view_charts(at, page: str) -> None:
    assert not at.get("plotly_chart"), f"{page} draws a plotly chart on its first view"
    if page in CHART_PAGES:
        assert at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart"), f"{page} draws no chart"


@pytest.mark.parametrize("page", list(PAGES))
def test_page_renders_without_errors(app, page):
    at = _page(app, page)
    assert [t.value for t in at.title] == [PAGES[page]]
    assert not at.error, [e.value for e in at.error]
    assert_first_view_charts(at, page)
    assert at.sidebar.slider(key="threshold").value == 0.5
    assert at.sidebar.selectbox(key="model_choice").value == "default.pt"


def test_lone_page_file_reruns_through_dashboard(app_dirs, monkeypatch):
    """A fresh server opened on a deep link runs the page file alone (pages-directory mode); the page
    must rerun through dashboard.py and show the sidebar, not 'no model selected'."""
    _point_app_at(monkeypatch, app_dirs["weights"], app_dirs["sample"], app_dirs["runs"], navigation=False)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    at = _page(at, "2_confusion")
    assert [t.value for t in at.title] == ["Confusion matrix"]
    assert at.sidebar.slider(key="threshold").value == 0.5
    assert not at.warning, [w.value for w in at.warning]
    assert sum(_table(at, "cell")["count"]) == 2 * N_PER_CLASS


# ----------------------------------------------------------------------------- confusion matrix

@pytest.mark.parametrize("name, tables", [("2_confusion", {"cell", "recall"}), ("3_calibration", {"mean confidence"}),
                                          ("6_model_data", {"total", "setting", "train_loss"}),
                                          ("8_forensics", {"balanced accuracy alone", "share", "cycles_per_pixel"}),
                                          ("10_slices", {"dimension", "ci_low"})])
def test_small_tables_are_static_tables_not_grids(app, name, tables):
    """Confusion, Calibration, Model & data, Forensics and Error slices draw their tables with st.table
    (static_table; taller ones scroll): no st.dataframe grid, whose code costs a first view about a second
    (benchmarks/bench_frontend.py; Compare: tests/test_app_audit.py)."""
    at = _page(app, name)
    assert len(at.dataframe) == 0, [d.value.columns.tolist() for d in at.dataframe]
    assert tables <= {c for t in at.table for c in t.value.columns}


def test_confusion_cells_add_up_and_follow_threshold(app, app_dirs):
    at = _page(app, "2_confusion")
    cells = _table(at, "cell").set_index("cell")["count"].to_dict()
    assert sum(cells.values()) == 2 * N_PER_CLASS
    df = _predictions(app_dirs)
    assert cells == _cells(df, 0.5)
    t2 = _second_threshold(df)
    assert _cells(df, t2) != _cells(df, 0.5), "fixture model gives no threshold-sensitive images"
    at.sidebar.slider(key="threshold").set_value(t2).run()
    assert not at.exception
    cells2 = _table(at, "cell").set_index("cell")["count"].to_dict()
    assert cells2 == _cells(df, t2)
    # Raising the threshold can only move images from "called FAKE" to "called REAL".
    assert cells2["TP"] + cells2["FP"] <= cells["TP"] + cells["FP"]
    per = _table(at, "recall").set_index("class")
    n_fake = cells2["TP"] + cells2["FN"]
    assert per.loc["FAKE", "recall"] == pytest.approx(cells2["TP"] / n_fake)


# ----------------------------------------------------------------------------- misclassifications

def test_misclassification_counts_follow_threshold(app, app_dirs):
    at = _page(app, "4_misclassifications")
    df = _predictions(app_dirs)
    metrics = {m.label: m.value for m in at.metric}
    c = _cells(df, 0.5)
    assert (int(metrics["False positives"]), int(metrics["False negatives"])) == (c["FP"], c["FN"])
    t2 = _second_threshold(df)
    at.sidebar.slider(key="threshold").set_value(t2).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    c = _cells(df, t2)
    assert (int(metrics["False positives"]), int(metrics["False negatives"])) == (c["FP"], c["FN"])
    listed = _table(at, "error")
    assert len(listed) == c["FP"] + c["FN"]
    # Grad-CAM on demand renders without errors.
    at.toggle(key="mis_cam").set_value(True).run()
    assert not at.exception and not at.error


# ----------------------------------------------------------------------------- predict

def test_predict_one_image_shows_label_p_ai_and_gradcam(app, app_dirs):
    from core.model.checkpoint import load_checkpoint
    from core.inference.predict import predict_one
    at = _page(app, "1_predict")
    img = _encode(_noise(np.random.default_rng(5), 48), "PNG")
    at.file_uploader(key="predict_upload").set_value(("upload_me.png", img, "image/png")).run()
    assert not at.exception and not at.error
    assert "upload_me.png" in [s.value for s in at.subheader]
    # P(AI) is the model's, and the label is FAKE exactly when P(AI) >= the sidebar threshold.
    lm = load_checkpoint(app_dirs["weights"] / "default.pt")
    pred = predict_one(lm, "x", img, with_cam=False)
    p = pred.prob_fake
    for t in (round(p - 0.01, 2), round(p + 0.01, 2), 0.5):
        at.sidebar.slider(key="threshold").set_value(t).run()
        assert not at.exception
        metrics = {m.label: m.value for m in at.metric}
        assert float(metrics["P(AI)"]) == pytest.approx(p, abs=5e-5)
        label = "FAKE" if p >= t else "REAL"
        assert metrics["Label at the threshold"] == label, (p, t)
        assert float(metrics["Distance from threshold"]) == pytest.approx(p - t, abs=2e-4)
        # The verdict (core.verdict.verdict) comes first, in words: REAL/FAKE/UNSURE at this threshold.
        verdict, why = pred.verdict(lm.verdict, t)
        assert verdict in ("REAL", "FAKE", "UNSURE") and (verdict == label or verdict == "UNSURE")
        text = " ".join(m.value for m in at.markdown)
        assert f"**{verdict}** · P(AI) = {p:.4f}" in text
        assert at.markdown[0].value.startswith(f"**{verdict}**")
        captions = " ".join(c for i in at.image for c in i.captions)
        assert f"explaining the {label} call" in captions
    # original, model input (real size + enlarged), Grad-CAM on the input and on the original
    assert len(at.image) >= 5


def test_predict_says_a_grayscale_upload_is_unsure_because_it_lacks_colour(app_dirs, tmp_path, monkeypatch):
    """A checkpoint whose familiarity has a colour part (core.verdict.verdict.colourfulness; the app's tiny one gets a
    400-image colour reference, as a full calibration split gives): a grayscale upload is UNSURE, and the
    verdict says it is far less colourful; the same image in colour is not flagged for colour."""
    import torch
    from core.model.checkpoint import read_checkpoint, save_checkpoint
    weights = tmp_path / "weights"
    weights.mkdir()
    ck, _ = read_checkpoint(app_dirs["weights"] / "default.pt")
    ck["verdict"]["familiarity"]["colour_reference"] = torch.linspace(0.05, 0.5, 400)
    save_checkpoint(ck, weights / "default.pt")
    _point_app_at(monkeypatch, weights, app_dirs["sample"], tmp_path / "runs")
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    at = _page(at, "1_predict")
    rgb = _noise(np.random.default_rng(8), 32)
    gray = rgb.convert("L")
    at.file_uploader(key="predict_upload").set_value(("gray.png", _encode(gray, "PNG"), "image/png")).run()
    assert not at.exception and not at.error
    first = at.markdown[0].value
    assert first.startswith("**UNSURE**") and "far less colourful" in first and "colourfulness 0.000" in first
    at.file_uploader(key="predict_upload").set_value(("colour.png", _encode(rgb, "PNG"), "image/png")).run()
    assert not at.exception and "far less colourful" not in at.markdown[0].value


def test_predict_heic_upload(app):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    _noise(np.random.default_rng(6), 48).save(buf, format="HEIF", quality=90)
    at = _page(app, "1_predict")
    at.file_uploader(key="predict_upload").set_value(("IMG_0042.HEIC", buf.getvalue(), "image/heic")).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Label at the threshold"] in ("REAL", "FAKE") and 0 <= float(metrics["P(AI)"]) <= 1
    assert "IMG_0042.HEIC" in [s.value for s in at.subheader]


def test_predict_not_an_image_gives_a_clear_message(app):
    at = _page(app, "1_predict")
    at.file_uploader(key="predict_upload").set_value(("notes.txt", b"just some text\n", "text/plain")).run()
    assert not at.exception
    assert any("notes.txt" in e.value and "not an image" in e.value for e in at.error), [e.value for e in at.error]


def test_predict_batch_with_zip_and_bad_files(app):
    at = _page(app, "1_predict")
    rng = np.random.default_rng(1)
    good = [(f"img{i}.jpg", _encode(_noise(rng) if i % 2 else _smooth(rng)), "image/jpeg") for i in range(3)]
    truncated = ("cut.jpg", _encode(_noise(rng))[:200], "image/jpeg")
    text = ("readme.txt", b"hello", "text/plain")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/one.png", _encode(_smooth(rng), "PNG"))
        z.writestr("two.jpg", _encode(_noise(rng)))
        z.writestr("notes.md", "not an image")
    bad_zip = ("broken.zip", b"PK\x03\x04 not really", "application/zip")
    files = good + [truncated, text, ("batch.zip", buf.getvalue(), "application/zip"), bad_zip]
    at.file_uploader(key="predict_upload").set_value(files).run()
    assert not at.exception
    table = _table(at, "message").set_index("file")
    ok = ["img0.jpg", "img1.jpg", "img2.jpg", "batch.zip/a/one.png", "batch.zip/two.jpg"]
    assert set(ok) <= set(table.index)
    assert set(table.loc[ok, "label"]) <= {"REAL", "FAKE"}
    assert table.loc[ok, "P(AI)"].between(0, 1).all()
    assert table.loc["cut.jpg", "label"] == "error" and "truncated" in table.loc["cut.jpg", "message"]
    assert "text file" in table.loc["readme.txt", "message"]
    assert "not an image file name" in table.loc["batch.zip/notes.md", "message"]
    assert "not a valid zip" in table.loc["broken.zip", "message"]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Unreadable"]) == 4
    # Labels follow P(AI) and the threshold; verdicts are the label or UNSURE, and the counts add up.
    assert (table.loc[ok, "label"] == np.where(table.loc[ok, "P(AI)"] >= 0.5, "FAKE", "REAL")).all()
    assert ((table.loc[ok, "verdict"] == table.loc[ok, "label"]) | (table.loc[ok, "verdict"] == "UNSURE")).all()
    for v in ("FAKE", "REAL", "UNSURE"):
        assert int(metrics[v if v != "FAKE" else "FAKE (AI)"]) == int((table.loc[ok, "verdict"] == v).sum())
    # Threshold applies to the batch table too.
    at.sidebar.slider(key="threshold").set_value(0.0).run()
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["FAKE (AI)"]) + int(metrics["UNSURE"]) == len(ok) and int(metrics["REAL"]) == 0
    # The detail view of the selected image renders with Grad-CAM.
    assert at.selectbox(key="predict_pick").value in ok
    assert len(at.get("plotly_chart")) >= 2 and len(at.image) >= 4


def test_predict_caps_images_per_run(app, monkeypatch):
    at = _page(app, "1_predict")
    rng = np.random.default_rng(2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(505):
            z.writestr(f"{i:03d}.png", _encode(Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)), "PNG"))
    at.file_uploader(key="predict_upload").set_value(("many.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    assert any("only the first 500" in w.value for w in at.warning)
    assert len(_table(at, "message")) == 500


# ----------------------------------------------------------------------------- calibration

def test_calibration_numbers_and_saved_copy(app_dirs, monkeypatch, tmp_path):
    from core.model.checkpoint import file_sha256, load_checkpoint
    from core.metrics.metrics import expected_calibration_error, temperature_scaling_split
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(app_dirs["weights"] / "default.pt", weights / "default.pt")
    before = file_sha256(weights / "default.pt")
    _point_app_at(monkeypatch, weights, app_dirs["sample"], app_dirs["runs"])
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    at = _page(at, "3_calibration")
    df = _predictions(app_dirs)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["ECE"]) == pytest.approx(expected_calibration_error(df["label"], df["prob_fake"]), abs=1e-4)
    ts = temperature_scaling_split(df["logit"], df["label"], 0.5, 0, current_temperature=1.0)
    assert float(metrics["Fitted T"]) == pytest.approx(ts["temperature"], rel=1e-3)
    assert sum(_table(at, "images")["images"]) == len(df)
    # Saving writes a new file with the fitted T and never touches the original.
    at.text_input(key="cal_save_name").set_value("calibrated.pt").run()
    at.button(key="cal_save").click().run()
    assert not at.exception and at.success, [e.value for e in at.error]
    saved = load_checkpoint(weights / "calibrated.pt")
    assert saved.temperature == pytest.approx(ts["temperature"], rel=1e-3)
    assert file_sha256(weights / "default.pt") == before
    # A second save under the same name is refused, not overwritten.
    sha_saved = file_sha256(weights / "calibrated.pt")
    at.button(key="cal_save").click().run()
    assert any("already exists" in e.value for e in at.error)
    assert file_sha256(weights / "calibrated.pt") == sha_saved
    # Unsafe names are refused.
    at.text_input(key="cal_save_name").set_value("../escape.pt").run()
    at.button(key="cal_save").click().run()
    assert any("plain file name" in e.value for e in at.error)
    assert not (tmp_path / "escape.pt").exists()


def test_risk_coverage_readout(app, app_dirs):
    from core.metrics.metrics import risk_coverage
    at = _page(app, "3_calibration")
    at.slider(key="cal_abstain").set_value(50).run()
    df = _predictions(app_dirs)
    rc = risk_coverage(df["label"].to_numpy(), df["prob_fake"].to_numpy(), 0.5)
    keep = int(np.ceil(0.5 * len(df)))
    text = " ".join(m.value for m in at.markdown)
    assert f"**{100 * rc['accuracy'][keep - 1]:.1f}%** on the remaining {keep:,}" in text


# ----------------------------------------------------------------------------- limitations, model & data

def _image_captions(at) -> list[str]:
    return [i.caption for el in at.get("image") for i in el.proto.imgs]


def test_limitations_example_images_off_on_a_first_view_and_one_click_away(app):
    from core.data.shifts import SWEEP_LEVELS
    at = _page(app, "5_limitations")
    assert at.toggle(key="lim_examples").value is False
    assert not any(c.startswith("clean · P(AI)") for c in _image_captions(at))
    at.toggle(key="lim_examples").set_value(True).run()
    assert not at.exception
    captions = _image_captions(at)
    # one REAL and one FAKE image per shift, clean and at every level
    assert sum(c.startswith("clean · P(AI)") for c in captions) == 2 * len(SWEEP_LEVELS)
    assert sum(c.startswith("blur sigma") for c in captions) == 2 * len(SWEEP_LEVELS["blur"])


def test_limitations_sections_and_verdicts(app, app_dirs):
    at = _page(app, "5_limitations")
    summary = at.table[0].value
    names = " ".join(summary.index)
    for part in ("grayscale", "jpeg", "blur", "noise", "downscale", "brightness", "contrast", "saturation", "hue",
                 "Dataset bias", "High-quality", "Grad-CAM", "Confidence", "Binary"):
        assert part in names
    # Every verdict is the one core.audits.limitations computes from the same numbers (its branches are tested on
    # hand-built numbers in test_limitations.py), and the CLI prints this very table.
    expected = _core_limitations_table(app_dirs, 0.5)
    pd.testing.assert_frame_equal(summary, expected)
    from core.audits.limitations import subsample_note
    assert subsample_note(2 * N_PER_CLASS) in [c.value for c in at.caption]
    bias = _table(at, "FAKE generator(s)")
    assert list(bias["split"]) == ["test", "ood"] and list(bias["images"]) == [2 * N_PER_CLASS] * 2
    assert "gen-ood" in bias.loc[1, "FAKE generator(s)"]
    headers = [h.value for h in at.header]
    assert headers == ["Sensitivity to preprocessing changes", "Verdict stability under everyday changes",
                       "Dataset bias and unseen generators",
                       "High-quality AI images", "Grad-CAM interpretability", "Confidence vs correctness",
                       "Binary classification scope"]
    # At another threshold the threshold-dependent verdicts follow, still equal to core's.
    t2 = _second_threshold(_predictions(app_dirs))
    at.sidebar.slider(key="threshold").set_value(t2).run()
    assert not at.exception
    pd.testing.assert_frame_equal(at.table[0].value, _core_limitations_table(app_dirs, t2))


def _core_limitations_table(app_dirs, threshold) -> pd.DataFrame:
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.audits.limitations import audit, summary_table
    lm = load_checkpoint(app_dirs["weights"] / "default.pt")
    ds = open_dataset(app_dirs["sample"], split="test")
    return summary_table(audit(lm, ds, threshold, app_dirs["sample"], app_dirs["runs"]))


def test_limitations_cli_prints_the_page_table(app_dirs, capsys):
    from core.audits import limitations
    rc = limitations.main(["--weights", str(app_dirs["weights"] / "default.pt"), "--data",
                           str(app_dirs["sample"] / "test"), "--sample", str(app_dirs["sample"]),
                           "--runs", str(app_dirs["runs"])])
    assert rc == 0
    out = capsys.readouterr().out
    table = _core_limitations_table(app_dirs, 0.5)
    for name, verdict in table["verdict"].items():
        assert f"{name}" in out and verdict in out
    # header lines + one line per limitation, then a blank line and the subsample sentence the page shows too
    assert len(out.strip().splitlines()) == len(table) + 4
    assert out.strip().splitlines()[-1] == limitations.subsample_note(2 * N_PER_CLASS)
    # --unsure adds the page's confidence-vs-correctness table with UNSURE, this evaluation's row equal to core's.
    assert limitations.main(["--weights", str(app_dirs["weights"] / "default.pt"), "--data",
                             str(app_dirs["sample"] / "test"), "--sample", str(app_dirs["sample"]),
                             "--runs", str(app_dirs["runs"]), "--unsure"]) == 0
    out = capsys.readouterr().out
    assert "wrong, not UNSURE" in out and "this evaluation" in out and "sample ood (unseen family)" in out
    assert limitations.main(["--weights", str(app_dirs["weights"] / "nope.pt"), "--data",
                             str(app_dirs["sample"] / "test")]) == 2


def test_model_and_data_cards(app, app_dirs):
    from core.model.checkpoint import load_checkpoint
    from core.model.models import count_parameters
    at = _page(app, "6_model_data")
    lm = load_checkpoint(app_dirs["weights"] / "default.pt")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == f"{count_parameters(lm.model):,}"
    assert metrics["Architecture"] == "seed-v21"
    counts = _table(at, "total").set_index("split")
    assert counts.loc["test", "REAL"] == counts.loc["ood", "FAKE"] == N_PER_CLASS
    history = _table(at, "train_loss")
    assert len(history) == len(lm.meta["history"]) == 4
    assert "epochs" in set(_table(at, "setting")["setting"])
    # example images: one element per class (a list of N_EXAMPLES), each captioned with its item id
    examples = [[i.caption for i in el.proto.imgs] for el in at.get("image")]
    assert len(examples) == 2 and [len(e) for e in examples] == [8, 8], examples
    assert all(c for e in examples for c in e) and len({c for e in examples for c in e}) == 16


def test_model_and_data_page_sends_the_data_cards_png_figures_as_they_are(app_dirs, tmp_path, monkeypatch):
    """The data card's figures (data/card/*.png, RGB) reach the browser as the files' own bytes: with Streamlit's
    output_format "auto" each was decoded and re-encoded as JPEG on every first view."""
    from PIL import Image
    from streamlit.elements.lib import image_utils
    import shutil
    sample = tmp_path / "data" / "sample"
    shutil.copytree(app_dirs["sample"], sample)
    (tmp_path / "data" / "card").mkdir()
    fig = tmp_path / "data" / "card" / "fig.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 300, 3), dtype=np.uint8)).save(fig)
    (tmp_path / "data" / "README.md").write_text("# Card\n\nA figure: ![one figure](card/fig.png)\n")
    sent = {}
    real = image_utils._ensure_image_size_and_format

    def spy(data, *a, **k):
        out = real(data, *a, **k)
        sent[data] = out
        return out
    monkeypatch.setattr(image_utils, "_ensure_image_size_and_format", spy)
    _point_app_at(monkeypatch, app_dirs["weights"], sample, tmp_path / "runs")
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    at = _page(at, "6_model_data")
    assert fig.read_bytes() not in sent                    # the data card is one toggle away on a first view
    at = at.toggle(key="md_data_card").set_value(True).run()
    assert fig.read_bytes() in sent, "the data card's figure was not drawn"
    assert sent[fig.read_bytes()] == fig.read_bytes()


def test_model_and_data_page_draws_the_cards_code_blocks_as_plain_text(app_dirs, tmp_path, monkeypatch):
    """A fenced code block of the data card (or the model cards) is an st.text, not markdown: Streamlit draws a
    markdown code block with its syntax highlighter, whose 1.56 MB script kept every element of a fresh server's
    first view a skeleton until it had run (browser trace); the prose and figures around it stay."""
    import shutil
    sample = tmp_path / "data" / "sample"
    shutil.copytree(app_dirs["sample"], sample)
    (tmp_path / "data" / "README.md").write_text(
        "# Card\n\nBuilt with:\n\n```\npython data/build_sample.py --seed 0\npython data/check.py\n```\n\n"
        "and checked.\n\n~~~text\nlayout/\n  train/\n~~~\nThe end.\n")
    _point_app_at(monkeypatch, app_dirs["weights"], sample, tmp_path / "runs")
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    at = _page(at, "6_model_data")
    assert not at.exception
    assert "Built with:" not in "\n".join(m.value for m in at.markdown)     # one toggle away on a first view
    at = at.toggle(key="md_data_card").set_value(True).run()
    texts = [t.value for t in at.text]
    assert texts == ["python data/build_sample.py --seed 0\npython data/check.py", "layout/\n  train/"]
    md = "\n".join(m.value for m in at.markdown)
    assert "```" not in md and "~~~" not in md and "build_sample" not in md
    assert "Built with:" in md and "and checked." in md and "The end." in md


def test_helpers_added_to_core():
    """core.metrics.metrics.temperature_scaling_split and core.data.shifts.shift_array (added for these pages)."""
    from core.metrics.metrics import temperature_scaling_split
    from core.data.shifts import apply_shift, shift_array
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    z = rng.normal(0, 1, 4000) + np.where(y == 1, 1.5, -1.5)
    # For these two Gaussians (variance 1, means +-1.5) the calibrated logit is 3 * z; 12 * z needs T = 4.
    ts = temperature_scaling_split(12 * z, y, 0.5, 0)
    assert ts["temperature"] == pytest.approx(4, rel=0.1)
    assert ts["after"]["ece"] < ts["before"]["ece"]
    assert not set(ts["fit_idx"]) & set(ts["eval_idx"]) and len(ts["fit_idx"]) + len(ts["eval_idx"]) == 4000
    assert abs(y[ts["fit_idx"]].mean() - y.mean()) < 0.01            # stratified
    arr = rng.integers(0, 256, (9, 7, 3)).astype(np.uint8)
    keep = arr.copy()
    out = shift_array(arr, "noise", 8, seed=3)
    ref = apply_shift(torch.from_numpy(keep).permute(2, 0, 1), "noise", 8, seed=3).permute(1, 2, 0).numpy()
    assert out.shape == (9, 7, 3) and out.dtype == np.uint8 and np.array_equal(out, ref)
    assert np.array_equal(arr, keep)


def test_gradcam_audit_dataset_samples_without_decoding_everything(app_dirs):
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.audits.robustness import gradcam_audit_dataset
    lm = load_checkpoint(app_dirs["weights"] / "default.pt")
    ds = open_dataset(app_dirs["sample"], split="test")
    out = gradcam_audit_dataset(lm, ds, n=10, seed=0)
    assert out["summary"]["n"] == len(out["ids"]) == len(set(out["ids"])) == len(out["labels"]) == 10
    assert set(out["ids"]) <= {ds.item_id(i) for i in range(len(ds))}
    assert 0.1 - 1e-6 <= out["summary"]["concentration_mean"] <= 1
    assert gradcam_audit_dataset(lm, ds, n=10, seed=0)["ids"] == out["ids"]          # seeded
    assert gradcam_audit_dataset(lm, ds, n=1000)["summary"]["n"] == len(ds)


# ----------------------------------------------------------------------------- shipped defaults

@pytest.mark.shipped
def test_shipped_defaults(monkeypatch, tmp_path):
    """weights/default.pt on data/sample/test with no configuration: Predict, Confusion matrix, Model & data."""
    if not (ROOT / "weights" / "default.pt").is_file() or not (ROOT / "data" / "sample" / "test").is_dir():
        pytest.skip("shipped weights/default.pt or data/sample not built yet")
    _point_app_at(monkeypatch, ROOT / "weights", ROOT / "data" / "sample", tmp_path / "runs")
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300).run()
    assert not at.exception
    at.file_uploader(key="predict_upload").set_value(
        ("photo.png", _encode(_smooth(np.random.default_rng(0), 64), "PNG"), "image/png")).run()
    assert not at.exception and not at.error
    at = _page(at, "2_confusion")
    from core.data.datasets import open_dataset
    n = len(open_dataset(ROOT / "data" / "sample", split="test"))
    cells = _table(at, "cell")["count"]
    skipped = int({m.label: m.value for m in at.metric}["Unreadable (skipped)"])
    assert cells.sum() + skipped == n
    at = _page(at, "6_model_data")
    assert not at.error


def test_generalization_page_tables_equal_core(app, app_dirs, tmp_path, monkeypatch):
    """The per-source table is core.audits.generalize.source_table at the sidebar threshold; a stored LOGO
    leaderboard (weights/logo) is shown as stored, with its summary."""
    import shutil
    from core.model.checkpoint import load_checkpoint
    from core.inference.evaluate import RESULT_FORMAT
    from core.audits.generalize import LEADERBOARD_COLUMNS, source_table
    at = _page(app, "7_generalization")
    df = _predictions(app_dirs)
    lm = load_checkpoint(app_dirs["weights"] / "default.pt")
    want = source_table(df, lm.verdict, 0.5, lm.temperature)
    got = _table(at, "FAKE recall")
    assert got["source"].tolist() == want["source"].tolist() == ["gen"]
    assert got["AP"].iloc[0] == pytest.approx(want["ap"].iloc[0])
    assert got["images"].iloc[0] == want["n"].iloc[0] == len(df)
    assert any("No stored leaderboard" in i.value for i in at.info)
    # A stored LOGO run: one fold ("gen") whose model is the app's and whose evaluation is the app's.
    weights = tmp_path / "weights"
    shutil.copytree(app_dirs["weights"], weights)
    fold = weights / "logo" / "gen"
    (fold / "eval").mkdir(parents=True)
    shutil.copy(app_dirs["weights"] / "default.pt", fold / "model.pt")
    df.to_csv(fold / "eval" / "predictions.csv", index=False)
    (fold / "eval" / "metrics.json").write_text("{}")
    row = {"held_out": "gen", **want.drop(columns=["source"]).iloc[0].to_dict()}
    pd.DataFrame([row], columns=LEADERBOARD_COLUMNS).to_csv(weights / "logo" / "leaderboard.csv", index=False)
    (weights / "logo" / "summary.json").write_text(json.dumps({
        "families": 1, "mean_auc": row["auc"], "min_auc": row["auc"], "worst_family": "gen",
        "mean_share_wrong_decided": row["share_wrong_decided"], "mean_share_unsure": row["share_unsure"],
        "test_root": str(app_dirs["sample"] / "test"), "config": {"recipe": "seed-v21, test"},
        "result_format": RESULT_FORMAT}))
    _point_app_at(monkeypatch, weights, app_dirs["sample"], app_dirs["runs"])
    at2 = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at2.run()
    at2 = _page(at2, "7_generalization")
    assert not at2.error, [e.value for e in at2.error]
    board = _table(at2, "held_out")
    assert board["held_out"].tolist() == ["gen"] and board["ROC AUC"].iloc[0] == pytest.approx(row["auc"])
    assert {m.label: m.value for m in at2.metric}["Mean AUC on unseen families"] == f"{row['auc']:.3f}"
    assert not any("other files than those now in" in w.value for w in at2.warning)
    # The same leaderboard, recorded as evaluated on other files (a sample rebuilt since): the page says so.
    from core.data.datasets import open_dataset
    from core.audits.generalize import test_fingerprint
    summary = json.loads((weights / "logo" / "summary.json").read_text())
    for fingerprint, warned in ((test_fingerprint(open_dataset(app_dirs["sample"] / "test")), False),
                                ("0123456789abcdef", True)):
        (weights / "logo" / "summary.json").write_text(json.dumps({**summary, "test_fingerprint": fingerprint}))
        at3 = _page(AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run(), "7_generalization")
        assert not at3.exception
        assert any("other files than those now in" in w.value for w in at3.warning) == warned
