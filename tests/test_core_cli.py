"""train -> evaluate -> predict end to end through the three CLIs, on a CIFAKE folder and a Hemg parquet."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import jpeg_bytes, make_hemg_parquet, noise_image
from core.inference import evaluate, predict
from core.model import train
from core.model.checkpoint import load_checkpoint


def test_train_cli_writes_self_describing_checkpoint(tiny_cifake, tmp_path):
    out = tmp_path / "m.pt"
    rc = train.main(["--data", str(tiny_cifake), "--arch", "seed-v1", "--epochs", "2", "--finetune-epochs", "1",
                     "--batch-size", "16", "--out", str(out), "--seed", "1",
                     "--model-args", '{"channels": [8, 16, 16], "hidden": 16}'])
    assert rc == 0
    lm = load_checkpoint(out)
    meta = lm.meta
    assert lm.arch == "seed-v1" and meta["model_args"]["channels"] == [8, 16, 16]
    assert [h["phase"] for h in meta["history"]] == ["main", "main", "finetune"]
    # finetune runs at lr * 0.05
    assert meta["history"][-1]["lr"] == pytest.approx(meta["train_config"]["lr"] * 0.05)
    assert meta["train_config"]["train_images"] + meta["train_config"]["val_images"] \
        + meta["train_config"]["calib_images"] == 128
    assert meta["verdict_summary"]["calibration_images"] == 13 and lm.verdict.has_band
    assert 0 <= meta["metrics"]["val"]["accuracy"] <= 1


def test_training_is_deterministic_with_seed(tiny_cifake, tmp_path):
    import torch
    from core.model.train import TrainConfig
    kw = dict(data=str(tiny_cifake), arch="seed-v1", epochs=1, finetune_epochs=0, batch_size=32,
              model_args={"channels": [4, 8, 8], "hidden": 8}, seed=3)
    a = train.train(TrainConfig(out=str(tmp_path / "a.pt"), **kw), log=lambda *x: None).checkpoint
    b = train.train(TrainConfig(out=str(tmp_path / "b.pt"), **kw), log=lambda *x: None).checkpoint
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_evaluate_cli_outputs(trained_ckpt, tiny_cifake, tmp_path, capsys):
    (tiny_cifake / "test" / "FAKE" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    try:
        rc = evaluate.main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--out", str(tmp_path / "ev")])
    finally:
        (tiny_cifake / "test" / "FAKE" / "zz_broken.jpg").unlink()
    assert rc == 0
    df = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(df.columns) == ["path", "label", "prob_fake", "logit", "source", "familiarity", "familiarity_features", "familiarity_colour", "verdict"]
    assert set(df.verdict) <= {"REAL", "FAKE", "UNSURE"} and df.familiarity.between(0, 1).all()
    assert len(df) == 48 and m["n"] == 48 and m["n_skipped"] == 1
    assert m["skipped"][0]["path"] == "FAKE/zz_broken.jpg"
    # The tiny task is easy: smooth REAL vs noise FAKE.
    assert m["accuracy"] >= 0.9 and m["roc_auc"] >= 0.95
    # metrics.json agrees with predictions.csv, recomputed by hand
    pred = (df.prob_fake >= 0.5).astype(int)
    assert m["confusion_matrix"] == [[int(((df.label == 0) & (pred == 0)).sum()), int(((df.label == 0) & (pred == 1)).sum())],
                                     [int(((df.label == 1) & (pred == 0)).sum()), int(((df.label == 1) & (pred == 1)).sum())]]
    assert np.allclose(df.prob_fake, 1 / (1 + np.exp(-df.logit)), atol=1e-6)
    for key in ("accuracy", "per_class", "roc_auc", "average_precision", "ece", "brier", "counts", "weights_sha256",
                "dataset"):
        assert key in m
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["accuracy"] == m["accuracy"]


def _hf(x):
    """Mean absolute difference between horizontal neighbours: the images' high-frequency content."""
    return (x[..., 1:].float() - x[..., :-1].float()).abs().mean().item()


def _hue(x):
    """PIL's hue (0-255 per turn) and saturation of uint8 (B, 3, H, W) images."""
    from PIL import Image
    hsv = np.stack([np.asarray(Image.fromarray(im.permute(1, 2, 0).numpy()).convert("HSV")) for im in x])
    return hsv[..., 0].astype(int), hsv[..., 1].astype(int)


def _gray_equal(x):
    return bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())


def _noise_std(clean, shifted):
    mid = ((clean >= 48) & (clean <= 207))           # away from 0 and 255, where clipping would shrink it
    return (shifted.float() - clean.float())[mid].std().item()


def _contrast_ratio(clean, shifted):
    def spread(x):
        g = 0.299 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float()    # (B, H, W) luma
        return (g - g.mean(dim=(1, 2), keepdim=True)).abs().mean().item()
    return spread(shifted) / spread(clean)


def _hue_turn(clean, shifted):
    (h0, s0), (h1, _) = _hue(clean), _hue(shifted)
    d = (h1 - h0) % 256
    return float(np.median(d[s0 > 80]))


# Each shift's measurable effect on the images the CLI scored: (measure(clean, shifted), expected, tolerance).
EFFECTS = {
    "grayscale": (lambda c, s: (_gray_equal(s), _gray_equal(c)), (True, False), None),
    "jpeg:20": (lambda c, s: (s.float() - c.float()).abs().mean().item() > 8, True, None),
    "blur:1.5": (lambda c, s: _hf(s) / _hf(c), 0.17, 0.06),
    "noise:16": (_noise_std, 16.0, 1.0),
    "downscale:4": (lambda c, s: _hf(s) / _hf(c), 0.12, 0.06),
    "brightness:0.5": (lambda c, s: s.float().mean().item() / c.float().mean().item(), 0.5, 0.01),
    "contrast:0.5": (_contrast_ratio, 0.5, 0.02),
    "saturation:0": (lambda c, s: (_gray_equal(s), _gray_equal(c)), (True, False), None),
    "hue:0.25": (_hue_turn, 64.0, 3.0),
}


@pytest.mark.parametrize("shift", list(EFFECTS))
def test_evaluate_with_every_shift(trained_ckpt, tiny_cifake, tmp_path, shift):
    """The CLI scores the shifted images: P(AI) equals the model on images shifted here by hand, and the
    shift's effect on those images is measured (grey channels, halved brightness, a quarter hue turn...)."""
    import torch
    from PIL import Image
    from core.data.datasets import open_dataset
    from core.inference.evaluate import predict_logits
    from core.data.shifts import apply_shift, parse_shift
    rc = evaluate.main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--out", str(tmp_path / "ev"),
                        "--shift", shift])
    assert rc == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["shift"] == shift if ":" in shift else m["shift"] == "grayscale:1"
    assert m["n"] == 48
    df = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    ds = open_dataset(tiny_cifake, split="test")
    position = {ds.item_id(i): i for i in range(len(ds))}
    files = [tiny_cifake / "test" / p for p in df["path"]]
    clean = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)
                         for f in files])                                         # (48, 3, 32, 32) uint8
    s = parse_shift(shift)
    shifted = apply_shift(clean, s.name, s.level, seed=[position[p] for p in df["path"]])
    lm = load_checkpoint(trained_ckpt)
    p_hand = torch.sigmoid(predict_logits(lm.model, shifted, lm.device) / lm.temperature).numpy()
    np.testing.assert_allclose(df["prob_fake"].to_numpy(), p_hand, atol=1e-5)
    measure, expected, tol = EFFECTS[shift]
    got = measure(clean, shifted)
    assert (got == pytest.approx(expected, abs=tol)) if tol else got == expected, (shift, got)


def test_blur_and_downscale_remove_the_tiny_task_signal(trained_ckpt, tiny_cifake, tmp_path):
    """The tiny model tells noise from smooth images; heavy blur makes noise smooth, so FAKE recall must fall."""
    evaluate.main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--out", str(tmp_path / "a")])
    evaluate.main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--out", str(tmp_path / "b"),
                   "--shift", "blur:2"])
    clean = json.loads((tmp_path / "a" / "metrics.json").read_text())["per_class"]["FAKE"]["recall"]
    blurred = json.loads((tmp_path / "b" / "metrics.json").read_text())["per_class"]["FAKE"]["recall"]
    assert blurred < clean - 0.3


def test_evaluate_on_hemg_parquet_and_usage_errors(trained_ckpt, tmp_path, capsys):
    folder = make_hemg_parquet(tmp_path / "hemg", n_per_class=12)
    assert evaluate.main(["--weights", str(trained_ckpt), "--data", str(folder), "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "label mapping: 0 (AiArtData) -> FAKE (1), 1 (RealArt) -> REAL (0)" in err
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == 24 and m["accuracy"] >= 0.9
    df = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert df.path.str.contains(r"train-0000\d-of-00002.parquet#\d+").all()
    assert evaluate.main(["--weights", str(tmp_path / "nope.pt"), "--data", str(folder), "--out", str(tmp_path / "x")]) == 2
    assert evaluate.main(["--weights", str(trained_ckpt), "--data", str(folder), "--out", str(tmp_path / "x"),
                          "--shift", "sharpen:3"]) == 2


def test_train_on_parquet(tmp_path):
    folder = make_hemg_parquet(tmp_path / "hemg", n_per_class=16)
    assert train.main(["--data", str(folder), "--epochs", "1", "--finetune-epochs", "0", "--batch-size", "8",
                       "--out", str(tmp_path / "p.pt"), "--model-args", '{"channels": [4, 8, 8, 8], "hidden": 8}']) == 0
    # 32 images: 3 calibration (core.verdict.verdict), 3 validation, 26 training
    assert load_checkpoint(tmp_path / "p.pt").meta["train_config"]["train_images"] == 26


def test_predict_cli_json_lines(trained_ckpt, tiny_cifake, tmp_path, capsys):
    rng = np.random.default_rng(5)
    (tmp_path / "noise.jpg").write_bytes(jpeg_bytes(noise_image(rng)))
    (tmp_path / "fake.jpg").write_text("<html>not an image</html>")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(jpeg_bytes(noise_image(rng)))
    rc = predict.main(["--weights", str(trained_ckpt), str(tmp_path / "noise.jpg"), str(tmp_path / "fake.jpg"),
                       str(tmp_path / "missing.jpg"), str(tmp_path / "sub")])
    assert rc == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.strip().splitlines()]
    assert [ln["file"].rsplit("/", 1)[-1] for ln in lines] == ["noise.jpg", "fake.jpg", "missing.jpg", "a.png"]
    assert lines[0]["label"] == "FAKE" and 0.5 <= lines[0]["prob_fake"] <= 1
    assert lines[1] == {"file": str(tmp_path / "fake.jpg"), "error": "an HTML document, not an image"}
    assert lines[2]["error"] == "file not found"
    assert predict.main(["--weights", str(tmp_path / "nope.pt"), str(tmp_path / "noise.jpg")]) == 2


def test_predict_folder_answers_every_file(trained_ckpt, tmp_path, capsys):
    """core.inference.predict on a folder: one line per file, a result or a reason; .svg and .heic are not dropped."""
    rng = np.random.default_rng(6)
    d = tmp_path / "mixed"
    (d / "deeper").mkdir(parents=True)
    (d / "a.jpg").write_bytes(jpeg_bytes(noise_image(rng)))
    (d / "deeper" / "b.png").write_bytes(jpeg_bytes(noise_image(rng)))
    (d / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>')
    (d / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    (d / "notes.txt").write_text("hello")
    (d / "cut.jpg").write_bytes(jpeg_bytes(noise_image(rng))[:100])
    (tmp_path / "empty").mkdir()
    assert predict.main(["--weights", str(trained_ckpt), str(d), str(tmp_path / "empty")]) == 0
    lines = {Path(ln["file"]).name: ln for ln in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    assert set(lines) == {"a.jpg", "b.png", "logo.svg", "phone.heic", "notes.txt", "cut.jpg", "empty"}
    assert {n for n, ln in lines.items() if "prob_fake" in ln} == {"a.jpg", "b.png"}
    assert "SVG" in lines["logo.svg"]["error"]
    assert "HEIC" in lines["phone.heic"]["error"]
    assert "text file" in lines["notes.txt"]["error"]
    assert "truncated" in lines["cut.jpg"]["error"] or "damaged" in lines["cut.jpg"]["error"]
    assert lines["empty"]["error"] == "folder has no files"
