"""core.model.train in parts: load_data / train_one_epoch / evaluate, the on_epoch observer, the TrainResult,
and teardown in a `finally`."""
from __future__ import annotations

import pytest
import torch

from core.model import train as ct
from core.model.train import TrainConfig, evaluate, load_data, train, train_one_epoch
from core.model.models import build_model

TINY = dict(arch="seed-v1", model_args={"channels": [4, 8, 8], "hidden": 8}, batch_size=16, seed=2)


def test_on_epoch_sees_every_epoch_and_result_carries_model_and_validation(tiny_cifake, tmp_path):
    cfg = TrainConfig(data=str(tiny_cifake), epochs=2, finetune_epochs=1, out=str(tmp_path / "m.pt"), **TINY)
    val = load_data(cfg, log=lambda *a: None)        # the same seeded split train() will make
    reports = []
    res = train(cfg, log=lambda *a: None, on_epoch=lambda rep: reports.append(
        (rep.epoch, rep.phase, dict(rep.record), evaluate(rep.model, val.x_val, val.y_val, rep.device)["accuracy"])))
    assert [(e, p) for e, p, *_ in reports] == [(1, "main"), (2, "main"), (3, "finetune")]
    # The observer saw the saved history rows, and the live model scored the saved validation accuracy.
    assert [r for _, _, r, _ in reports] == res.history
    assert [acc for *_, acc in reports] == [h["val_acc"] for h in res.history]
    # The result: the best model (eval mode) with the validation split that chose it (10% of 128 images).
    assert not res.model.training
    # 128 images: 13 calibration (core.verdict.verdict), 13 validation, 102 training
    assert len(res.data.x_cal) == 13 and len(res.data.x_val) == 13 and len(res.data.x_train) == 102
    assert res.data.x_val.dtype == torch.uint8
    assert torch.equal(res.data.x_val, val.x_val)
    assert evaluate(res.model, res.data.x_val, res.data.y_val, torch.device("cpu")) == pytest.approx(
        res.checkpoint["metrics"]["val"])


def test_load_data_split_is_seeded_and_disjoint(tiny_cifake):
    cfg = TrainConfig(data=str(tiny_cifake), val_fraction=0.25, **TINY)
    a, b = load_data(cfg, log=lambda *a: None), load_data(cfg, log=lambda *a: None)
    # 128 images: 13 calibration (round(0.1 * 128)), 32 validation (0.25 * 128), 83 training
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_cal, b.x_cal)
    assert (len(a.x_cal), len(a.x_val), len(a.x_train)) == (13, 32, 83)
    # No validation or calibration image is also a training image, and calibration never validates.
    train_rows = {bytes(x.numpy()) for x in a.x_train}
    assert not any(bytes(x.numpy()) in train_rows for x in a.x_val)
    assert not any(bytes(x.numpy()) in train_rows for x in a.x_cal)
    val_rows = {bytes(x.numpy()) for x in a.x_val}
    assert not any(bytes(x.numpy()) in val_rows for x in a.x_cal)


def test_train_one_epoch_steps_and_reduces_loss(tiny_cifake):
    cfg = TrainConfig(data=str(tiny_cifake), **TINY, lr=3e-3)
    d = load_data(cfg, log=lambda *a: None)
    torch.manual_seed(0)
    model = build_model("seed-v1", input_size=32, **TINY["model_args"]).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    seen = []
    before = evaluate(model, d.x_train, d.y_train, torch.device("cpu"))["loss"]
    for _ in range(6):
        out = train_one_epoch(model, opt, d.x_train, d.y_train, torch.randperm(len(d.x_train), generator=g), cfg,
                              torch.device("cpu"), g, progress=lambda b, n: seen.append((b, n)))
    assert out["seen"] == (len(d.x_train) // 16) * 16 and seen[-1] == (len(d.x_train) // 16,) * 2
    assert evaluate(model, d.x_train, d.y_train, torch.device("cpu"))["loss"] < before * 0.8


def test_teardown_runs_when_training_fails(tiny_cifake, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ct, "teardown_distributed", lambda: calls.append("teardown"))

    def boom(rep):
        raise RuntimeError("observer failed")
    cfg = TrainConfig(data=str(tiny_cifake), epochs=1, finetune_epochs=0, out=str(tmp_path / "m.pt"), **TINY)
    with pytest.raises(RuntimeError, match="observer failed"):
        train(cfg, log=lambda *a: None, on_epoch=boom)
    assert calls == ["teardown"] and not (tmp_path / "m.pt").exists()


def test_pseudo_fakes_enlarge_each_batch_by_copies_of_its_reals(tiny_cifake):
    # --pseudo-fakes 1.0: every REAL of a batch also enters as a FAKE copy, so an epoch sees its
    # batches plus one image per REAL in them (the trailing partial batch is dropped, as always)
    from dataclasses import replace
    cfg = TrainConfig(data=str(tiny_cifake), **TINY)
    d = load_data(cfg, log=lambda *a: None)
    model = build_model("seed-v1", input_size=32, **TINY["model_args"]).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(d.x_train), generator=g)
    used = order[:(len(order) // 16) * 16]
    plain = train_one_epoch(model, opt, d.x_train, d.y_train, order, cfg, torch.device("cpu"), g)
    pf = train_one_epoch(model, opt, d.x_train, d.y_train, order, replace(cfg, pseudo_fakes=1.0),
                         torch.device("cpu"), g)
    assert plain["seen"] == len(used)
    assert pf["seen"] == len(used) + int((d.y_train[used] == 0).sum())


def test_grouped_holdout_by_hand():
    # rows 0-3: photo "a" (4 crops), rows 4-6: photo "b" (3), rows 7-9: single generated images
    groups = ["a", "a", "a", "a", "b", "b", "b", "g7", "g8", "g9"]
    perm = torch.tensor([9, 2, 5, 0, 7, 1, 4, 8, 3, 6])
    held, rest = ct.grouped_holdout(perm, groups, 3, torch.Generator().manual_seed(0))
    h, r = set(held.tolist()), set(rest.tolist())
    assert h | r == set(range(10)) and not h & r
    # photos hold 7 of 10 rows -> want 2.1 photo rows: exactly one whole photo; singles want 0.9 -> one
    held_photos = {groups[i] for i in h if groups[i] in ("a", "b")}
    assert len(held_photos) == 1 and {i for i in h if groups[i] in held_photos} == \
        {i for i, g in enumerate(groups) if g in held_photos}
    assert len([i for i in h if groups[i].startswith("g")]) == 1
    # both sides keep perm's order
    assert held.tolist() == [i for i in perm.tolist() if i in h] and rest.tolist() == [i for i in perm.tolist() if i in r]


def test_calibration_split_keeps_photos_whole(tmp_path):
    """A manifest naming the photo each crop comes from: no photo has crops in calibration and in training
    (--calib-split group, the default); --calib-split random mixes them, as checkpoints before it did."""
    import csv
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    rows = []
    for k in range(120):
        label = k % 2
        photo = f"photo{k % 12}.jpg" if label == 0 else ""
        origin = f"{photo} box=({k}, 0, 8, 8)" if label == 0 else f"gan seed=1 index={k}"
        f = f"{'FAKE' if label else 'REAL'}/{k:03d}.png"
        (tmp_path / f).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f)
        rows.append((f, label, "gan" if label else "photos", origin))
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("file", "label", "source", "origin"), *rows])
    photo_of = {}
    for f, label, _, origin in rows:
        arr = np.asarray(Image.open(tmp_path / f).convert("RGB")).transpose(2, 0, 1)
        photo_of[bytes(np.ascontiguousarray(arr))] = origin.split(" box=")[0] if label == 0 else origin

    def photos(x):
        return {photo_of[bytes(np.ascontiguousarray(im.numpy()))] for im in x}

    cfg = TrainConfig(data=str(tmp_path / "manifest.csv"), **TINY)
    d = load_data(cfg, log=lambda *a: None)
    cal_photos = {p for p in photos(d.x_cal) if p.endswith(".jpg")}
    assert cal_photos and not cal_photos & photos(d.x_train) and not cal_photos & photos(d.x_val)
    assert 0 < float(d.y_cal.float().mean()) < 1                 # both classes, photos and single fakes
    r = load_data(TrainConfig(data=str(tmp_path / "manifest.csv"), calib_split="random", **TINY), log=lambda *a: None)
    assert {p for p in photos(r.x_cal) if p.endswith(".jpg")} & photos(r.x_train)


def test_fit_platt_calibrates_the_saved_model_on_its_calibration_split(tiny_cifake, tmp_path):
    """--fit-platt: the saved model's logits on the calibration images are the stored ones, those are
    calibrated (fitting again finds b = 0 at the stored T), the returned model is the saved one, and the
    offset is what a fit on the uncalibrated model's calibration logits gives."""
    from core.model.checkpoint import load_checkpoint
    from core.inference.evaluate import predict_logits
    from core.metrics.metrics import fit_platt
    kw = dict(data=str(tiny_cifake), epochs=2, finetune_epochs=0, **TINY)
    plain = train(TrainConfig(out=str(tmp_path / "plain.pt"), **kw), log=lambda *a: None)
    res = train(TrainConfig(out=str(tmp_path / "platt.pt"), fit_platt=True, **kw), log=lambda *a: None)
    pl = res.checkpoint["metrics"]["platt"]
    z0 = plain.checkpoint["verdict"]["calibration"]["logits"].double().numpy()
    labels = plain.checkpoint["verdict"]["calibration"]["labels"].numpy()
    t, b = fit_platt(z0, labels)
    assert (pl["temperature"], pl["logit_offset"]) == pytest.approx((t, b * t), abs=1e-4)
    lm = load_checkpoint(tmp_path / "platt.pt")
    z = predict_logits(lm.inference_model, res.data.x_cal, lm.device).numpy()
    assert z == pytest.approx(lm.verdict.cal_logits, abs=1e-4)
    assert z == pytest.approx(z0 + b * t, abs=1e-4)
    assert lm.temperature == pytest.approx(t) and fit_platt(z, labels) == pytest.approx((t, 0.0), abs=1e-3)
    assert predict_logits(res.model, res.data.x_cal, lm.device).numpy() == pytest.approx(z, abs=1e-4)
    assert evaluate(res.model, res.data.x_val, res.data.y_val, torch.device("cpu")) == pytest.approx(
        res.checkpoint["metrics"]["val"])
