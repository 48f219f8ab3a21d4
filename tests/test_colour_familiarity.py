"""The colour part of "unlike the training data": an image far less colourful than the held-out images (a
grayscale photo for a model trained on colour ones) is flagged, in-distribution images still at most at the
flag rate. Hand-checked numbers, planted data, the wiring in core.model.train, core.inference.evaluate, core.inference.predict and the
`--fit-colour` CLI that adds it to an older checkpoint."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.verdict.verdict import (COLOUR_SHARE, UNSURE, WHY_UNFAMILIAR, Familiarity, VerdictModel, colourfulness,
                          decide, explain, fit_familiarity, head_share)


def test_colourfulness_and_head_share_by_hand():
    gray = torch.full((1, 3, 4, 4), 77, dtype=torch.uint8)
    red = torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    red[:, 0] = 255
    half = gray.clone()
    half[0, 0, :2] = 127                                   # 8 of 16 pixels: max - min = 127 - 77 = 50
    assert colourfulness(torch.cat([gray, red, half])) == pytest.approx([0.0, 1.0, 50 / 255 / 2])
    windows = torch.stack([torch.cat([gray, red])])        # (1, K=2, 3, 4, 4): the windows' mean
    assert colourfulness(windows) == pytest.approx([0.5])
    # (1 + #reference <= v) / (n + 1)
    assert head_share(np.array([0.1, 0.2, 0.3]), [0.05, 0.2, 0.5]) == pytest.approx([0.25, 0.75, 1.0])


def test_score_combines_features_and_colour_by_weighted_bonferroni_by_hand():
    colour_ref = np.arange(1, 20) / 20                    # 19 reference images: 0.05 ... 0.95
    f = Familiarity(means=np.zeros((2, 1)), precision=np.eye(1), reference=np.array([1.0, 2.0, 3.0, 4.0]),
                    colour_reference=colour_ref, colour_share=0.2)
    # features at distance 2.5: p = 3/5 = 0.6 -> 0.6 / 0.8 = 0.75; colour 0: p_c = 1/20 -> 0.05 / 0.2 = 0.25
    assert f.score(np.array([[2.5]]), [0.0])[0] == pytest.approx(0.25)
    # a colourful image: p_c = 20/20 -> 5, so the features decide: 0.75
    assert f.score(np.array([[2.5]]), [1.0])[0] == pytest.approx(0.75)
    # far features: p = 1/5 -> 0.25
    assert f.score(np.array([[9.0]]), [1.0])[0] == pytest.approx(0.25)
    assert f.score(np.array([[0.0]]), [1.0])[0] == pytest.approx(1.0)    # capped at 1
    with pytest.raises(ValueError, match="colourfulness"):
        f.score(np.array([[2.5]]))
    # without a colour reference nothing changes (older checkpoints)
    old = Familiarity(means=np.zeros((2, 1)), precision=np.eye(1), reference=np.array([1.0, 2.0, 3.0, 4.0]))
    assert old.score(np.array([[2.5]]))[0] == pytest.approx(0.6)


def _colour_images(rng, n, size=8):
    """Colour images whose colourfulness varies from image to image (a random saturation each)."""
    base = rng.integers(0, 256, (n, 1, size, size))
    tint = rng.integers(-60, 61, (n, 3, size, size)) * rng.uniform(0.1, 1.0, (n, 1, 1, 1))
    return torch.as_tensor(np.clip(base + tint, 0, 255).astype(np.uint8))


def _grayscale(x):
    return x.float().mean(dim=1, keepdim=True).round().to(torch.uint8).expand(-1, 3, -1, -1)


def test_grayscale_images_are_flagged_and_in_distribution_ones_at_most_at_the_rate():
    rng = np.random.default_rng(3)
    c = 8
    mu = np.zeros((2, c)); mu[1, 0] = 3.0
    def feats(n):
        y = rng.integers(0, 2, n)
        return mu[y] + rng.normal(0, 1, (n, c)), y
    f_tr, y_tr = feats(4000)
    f_ref, _ = feats(1000)
    fam = fit_familiarity(f_tr, y_tr, f_ref, flag_rate=0.05, ref_colour=colourfulness(_colour_images(rng, 1000)))
    assert len(fam.colour_reference) == 1000 and np.all(np.diff(fam.colour_reference) >= 0)
    f_in, _ = feats(4000)
    x_in = _colour_images(rng, 4000)
    flagged_in = (fam.score(f_in, colourfulness(x_in)) < 0.05).mean()
    assert 0.02 <= flagged_in <= 0.07                      # the stated 5%, plus sampling noise
    # the same images made grayscale, features unchanged: the colour part alone flags every one
    assert (fam.score(f_in[:500], colourfulness(_grayscale(x_in[:500]))) < 0.05).all()
    # and without a colour part their features flag them at the in-distribution rate only
    no_colour = fit_familiarity(f_tr, y_tr, f_ref, flag_rate=0.05)
    assert (no_colour.score(f_in[:500]) < 0.05).mean() <= 0.09
    vm = VerdictModel(familiarity=fam)
    verdicts, why = decide(np.full(3, 4.0), fam.score(f_in[:3], [0.0, 0.0, 0.0]), vm)
    assert verdicts == [UNSURE] * 3 and all(w == [WHY_UNFAMILIAR] for w in why)


def test_describe_names_the_colour_part_and_when_it_cannot_flag():
    base = dict(means=np.zeros((2, 1)), precision=np.eye(1), reference=np.arange(1.0, 1001.0))
    lines = VerdictModel(familiarity=Familiarity(**base, colour_reference=np.linspace(0, 1, 1000))).describe()
    assert any("less colourful" in s and "0.01" not in s and "cannot flag" not in s for s in lines)
    small = VerdictModel(familiarity=Familiarity(**base, colour_reference=np.linspace(0, 1, 13))).describe()
    assert any("With 13 reference images it cannot flag any image: it needs more than 99." in s for s in small)
    assert any("no colour reference" in s for s in VerdictModel(familiarity=Familiarity(**base)).describe())


def _with_colour_reference(ckpt_path, out, colour_ref):
    from core.model.checkpoint import read_checkpoint, save_checkpoint
    ck, _ = read_checkpoint(ckpt_path)
    if colour_ref is None:
        ck["verdict"]["familiarity"].pop("colour_reference", None)
    else:
        ck["verdict"]["familiarity"]["colour_reference"] = torch.tensor(np.sort(colour_ref), dtype=torch.float32)
    save_checkpoint(ck, out)
    return out


def test_train_stores_the_calibration_splits_colour_and_fit_colour_rebuilds_it(trained_ckpt, tmp_path, capsys):
    from core.model.checkpoint import load_checkpoint, read_checkpoint
    from core.verdict.recalibrate import main
    ck, _ = read_checkpoint(trained_ckpt)
    fam = ck["verdict"]["familiarity"]
    stored = fam["colour_reference"].numpy()
    assert len(stored) == len(fam["reference"]) == len(ck["verdict"]["calibration"]["logits"])
    assert fam["colour_share"] == COLOUR_SHARE
    # an older checkpoint (no colour part) gets the same reference back from its re-derived calibration split
    old = _with_colour_reference(trained_ckpt, tmp_path / "old.pt", None)
    assert load_checkpoint(old).verdict.familiarity.colour_reference is None
    assert main(["--weights", str(old), "--fit-colour", str(tmp_path / "new.pt")]) == 0
    assert f"colour reference of {len(stored)} calibration images" in capsys.readouterr().out
    rebuilt = read_checkpoint(tmp_path / "new.pt")[0]["verdict"]["familiarity"]["colour_reference"].numpy()
    assert rebuilt == pytest.approx(stored)
    assert read_checkpoint(old)[0]["verdict"]["familiarity"].get("colour_reference") is None   # not modified


def test_fit_colour_refuses_other_data_and_checkpoints_without_verdict_data(trained_ckpt, tmp_path, capsys):
    from conftest import make_cifake
    from core.model.checkpoint import read_checkpoint, save_checkpoint
    from core.verdict.recalibrate import main
    other = make_cifake(tmp_path / "other", seed=5)
    assert main(["--weights", str(trained_ckpt), "--data", str(other), "--fit-colour", str(tmp_path / "x.pt")]) == 2
    assert "differ from the ones stored at training time" in capsys.readouterr().err
    ck, _ = read_checkpoint(trained_ckpt)
    ck.pop("verdict")
    save_checkpoint(ck, tmp_path / "bare.pt")
    assert main(["--weights", str(tmp_path / "bare.pt"), "--fit-colour", str(tmp_path / "y.pt")]) == 2
    assert "no familiarity model" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_evaluate_and_predict_mark_grayscale_images_unsure(trained_ckpt, tiny_cifake, tmp_path):
    """The tiny fixture's calibration split is too small for the colour part to flag anything (13 images), so
    the checkpoint gets a 400-image colour reference of colour images, as a larger split would give."""
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    from core.inference.predict import predict_one
    from core.data.shifts import parse_shift
    rng = np.random.default_rng(0)
    path = _with_colour_reference(trained_ckpt, tmp_path / "c.pt", colourfulness(_colour_images(rng, 400, 32)))
    lm = load_checkpoint(path)
    ds = open_dataset(tiny_cifake, split="test")
    gray, _ = evaluate(lm, ds, shift=parse_shift("grayscale"))
    assert (gray["verdict"] == UNSURE).all() and (gray["familiarity"] < lm.verdict.familiarity.flag_rate).all()
    # colourful images (more colourful than every reference image: p_c = 1) keep their feature p-value, spent
    # at 1 - colour_share of the flag rate: exactly min(1, p / (1 - w)) of the checkpoint without a colour part
    plain = load_checkpoint(_with_colour_reference(trained_ckpt, tmp_path / "p.pt", None))
    colour, _ = evaluate(lm, ds)
    colour_plain, _ = evaluate(plain, ds)
    assert colourfulness(torch.zeros(0, 3, 2, 2, dtype=torch.uint8)).shape == (0,)
    assert colour["familiarity"].to_numpy() == pytest.approx(
        np.minimum(1, colour_plain["familiarity"].to_numpy() / (1 - COLOUR_SHARE)))
    # one uploaded grayscale image (mode L) through core.inference.predict
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(buf, format="PNG")
    pred = predict_one(lm, "gray.png", buf.getvalue(), with_cam=False)
    verdicts, why = decide([pred.logit], [pred.familiarity], lm.verdict, 0.5, lm.temperature)
    assert verdicts == [UNSURE] and WHY_UNFAMILIAR in why[0]
    assert pred.colourfulness == 0.0
    text = explain(verdicts[0], why[0], pred.prob_fake, pred.familiarity, lm.verdict, 0.5, lm.temperature,
                   pred.colourfulness)
    assert "far less colourful" in text and "colourfulness 0.000" in text
    assert "far less colourful" not in explain(verdicts[0], why[0], pred.prob_fake, pred.familiarity, lm.verdict,
                                               0.5, lm.temperature, 0.6)
