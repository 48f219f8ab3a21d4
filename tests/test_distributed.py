"""torchrun with 2 gloo processes on the CPU: gradients are synchronised (parameters identical on both
ranks after every epoch), and the checkpoint loads and matches single-process accuracy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from core.inference import evaluate
from core.model.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--arch", "seed-v21", "--epochs", "4", "--finetune-epochs", "1", "--batch-size", "16", "--lr", "3e-3",
        "--val-fraction", "0.25", "--model-args", '{"channels": [8, 16, 16, 32], "hidden": 16}']

# Run under torchrun: core.model.train.train with an on_epoch observer that saves each rank's parameters.
RANK_SCRIPT = textwrap.dedent("""
    import sys, torch
    from core.model.train import get_args_parser, main_config, train
    out_dir = sys.argv[1]
    cfg = main_config(get_args_parser().parse_args(sys.argv[2:]))

    def save_params(rep):
        torch.save({k: v.detach().cpu().clone() for k, v in rep.model.state_dict().items()},
                   f"{out_dir}/rank{rep.rank}-epoch{rep.epoch}.pt")

    train(cfg, log=lambda *a: None, on_epoch=save_params)
""")


def test_torchrun_two_process_gloo(tiny_cifake, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    ddp = tmp_path / "ddp.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), str(tmp_path), "--data", str(tiny_cifake), "--out", str(ddp), *ARGS],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # Each rank trains on a different half of every epoch; only gradient synchronisation keeps them equal.
    for epoch in range(1, 6):
        p0, p1 = (torch.load(tmp_path / f"rank{k}-epoch{epoch}.pt", weights_only=True) for k in (0, 1))
        assert all(torch.equal(p0[k], p1[k]) for k in p0 if p0[k].is_floating_point()), f"ranks differ after epoch {epoch}"
    first, last = (torch.load(tmp_path / f"rank0-epoch{e}.pt", weights_only=True) for e in (1, 5))
    assert any(not torch.equal(first[k], last[k]) for k in first), "parameters never changed: nothing was trained"

    single = tmp_path / "single.pt"
    assert subprocess.run([sys.executable, "-m", "core", "train", "--data", str(tiny_cifake), "--out", str(single), *ARGS],
                          cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    lm = load_checkpoint(ddp)
    assert lm.meta["train_config"]["world_size"] == 2
    # 128 images: 13 calibration (core.verdict.verdict), 32 validation, 83 training; each rank sees half of every
    # epoch: 41 images -> 2 steps of 16.
    assert lm.meta["train_config"]["train_images"] == 83
    acc = {}
    for name, ck in (("ddp", ddp), ("single", single)):
        assert evaluate.main(["--weights", str(ck), "--data", str(tiny_cifake), "--out", str(tmp_path / name)]) == 0
        acc[name] = json.loads((tmp_path / name / "metrics.json").read_text())["accuracy"]
    # 48 test images: "within noise" is a few images on this easy task.
    assert acc["ddp"] >= 0.85 and abs(acc["ddp"] - acc["single"]) <= 0.15, acc


def test_torchrun_sharded_evaluate_equals_single_process(tiny_cifake, trained_ckpt, tmp_path):
    """2 gloo processes each evaluate every other image; rank 0 writes one result equal to one process's:
    the same rows in the same order (undecodable files included), P(AI) within 1e-5, the same metrics."""
    import shutil

    import pandas as pd
    data = tmp_path / "data"
    shutil.copytree(tiny_cifake / "test", data)                                   # 48 images
    (data / "REAL" / "zz_truncated.jpg").write_bytes((data / "REAL" / "0000.jpg").read_bytes()[:100])
    (data / "FAKE" / "zz_text.jpg").write_text("not an image")
    (data / "FAKE" / "zz_empty.jpg").write_bytes(b"")                             # 51 items: uneven shards
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = ["-m", "core", "evaluate", "--weights", str(trained_ckpt), "--data", str(data), "--batch-size", "8"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        *args, "--out", str(tmp_path / "ddp")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    ddp, one = (pd.read_csv(tmp_path / d / "predictions.csv", keep_default_na=False) for d in ("ddp", "one"))
    assert len(one) == 48 and list(ddp.columns) == list(one.columns)
    assert ddp[["path", "label", "source"]].equals(one[["path", "label", "source"]])
    assert (ddp["prob_fake"] - one["prob_fake"]).abs().max() <= 1e-5
    assert (ddp["logit"] - one["logit"]).abs().max() <= 1e-4
    m_ddp, m_one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "one"))
    assert (m_ddp.pop("processes"), m_one.pop("processes")) == (2, 1)
    for m in (m_ddp, m_one):
        del m["seconds"], m["images_per_second"]
    assert [s["path"] for s in m_one["skipped"]] == ["FAKE/zz_empty.jpg", "FAKE/zz_text.jpg", "REAL/zz_truncated.jpg"]
    _assert_same(m_ddp, m_one)


def _assert_same(a, b, path="metrics"):
    """Equal structure and values; floats within 1e-6 (they derive from P(AI) equal within 1e-5)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-6 or (a != a and b != b), (path, a, b)
    else:
        assert a == b, (path, a, b)
