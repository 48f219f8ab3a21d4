"""Training throughput against bare forward+backward, and wall time to reach a target test accuracy.

    python benchmarks/bench_training.py [--data data/sample] [--epochs 12] [--target 0.97]

Rows: bare forward+backward+step on uint8 tensors already in memory (the limit), one epoch of
core.model.train (augmentation, loss, optimiser, progress hooks included). Then a full core.model.train run,
evaluating the test split after every epoch, reports when test accuracy first reaches --target.
"""
from __future__ import annotations

import argparse
import time

from common import ROOT, best_of, print_table, save

import torch
import torch.nn.functional as F

from core.data.datasets import open_dataset
from core.model.models import build_model
from core.data.preprocess import PreprocessConfig, to_model_input
from core.inference.evaluate import decode_dataset
from core.model.train import TrainConfig, augment, evaluate, train


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "sample"), help="CIFAKE-layout root (default: data/sample)")
    ap.add_argument("--arch", default="seed-v21", help="default: seed-v21")
    ap.add_argument("--epochs", type=int, default=12, help="default: 12")
    ap.add_argument("--finetune-epochs", type=int, default=3, help="default: 3")
    ap.add_argument("--target", type=float, default=0.97, help="test accuracy to reach (default: 0.97)")
    ap.add_argument("--batch-size", type=int, default=128, help="default: 128")
    args = ap.parse_args()

    cfg = TrainConfig(data=args.data, arch=args.arch, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                      batch_size=args.batch_size, out=str(ROOT / "runs" / "bench_train.pt"))
    # The limit: forward + backward + AdamW step on tensors in memory, no augmentation, same batch size.
    ds = open_dataset(args.data, split="train")
    torch.manual_seed(0)
    # Same memory layout as core.model.train (channels_last), so the ratio compares like with like.
    model = build_model(args.arch, input_size=32).to(memory_format=torch.channels_last)
    dec = decode_dataset(ds, PreprocessConfig())
    x, y = dec.x, dec.y
    n = min(len(x), 4096)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def bare():
        for i in range(0, n, args.batch_size):
            xb = to_model_input(x[i:i + args.batch_size])
            loss = F.binary_cross_entropy_with_logits(model(xb), y[i:i + args.batch_size].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    bare()                                   # warm-up: allocator, oneDNN kernels
    t_bare = best_of(bare, 2) / n

    g = torch.Generator().manual_seed(0)

    def with_aug():
        for i in range(0, n, args.batch_size):
            xb = to_model_input(augment(x[i:i + args.batch_size], g))
            loss = F.binary_cross_entropy_with_logits(model(xb), y[i:i + args.batch_size].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    t_aug = best_of(with_aug, 2) / n

    # The real thing, with the test split evaluated after every epoch (outside the timed epoch).
    test = open_dataset(args.data, split="test")
    dect = decode_dataset(test, PreprocessConfig())
    xt, yt = dect.x, dect.y
    reached = {}
    t0 = time.perf_counter()
    history = []


    # Score the test split after every epoch through train()'s on_epoch hook (outside the timed epoch).
    def score_test(rep):
        te = evaluate(rep.model, xt, yt, rep.device)
        elapsed = time.perf_counter() - t0
        history.append({"elapsed_s": round(elapsed, 1), "test_acc": te["accuracy"], "val_acc": rep.record["val_acc"]})
        if te["accuracy"] >= args.target and "seconds" not in reached:
            reached["seconds"] = elapsed
            reached["epoch"] = len(history)
    ck = train(cfg, log=print, on_epoch=score_test).checkpoint
    wall = time.perf_counter() - t0
    epoch_ips = sorted(h["images_per_second"] for h in ck["history"])
    median_ips = epoch_ips[len(epoch_ips) // 2]
    rows = [{"what": "bare forward+backward+step (in memory)", "images_per_s": 1 / t_bare, "ratio": 1.0},
            {"what": "same + core.model.train augmentation", "images_per_s": 1 / t_aug, "ratio": t_bare / t_aug},
            {"what": "core.model.train epoch (median)", "images_per_s": median_ips, "ratio": median_ips * t_bare}]
    print()
    print_table(rows, ["what", "images_per_s", "ratio"])
    print(f"\nwall time of the whole run: {wall:.0f} s; test accuracy reached {args.target:.0%} "
          + (f"after {reached['seconds']:.0f} s (evaluation {reached['epoch']})" if reached else "never"))
    save("training", {"throughput": rows, "wall_seconds": wall, "target": args.target, "reached": reached,
                      "per_epoch": history})


if __name__ == "__main__":
    main()
