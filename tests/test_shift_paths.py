"""Each shift has one definition: the per-image path (dataset record, evaluate --shift) and the batched
path (robustness sweep on decoded tensors) give the same pixels, and the same metrics."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from core.model.checkpoint import load_checkpoint
from core.data.datasets import open_dataset
from core.inference.evaluate import decode_dataset, predict_dataset
from core.metrics.metrics import classification_metrics
from core.data.preprocess import PreprocessConfig
from core.audits.robustness import sweep
from core.data.shifts import Shift, apply_shift


@pytest.fixture(scope="module")
def ds_with_gap(tiny_cifake, tmp_path_factory):
    """tiny_cifake's test split with an undecodable file early on: decoded rows != dataset positions."""
    root = tmp_path_factory.mktemp("gap") / "test"
    shutil.copytree(tiny_cifake / "test", root)
    (root / "FAKE" / "0000_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return open_dataset(root)


@pytest.mark.parametrize("shift", [Shift("noise", 16), Shift("noise", 4, seed=7), Shift("jpeg", 30),
                                   Shift("blur", 1.5), Shift("hue", 0.25), Shift("downscale", 2)])
def test_per_image_and_batched_paths_give_the_same_pixels(ds_with_gap, shift):
    p = PreprocessConfig(32)
    clean = decode_dataset(ds_with_gap, p, batch_size=5)
    assert len(clean.skipped) == 1 and clean.index[0] == 0 and int(clean.index[-1]) == len(ds_with_gap) - 1
    per_image = decode_dataset(ds_with_gap, p, shift, batch_size=5)          # shift inside ds.record, per image
    batched = shift.apply(clean.x, index=clean.index.tolist())              # one call on the whole batch
    assert torch.equal(per_image.x, batched)
    # Batching does not change an image's pixels: any split into batches gives the same result.
    halves = torch.cat([shift.apply(clean.x[:7], index=clean.index[:7].tolist()),
                        shift.apply(clean.x[7:], index=clean.index[7:].tolist())])
    assert torch.equal(halves, batched)


def test_noise_differs_between_images_and_is_seeded():
    x = torch.full((2, 3, 8, 8), 128, dtype=torch.uint8)
    a = apply_shift(x, "noise", 16, seed=0)
    assert not torch.equal(a[0], a[1])                                       # image 1 is not image 0's noise
    assert torch.equal(a[1], apply_shift(x[1], "noise", 16, seed=1))         # row k of a batch = seed + k
    assert torch.equal(a, apply_shift(x, "noise", 16, seed=[0, 1]))
    # std 16 of 255 on a flat grey: the measured spread is close to 16.
    assert abs(float(a.float().std()) - 16) < 2


def test_sweep_batched_rows_equal_per_image_evaluations(ds_with_gap, trained_ckpt):
    lm = load_checkpoint(trained_ckpt)
    levels = {"noise": [32], "jpeg": [30], "blur": [1.0]}
    table = sweep(lm, ds_with_gap, levels=levels, batch_size=8)
    for name, lvs in levels.items():
        df, _ = predict_dataset(lm, ds_with_gap, batch_size=8, shift=Shift(name, lvs[0]))
        m = classification_metrics(df["label"].to_numpy(), df["prob_fake"].to_numpy())
        row = table[(table["shift"] == name)].iloc[0]
        assert row["n"] == m["n"] == len(ds_with_gap) - 1
        # Equal up to float rounding (the two paths batch the images differently).
        assert row["accuracy"] == m["accuracy"] and row["ece"] == pytest.approx(m["ece"], abs=1e-6)
        assert row["mean_prob_fake"] == pytest.approx(float(np.mean(df["prob_fake"])), abs=1e-6)
