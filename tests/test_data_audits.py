"""The data audits in core: features (core.audits.features), the embedding map (core.audits.embedding) and the data
issues (core.audits.data_issues), on tiny fixtures built in tmp_path (tests/conftest.py: smooth REAL images, noise
FAKE images, a seed-v21 trained on them).

    python -m pytest -q tests/test_data_audits.py
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import jpeg_bytes, noise_image, smooth_image


@pytest.fixture(scope="module")
def lm(trained_ckpt):
    from core.model.checkpoint import load_checkpoint
    return load_checkpoint(trained_ckpt)


def _manifest(tmp_path: Path, root: Path, split: str, flip: set[int]) -> Path:
    """A manifest over root/split's files (absolute paths, sorted) with the labels of rows `flip` swapped."""
    files = sorted((root / split).glob("*/*.jpg"))
    rows = [{"file": str(f), "label": int(f.parent.name == "FAKE") ^ (k in flip)} for k, f in enumerate(files)]
    out = tmp_path / f"{split}-manifest.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def _ids(ds, rows) -> set[str]:
    return {ds.item_id(i) for i in rows}


# ----------------------------------------------------------------------------- label issues

def _table(thumbs, detail, ids, labels=None):
    from core.audits.features import FeatureTable
    n = len(ids)
    thumbs = np.asarray(thumbs, np.float32)
    return FeatureTable(ids=list(ids), labels=np.zeros(n, np.int64) if labels is None else np.asarray(labels),
                        sources=[""] * n, logits=np.zeros(n, np.float32), model=thumbs[:, :16].copy(), thumbs=thumbs,
                        detail=np.asarray(detail, np.float32))


def test_planted_label_flips_are_found_and_a_clean_split_yields_none():
    from core.audits.data_issues import datalab_issues
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 30)
    # A confident model: P(true class) 0.93-0.97. Confident learning's threshold for a class is the mean P(class) over
    # the images given that label: at most (28 x 0.97 + 2 x 0.07) / 30 = 0.91 < 0.93, so each flipped image is
    # confidently its true class, and no other image is confidently the other class.
    sure = rng.uniform(0.93, 0.97, len(truth))
    probs = np.where(truth[:, None] == np.arange(2), sure[:, None], 1 - sure[:, None])
    flip = [3, 17, 40, 52]
    given = truth.copy()
    given[flip] = 1 - given[flip]
    found, quality = datalab_issues(_table(rng.normal(size=(60, 192)) * 40, np.full(60, 10.0),
                                           [f"{k:02d}.jpg" for k in range(60)], labels=given), probs)
    labels = found[found["issue"] == "label"].sort_values("path")
    assert labels["path"].tolist() == ["03.jpg", "17.jpg", "40.jpg", "52.jpg"]
    assert labels["given_label"].tolist() == ["FAKE", "FAKE", "REAL", "REAL"]          # flipped from REAL, REAL, FAKE, FAKE
    assert labels["suggested_label"].tolist() == ["REAL", "REAL", "FAKE", "FAKE"]
    assert set(quality) == {"label", "outlier", "near_duplicate"}
    clean, _ = datalab_issues(_table(rng.normal(size=(60, 192)) * 40, np.full(60, 10.0),
                                     [f"{k:02d}.jpg" for k in range(60)], labels=truth), probs)
    assert (clean["issue"] == "label").sum() == 0


def test_find_data_issues_on_a_split_the_model_never_saw_uses_its_own_probabilities(lm, tiny_cifake, tmp_path):
    from core.audits.data_issues import ISSUE_COLUMNS, find_data_issues
    from core.data.datasets import open_dataset
    issues, summary = find_data_issues(lm, open_dataset(tiny_cifake, split="test"), None, tmp_path / "runs")
    assert list(issues.columns) == ISSUE_COLUMNS and summary["pred_probs"] == "model"
    assert summary["counts"]["leakage"] is None                 # no training data given: not checked
    for _, part in issues.groupby("issue"):
        assert part["score"].is_monotonic_increasing            # worst first


def test_the_training_split_gets_cross_validated_probabilities_and_says_so(lm, tiny_cifake, tmp_path):
    from core.audits.data_issues import find_data_issues, out_of_sample_probs, trained_on
    from core.audits.features import compute_features
    from core.data.datasets import open_dataset
    train = open_dataset(tiny_cifake, split="train")
    assert trained_on(lm, train) and not trained_on(lm, open_dataset(tiny_cifake, split="test"))
    table = compute_features(lm, train)
    cv, how = out_of_sample_probs(lm, train, table)
    own, how_model = out_of_sample_probs(lm, train, table, "model")
    assert (how, how_model) == ("cross-validated", "model")
    assert cv.shape == (len(train), 2) and np.allclose(cv.sum(1), 1) and not np.allclose(cv, own)
    from core.metrics.metrics import apply_temperature
    assert np.allclose(own[:, 1], apply_temperature(table.logits, lm.temperature))
    flip = {3, 70, 100}
    issues, summary = find_data_issues(lm, open_dataset(_manifest(tmp_path, tiny_cifake, "train", flip)), None,
                                       tmp_path / "runs", probs="cross-validated")
    assert summary["pred_probs"] == "cross-validated" and "cross-validated" in summary["pred_probs_meaning"]
    ds = open_dataset(_manifest(tmp_path, tiny_cifake, "train", flip))
    assert _ids(ds, flip) <= set(issues.loc[issues["issue"] == "label", "path"])


# ----------------------------------------------------------------------------- leakage

def test_leakage_ratio_by_hand():
    from core.audits.data_issues import FLAT_LEVELS, leakage_pairs, leakage_ratios
    q = _table(np.full((1, 192), 10.0), [0.0], ["q"])
    r = _table(np.stack([np.full(192, 11.0), np.full(192, 14.0)]), [0.0, 4.0], ["a", "b"])
    ratio, index = leakage_ratios(q, r)
    # RMS 1 level to a, 4 to b; the flatter image's detail is 0 both times: 1 / 2 and 4 / 2
    assert FLAT_LEVELS == 2.0 and index.tolist() == [0] and ratio.tolist() == pytest.approx([0.5])
    assert leakage_pairs(q, r, ratio=0.49).empty
    assert leakage_pairs(q, r, ratio=0.5)[["path", "pair", "issue"]].values.tolist() == [["q", "a", "leakage"]]


def test_a_reencoded_copy_across_splits_is_found_and_different_images_are_not(lm, tmp_path):
    from core.audits.data_issues import leakage_pairs
    from core.audits.features import compute_features
    from core.data.datasets import open_dataset
    from core.data.shifts import apply_shift, pil_to_tensor, tensor_to_pil
    rng = np.random.default_rng(7)
    train, test = tmp_path / "train", tmp_path / "test"
    for d in (train, test):
        for c in ("REAL", "FAKE"):
            (d / c).mkdir(parents=True)
    sources = [smooth_image(rng) for _ in range(6)] + [noise_image(rng) for _ in range(2)]
    for k, img in enumerate(sources):
        (train / ("REAL" if k < 6 else "FAKE") / f"{k}.jpg").write_bytes(jpeg_bytes(img))
    flat = Image.new("RGB", (32, 32), (90, 140, 200))
    (train / "REAL" / "flat.jpg").write_bytes(jpeg_bytes(flat))
    # the copy: training image 2 re-encoded at JPEG 75, shrunk to 0.9 and enlarged back
    x = apply_shift(apply_shift(pil_to_tensor(Image.open(train / "REAL" / "2.jpg").convert("RGB")), "jpeg", 75),
                    "downscale", 1 / 0.9)
    tensor_to_pil(x).save(test / "REAL" / "copy.png")
    (test / "REAL" / "other.jpg").write_bytes(jpeg_bytes(smooth_image(rng)))               # a different image
    (test / "REAL" / "flat2.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (32, 32), (94, 144, 204))))
    (test / "FAKE" / "noise.jpg").write_bytes(jpeg_bytes(noise_image(rng)))
    pairs = leakage_pairs(compute_features(lm, open_dataset(test)), compute_features(lm, open_dataset(train)))
    assert pairs[["path", "pair"]].values.tolist() == [["REAL/copy.png", "REAL/2.jpg"]]
    assert 0 <= pairs["score"].iloc[0] < 0.5


def test_the_leakage_check_refuses_the_same_data_twice(lm, tiny_cifake, tmp_path):
    from core.audits.data_issues import find_data_issues
    from core.data.datasets import open_dataset
    ds = open_dataset(tiny_cifake, split="test")
    with pytest.raises(ValueError, match="both are the same data"):
        find_data_issues(lm, ds, open_dataset(tiny_cifake, split="test"), tmp_path / "runs")


# ----------------------------------------------------------------------------- re-scoring

def test_rescore_without_the_flagged_images_by_hand():
    from core.audits.data_issues import rescore_without
    from core.metrics.metrics import expected_calibration_error
    df = pd.DataFrame({"path": ["a", "b", "c", "d"], "label": [0, 0, 1, 1], "prob_fake": [0.1, 0.8, 0.9, 0.4]})
    out = rescore_without(df, ["b", "d"]).set_index("images")
    everything, kept = out.loc["all images"], out.loc["without the flagged images"]
    assert (everything["n"], everything["accuracy"], everything["roc_auc"]) == (4, 0.5, 0.75)   # 3 of 4 pairs ordered
    assert (kept["n"], kept["accuracy"], kept["roc_auc"]) == (2, 1.0, 1.0)
    assert kept["ece"] == pytest.approx(expected_calibration_error([0, 1], [0.1, 0.9])) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- features and the embedding

def test_embedding_is_reproducible_with_a_seed():
    from core.audits.embedding import project
    x = np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)
    for method in ("tsne", "umap"):
        a, b = project(x, seed=0, method=method), project(x, seed=0, method=method)
        assert a.shape == (120, 2) and a.dtype == np.float32 and np.array_equal(a, b)
    # UMAP's layout starts from the seed; t-SNE starts from the PCA, so its map is the same for every seed
    assert not np.allclose(project(x, seed=1, method="umap"), a)
    assert np.array_equal(project(x, seed=1, method="tsne"), project(x, seed=0, method="tsne"))
    assert project(x[:0]).shape == (0, 2) and project(x[:3]).shape == (3, 2)


def test_embedding_cli_writes_one_row_per_image_with_the_evaluations_numbers(lm, trained_ckpt, tiny_cifake, tmp_path,
                                                                            capsys):
    from core.audits.embedding import EMBEDDING_COLUMNS, main
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    args = ["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--split", "test", "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a"), "--runs", str(tmp_path / "runs1")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--runs", str(tmp_path / "runs2")]) == 0
    a, b = (pd.read_csv(tmp_path / d / "embedding.csv") for d in "ab")
    assert list(a.columns) == EMBEDDING_COLUMNS and a.equals(b)            # computed twice from scratch: the same map
    df, _ = evaluate(lm, open_dataset(tiny_cifake, split="test"))
    merged = a.merge(df, on="path", suffixes=("", "_eval"))
    assert len(merged) == len(a) == len(df)
    assert np.allclose(merged["prob_fake"], merged["prob_fake_eval"]) and (merged["verdict"] == merged["verdict_eval"]).all()
    meta = json.loads((tmp_path / "a" / "embedding.json").read_text())
    assert meta["features"] == "model" and meta["seed"] == 3 and len(meta["features_sha256"]) == 64
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "c"), "--features", "content", "--runs", str(tmp_path / "runs1")]) == 2
    assert "no content features" in capsys.readouterr().err


def test_content_features_come_from_the_familiaritys_content_encoder(lm, tiny_cifake):
    from core.audits.features import compute_features, content_encoder

    class Content:
        def features(self, x):                     # uint8 (N, 3, S, S) -> (N, 2): mean and max level
            f = x.float().flatten(1)
            return torch.stack([f.mean(1), f.amax(1)], dim=1).numpy()

    assert content_encoder(lm) is None
    with pytest.raises(ValueError, match="only --features model"):
        compute_features(lm, _small(tiny_cifake)).of_kind("content")
    with_content = dataclasses.replace(lm, verdict=SimpleNamespace(familiarity=SimpleNamespace(content=Content())))
    table = compute_features(with_content, _small(tiny_cifake))
    assert table.of_kind("content").shape == (len(table), 2)
    assert table.of_kind("content")[:, 1].max() <= 255


def _small(root):
    from core.data.datasets import open_dataset
    return open_dataset(root, split="test").subset(range(6))


def test_features_are_cached_and_read_back_equal(lm, tiny_cifake, tmp_path):
    from core.audits.features import cached_features, features_dir, thumbnails
    ds = _small(tiny_cifake)
    first = cached_features(lm, ds, tmp_path)
    assert (features_dir(tmp_path, lm, ds) / "features.npz").is_file()
    again = cached_features(lm, ds, tmp_path)
    assert again.ids == first.ids and np.array_equal(again.model, first.model) and np.array_equal(again.thumbs,
                                                                                                   first.thumbs)
    flat = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    t, d = thumbnails(flat)
    assert t.shape == (1, 192) and np.allclose(t, 100) and d.tolist() == [0.0]


# ----------------------------------------------------------------------------- the command line

def test_data_issues_cli_writes_the_csv_and_summary_and_refuses_bad_input(trained_ckpt, tiny_cifake, tmp_path, capsys):
    from core.audits.data_issues import ISSUE_COLUMNS, ISSUES, main
    out = tmp_path / "issues"
    assert main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--split", "test", "--out", str(out),
                 "--runs", str(tmp_path / "runs")]) == 0
    issues = pd.read_csv(out / "issues.csv", keep_default_na=False)
    summary = json.loads((out / "summary.json").read_text())
    assert list(issues.columns) == ISSUE_COLUMNS and set(summary["counts"]) == set(ISSUES)
    assert {k: int((issues["issue"] == k).sum()) for k in ISSUES} == summary["counts"]
    assert summary["reference"].startswith("cifake") and summary["pred_probs"] == "model"
    capsys.readouterr()
    assert main(["--data", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_both_tools_run_on_a_parquet_data_set_without_splits(trained_ckpt, tmp_path, capsys):
    from conftest import make_hemg_parquet
    from core.audits import data_issues, embedding
    shards = make_hemg_parquet(tmp_path / "hemg", n_per_class=12)
    common = ["--weights", str(trained_ckpt), "--data", str(shards), "--runs", str(tmp_path / "runs")]
    assert embedding.main(common + ["--out", str(tmp_path / "map")]) == 0
    assert len(pd.read_csv(tmp_path / "map" / "embedding.csv")) == 24
    assert data_issues.main(common + ["--out", str(tmp_path / "issues")]) == 0
    summary = json.loads((tmp_path / "issues" / "summary.json").read_text())
    assert summary["images"] == 24 and summary["reference"] is None and summary["counts"]["leakage"] is None
    # too few images for Datalab's neighbour checks: a one-line reason
    small = make_hemg_parquet(tmp_path / "small", n_per_class=4)
    capsys.readouterr()
    assert data_issues.main(["--weights", str(trained_ckpt), "--data", str(small), "--out", str(tmp_path / "x"),
                             "--runs", str(tmp_path / "runs")]) == 2
    assert "at least 20 images" in capsys.readouterr().err
