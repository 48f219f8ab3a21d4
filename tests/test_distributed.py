"""torchrun with 2 gloo processes on the CPU trains a checkpoint that loads and matches single-process accuracy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core import evaluate
from core.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--arch", "seed-v21", "--epochs", "4", "--finetune-epochs", "1", "--batch-size", "16", "--lr", "3e-3",
        "--val-fraction", "0.25", "--model-args", '{"channels": [8, 16, 16, 32], "hidden": 16}']


def test_torchrun_two_process_gloo(tiny_cifake, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    ddp = tmp_path / "ddp.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "core.train", "--data", str(tiny_cifake), "--out", str(ddp), *ARGS],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    single = tmp_path / "single.pt"
    assert subprocess.run([sys.executable, "-m", "core.train", "--data", str(tiny_cifake), "--out", str(single), *ARGS],
                          cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    lm = load_checkpoint(ddp)
    assert lm.meta["train_config"]["world_size"] == 2
    # Each rank saw half of every epoch: 96 training images -> 48 per rank -> 3 steps of 16.
    assert lm.meta["train_config"]["train_images"] == 96
    acc = {}
    for name, ck in (("ddp", ddp), ("single", single)):
        assert evaluate.main(["--weights", str(ck), "--data", str(tiny_cifake), "--out", str(tmp_path / name)]) == 0
        acc[name] = json.loads((tmp_path / name / "metrics.json").read_text())["accuracy"]
    # 48 test images: "within noise" is a few images on this easy task.
    assert acc["ddp"] >= 0.85 and abs(acc["ddp"] - acc["single"]) <= 0.15, acc
