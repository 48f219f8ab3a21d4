"""Architectures, checkpoints, metrics (hand-computed), temperature scaling, shifts and Grad-CAM contracts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.model.checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint, with_temperature
from core.model.gradcam import deletion_test, gradcam, heat_concentration, overlay_heatmap
from core.metrics.metrics import (apply_temperature, bootstrap_ece, classification_metrics, expected_calibration_error,
                          fit_temperature, reliability_bins, risk_coverage)
from core.model.models import ARCHITECTURES, build_model
from core.data.preprocess import PreprocessConfig
from core.data.shifts import SHIFT_NAMES, SWEEP_LEVELS, ShiftError, apply_shift, parse_shift


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("size", [32, 64])
def test_forward_shapes_and_feature_contract(arch, size):
    torch.manual_seed(0)
    m = build_model(arch, input_size=size).eval()
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        z = m(x)
        f = m.features(x)
        assert z.shape == (3,)
        assert f.ndim == 4 and f.shape[0] == 3 and f.shape[2] >= 4      # a map Grad-CAM can use
        assert torch.allclose(m.head(f), z, atol=1e-6)


def test_two_stream_second_half_sees_only_the_npr_residual():
    # An image constant over 2x2 blocks (made at half size, nearest-upsampled) has an NPR residual of
    # exactly 0: two such images with different content give identical residual-stream features and
    # different image-stream features.
    torch.manual_seed(0)
    m = build_model("two-stream").eval()
    a, b = torch.rand(2, 3, 16, 16).repeat_interleave(2, 2).repeat_interleave(2, 3).chunk(2)
    with torch.no_grad():
        fa, fb = m.features(a), m.features(b)
        c = fa.shape[1] // 2
        assert fa.shape == (1, 512, 4, 4)
        assert torch.equal(fa[:, c:], fb[:, c:])                   # residual stream: no difference
        assert (fa[:, :c] - fb[:, :c]).abs().max() > 1e-3          # image stream: sees the content
        # and the residual stream of a block-constant image is the stream's answer to a zero residual
        zero = m.npr(torch.zeros(1, 3, 32, 32))
        assert torch.allclose(fa[:, c:], zero, atol=1e-6)


def test_two_stream_stream_dropout_drops_one_stream_per_image_in_training_only():
    torch.manual_seed(1)
    m = build_model("two-stream", stream_dropout=0.5)          # p = 0.5: every image loses one stream
    x = torch.rand(64, 3, 32, 32)
    c = 256
    f = m.train().features(x)
    rgb_off = f[:, :c].abs().amax(dim=(1, 2, 3)) == 0
    npr_off = f[:, c:].abs().amax(dim=(1, 2, 3)) == 0
    assert torch.equal(rgb_off ^ npr_off, torch.ones(64, dtype=torch.bool))   # exactly one, never both
    assert 16 < int(rgb_off.sum()) < 48
    with torch.no_grad():                                      # inference: both streams, like p = 0
        ref = build_model("two-stream")
        ref.load_state_dict(m.state_dict())
        assert torch.equal(m.eval().features(x), ref.eval().features(x))
    with pytest.raises(ValueError, match="stream_dropout"):
        build_model("two-stream", stream_dropout=0.7)


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet9000")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = build_model("seed-v1", input_size=32).eval()
    ck = make_checkpoint(m, "seed-v1", {"input_size": 32}, PreprocessConfig(32), history=[{"epoch": 1, "val_acc": np.float64(0.5)}],
                         metrics={"val": {"accuracy": np.float32(0.75), "n": np.int64(4)}})
    save_checkpoint(ck, tmp_path / "m.pt")
    lm = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(lm.model(x), m(x), atol=1e-5)   # channels_last may round differently
    assert lm.arch == "seed-v1" and lm.preprocess == PreprocessConfig(32) and lm.temperature == 1.0
    assert lm.meta["metrics"]["val"]["accuracy"] == 0.75 and lm.meta["label_map"] == {"0": "REAL", "1": "FAKE"}
    with_temperature(tmp_path / "m.pt", 1.7, tmp_path / "m_t.pt")
    assert load_checkpoint(tmp_path / "m_t.pt").temperature == 1.7
    assert load_checkpoint(tmp_path / "m.pt").temperature == 1.0          # original untouched


def test_checkpoint_refusals(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_bytes(b"hello")
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "bare.pt")
    torch.save({"format": "someone-else", "version": 1, "arch": "x", "model_args": {}, "state_dict": {},
                "preprocess": {}}, tmp_path / "other.pt")
    ck = make_checkpoint(build_model("seed-v1"), "seed-v1", {"input_size": 32}, PreprocessConfig())
    ck["model_args"] = {"input_size": 64}                                    # weights no longer fit
    save_checkpoint(ck, tmp_path / "mismatch.pt")
    expect = {"empty.pt": "empty", "text.pt": "not a PyTorch checkpoint", "bare.pt": "bare state_dict",
              "other.pt": "format is 'someone-else'", "mismatch.pt": "does not match its architecture",
              "missing.pt": "not found"}
    for name, msg in expect.items():
        with pytest.raises(CheckpointError, match=msg):
            load_checkpoint(tmp_path / name)


# ----------------------------------------------------------------------------- metrics, hand-computed

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.6, 0.4, 0.9])


def test_classification_metrics_hand_checked():
    m = classification_metrics(Y, P)
    # predictions 0,1,0,1 -> TN=1, FP=1, FN=1, TP=1
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["accuracy"] == 0.5
    # positive scores {0.4, 0.9} vs negative {0.1, 0.6}: 3 of 4 pairs ranked right
    assert m["roc_auc"] == pytest.approx(0.75)
    # Brier: (0.01 + 0.36 + 0.36 + 0.01) / 4
    assert m["brier"] == pytest.approx(0.185)
    # confidences 0.9 (right), 0.6 (wrong), 0.6 (wrong), 0.9 (right): ECE = 0.5*|0-0.6| + 0.5*|1-0.9|
    assert m["ece"] == pytest.approx(0.35)
    assert m["per_class"]["FAKE"]["precision"] == 0.5 and m["per_class"]["REAL"]["recall"] == 0.5
    assert m["errors"] == 2 and m["errors_confidence_over_0.9"] == 0
    m2 = classification_metrics(Y, P, threshold=0.35)   # now 0.4 and 0.6 are FAKE
    assert m2["confusion_matrix"] == [[1, 1], [0, 2]]


def test_metrics_one_class_does_not_crash():
    m = classification_metrics(np.array([1, 1]), np.array([0.2, 0.95]))
    assert m["roc_auc"] is None and m["accuracy"] == 0.5 and m["confusion_matrix"] == [[0, 0], [1, 1]]
    assert m["errors_confidence_over_0.9"] == 0 and m["share_of_errors_confidence_over_0.9"] == 0.0


def test_reliability_bins_counts_sum():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    bins = reliability_bins(y, p, 10)
    assert sum(b["count"] for b in bins) == 500 and bins[0]["lo"] == 0.5 and bins[-1]["hi"] == 1.0
    lo, hi = bootstrap_ece(y, p, n_boot=50)
    assert lo <= expected_calibration_error(y, p) <= hi + 0.02


def test_perfectly_calibrated_has_small_ece_and_temperature_near_truth():
    rng = np.random.default_rng(0)
    z_true = rng.normal(0, 3, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z_true))).astype(int)
    assert expected_calibration_error(y, apply_temperature(z_true, 1.0)) < 0.02
    # The model reports logits twice too large: the fitted temperature undoes it.
    t = fit_temperature(2 * z_true, y)
    assert t == pytest.approx(2.0, rel=0.05)
    assert expected_calibration_error(y, apply_temperature(2 * z_true, t)) < 0.02


def test_risk_coverage_hand_checked():
    rc = risk_coverage(Y, P)
    # most confident first: 0.1 (right), 0.9 (right), then 0.6 and 0.4 (both wrong)
    assert rc["coverage"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert rc["accuracy"].tolist() == pytest.approx([1.0, 1.0, 2 / 3, 0.5])


# ----------------------------------------------------------------------------- shifts

@pytest.mark.parametrize("name", SHIFT_NAMES)
def test_every_shift_keeps_shape_and_does_not_modify_input(name):
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    before = x.clone()
    for level in SWEEP_LEVELS[name]:
        y = apply_shift(x, name, level)
        assert y.shape == x.shape and y.dtype == torch.uint8
        assert not torch.equal(y, x), f"{name}:{level} changed nothing"
    assert torch.equal(x, before)


def test_shift_values_hand_checked():
    x = torch.full((3, 4, 4), 200, dtype=torch.uint8)
    x[0] = 100
    assert apply_shift(x, "brightness", 0.5)[:, 0, 0].tolist() == [50, 100, 100]
    g = apply_shift(x, "grayscale", 1.0)
    assert g[0, 0, 0] == g[1, 0, 0] == g[2, 0, 0] == round(0.2989 * 100 + 0.587 * 200 + 0.114 * 200)
    for name, level in [("blur", 0), ("noise", 0), ("downscale", 1), ("contrast", 1), ("saturation", 1)]:
        assert torch.equal(apply_shift(x, name, level), x)
    checker = (torch.arange(16).view(4, 4) % 2 ^ (torch.arange(16).view(4, 4) // 4) % 2).to(torch.uint8) * 255
    flat = apply_shift(checker.expand(3, 4, 4).contiguous(), "downscale", 2)
    assert (flat.float() - 127.5).abs().max() < 30     # a 1-px checkerboard averages to grey


def test_parse_shift():
    assert str(parse_shift("jpeg:30")) == "jpeg:30" and parse_shift("grayscale").level == 1.0
    assert parse_shift(None) is None
    for bad in ("sharpen:2", "jpeg:abc", "jpeg:0", "blur"):
        with pytest.raises(ShiftError):
            parse_shift(bad)


# ----------------------------------------------------------------------------- Grad-CAM

@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_gradcam_contract(arch):
    torch.manual_seed(0)
    m = build_model(arch, input_size=32).eval()
    x = torch.rand(4, 3, 32, 32)
    before = x.clone()
    cams, logits = gradcam(m, x, "fake")
    assert cams.shape == (4, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    assert torch.equal(x, before)
    assert all(p.grad is None for p in m.parameters())           # no gradient left on shared weights
    with torch.no_grad():
        assert torch.allclose(logits, m(x), atol=1e-5)
    for c in cams:
        assert c.max() == 1.0 or c.max() == 0.0


def test_heat_concentration_hand_checked():
    uniform = torch.ones(1, 10, 10)
    point = torch.zeros(1, 10, 10)
    point[0, 3, 3] = 1
    assert heat_concentration(uniform).item() == pytest.approx(0.1)
    assert heat_concentration(point).item() == pytest.approx(1.0)
    assert math.isnan(heat_concentration(torch.zeros(1, 10, 10)).item())


def test_deletion_test_and_overlay_shapes():
    torch.manual_seed(0)
    m = build_model("seed-v21", input_size=32).eval()
    x = torch.rand(3, 3, 32, 32)
    cams, _ = gradcam(m, x, "fake")
    d = deletion_test(m, x, cams, frac=0.1)
    assert d["drop_cam"].shape == (3,) and d["flip_cam"].dtype == torch.bool
    img = (np.random.default_rng(0).random((64, 48, 3)) * 255).astype(np.uint8)
    img_before = img.copy()
    out = overlay_heatmap(img, np.zeros((8, 8), np.float32), alpha=0.0)
    assert out.shape == (64, 48, 3) and out.dtype == np.uint8 and np.array_equal(out, img)
    hot = overlay_heatmap(img, np.ones((8, 8), np.float32), alpha=1.0)
    assert (hot[..., 0] > 100).all() and (hot[..., 2] < 10).all()   # full heat is red
    assert np.array_equal(img, img_before)
