"""REAL/FAKE/UNSURE verdicts: the conformal band and the familiarity score, with hand-checked numbers."""
import math
from dataclasses import replace

import numpy as np
import pytest

from core.verdict.verdict import (FAKE, REAL, UNSURE, WHY_BAND, WHY_UNFAMILIAR, Familiarity, VerdictModel,
                          conformal_quantile, conformity_scores, decide, fit_familiarity, logit_of,
                          prediction_sets, verdict_summary)


def test_conformal_quantile_by_hand():
    s = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 1.0, 0.4, 0.8, 0.6])   # 0.1 .. 1.0 shuffled, n = 10
    # alpha 0.2: rank ceil(11 * 0.8) = ceil(8.8) = 9 -> 0.9
    assert conformal_quantile(s, 0.2) == pytest.approx(0.9)
    # alpha 0.5: rank ceil(5.5) = 6 -> 0.6
    assert conformal_quantile(s, 0.5) == pytest.approx(0.6)
    # alpha 0.05: rank ceil(10.45) = 11 > n -> +inf (too few points for that guarantee)
    assert math.isinf(conformal_quantile(s, 0.05))


def test_scores_and_sets_by_hand():
    # threshold 0.5 -> logit 0; T = 1. FAKE image with logit 2: s = -2; REAL image with logit 2: s = 2.
    s = conformity_scores([2.0, 2.0, -1.0], [1, 0, 0], 0.5)
    assert s.tolist() == [-2.0, 2.0, -1.0]
    # q = 1: logit 0.5 -> both classes (|m| <= 1); logit 3 -> FAKE only; logit -3 -> REAL only
    has_real, has_fake = prediction_sets([0.5, 3.0, -3.0], 1.0, 0.5)
    assert has_real.tolist() == [True, False, True]
    assert has_fake.tolist() == [True, True, False]
    # threshold 0.8 moves the band: logit(0.8) = ln 4 = 1.386; logit 1.0 is now m = -0.386
    has_real, has_fake = prediction_sets([1.0], 0.2, 0.8)
    assert (has_real[0], has_fake[0]) == (True, False)


def _synthetic(n, rng):
    y = rng.integers(0, 2, n)
    z = (2 * y - 1) * 1.5 + rng.normal(0, 2.0, n)       # ~77% accurate at 0.5: a real band is needed
    return y, z


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_conformal_coverage_holds_on_fresh_data(threshold):
    rng = np.random.default_rng(0)
    y_cal, z_cal = _synthetic(2000, rng)
    vm = VerdictModel(cal_logits=z_cal, cal_labels=y_cal, alpha=0.05)
    y, z = _synthetic(20000, rng)
    q = vm.quantile(threshold)
    has_real, has_fake = prediction_sets(z, q, threshold)
    covered = np.where(y == 1, has_fake, has_real)
    assert covered.mean() >= 0.94                 # guarantee 0.95, minus sampling noise on 20k
    assert covered.mean() <= 0.97                 # and not trivially everything
    v, why = decide(z, None, vm, threshold)
    v = np.asarray(v)
    # Decided verdicts always equal the label at the threshold; the band is where UNSURE sits.
    p = 1 / (1 + np.exp(-z))
    decided = v != UNSURE
    assert (v[decided] == np.where(p[decided] >= threshold, FAKE, REAL)).all()
    lo, hi = vm.band(threshold)
    inside = (p >= lo) & (p <= hi)
    assert ((v == UNSURE) == inside).mean() > 0.999
    assert 0.2 < (v == UNSURE).mean() < 0.9
    assert all(w == [WHY_BAND] for w, u in zip(why, v) if u == UNSURE)


def test_very_accurate_model_has_an_empty_band_and_keeps_the_guarantee():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    z = (2 * y - 1) * 3 + rng.normal(0, 1.5, 3000)      # ~97.7% accurate: q < 0 at alpha 0.05
    vm = VerdictModel(cal_logits=z[:1000], cal_labels=y[:1000], alpha=0.05)
    assert vm.quantile(0.5) < 0 and vm.band_is_empty(0.5)
    v, _ = decide(z[1000:], None, vm, 0.5)
    v = np.asarray(v)
    assert (v != UNSURE).all()                          # empty sets are decided, not UNSURE
    wrong = np.where(z[1000:] >= 0, FAKE, REAL) != np.where(y[1000:] == 1, FAKE, REAL)
    assert wrong.mean() <= 0.05                         # decided and wrong: at most alpha
    assert "the band is empty" in " ".join(vm.describe(0.5))


def test_empty_set_is_decided_by_hand():
    # calibration scores (s = m for REAL, -m for FAKE): REALs at logits -3, -2, -1, FAKEs at 1, 2, 3 and
    # one REAL at 0.5 (wrong): scores 3 negative values per class ... sorted: -3,-3,-2,-2,-1,-1,0.5
    z = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 0.5])
    y = np.array([0, 0, 0, 1, 1, 1, 0])
    vm = VerdictModel(cal_logits=z, cal_labels=y, alpha=0.3)
    # k = ceil(8 * 0.7) = 6 -> 6th smallest of (-3,-3,-2,-2,-1,-1,0.5) = -1: q < 0, no two-class set
    assert vm.quantile(0.5) == pytest.approx(-1.0)
    v, why = decide([0.2, -0.5, 1.5], None, vm, 0.5)
    assert v == [FAKE, REAL, FAKE] and why == [[], [], []]   # |m| < 1: empty sets, decided at the threshold
    vm2 = replace(vm, alpha=0.1)
    # k = ceil(8 * 0.9) = 8 > 7 -> q = +inf: every set holds both classes
    v2, why2 = decide([0.2, 5.0], None, vm2, 0.5)
    assert v2 == [UNSURE, UNSURE] and why2 == [[WHY_BAND], [WHY_BAND]]
    vm3 = VerdictModel(cal_logits=np.r_[z, 1.5], cal_labels=np.r_[y, 0], alpha=0.2)
    # scores -3,-3,-2,-2,-1,-1,0.5,1.5; k = ceil(9 * 0.8) = 8 -> q = 1.5: |m| <= 1.5 is UNSURE
    assert vm3.quantile(0.5) == pytest.approx(1.5)
    v3, _ = decide([1.4, -1.6, -1.5], None, vm3, 0.5)
    assert v3 == [UNSURE, REAL, UNSURE]


def test_band_widens_monotonically_as_alpha_shrinks():
    """Across alphas on both sides of the model's error rate (~4%), a smaller alpha never gives fewer UNSURE."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 6000)
    z = (2 * y - 1) * 2.6 + rng.normal(0, 1.5, 6000)    # ~96% accurate
    vm = VerdictModel(cal_logits=z[:2000], cal_labels=y[:2000])
    shares = [np.mean(np.asarray(decide(z[2000:], None, replace(vm, alpha=a), 0.5)[0]) == UNSURE)
              for a in (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)]
    assert all(a >= b for a, b in zip(shares, shares[1:])), shares
    assert shares[0] > 0.05 and shares[-1] == 0.0


def test_familiarity_flags_planted_outliers_and_few_inliers():
    rng = np.random.default_rng(2)
    c = 16
    mu = np.zeros((2, c)); mu[1, 0] = 3.0
    def draw(n, shift=0.0):
        y = rng.integers(0, 2, n)
        return mu[y] + rng.normal(0, 1, (n, c)) + shift, y
    f_tr, y_tr = draw(4000)
    f_ref, _ = draw(2000)
    fam = fit_familiarity(f_tr, y_tr, f_ref, flag_rate=0.05)
    f_in, _ = draw(4000)
    flagged_in = (fam.score(f_in) < 0.05).mean()
    assert flagged_in <= 0.07                           # the stated rate (5%) plus sampling noise
    assert flagged_in >= 0.02                           # the cut-off is where it says, not at infinity
    f_out, _ = draw(500, shift=4.0)
    assert (fam.score(f_out) < 0.05).mean() >= 0.95
    # p-value by hand: reference distances 1..4 -> an image at distance 2.5 has 2 at least as far: (2+1)/(4+1)
    f = Familiarity(means=np.zeros((2, 1)), precision=np.eye(1), reference=np.array([1.0, 2.0, 3.0, 4.0]))
    assert f.score(np.array([[2.5]]))[0] == pytest.approx(0.6)
    assert f.score(np.array([[9.0]]))[0] == pytest.approx(0.2)


def test_decide_reasons_and_old_checkpoints():
    vm = VerdictModel(cal_logits=np.array([3.0, -3.0, -2.0, 2.0]), cal_labels=np.array([1, 0, 1, 0]), alpha=0.5,
                      familiarity=Familiarity(np.zeros((2, 1)), np.eye(1), np.array([1.0, 2.0, 3.0])))
    # two calibration errors at |logit| 2: scores [-3, -3, 2, 2]; q (alpha 0.5, n 4) = rank ceil(2.5) = 3 -> 2:
    # UNSURE when |logit| <= 2
    v, why = decide([5.0, 0.5, -5.0], [0.9, 0.9, 0.01], vm, 0.5)
    assert v == [FAKE, UNSURE, UNSURE]
    assert why == [[], [WHY_BAND], [WHY_UNFAMILIAR]]
    # no verdict model at all (old checkpoint): the label at the threshold, never UNSURE
    v, why = decide([5.0, 0.5, -5.0], None, None, 0.5)
    assert v == [FAKE, FAKE, REAL] and why == [[], [], []]
    old = VerdictModel.from_checkpoint_meta({})
    assert not old.has_band and old.familiarity is None
    assert any("NOT" in s for s in old.describe())


def test_verdict_summary_counts():
    vm = VerdictModel(cal_logits=np.array([3.0, -3.0, -2.0, 2.0]), cal_labels=np.array([1, 0, 1, 0]), alpha=0.5)  # q = 2
    # logits: right+sure, wrong+sure, wrong+unsure(band), right+unsure(band)
    s = verdict_summary([1, 0, 0, 1], [5.0, 4.0, 1.0, 1.5], None, vm, 0.5)
    assert s["share_unsure"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["share_wrong_decided"] == pytest.approx(0.25)
    assert s["errors_caught_by_unsure"] == pytest.approx(0.5)
    assert logit_of(0.5) == 0.0


def test_checkpoint_without_verdict_still_loads_and_predicts(tmp_path):
    """A checkpoint from before the verdict (no "verdict" entry) predicts; its verdict is the label."""
    import torch
    from PIL import Image
    from core.model.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
    from core.model.models import build_model
    from core.inference.predict import predict_many
    from core.data.preprocess import PreprocessConfig
    torch.manual_seed(0)
    model = build_model("seed-v1", input_size=32, channels=[4, 8, 8], hidden=8)
    ck = make_checkpoint(model, "seed-v1", {"input_size": 32, "channels": [4, 8, 8], "hidden": 8}, PreprocessConfig())
    assert "verdict" not in ck
    save_checkpoint(ck, tmp_path / "old.pt")
    lm = load_checkpoint(tmp_path / "old.pt")
    assert not lm.verdict.has_band and lm.verdict.familiarity is None
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    (pred,) = predict_many(lm, [("a.png", str(tmp_path / "a.png"))])
    line = pred.as_json(0.5, lm.verdict)
    assert line["verdict"] == line["label"] and line["familiarity"] is None and "why" not in line
    assert any("no familiarity model" in s for s in lm.verdict.describe())


def test_calibration_temperature_recovers_a_planted_scale_and_cli_writes_a_copy(tmp_path, capsys):
    """Calibration logits that are 2.5x the true log-odds: the fitted T is 2.5 (within sampling error),
    the CLI writes a copy with that T, leaves the original alone, and refuses a checkpoint without data."""
    import torch
    from core.model.checkpoint import file_sha256, load_checkpoint, make_checkpoint, save_checkpoint
    from core.model.models import build_model
    from core.data.preprocess import PreprocessConfig
    from core.verdict.recalibrate import main
    from core.verdict.verdict import calibration_temperature
    rng = np.random.default_rng(0)
    u = rng.normal(0, 2, 20000)                                  # true log-odds
    y = (rng.random(20000) < 1 / (1 + np.exp(-u))).astype(int)
    meta = {"calibration": {"logits": torch.tensor(2.5 * u, dtype=torch.float32),
                            "labels": torch.tensor(y), "alpha": 0.05, "n": 20000}}
    assert abs(calibration_temperature(meta) - 2.5) < 0.1
    assert calibration_temperature({}) is None and calibration_temperature(None) is None
    args = {"input_size": 32, "channels": [4, 8, 8], "hidden": 8}
    model = build_model("seed-v1", **args)
    save_checkpoint(make_checkpoint(model, "seed-v1", args, PreprocessConfig(), verdict=meta), tmp_path / "m.pt")
    before = file_sha256(tmp_path / "m.pt")
    assert main(["--weights", str(tmp_path / "m.pt"), "--fit-temperature", str(tmp_path / "t.pt")]) == 0
    assert abs(load_checkpoint(tmp_path / "t.pt").temperature - 2.5) < 0.1
    assert load_checkpoint(tmp_path / "m.pt").temperature == 1.0 and file_sha256(tmp_path / "m.pt") == before
    save_checkpoint(make_checkpoint(model, "seed-v1", args, PreprocessConfig()), tmp_path / "old.pt")
    assert main(["--weights", str(tmp_path / "old.pt"), "--fit-temperature", str(tmp_path / "x.pt")]) == 2
    assert "no calibration split" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_set_alpha_writes_a_copy_whose_band_is_at_that_level(tmp_path, capsys):
    """--set-alpha 0.3 writes a copy whose band is at the 0.3 level (quantile worked out by hand below), leaves the
    original alone, and refuses a checkpoint without calibration data or an alpha outside (0, 0.5)."""
    import torch
    from core.model.checkpoint import file_sha256, load_checkpoint, make_checkpoint, save_checkpoint
    from core.model.models import build_model
    from core.data.preprocess import PreprocessConfig
    from core.verdict.recalibrate import main
    # REAL calibration images at logits 0.5, 1.5, ..., 9.5 (threshold 0.5: margins m = z, scores s = m): wrong
    # side, so s = +z. ceil((n + 1)(1 - alpha)) / n with n = 10: alpha 0.05 -> rank 11 > n -> q = inf (band is
    # everything); alpha 0.3 -> rank ceil(7.7) = 8 -> q = 7.5.
    z = torch.arange(10, dtype=torch.float32) + 0.5
    meta = {"calibration": {"logits": z, "labels": torch.zeros(10, dtype=torch.int64), "alpha": 0.05, "n": 10}}
    args = {"input_size": 32, "channels": [4, 8, 8], "hidden": 8}
    model = build_model("seed-v1", **args)
    save_checkpoint(make_checkpoint(model, "seed-v1", args, PreprocessConfig(), verdict=meta), tmp_path / "m.pt")
    before = file_sha256(tmp_path / "m.pt")
    assert main(["--weights", str(tmp_path / "m.pt"), "--set-alpha", "0.3", str(tmp_path / "a.pt")]) == 0
    vm = load_checkpoint(tmp_path / "a.pt").verdict
    assert vm.alpha == pytest.approx(0.3) and vm.quantile(0.5) == pytest.approx(7.5)
    assert load_checkpoint(tmp_path / "m.pt").verdict.quantile(0.5) == np.inf
    assert file_sha256(tmp_path / "m.pt") == before
    assert main(["--weights", str(tmp_path / "m.pt"), "--set-alpha", "0.7", str(tmp_path / "b.pt")]) == 2
    save_checkpoint(make_checkpoint(model, "seed-v1", args, PreprocessConfig()), tmp_path / "old.pt")
    assert main(["--weights", str(tmp_path / "old.pt"), "--set-alpha", "0.1", str(tmp_path / "c.pt")]) == 2
    err = capsys.readouterr().err
    assert "alpha must be in" in err and "no calibration split" in err
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "c.pt").exists()


def test_held_out_row_fake_unsure_and_unfamiliar_by_hand():
    from core.audits.generalize import held_out_row
    vm = VerdictModel(cal_logits=np.array([3.0, -3.0, -2.0, 2.0]), cal_labels=np.array([1, 0, 1, 0]), alpha=0.5,
                      familiarity=Familiarity(np.zeros((2, 1)), np.eye(1), np.array([1.0, 2.0, 3.0])))
    # band (q = 2, as above): UNSURE when |logit| <= 2; unfamiliar when familiarity < 0.05
    y = [0, 0, 1, 1, 1, 1]
    z = [-5.0, 0.5, 5.0, -5.0, 1.0, -4.0]        # fakes: right+sure, wrong+sure, band, wrong+sure
    fam = [0.9, 0.9, 0.9, 0.01, 0.01, 0.9]        # fakes 2 and 3 unfamiliar (fake 3 also in the band)
    row = held_out_row(y, z, fam, vm, 0.5)
    assert row["fake_unsure"] == pytest.approx(2 / 4)          # fake 2 (unfamiliar) and fake 3 (band, unfamiliar)
    assert row["fake_unfamiliar"] == pytest.approx(2 / 4)
    assert row["share_wrong_decided"] == pytest.approx(1 / 6)   # only the last fake (the first REAL is in the band)
    fam2 = [0.9] * 6
    row2 = held_out_row(y, z, fam2, vm, 0.5)
    assert row2["fake_unsure"] == pytest.approx(1 / 4) and row2["fake_unfamiliar"] == 0
    assert held_out_row(y, z, None, vm, 0.5)["fake_unfamiliar"] is None


def test_verdict_cli_summary_uses_the_checkpoints_verdict_data(trained_ckpt, tiny_cifake, capsys):
    """`python -m core recalibrate --weights W --data D` reports the same UNSURE shares as the evaluation, and
    describes the band and familiarity the checkpoint carries (it once read them from the wrong place and
    reported every checkpoint as having neither, with 0% UNSURE)."""
    import json
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    from core.verdict.recalibrate import main
    lm = load_checkpoint(trained_ckpt)
    assert lm.verdict.has_band and lm.verdict.familiarity is not None
    df, m = evaluate(lm, open_dataset(tiny_cifake, split="test"))
    assert main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["all"]["share_unsure"] == pytest.approx(m["verdict"]["share_unsure"])
    assert out["summary"]["all"]["share_unsure"] == pytest.approx((df["verdict"] == UNSURE).mean())
    assert out["describe"][0].startswith("UNSURE near the threshold")
    assert out["describe"][1].startswith("UNSURE unlike the training data")


def test_fit_platt_by_hand_and_on_a_planted_model():
    """Two logit values carry the whole fit: at z = +1 8 of 10 are FAKE, at z = -1 4 of 10. The saturated
    logistic fit gives a + c = logit(0.8) = ln 4 and -a + c = logit(0.4) = ln(2/3), so a = ln(6) / 2 and
    c = ln(8/3) / 2: T = 1 / a = 2 / ln 6 = 1.1162, b = c = 0.4904. A planted (T, b) is recovered from 20,000
    draws; classes the logits separate perfectly put T at its lower bound; one class is refused."""
    from core.metrics.metrics import fit_platt
    z = np.r_[np.ones(10), -np.ones(10)]
    y = np.r_[np.ones(8), np.zeros(2), np.ones(4), np.zeros(6)]
    t, b = fit_platt(z, y)
    assert t == pytest.approx(2 / math.log(6), abs=1e-6) and b == pytest.approx(math.log(8 / 3) / 2, abs=1e-6)
    rng = np.random.default_rng(0)
    zz = rng.normal(0, 3, 20000)
    yy = (rng.random(20000) < 1 / (1 + np.exp(-(zz / 0.7 - 1.5)))).astype(int)
    t, b = fit_platt(zz, yy)
    assert t == pytest.approx(0.7, abs=0.03) and b == pytest.approx(-1.5, abs=0.1)
    t, b = fit_platt([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    assert t == pytest.approx(0.05) and abs(b) < 1e-3
    with pytest.raises(ValueError, match="both classes"):
        fit_platt([1.0, 2.0], [1, 1])


def test_fit_platt_cli_folds_the_offset_into_the_model(tmp_path, capsys):
    """--fit-platt on the hand case above: the copy's logits are the original's plus b * T = ln(8/3) / ln 6 on
    any image, its temperature is T, its stored calibration logits moved by the same offset (so a second
    calibration finds nothing left: T and b unchanged, offset 0), the original is untouched, and checkpoints
    without calibration data or without a single-logit layer (an ensemble) are refused."""
    import torch
    from core.model.checkpoint import file_sha256, load_checkpoint, make_checkpoint, read_checkpoint, save_checkpoint
    from core.metrics.metrics import fit_platt
    from core.model.models import build_model
    from core.data.preprocess import PreprocessConfig
    from core.verdict.recalibrate import main
    z = torch.tensor([1.0] * 10 + [-1.0] * 10)
    labels = torch.tensor([1] * 8 + [0] * 2 + [1] * 4 + [0] * 6)
    meta = {"calibration": {"logits": z, "labels": labels, "alpha": 0.3, "n": 20}}
    args = {"input_size": 32, "channels": [4, 8, 8], "hidden": 8}
    torch.manual_seed(0)
    model = build_model("seed-v1", **args).eval()
    save_checkpoint(make_checkpoint(model, "seed-v1", args, PreprocessConfig(), verdict=meta), tmp_path / "m.pt")
    before = file_sha256(tmp_path / "m.pt")
    assert main(["--weights", str(tmp_path / "m.pt"), "--fit-platt", str(tmp_path / "p.pt")]) == 0
    offset = math.log(8 / 3) / math.log(6)
    assert f"logit offset {offset:+.4f}" in capsys.readouterr().out
    old, new = load_checkpoint(tmp_path / "m.pt"), load_checkpoint(tmp_path / "p.pt")
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(new.model(x) - old.model(x), offset, atol=1e-5)
        np.testing.assert_allclose(new.inference_model(x) - old.inference_model(x), offset, atol=1e-5)
    assert new.temperature == pytest.approx(2 / math.log(6), abs=1e-6) and old.temperature == 1.0
    np.testing.assert_allclose(new.verdict.cal_logits, z.numpy() + offset, atol=1e-6)
    assert fit_platt(new.verdict.cal_logits, labels.numpy()) == pytest.approx((new.temperature, 0.0), abs=1e-5)
    assert read_checkpoint(tmp_path / "p.pt")[0]["metrics"]["platt"]["logit_offset"] == pytest.approx(offset)
    assert main(["--weights", str(tmp_path / "p.pt"), "--fit-platt", str(tmp_path / "pp.pt")]) == 0   # again: no change
    pp = read_checkpoint(tmp_path / "pp.pt")[0]
    assert pp["metrics"]["platt"]["logit_offset"] == pytest.approx(offset, abs=1e-5)
    assert pp["metrics"]["platt"]["b"] == pytest.approx(math.log(8 / 3) / 2, abs=1e-5)
    assert pp["temperature"] == pytest.approx(new.temperature, abs=1e-5)
    assert file_sha256(tmp_path / "m.pt") == before
    from core.report.cards import model_card
    assert f"logit offset {offset:+.3f} folded" in model_card(str(tmp_path / "p.pt"), new, {})
    assert "Platt" not in model_card(str(tmp_path / "m.pt"), old, {})
    save_checkpoint(make_checkpoint(model, "seed-v1", args, PreprocessConfig()), tmp_path / "old.pt")
    assert main(["--weights", str(tmp_path / "old.pt"), "--fit-platt", str(tmp_path / "x.pt")]) == 2
    assert "no calibration split" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    ck, _ = read_checkpoint(tmp_path / "m.pt")
    ck["state_dict"] = {k.replace("classifier", "head"): v for k, v in ck["state_dict"].items()}
    save_checkpoint(ck, tmp_path / "ens.pt")
    assert main(["--weights", str(tmp_path / "ens.pt"), "--fit-platt", str(tmp_path / "y.pt")]) == 2
    assert "single-logit" in capsys.readouterr().err and not (tmp_path / "y.pt").exists()
