"""Would a familiarity check on more of the model's features flag a held-out family the shipped one misses?

    python benchmarks/familiarity_layers.py [--weights weights/logo/ddpm/model.pt] [--held-out ddpm]
                                            [--data data/sample] [--train-images 4000]

The shipped familiarity (core.verdict.verdict.Familiarity) is a class-conditional Mahalanobis distance on the last
block's pooled features. This script fits the same kind of distance (tied covariance, shrinkage 0.1) on
other feature sets of a LOGO fold model: every block's spatial mean, every block's mean and standard
deviation, one distance per block combined by Bonferroni (min p-value x number of blocks), the residual
stream's blocks only, and the two first blocks of each stream. Fitted on `--train-images` train images
without the held-out family; p-values against half of the test images of the other families and the
REALs (the reference); the cut-off flags 5% of that reference. Prints and writes, per feature set, the
share flagged of the other half of the REALs and of the other families' fakes (in distribution: about 5%
is the design) and of the held-out family's test fakes (what a useful check would flag).
Writes benchmarks/results/familiarity_layers.json.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import ROOT, save

sys.path.insert(0, str(ROOT))
from core.model.checkpoint import load_checkpoint  # noqa: E402
from core.data.preprocess import to_model_input  # noqa: E402

SHRINKAGE = 0.1
FLAG_RATE = 0.05


def load_split(root, split, keep, n=None, seed=0):
    with open(f"{root}/{split}/manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if keep(r)]
    np.random.default_rng(seed).shuffle(rows)
    rows = rows[:n] if n else rows
    x = np.stack([np.asarray(Image.open(f"{root}/{split}/{r['file']}").convert("RGB")) for r in rows])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), np.array([int(r["label"]) for r in rows]), \
        np.array([r["source"] for r in rows])


@torch.inference_mode()
def block_stats(model, x, batch=500):
    """{'mean': [per block (N, C)], 'std': [...]} over both streams' blocks (rgb first, then npr)."""
    maps = []
    bodies = [model.rgb, model.npr] if hasattr(model, "npr") else [model.body]
    hooks = [b.register_forward_hook(lambda m, i, o: maps.append(o)) for body in bodies for b in body]
    out = {"mean": [], "std": []}
    try:
        for i in range(0, len(x), batch):
            maps.clear()
            model(to_model_input(x[i:i + batch]))
            out["mean"].append([a.float().mean((2, 3)).numpy() for a in maps])
            out["std"].append([a.float().std((2, 3)).numpy() for a in maps])
    finally:
        for h in hooks:
            h.remove()
    return {k: [np.concatenate([b[j] for b in v]) for j in range(len(v[0]))] for k, v in out.items()}


def mahalanobis(train_f, y):
    means = np.stack([train_f[y == c].mean(0) for c in (0, 1)])
    c = train_f - means[y]
    cov = c.T @ c / (len(train_f) - 2)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.diag(np.diag(cov)) + 1e-6 * np.eye(cov.shape[0])
    precision = np.linalg.inv(cov)
    return lambda f: np.sqrt(np.maximum(0, np.min([((f - m) @ precision * (f - m)).sum(1) for m in means], 0)))


def _shown(path) -> str:
    """A path as the results file records it: relative to the repository when inside it (no machine paths)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "logo" / "ddpm" / "model.pt"))
    ap.add_argument("--held-out", default="ddpm")
    ap.add_argument("--data", default=str(ROOT / "data" / "sample"))
    ap.add_argument("--train-images", type=int, default=4000)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_checkpoint(args.weights).model.eval()
    x_tr, y_tr, _ = load_split(args.data, "train", lambda r: r["source"] != args.held_out, args.train_images)
    x_te, y_te, src = load_split(args.data, "test", lambda r: True)
    f_tr, f_te = block_stats(model, x_tr), block_stats(model, x_te)
    n_blocks = len(f_tr["mean"])
    half = np.random.default_rng(1).random(len(y_te)) < 0.5
    inside, held = src != args.held_out, src == args.held_out

    def distances(kinds, blocks):
        train = np.concatenate([f_tr[k][j] for k in kinds for j in blocks], 1)
        test = np.concatenate([f_te[k][j] for k in kinds for j in blocks], 1)
        return mahalanobis(train, y_tr)(test)

    def flagged(dists):
        ps = []
        for d in dists:
            ref = np.sort(d[inside & half])
            ps.append((len(ref) - np.searchsorted(ref, d, "left") + 1) / (len(ref) + 1))
        p = np.minimum(1, np.min(ps, 0) * len(ps))
        cut = np.sort(p[inside & half])[int(FLAG_RATE * (inside & half).sum())]
        return p < cut

    last = [n_blocks // 2 - 1, n_blocks - 1] if n_blocks > 4 else [n_blocks - 1]
    sets = {
        "last block, mean (shipped)": [distances(["mean"], last)],
        "every block, mean": [distances(["mean"], range(n_blocks))],
        "every block, mean + std": [distances(["mean", "std"], range(n_blocks))],
        "one per block, mean (Bonferroni)": [distances(["mean"], [j]) for j in range(n_blocks)],
        "one per block, mean + std (Bonferroni)": [distances(["mean", "std"], [j]) for j in range(n_blocks)],
        "residual stream's blocks, mean + std (Bonferroni)": [distances(["mean", "std"], [j])
                                                               for j in range(n_blocks // 2, n_blocks)],
        "first two blocks per stream, mean + std": [distances(["mean", "std"], [0, 1, n_blocks // 2,
                                                                                n_blocks // 2 + 1])],
    }
    rows = {}
    for name, dists in sets.items():
        fl = flagged(dists)
        rows[name] = {"real_flagged": float(fl[inside & ~half & (y_te == 0)].mean()),
                      "other_fakes_flagged": float(fl[inside & ~half & (y_te == 1)].mean()),
                      "held_out_flagged": float(fl[held].mean())}
        r = rows[name]
        print(f"{name:52s} REAL {r['real_flagged']:.3f}  other families {r['other_fakes_flagged']:.3f}  "
              f"{args.held_out} {r['held_out_flagged']:.3f}")
    save("familiarity_layers", {"weights": _shown(args.weights), "held_out": args.held_out, "data": _shown(args.data),
                                "train_images": len(y_tr), "test_images": len(y_te), "flag_rate": FLAG_RATE,
                                "rows": rows})


if __name__ == "__main__":
    main()
