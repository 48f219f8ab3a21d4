"""Train one generator family of the sample on the train REAL crops that build_sample.py cuts, and save its weights.

    python data/train_generator.py --family ddpm --minutes 25     # writes weights/generators/ddpm.pt

A script of its own because it needs both build_sample.py (the crops) and generators.py (the families), and
build_sample.py imports generators.py: the generators themselves import neither.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_sample as bs  # noqa: E402  (data/build_sample.py, beside this script)
import generators as gen  # noqa: E402


def main(argv=None):
    """Train one family on the train REAL crops that build_sample.py cuts, and save its weights."""
    p = argparse.ArgumentParser(description="Train one generator family for the sample.")
    p.add_argument("--family", required=True, choices=gen.FAMILIES)
    p.add_argument("--steps", type=int, default=100000, help="step cap (default: 100000)")
    p.add_argument("--minutes", type=float, default=20, help="wall-time cap in minutes (default: 20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", type=Path, default=bs.REPO / "weights" / "generators")
    p.add_argument("--preview", type=int, default=64, help="samples in the preview grid (default: 64)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    crops = bs.train_crops_for(args.family)
    gen.log(f"[{args.family}] {len(crops)} train crops of {crops.shape[-1]} px")
    seed = bs.DEFAULT_SEED + gen.hash_family(args.family)
    model, cfg, done, secs = gen.train_family(args.family, crops, args.steps, args.minutes, seed)
    path = args.weights / f"{args.family}.pt"
    gen.save_generator(path, model, args.family, cfg, done, secs)
    gen.log(f"[{args.family}] saved {path} after {done} steps, {secs:.0f} s")
    if args.preview:
        inputs = crops[:args.preview] if args.family == "regen" else None
        prev = gen.generate(args.family, model, cfg, args.preview, 1, inputs)
        gen.save_grid(gen.to_tensor([a for a, _ in prev]), bs.CACHE / "progress" / f"{args.family}_final.png")


if __name__ == "__main__":
    main()
