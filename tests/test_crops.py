"""Large images: windows at native resolution (--fit crop), K windows averaged at inference (--crops),
draft decoding, all recorded in the checkpoint and served by the one preprocessing function."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.images import load_image
from core.data.preprocess import (PreprocessConfig, crop_positions, preprocess_image, preprocess_views,
                             random_crop_position)

ROOT = Path(__file__).resolve().parent.parent


def _ramp(w=100, h=60) -> torch.Tensor:
    """uint8 (3, h, w): channel 0 = column index, channel 1 = row index, channel 2 = 7."""
    x = torch.zeros(3, h, w, dtype=torch.uint8)
    x[0] = torch.arange(w).view(1, w)
    x[1] = torch.arange(h).view(h, 1)
    x[2] = 7
    return x


def test_window_is_native_pixels_at_the_asked_place():
    cfg = PreprocessConfig(size=32, fit="crop")
    x = _ramp()
    centre = preprocess_image(x, cfg)
    # free range 100-32 = 68 columns, 60-32 = 28 rows: the centre window starts at column 34, row 14
    assert centre[0, 0, 0] == 34 and centre[1, 0, 0] == 14 and centre[0, 0, 31] == 65
    off = preprocess_image(x, cfg, (0.25, 1.0))                     # rows 7.., columns 68..
    assert (off[0, 0, 0], off[1, 0, 0]) == (68, 7)
    tl, br = preprocess_image(x, cfg, (0.0, 0.0)), preprocess_image(x, cfg, (1.0, 1.0))
    assert (tl[0, 0, 0], tl[1, 0, 0]) == (0, 0) and (br[0, -1, -1], br[1, -1, -1]) == (99, 59)
    pil = Image.fromarray(x.permute(1, 2, 0).numpy())
    for at in [(0.3, 0.8), (1.0, 0.0)]:
        assert torch.equal(preprocess_image(x, cfg, at), preprocess_image(pil, cfg, at))   # same from PIL
    assert torch.equal(x, _ramp())                                                          # input untouched


def test_small_images_are_enlarged_to_fit_the_window():
    out = preprocess_image(_ramp(40, 20), PreprocessConfig(size=32, fit="crop"))
    assert out.shape == (3, 32, 32)
    assert (out[2] == 7).all()                                   # a flat channel stays flat after bicubic


def test_inference_views_and_positions():
    cfg = PreprocessConfig(size=32, fit="crop", crops=5)
    v = preprocess_views(_ramp(), cfg)
    assert v.shape == (5, 3, 32, 32)
    assert crop_positions(5) == [(0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    assert v[1, 0, 0, 0] == 0 and v[2, 0, 0, 0] == 68 and v[3, 1, 0, 0] == 28        # TL, TR, BL corners
    assert preprocess_views(_ramp(), PreprocessConfig(size=32, fit="crop")).shape == (3, 32, 32)
    p = [random_crop_position(3, i) for i in range(50)]
    assert p == [random_crop_position(3, i) for i in range(50)] and len(set(p)) == 50
    assert all(0 <= a <= 1 and 0 <= b <= 1 for a, b in p) and p != [random_crop_position(4, i) for i in range(50)]


def test_config_contract_and_old_checkpoints():
    cfg = PreprocessConfig(size=64, fit="crop", crops=3)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig.from_dict({"size": 32, "upsample_from": None, "fit": "squash"}) == PreprocessConfig()
    for bad in ({"fit": "zoom"}, {"crops": 2}, {"fit": "crop", "crops": 10}, {"fit": "crop", "draft": True}):
        with pytest.raises(ValueError):
            PreprocessConfig(**bad)
    assert "3 windows averaged" in cfg.describe()


def test_logits_of_k_windows_are_averaged():
    from core.inference.evaluate import predict_logits

    class MeanRed(torch.nn.Module):                 # logit = mean of the red channel, in [0, 1]
        def forward(self, x):
            return x[:, 0].mean(dim=(1, 2))
    x = torch.stack([preprocess_views(_ramp(), PreprocessConfig(size=32, fit="crop", crops=2))])   # (1, 2, 3, S, S)
    z = predict_logits(MeanRed(), x, torch.device("cpu"))
    # windows start at columns 34 (centre) and 0 (top left): mean red = start + 15.5, over 255
    assert z.shape == (1,) and z.item() == pytest.approx(((34 + 0) / 2 + 15.5) / 255, abs=1e-6)


def _jpeg(arr: np.ndarray, q=92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=q)
    return buf.getvalue()


def test_draft_decoding_reduces_large_jpegs_only():
    rng = np.random.default_rng(0)
    arr = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)).resize((800, 600), Image.BICUBIC))
    data = _jpeg(arr)
    out = load_image(data, draft_side=64)
    assert out.size == (100, 75) and "1/8 scale" in out.notes[0]       # 600/8 = 75 >= 64, 600/16 would not be
    assert load_image(data, draft_side=200).size == (400, 300)            # 1/2: 1/4 would give 150 < 200
    assert load_image(data).size == (800, 600)
    small = _jpeg(arr[:100, :120])
    assert load_image(small, draft_side=64).size == (120, 100)              # under 2x: decoded in full
    # Draft then resize is close to full decode then resize (same picture, different filters).
    full = preprocess_image(load_image(data).image, PreprocessConfig(size=32))
    drafted = preprocess_image(load_image(data, draft_side=64).image, PreprocessConfig(size=32, draft=True))
    assert (full.float() - drafted.float()).abs().mean() < 4.0


def _large_images(root: Path, n=12, seed=0) -> Path:
    """root/{REAL,FAKE}/*.jpg of 96-160 px: REAL smooth, FAKE with per-pixel noise (a high-frequency trace
    that survives a native-resolution window and mostly vanishes in a resize to 32 px)."""
    rng = np.random.default_rng(seed)
    for cls in ("REAL", "FAKE"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = int(rng.integers(96, 161)), int(rng.integers(96, 161))
            base = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC))
            if cls == "FAKE":
                base = np.clip(base.astype(int) + rng.integers(-60, 61, base.shape), 0, 255).astype(np.uint8)
            (root / cls / f"{i:03d}.jpg").write_bytes(_jpeg(base))
    return root


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory):
    from core.model.train import TrainConfig, train
    d = tmp_path_factory.mktemp("crops")
    data = _large_images(d / "train")
    _large_images(d / "test", n=8, seed=1)
    res = train(TrainConfig(data=str(data), arch="seed-v21", image_size=32, fit="crop", crops=3, epochs=4,
                            finetune_epochs=1, batch_size=8, lr=3e-3, val_fraction=0.25, out=str(d / "crop.pt"),
                            model_args={"channels": [8, 16, 16, 32], "hidden": 16}), log=lambda *a: None)
    return d, res


def test_training_draws_new_windows_every_epoch(crop_run):
    from core.model.train import training_windows
    _, res = crop_run
    a, b = training_windows(res.data, 1, 0), training_windows(res.data, 2, 0)
    assert a.shape == res.data.x_train.shape and a.shape[1:] == (3, 32, 32) and len(a) >= 12
    assert torch.equal(a, training_windows(res.data, 1, 0))                 # reproducible
    assert not torch.equal(a, b)                                            # new windows each epoch


def test_crop_checkpoint_evaluates_and_predicts_with_k_windows(crop_run, capsys):
    from core.inference import evaluate, predict
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import predict_logits
    d, _ = crop_run
    lm = load_checkpoint(d / "crop.pt")
    assert lm.preprocess == PreprocessConfig(size=32, fit="crop", crops=3)
    assert evaluate.main(["--weights", str(d / "crop.pt"), "--data", str(d / "test"), "--out", str(d / "e3")]) == 0
    assert evaluate.main(["--weights", str(d / "crop.pt"), "--data", str(d / "test"), "--out", str(d / "e1"),
                          "--crops", "1"]) == 0
    m3 = json.loads((d / "e3" / "metrics.json").read_text())
    assert m3["preprocess"]["crops"] == 3 and m3["n"] == 16
    import pandas as pd
    p3, p1 = (pd.read_csv(d / e / "predictions.csv") for e in ("e3", "e1"))
    # Row 0 by hand: the mean of the model's logits on its 3 windows.
    ds = open_dataset(d / "test")
    img = ds.load(0).decoded
    views = preprocess_views(img, lm.preprocess)                                             # (3, 3, 32, 32)
    z_each = predict_logits(lm.inference_model, views, lm.device)
    assert p3["logit"][0] == pytest.approx(float(z_each.mean()), abs=1e-5)
    assert p1["logit"][0] == pytest.approx(float(z_each[0]), abs=1e-5)                     # centre window only
    capsys.readouterr()
    f = str(ds.items[0][0])
    assert predict.main(["--weights", str(d / "crop.pt"), f]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["prob_fake"] == pytest.approx(float(p3["prob_fake"][0]), abs=1e-6)


def test_crops_refused_for_resize_checkpoints(trained_ckpt, tiny_cifake, tmp_path, capsys):
    from core.inference import evaluate
    assert evaluate.main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--out", str(tmp_path / "x"),
                          "--crops", "3"]) == 2
    assert "--fit crop" in capsys.readouterr().err
