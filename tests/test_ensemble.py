"""Ensembles (core.model.models.Ensemble, core.model.ensemble): the logit is the weighted mean of the members' calibrated
logits, the members' spread joins the familiarity, a split shared by all members is checked, and the LOGO of an
ensemble recipe tabulates exactly what its stored predictions say."""
import dataclasses

import numpy as np
import pytest
import torch

from core.model.checkpoint import load_checkpoint
from core.model.ensemble import build_ensemble, ensemble_logo, main as ensemble_main
from core.inference.evaluate import evaluate, load_evaluation
from core.data.datasets import open_dataset
from core.audits.generalize import LEADERBOARD_COLUMNS, held_out_row, run_logo
from core.model.models import build_model, fuse_for_inference
from core.model.train import TrainConfig, load_data, train
from core.verdict.verdict import Familiarity, VerdictModel, calibration_temperature, features_of, pooled_features

from test_generalize import TINY, families_root, make_families  # noqa: F401  (fixture)

TS = {"arch": "two-stream", "model_args": {"channels": [4, 8, 8, 16], "hidden": 8}}
V21 = {"arch": "seed-v21", "model_args": {"channels": [8, 8, 16, 16], "hidden": 8}}


def test_ensemble_logit_is_weighted_mean_of_calibrated_member_logits():
    torch.manual_seed(0)
    ens = build_model("ensemble", members=[TS, V21], temperatures=[0.5, 2.0], weights=[0.25, 0.75]).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        z1, z2 = ens.members[0](x), ens.members[1](x)
        want = 0.25 * z1 / 0.5 + 0.75 * z2 / 2.0
        assert torch.allclose(ens(x), want, atol=1e-5)
        assert torch.allclose(fuse_for_inference(ens)(x), want, atol=1e-4)
        z, pooled = pooled_features(ens, x)
    assert torch.allclose(z, want, atol=1e-5)
    # pooled features: both members' pooled maps, then the members' calibrated logits
    assert pooled.shape == (5, 2 * 16 + 16 + 2)
    assert torch.allclose(pooled[:, -2:], torch.stack([z1 / 0.5, z2 / 2.0], dim=1), atol=1e-5)
    # the state dict holds the members' weights only: a member checkpoint's state loads into its slot
    assert set(ens.state_dict()) == {f"members.0.{k}" for k in ens.members[0].state_dict()} \
        | {f"members.1.{k}" for k in ens.members[1].state_dict()}


def test_ensemble_refuses_what_it_cannot_average():
    with pytest.raises(ValueError, match="summing to 1"):
        build_model("ensemble", members=[TS, V21], weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="temperatures"):
        build_model("ensemble", members=[TS, V21], temperatures=[1.0, 0.0])
    with pytest.raises(ValueError, match="differ in size"):   # 4x4 maps vs 2x2 maps, and vs 8x8 maps
        build_model("ensemble", members=[V21, {"arch": "seed-v21", "model_args": {"pool_last": True}}])
    with pytest.raises(ValueError, match="differ in size"):
        build_model("ensemble", members=[V21, {"arch": "seed-v1", "model_args": {}}])
    with pytest.raises(ValueError, match="cannot be ensembles"):
        build_model("ensemble", members=[{"arch": "ensemble", "model_args": {}}])


def test_familiarity_combines_distance_and_member_spread_by_bonferroni():
    # C = 2 features, then 2 member logits. Reference distances 1..4, reference spreads 0.1..0.4.
    fam = Familiarity(means=np.zeros((2, 2)), precision=np.eye(2), reference=np.array([1., 2., 3., 4.]),
                      spread_reference=np.array([0.1, 0.2, 0.3, 0.4]))
    logit = lambda p: np.log(p / (1 - p))    # noqa: E731
    feats = np.array([[0, 0, logit(0.5), logit(0.5)],       # distance 0 (p 5/5), spread 0 (p 5/5) -> 1
                      [0, 0, logit(0.3), logit(0.65)],      # spread 0.35: 1 reference >= -> p 2/5 -> 0.8
                      [0, 0, logit(0.2), logit(0.7)],       # spread 0.5: none >= -> p 1/5 -> 0.4
                      [3.5, 0, logit(0.5), logit(0.5)]])    # distance 3.5 (p 2/5), spread 0 -> 0.8
    assert np.allclose(fam.spread(feats), [0, 0.35, 0.5, 0])
    assert np.allclose(fam.distance(feats), [0, 0, 0, 3.5])
    assert np.allclose(fam.score(feats), [1.0, 0.8, 0.4, 0.8])
    # without members' columns the familiarity is the distance's p-value alone, as before
    plain = dataclasses.replace(fam, spread_reference=None)
    assert np.allclose(plain.score(feats[:, :2]), [1.0, 1.0, 1.0, 0.4])


@pytest.fixture(scope="module")
def two_members(families_root, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("members")
    paths = []
    for i, spec in enumerate((TS, V21)):
        cfg = TrainConfig(data=str(families_root), out=str(out / f"m{i}.pt"), **{**TINY, **spec})
        train(cfg, log=lambda *a: None)
        paths.append(out / f"m{i}.pt")
    return paths


def test_build_ensemble_from_members_trained_on_one_split(families_root, two_members, tmp_path):  # noqa: F811
    out = tmp_path / "ens.pt"
    ck = build_ensemble(two_members, out, log=lambda *a: None)
    lm = load_checkpoint(out)                      # weights_only, rebuilt from the file alone
    assert lm.arch == "ensemble" and ck["model_args"]["members"][1]["arch"] == "seed-v21"
    members = [load_checkpoint(p) for p in two_members]
    temps = [calibration_temperature(torch.load(p, weights_only=True)["verdict"]) for p in two_members]
    assert ck["model_args"]["temperatures"] == pytest.approx(temps)
    # the ensemble's logits are the mean of the members' logits, each divided by its temperature
    ds = open_dataset(families_root, split="test")
    df, _ = evaluate(lm, ds)
    dfs = [evaluate(m, ds)[0] for m in members]
    want = (dfs[0]["logit"] / temps[0] + dfs[1]["logit"] / temps[1]) / 2
    assert np.allclose(df["logit"], want, atol=1e-4)
    # its familiarity's spread reference is the members' calibrated P(FAKE) spread on the calibration split
    cfg = TrainConfig(data=str(families_root), **TINY)
    td = load_data(cfg, log=lambda *a: None)
    zs = [features_of(m.model, td.x_cal, torch.device("cpu"))[0] for m in members]
    p = [1 / (1 + np.exp(-z / t)) for z, t in zip(zs, temps)]
    assert np.allclose(np.sort(np.abs(p[0] - p[1])), lm.verdict.familiarity.spread_reference, atol=1e-5)
    assert len(lm.verdict.familiarity.spread_reference) == len(td.x_cal) == 22      # 0.2 of 48 + 3 x 20
    # and the verdict's calibration split is that same split (the conformal band is fitted on it)
    assert np.array_equal(lm.verdict.cal_labels, td.y_cal.numpy())
    assert any("ensemble" in s for s in lm.verdict.describe())
    # the model card names the members, their temperatures and weights, not member 0's recipe as the ensemble's
    from core.report.cards import model_card
    card = model_card(str(out), lm, {})
    assert "Ensemble of 2" in card and f"T {temps[1]:.3f}, weight 0.5" in card and "- Training:" not in card


def test_members_from_different_splits_are_refused(families_root, two_members, tmp_path):  # noqa: F811
    other = tmp_path / "seed1.pt"
    train(TrainConfig(data=str(families_root), out=str(other), **{**TINY, **TS, "seed": 1}), log=lambda *a: None)
    with pytest.raises(ValueError, match="not trained on the same split.*seed"):
        build_ensemble([two_members[0], other], tmp_path / "x.pt", log=lambda *a: None)
    assert ensemble_main(["--members", str(two_members[0]), str(other), "--out", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()
    # another seed on the same split (--split-seed 0) is a valid member: a seed ensemble
    same = tmp_path / "seed1-split0.pt"
    train(TrainConfig(data=str(families_root), out=str(same), **{**TINY, **TS, "seed": 1, "split_seed": 0}),
          log=lambda *a: None)
    ck = build_ensemble([two_members[0], same], tmp_path / "seeds.pt", log=lambda *a: None)
    assert [m["arch"] for m in ck["model_args"]["members"]] == ["two-stream", "two-stream"]
    assert not torch.equal(ck["state_dict"]["members.0.rgb.0.0.weight"], ck["state_dict"]["members.1.rgb.0.0.weight"])
    # a member whose stored calibration logits do not match the re-derived split (other data) is refused too
    moved = make_families(tmp_path / "moved", seed=5)
    with pytest.raises(ValueError, match="calibration split"):
        build_ensemble(two_members, tmp_path / "y.pt", data=str(moved), log=lambda *a: None)


def test_ensemble_logo_rows_equal_metrics_of_stored_predictions(families_root, tmp_path):  # noqa: F811
    dirs = []
    for i, spec in enumerate((TS, V21)):
        cfg = TrainConfig(data=str(families_root), out=str(tmp_path / "unused.pt"), **{**TINY, **spec})
        run_logo(cfg, tmp_path / f"logo{i}", families=["noise", "stripes"], log=lambda *a: None)
        dirs.append(tmp_path / f"logo{i}")
    board = ensemble_logo(dirs, tmp_path / "ens", log=lambda *a: None)
    assert list(board.columns) == LEADERBOARD_COLUMNS and board["held_out"].tolist() == ["noise", "stripes"]
    for _, row in board.iterrows():
        fam = row["held_out"]
        df, _ = load_evaluation(tmp_path / "ens" / fam / "eval")
        ck = torch.load(tmp_path / "ens" / fam / "model.pt", weights_only=True)
        assert ck["train_config"]["exclude_fake_sources"] == [fam]
        assert set(df.loc[df["label"] == 1, "source"]) == {fam}
        # the row is what its stored predictions say
        want = held_out_row(df["label"], df["logit"], df["familiarity"].to_numpy(),
                            VerdictModel.from_checkpoint_meta(ck), 0.5, ck["temperature"])
        for k in ("auc", "fake_recall", "share_unsure", "share_wrong_decided"):
            assert row[k] == pytest.approx(want[k])
        # and the fold ensemble's logits are its two fold members' calibrated mean
        zs = [load_evaluation(d / fam / "eval")[0].set_index("path").loc[df["path"], "logit"].to_numpy() for d in dirs]
        ts = ck["model_args"]["temperatures"]
        assert np.allclose(df["logit"], (zs[0] / ts[0] + zs[1] / ts[1]) / 2, atol=1e-4)
