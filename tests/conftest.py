"""Shared tiny fixtures, built in temporary folders: a CIFAKE-layout set, a Hemg-schema parquet, a checkpoint.

REAL images are smooth (upsampled 4x4 noise), FAKE images are per-pixel noise: a CNN separates them
in a few dozen steps, so end-to-end tests can assert real accuracy without real data.
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _torchvision_codecs_deprecation_silenced():
    """core.data.images silences torchvision's codec deprecation once; pytest resets the filters per test."""
    import warnings
    warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)
    yield


def smooth_image(rng, size=32) -> Image.Image:
    small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def noise_image(rng, size=32) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality=90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_cifake(root: Path, n_train=64, n_test=24, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls, make in (("REAL", smooth_image), ("FAKE", noise_image)):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i:04d}.jpg").write_bytes(jpeg_bytes(make(rng)))
    return root


def make_hemg_parquet(folder: Path, n_per_class=10, shards=2, seed=0, names=("AiArtData", "RealArt"),
                      with_metadata=True, row_group_size=4) -> Path:
    """Parquet shards in the Hugging Face Hemg schema: image struct<bytes, path>, int label (ClassLabel)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_per_class):
        rows.append((jpeg_bytes(noise_image(rng)), f"AiArtData/{i}.jpg", 0))     # 0 = AiArtData = FAKE
        rows.append((jpeg_bytes(smooth_image(rng)), f"RealArt/{i}.jpg", 1))      # 1 = RealArt = REAL
    meta = {b"huggingface": json.dumps({"info": {"features": {
        "image": {"_type": "Image"}, "label": {"names": list(names), "_type": "ClassLabel"}}}}).encode()}
    per = (len(rows) + shards - 1) // shards
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for s in range(shards):
        part = rows[s * per:(s + 1) * per]
        table = pa.table({"image": pa.array([{"bytes": b, "path": p} for b, p, _ in part], type=image_type),
                          "label": pa.array([lab for *_, lab in part], type=pa.int64())})
        if with_metadata:
            table = table.replace_schema_metadata(meta)
        pq.write_table(table, folder / f"train-{s:05d}-of-{shards:05d}.parquet", row_group_size=row_group_size)
    return folder


def free_port() -> int:
    """A TCP port nobody listens on now (for a test server)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc) -> None:
    """Terminate a test's server process; kill it if it does not exit within 10 s."""
    import subprocess
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def tiny_cifake(tmp_path_factory) -> Path:
    return make_cifake(tmp_path_factory.mktemp("cifake"))


@pytest.fixture(scope="session")
def trained_ckpt(tiny_cifake, tmp_path_factory) -> Path:
    """A seed-v21 trained for a few epochs on tiny_cifake (takes a few seconds)."""
    from core.model.train import TrainConfig, train
    out = tmp_path_factory.mktemp("w") / "tiny.pt"
    train(TrainConfig(data=str(tiny_cifake), arch="seed-v21", epochs=4, finetune_epochs=1, batch_size=16,
                      lr=3e-3, val_fraction=0.25, out=str(out), seed=0,
                      model_args={"channels": [8, 16, 16, 32], "hidden": 16}), log=lambda *a: None)
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "shipped: runs on the shipped weights/default.pt and data/sample "
                                       "(skips until they exist)")
