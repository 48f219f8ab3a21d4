"""Leave-one-generator-out on a tiny 3-family fixture, and the familiarity score on a trained model."""
import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from conftest import jpeg_bytes
from core.model.checkpoint import load_checkpoint
from core.inference.evaluate import evaluate, load_evaluation
from core.data.datasets import open_dataset
from core.audits.generalize import LEADERBOARD_COLUMNS, families_of, run_logo, same_test_data, source_table
from core.inference.predict import predict_many
from core.model.train import TrainConfig, train
from core.verdict.verdict import UNSURE, WHY_UNFAMILIAR, VerdictModel

TINY = dict(arch="seed-v1", epochs=3, finetune_epochs=0, batch_size=16, lr=3e-3, val_fraction=0.2,
            calib_fraction=0.2, model_args={"channels": [8, 16, 16], "hidden": 16}, seed=0)


def smooth(rng, lo=0, hi=256):
    return Image.fromarray(rng.integers(lo, hi, (4, 4, 3)).astype(np.uint8)).resize((32, 32), Image.BICUBIC)


def family_image(fam, rng):
    base = np.asarray(smooth(rng)).astype(np.int16)
    if fam == "noise":
        base = base + rng.normal(0, 40, base.shape)
    elif fam == "stripes":
        base = base + (np.arange(32) % 2 * 60 - 30)[None, :, None]
    elif fam == "blocky":
        base = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).resize((32, 32), Image.NEAREST))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_families(root, n_real=(48, 24), n_fake=(20, 10), seed=0):
    """CIFAKE layout with a manifest.csv per split naming each FAKE image's family."""
    rng = np.random.default_rng(seed)
    for split, nr, nf in (("train", n_real[0], n_fake[0]), ("test", n_real[1], n_fake[1])):
        rows = []
        for cls in ("REAL", "FAKE"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(nr):
            (root / split / "REAL" / f"r{i:04d}.jpg").write_bytes(jpeg_bytes(smooth(rng)))
            rows.append((f"REAL/r{i:04d}.jpg", 0, "photos"))
        for fam in ("noise", "stripes", "blocky"):
            for i in range(nf):
                name = f"FAKE/{fam}{i:04d}.jpg"
                (root / split / name).write_bytes(jpeg_bytes(family_image(fam, rng)))
                rows.append((name, 1, fam))
        with open(root / split / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "source"])
            w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def families_root(tmp_path_factory):
    return make_families(tmp_path_factory.mktemp("fam"))


def test_logo_trains_one_model_per_family_and_rows_match_stored_predictions(families_root, tmp_path, monkeypatch):
    out = tmp_path / "logo"
    cfg = TrainConfig(data=str(families_root), out=str(out / "unused.pt"), **TINY)
    assert families_of(open_dataset(families_root, split="train")) == ["blocky", "noise", "stripes"]
    board = run_logo(cfg, out, log=lambda *a: None)
    assert list(board.columns) == LEADERBOARD_COLUMNS
    assert board["held_out"].tolist() == ["blocky", "noise", "stripes"]
    for _, row in board.iterrows():
        fam = row["held_out"]
        ck = torch.load(out / fam / "model.pt", weights_only=True)
        assert ck["train_config"]["exclude_fake_sources"] == [fam]
        assert ck["train_config"]["train_images"] + ck["train_config"]["val_images"] \
            + ck["train_config"]["calib_images"] == 48 + 2 * 20      # the held-out family's 20 are gone
        df, m = load_evaluation(out / fam / "eval")
        # the fold is evaluated on the test REALs plus that family's fakes only
        assert set(df.loc[df.label == 1, "source"]) == {fam} and (df.label == 0).sum() == 24
        y, p = df["label"].to_numpy(), df["prob_fake"].to_numpy()
        assert row["n"] == len(df) == 34 and row["n_fake"] == 10
        assert row["auc"] == pytest.approx(roc_auc_score(y, p))
        assert row["ap"] == pytest.approx(average_precision_score(y, p))
        assert row["acc"] == pytest.approx(((p >= 0.5) == y).mean())
        assert row["fake_recall"] == pytest.approx((p[y == 1] >= 0.5).mean())
        # TPR at 5% FPR by brute force over every cut: the most fakes caught while <= 5% of reals pass
        best = max([(p[y == 1] >= t).mean() for t in np.r_[p, np.inf] if (p[y == 0] >= t).mean() <= 0.05])
        assert row["tpr_at_5pct_fpr"] == pytest.approx(best)
        assert 0 <= row["share_wrong_decided"] <= 1 - row["acc"] + 1e-9
        # the held-out fakes' UNSURE and unfamiliar shares, recomputed from the stored verdicts
        fk = df[df.label == 1]
        assert row["fake_unsure"] == pytest.approx((fk["verdict"] == "UNSURE").mean())
        vm = VerdictModel.from_checkpoint_meta(ck)
        assert row["fake_unfamiliar"] == pytest.approx((fk["familiarity"] < vm.familiarity.flag_rate).mean())
        assert row["fake_unfamiliar"] <= row["fake_unsure"] + 1e-9
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_auc"] == pytest.approx(board["auc"].mean())
    assert summary["min_auc"] == pytest.approx(board["auc"].min())
    # Resume: a complete family is reused; a family whose evaluation was lost (or is of another result
    # format) is re-evaluated with its stored model, not retrained; a family whose model was lost is retrained.
    stamp = {f: (out / f / "model.pt").stat().st_mtime_ns for f in board["held_out"]}
    shutil.rmtree(out / "noise" / "eval")
    (out / "stripes" / "model.pt").unlink()
    board2 = run_logo(cfg, out, log=lambda *a: None)
    assert (out / "blocky" / "model.pt").stat().st_mtime_ns == stamp["blocky"]
    assert (out / "noise" / "model.pt").stat().st_mtime_ns == stamp["noise"]
    assert (out / "stripes" / "model.pt").stat().st_mtime_ns != stamp["stripes"]
    pd.testing.assert_frame_equal(board2.drop(index=2), board.drop(index=2))   # noise re-evaluated: same row
    # Rebuilt test data (other images under the same names, as a new sample version gives): the stored
    # evaluations describe the old files, so every fold is re-evaluated on the new ones (never retrained), and
    # the old summary no longer matches the data while the new one does.
    old_summary = json.loads((out / "summary.json").read_text())
    assert same_test_data(old_summary, families_root / "test") is True
    rebuilt = make_families(tmp_path / "rebuilt", seed=7)
    shutil.copytree(families_root / "train", rebuilt / "train", dirs_exist_ok=True)
    assert same_test_data(old_summary, rebuilt / "test") is False
    stamp = {f: (out / f / "model.pt").stat().st_mtime_ns for f in board["held_out"]}
    board3 = run_logo(replace(cfg, data=str(rebuilt)), out, log=lambda *a: None)
    assert all((out / f / "model.pt").stat().st_mtime_ns == stamp[f] for f in board["held_out"])
    for f in board["held_out"]:
        df3, _ = load_evaluation(out / f / "eval")
        lm = load_checkpoint(out / f / "model.pt")
        ds = open_dataset(rebuilt, split="test")
        keep = [i for i, (_, label, src) in enumerate(ds.items) if label == 0 or src == f]
        want, _ = evaluate(lm, ds.subset(keep))
        np.testing.assert_allclose(np.sort(df3["prob_fake"]), np.sort(want["prob_fake"]), atol=1e-6)
    assert same_test_data(json.loads((out / "summary.json").read_text()), rebuilt / "test") is True
    assert not board3["auc"].equals(board2["auc"])
    # The recipe gains --fit-platt: the stored fold models are Platt-calibrated on their own calibration split
    # (never retrained) and, their hash having changed, re-evaluated: every logit moves by the fold's offset.
    import core.model.train
    monkeypatch.setattr(core.model.train, "train", lambda *a, **k: pytest.fail("a fold was retrained"))
    before = {f: load_evaluation(out / f / "eval")[0].set_index("path")["logit"] for f in board["held_out"]}
    run_logo(replace(cfg, data=str(rebuilt), fit_platt=True), out, log=lambda *a: None)
    for f in board["held_out"]:
        pl = torch.load(out / f / "model.pt", weights_only=True)["metrics"]["platt"]
        after = load_evaluation(out / f / "eval")[0].set_index("path")["logit"]
        np.testing.assert_allclose(after - before[f].loc[after.index], pl["logit_offset"], atol=1e-4)
    assert "Platt-calibrated" in json.loads((out / "summary.json").read_text())["config"]["recipe"]


def test_source_table_rows_are_real_vs_each_source(families_root, tmp_path):
    ck = tmp_path / "m.pt"
    train(TrainConfig(data=str(families_root), out=str(ck), **TINY), log=lambda *a: None)
    lm = load_checkpoint(ck)
    df, _ = evaluate(lm, open_dataset(families_root, split="test"))
    t = source_table(df, lm.verdict, 0.5, lm.temperature)
    assert sorted(t["source"]) == ["blocky", "noise", "stripes"]
    for _, r in t.iterrows():
        sub = df[(df.label == 0) | (df.source == r["source"])]
        assert r["n"] == len(sub) == 34
        assert r["ap"] == pytest.approx(average_precision_score(sub.label, sub.prob_fake))
    assert t["ap"].is_monotonic_increasing                     # worst first


def test_familiarity_flags_noise_and_inverted_images_not_inliers(tmp_path):
    """REAL = bright smooth images, FAKE = bright smooth + stripes. Planted OOD: full-range noise and
    colour-inverted (dark) images. In-distribution test images are flagged at about the stated 5%."""
    rng = np.random.default_rng(3)
    root = tmp_path / "d"
    for split, n in (("train", 300), ("test", 150)):
        for cls in ("REAL", "FAKE"):
            (root / split / cls).mkdir(parents=True)
        for i in range(n):
            smooth(rng, 128, 256).save(root / split / "REAL" / f"{i}.png")
            a = np.asarray(smooth(rng, 128, 256)).astype(np.int16) + (np.arange(32) % 2 * 40 - 20)[None, :, None]
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / split / "FAKE" / f"{i}.png")
    ck = tmp_path / "m.pt"
    train(TrainConfig(data=str(root), out=str(ck), **{**TINY, "epochs": 4, "calib_fraction": 0.3}),
          log=lambda *a: None)
    lm = load_checkpoint(ck)
    assert lm.verdict.familiarity is not None and len(lm.verdict.familiarity.reference) == 180
    df, _ = evaluate(lm, open_dataset(root, split="test"))
    flagged_in = (df["familiarity"] < 0.05).mean()
    assert flagged_in <= 0.10                              # 5% stated; 300 images of sampling noise
    planted = [(f"noise{i}", Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8))) for i in range(20)]
    planted += [(f"inv{i}", Image.fromarray(255 - np.asarray(smooth(rng, 128, 256)))) for i in range(20)]
    srcs = []
    for name, im in planted:
        p = tmp_path / f"{name}.png"
        im.save(p)
        srcs.append((name, str(p)))
    preds = predict_many(lm, srcs)
    flagged = [p.verdict(lm.verdict, 0.5) for p in preds]
    share = np.mean([v == UNSURE and WHY_UNFAMILIAR in why for v, why in flagged])
    assert share >= 0.9, [round(p.familiarity, 3) for p in preds]
