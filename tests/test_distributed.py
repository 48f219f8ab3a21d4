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

from core import evaluate
from core.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--arch", "seed-v21", "--epochs", "4", "--finetune-epochs", "1", "--batch-size", "16", "--lr", "3e-3",
        "--val-fraction", "0.25", "--model-args", '{"channels": [8, 16, 16, 32], "hidden": 16}']

# Run under torchrun: core.train.train with an on_epoch observer that saves each rank's parameters.
RANK_SCRIPT = textwrap.dedent("""
    import sys, torch
    from core.train import get_args_parser, main_config, train
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
