"""What keeps the Limitations page's first view short: stated subsamples with intervals, sweep rows
delivered as they are measured, and every expensive result stored under runs/."""
from __future__ import annotations

import numpy as np
import pytest

from core.audits import robustness
from core.model.checkpoint import load_checkpoint
from core.data.datasets import open_dataset, stratified_subset
from core.metrics.stats import wilson_interval


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


def test_sweep_workers_give_the_same_table_in_the_same_order(tiny_cifake, trained_ckpt, monkeypatch):
    """workers=2 (run_app's warm-up): the levels measured side by side, each worker on one torch thread, rows
    streamed as they finish, and a table equal, number for number and in order, to the one-worker sweep."""
    import threading
    import time

    import pandas as pd
    import torch
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    levels = {"blur": [1.0, 2.0], "noise": [8, 32], "jpeg": [50, 10], "grayscale": [1.0]}
    jobs = [("none", 0.0)] + [(n, float(v)) for n, vs in levels.items() for v in vs]
    real_row, workers = robustness._row, {}

    def row(name, level, *a, **k):
        workers[(name, float(level))] = (threading.current_thread().name, torch.get_num_threads())
        if (name, level) == ("blur", 1.0):
            time.sleep(1.0)                 # the first level finishes late: the other worker goes on meanwhile
        return real_row(name, level, *a, **k)
    monkeypatch.setattr(robustness, "_row", row)
    n0 = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = robustness.sweep(lm, ds, levels=levels, max_images=None)        # one worker, on 2 torch threads
        seen, progress = [], []
        two = robustness.sweep(lm, ds, levels=levels, max_images=None, workers=2,
                               on_row=lambda r: seen.append((r["shift"], float(r["level"]))),
                               progress=lambda d, t: progress.append((d, t)))
        assert torch.get_num_threads() == 2                                     # the caller keeps its count
        later = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert later == [2]                                                     # and so do new threads
    finally:
        torch.set_num_threads(n0)
    assert sorted(seen) == sorted(jobs) and seen.index(("blur", 1.0)) > 2     # streamed as they finished
    assert progress == [(k, len(jobs) - 1) for k in range(1, len(jobs))]
    assert {w for w, _ in workers.values() if w.startswith("sweep worker")} == {"sweep worker 0", "sweep worker 1"}
    assert all(threads == 1 for w, threads in workers.values() if w.startswith("sweep worker"))
    assert list(zip(two["shift"], two["level"])) == jobs
    pd.testing.assert_frame_equal(two.drop(columns="seconds"), one.drop(columns="seconds"), check_exact=True)


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
    from core.audits.stability import cached_dataset_stability, flip_table
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    df = cached_dataset_stability(lm, ds, tmp_path, max_images=10)
    assert len(df) == 10 and sorted(df["label"]) == [0] * 5 + [1] * 5
    table = flip_table(df)
    assert (table["images"] == 10).all() and (table["ci_low"] <= table["flip_rate"]).all()


def test_first_view_work_is_within_its_budget_and_stated():
    # The sample's test split (3,000 images): 36 x 200 + 9 x 200 + 4 x 200 = 9,800 forwards, under the
    # ~10 s budget; 500 images each (the old sizes) were 24,500 and a 44 s first view.
    from core.audits import limitations as lim
    assert lim.first_view_forwards(3000) == 9800 <= lim.FIRST_VIEW_FORWARDS
    assert lim.subsample_sizes(3000) == {"sweep": 200, "stability": 200, "gradcam": 200}
    assert lim.subsample_sizes(150) == {"sweep": 150, "stability": 150, "gradcam": 150}
    note = lim.subsample_note(3000)
    assert note.startswith("Of this dataset's 3,000 images, the robustness sweep runs on 200 (seeded, stratified")
    assert "Grad-CAM audit on 200" in note and "95% intervals" in note and "9,800 forward passes" in note
    assert lim.subsample_note(150).startswith("The robustness sweep, the stability battery and the Grad-CAM audit "
                                              "run on all 150 images")


def test_gradcam_audit_summary_carries_intervals():
    # Hand-worked: concentration 0.2, 0.3, 0.4: mean 0.3, sd 0.1, t(0.975, 2) = 4.302653, half = 0.248414.
    # drop_cam - drop_random = 0.1, 0.1, 0.4: mean 0.2, sd 0.173205, half = 0.430265.
    arrays = {"concentration": np.array([0.2, 0.3, 0.4]), "drop_cam": np.array([0.2, 0.2, 0.5]),
              "drop_random": np.array([0.1, 0.1, 0.1]), "flip_cam": np.array([1.0, 0.0, 0.0]),
              "flip_random": np.array([0.0, 0.0, 0.0])}
    s = robustness.audit_summary(arrays, 0.1)
    assert s["n"] == 3 and s["concentration_mean"] == pytest.approx(0.3)
    assert s["concentration_ci"] == pytest.approx([0.3 - 0.248414, 0.3 + 0.248414], abs=1e-5)
    assert s["drop_gap_ci"] == pytest.approx([0.2 - 0.430265, 0.2 + 0.430265], abs=1e-5)
    assert s["flip_rate_cam_ci"] == pytest.approx(list(wilson_interval(1, 3)))
    from core.audits.limitations import gradcam_verdict
    v = gradcam_verdict(s)
    assert "On 3 images, 95% intervals: concentration 5.2%-54.8%; difference of the two drops -0.230 to 0.630." in v.text
    one = robustness.audit_summary({k: a[:1] for k, a in arrays.items()}, 0.1)
    assert one["concentration_ci"] is None and "95% intervals" not in gradcam_verdict(one).text


def test_shift_verdict_states_the_subsample_and_intervals():
    import pandas as pd
    from core.audits.limitations import shift_verdict
    base = {"accuracy": 0.9, "accuracy_ci_low": 0.85, "accuracy_ci_high": 0.94, "n": 200, "n_total": 3000}
    rows = pd.DataFrame([{"shift": "blur", "level": 2.0, "accuracy": 0.8, "accuracy_ci_low": 0.74,
                          "accuracy_ci_high": 0.85, "recall_REAL": 0.8, "recall_FAKE": 0.8, "n": 200, "n_total": 3000}])
    v = shift_verdict(base, rows, "blur")
    assert v.text == ("Holds: accuracy falls from 90.0% to 80.0% at blur sigma 2. On a stratified subsample of 200 of "
                      "3,000 images, the 95% intervals are 85.0%-94.0% (clean) and 74.0%-85.0% (worst level).")
    v = shift_verdict({**base, "n_total": 200}, rows.assign(n_total=200), "blur")
    assert v.text.endswith("at blur sigma 2. The 95% intervals are 85.0%-94.0% (clean) and 74.0%-85.0% (worst level).")
