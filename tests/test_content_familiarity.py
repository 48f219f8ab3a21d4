"""The familiarity's content part (core.verdict.content): kNN on a content encoder's normalised features, combined
with the model-feature and colour parts by weighted Bonferroni, stored in the checkpoint as plain tensors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.verdict.content import ContentEncoder, ContentFamiliarity, fit_content
from core.verdict.verdict import (PART_NAMES, WHY_UNFAMILIAR, Familiarity, VerdictModel, decide, explain,
                                  fit_familiarity, fired_parts)


def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def content_model(bank, reference, k=5):
    """A ContentFamiliarity over given normalised bank features (the encoder is not used by `distance`)."""
    return ContentFamiliarity(encoder=ContentEncoder(), bank=torch.as_tensor(bank, dtype=torch.float32),
                              labels=np.zeros(len(bank), np.int64), paths=tuple(f"img{i}" for i in range(len(bank))),
                              reference=np.sort(reference), k=k)


def collapse_case(seed=0, d=32, c=16):
    """In distribution: content around direction e0, model features around the class means. The planted
    out-of-distribution cluster: content around e1 (new content), model features ON the REAL mean (collapsed)."""
    rng = np.random.default_rng(seed)
    mu = np.zeros((2, c)); mu[1, 0] = 3.0
    u, v = np.eye(d)[0], np.eye(d)[1]

    def draw(n, direction, collapsed=False):
        y = rng.integers(0, 2, n)
        f = (mu[np.zeros(n, int)] if collapsed else mu[y]) + rng.normal(0, 1, (n, c))
        return f, y, unit(direction + rng.normal(0, 0.15, (n, d)))
    f_tr, y_tr, c_tr = draw(3000, u)
    f_ref, _, c_ref = draw(1500, u)
    return draw, f_tr, y_tr, c_tr, f_ref, c_ref, u, v


def test_content_part_flags_a_collapsed_cluster_that_the_feature_part_misses():
    draw, f_tr, y_tr, c_tr, f_ref, c_ref, u, v = collapse_case()
    maha = fit_familiarity(f_tr, y_tr, f_ref, flag_rate=0.05)
    cm = content_model(c_tr, np.zeros(1))
    cm = content_model(c_tr, cm.distance(c_ref))
    both = Familiarity(means=maha.means, precision=maha.precision, reference=maha.reference, content=cm)
    f_out, _, c_out = draw(400, v, collapsed=True)
    assert (maha.score(f_out) < 0.05).mean() <= 0.10            # the model's own features see nothing unusual
    assert (both.score(f_out, content=c_out) < 0.05).mean() >= 0.95
    parts = both.parts(f_out, content=c_out)
    assert (parts["content"] < 0.05).mean() >= 0.95 and (parts["features"] < 0.05).mean() <= 0.10
    # The verdict says which part fired.
    i = int(np.argmin(parts["content"]))
    assert fired_parts({k: p[i] for k, p in parts.items()}, 0.05) == ["content"]


@pytest.mark.parametrize("seed", [1, 2])
def test_in_distribution_flag_rate_holds_on_fresh_data(seed):
    draw, f_tr, y_tr, c_tr, f_ref, c_ref, u, v = collapse_case(seed)
    maha = fit_familiarity(f_tr, y_tr, f_ref, flag_rate=0.05, ref_colour=np.linspace(0.2, 0.6, len(f_ref)))
    cm = content_model(c_tr, content_model(c_tr, np.zeros(1)).distance(c_ref))
    fam = Familiarity(means=maha.means, precision=maha.precision, reference=maha.reference,
                      colour_reference=maha.colour_reference, content=cm)
    assert fam.shares == pytest.approx({"colour": 0.2, "content": 0.4, "features": 0.4})
    f_in, _, c_in = draw(4000, u)
    colour = np.random.default_rng(seed).uniform(0.2, 0.6, 4000)
    flagged = (fam.score(f_in, colour, c_in) < 0.05).mean()
    assert 0.02 <= flagged <= 0.065                               # at most the stated 5%, plus sampling noise


def test_part_values_by_hand():
    # content reference distances 0.1..0.4; an image whose 1st-nearest bank row is at distance 0.25 has 2 of 4 at
    # least as far: p = 3/5, over its share 0.4 -> 1.0 (capped); one at 0.9: p = 1/5 -> 0.5
    bank = np.array([[1.0, 0.0]])
    cm = content_model(bank, np.array([0.1, 0.2, 0.3, 0.4]), k=1)
    fam = Familiarity(means=np.zeros((2, 1)), precision=np.eye(1), reference=np.array([1.0, 2.0, 3.0, 4.0]),
                      content=cm)
    q = np.array([[np.cos(a), np.sin(a)] for a in (2 * np.arcsin(0.25 / 2), 2 * np.arcsin(0.9 / 2))])
    parts = fam.parts(np.array([[2.5], [2.5]]), content=q)
    # features: distance 2.5 -> p 0.6 over share 0.6 -> 1.0
    assert parts["features"] == pytest.approx([1.0, 1.0])
    assert parts["content"] == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="content"):
        fam.parts(np.array([[2.5]]))


def test_neighbours_equal_a_brute_force_search():
    rng = np.random.default_rng(4)
    bank, q = unit(rng.normal(size=(300, 16))), unit(rng.normal(size=(20, 16)))
    idx, dist = content_model(bank, np.zeros(1)).neighbours(q, 6)
    brute = np.linalg.norm(q[:, None, :] - bank[None, :, :], axis=2)
    order = np.argsort(brute, axis=1)[:, :6]
    assert (idx == order).all()
    assert dist == pytest.approx(np.take_along_axis(brute, order, axis=1), abs=1e-5)


def test_fitted_content_part_round_trips_through_a_weights_only_checkpoint(tmp_path):
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.integers(0, 256, (96, 3, 32, 32), dtype=np.uint8))
    fam, info = fit_content(x[:64], np.arange(64) % 2, [f"train/{i}.jpg" for i in range(64)], x[64:], epochs=1,
                            k=3, log=lambda *a: None)
    assert info["epochs"] == 1 and len(fam.paths) == 64 and len(fam.reference) == 32
    torch.save({"content": fam.as_meta(info)}, tmp_path / "c.pt")
    back = ContentFamiliarity.from_meta(torch.load(tmp_path / "c.pt", weights_only=True)["content"])
    assert back.paths == fam.paths and back.k == 3
    assert back.distance(back.features(x[64:])) == pytest.approx(fam.distance(fam.features(x[64:])), abs=2e-3)
    # windows (N, K, 3, S, S) average to one feature per image; other sizes are resampled to 32 px
    assert back.features(x[:4, None].expand(4, 2, 3, 32, 32)).shape == (4, fam.bank.shape[1])
    big = torch.nn.functional.interpolate(x[:4].float(), size=64).byte()
    assert back.features(big).shape == (4, fam.bank.shape[1])


def test_explain_names_the_part_that_fired():
    cm = content_model(np.array([[1.0, 0.0]]), np.array([0.1, 0.2]), k=1)
    fam = Familiarity(means=np.zeros((2, 1)), precision=np.eye(1), reference=np.array([1.0, 2.0]), content=cm)
    vm = VerdictModel(familiarity=fam)
    v, why = decide([3.0], [0.01], vm)
    assert v == ["UNSURE"] and why == [[WHY_UNFAMILIAR]]
    text = explain(v[0], why[0], 0.95, 0.01, vm, image_parts={"features": 1.0, "content": 0.01})
    assert PART_NAMES["content"] in text and PART_NAMES["features"] not in text
    assert any("content is far from every training image" in line for line in vm.describe())


def test_checkpoints_without_a_content_part_keep_their_scores(trained_ckpt):
    """A checkpoint from before the content part: the same familiarity as the two-part rule, and predict works."""
    from core.inference.predict import main as predict_main, predict_many
    from core.model.checkpoint import load_checkpoint
    lm = load_checkpoint(trained_ckpt)
    fam = lm.verdict.familiarity
    assert fam.content is None and set(fam.shares) == {"colour", "features"}
    rng = np.random.default_rng(0)
    f, colour = rng.normal(size=(50, fam.width)), rng.uniform(0, 1, 50)
    p = np.minimum(1, np.minimum(
        np.minimum(1, (1 + fam.reference.size - np.searchsorted(fam.reference, fam.distance(f), side="left"))
                   / (fam.reference.size + 1)) / 0.8,
        (np.searchsorted(fam.colour_reference, colour, side="right") + 1) / (fam.colour_reference.size + 1) / 0.2))
    assert fam.score(f, colour) == pytest.approx(p)
    from tests.conftest import jpeg_bytes, smooth_image
    pred = predict_many(lm, [("a.jpg", jpeg_bytes(smooth_image(rng)))], nearest=6)[0]
    assert pred.error is None and pred.nearest is None and set(pred.familiarity_parts) == {"colour", "features"}
    assert predict_main(["--weights", str(trained_ckpt), "--nearest", "6", "x.jpg"]) == 2


def test_predict_lists_the_nearest_training_images(trained_ckpt, tiny_cifake, tmp_path, capsys):
    from core.verdict.recalibrate import main as recal_main
    from core.inference.predict import main as predict_main
    out = tmp_path / "with_content.pt"
    assert recal_main(["--weights", str(trained_ckpt), "--fit-content", str(out), "--content-epochs", "1",
                       "--data", str(tiny_cifake)]) == 0
    capsys.readouterr()
    img = next((tiny_cifake / "test" / "FAKE").iterdir())
    assert predict_main(["--weights", str(out), "--nearest", "6", str(img)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert len(line["nearest"]) == 6 and set(line["familiarity_parts"]) == {"colour", "content", "features"}
    d = [n["distance"] for n in line["nearest"]]
    assert d == sorted(d) and all(n["label"] in ("REAL", "FAKE") for n in line["nearest"])
    assert all(n["path"].startswith(str(tiny_cifake)) for n in line["nearest"])


def test_new_content_table_by_hand():
    """Four domains: clipart (REAL), gan-clipart (FAKE, scored against clipart), icons (REAL), odd (FAKE, against
    every REAL image). Without a verdict model nothing is UNSURE, so wrong and not UNSURE is the error rate."""
    import pandas as pd
    from core.audits.new_content import new_content_summary, new_content_table
    df = pd.DataFrame({"label": [0, 0, 1, 1, 0, 0, 1, 1],
                       "logit": [-2.0, 1.0, 2.0, -1.0, -3.0, -2.5, 0.5, 3.0],
                       "source": ["clipart", "clipart", "gan-clipart", "gan-clipart", "icons", "icons", "odd", "odd"]})
    df["prob_fake"] = 1 / (1 + np.exp(-df["logit"]))
    t = new_content_table(df, None).set_index("domain")
    assert t.loc["clipart", "acc"] == 0.5 and t.loc["clipart", "share_wrong_decided"] == 0.5
    assert t.loc["gan-clipart", "auc_against"] == "clipart"
    # gan-clipart logits {2, -1} against clipart {-2, 1}: pairs won 3 of 4
    assert t.loc["gan-clipart", "auc"] == pytest.approx(0.75)
    assert t.loc["odd", "auc_against"] == "all REAL"
    # odd {0.5, 3} against all REAL {-2, 1, -3, -2.5}: 7 of 8 pairs
    assert t.loc["odd", "auc"] == pytest.approx(7 / 8)
    assert t.loc["all REAL", "n"] == 4 and t.loc["all", "n"] == 8
    s = new_content_summary(new_content_table(df, None))
    assert s["worst_domain"] in ("clipart", "gan-clipart") and s["worst_wrong_decided"] == 0.5
    assert s["real_unsure"] == 0.0 and s["wrong_decided"] == pytest.approx(2 / 8)   # clipart 1.0, gan-clipart -1.0
