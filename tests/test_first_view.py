"""What keeps the Limitations page's first view short: stated subsamples with intervals, sweep rows
delivered as they are measured, and every expensive result stored under runs/."""
from __future__ import annotations

import numpy as np
import pytest

from core import robustness
from core.checkpoint import load_checkpoint
from core.datasets import open_dataset, stratified_subset
from core.stats import wilson_interval


def test_stratified_subset_keeps_label_shares():
    labels = [0] * 30 + [1] * 10
    idx = stratified_subset(labels, 8, seed=0)
    assert idx == sorted(idx) and len(idx) == 8 and len(set(idx)) == 8
    assert sum(labels[i] for i in idx) == 2                         # 10/40 of 8 = 2 FAKE, 6 REAL
    assert idx == stratified_subset(labels, 8, seed=0) and idx != stratified_subset(labels, 8, seed=1)
    assert stratified_subset(labels, 40) is None and stratified_subset(labels, None) is None


def test_sweep_on_a_subsample_streams_rows_with_intervals(tiny_cifake, trained_ckpt):
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")                      # 48 images, 24 per class
    seen = []
    df = robustness.sweep(lm, ds, levels={"blur": [1.0, 2.0], "grayscale": [1.0]}, max_images=20, on_row=seen.append)
    assert [(r["shift"], r["level"]) for r in seen] == [("none", 0.0), ("blur", 1.0), ("blur", 2.0), ("grayscale", 1.0)]
    assert list(df["shift"]) == [r["shift"] for r in seen]
    assert (df["n"] == 20).all() and (df["n_total"] == 48).all()
    for _, r in df.iterrows():
        lo, hi = wilson_interval(int(round(r["accuracy"] * 20)), 20)
        assert r["accuracy_ci_low"] == pytest.approx(lo) and r["accuracy_ci_high"] == pytest.approx(hi)
        assert r["accuracy_ci_low"] <= r["accuracy"] <= r["accuracy_ci_high"]
    full = robustness.sweep(lm, ds, levels={"blur": [1.0]}, max_images=None)
    assert (full["n"] == 48).all()


def test_gradcam_audit_is_stored_and_read_back(tiny_cifake, trained_ckpt, tmp_path, monkeypatch):
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    first = robustness.cached_gradcam_audit(lm, ds, tmp_path, n=12, seed=0)
    assert len(list(tmp_path.glob("gradcam-audit-*/audit.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed instead of read from runs/")
    monkeypatch.setattr(robustness, "gradcam_audit_dataset", boom)
    again = robustness.cached_gradcam_audit(lm, ds, tmp_path, n=12, seed=0)
    assert again["summary"] == first["summary"] and again["ids"] == first["ids"]
    for k in robustness.AUDIT_ARRAYS:
        assert np.array_equal(np.asarray(again[k]), np.asarray(first[k]), equal_nan=True), k
    with pytest.raises(AssertionError, match="recomputed"):           # another threshold is another result
        robustness.cached_gradcam_audit(lm, ds, tmp_path, n=12, seed=0, threshold=0.3)


def test_stability_battery_on_a_subsample(tiny_cifake, trained_ckpt, tmp_path):
    from core.stability import cached_dataset_stability, flip_table
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    df = cached_dataset_stability(lm, ds, tmp_path, max_images=10)
    assert len(df) == 10 and sorted(df["label"]) == [0] * 5 + [1] * 5
    table = flip_table(df)
    assert (table["images"] == 10).all() and (table["ci_low"] <= table["flip_rate"]).all()
