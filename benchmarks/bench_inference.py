"""Evaluation throughput and single-image latency, as ratios against limits measured in the same run.

    python benchmarks/bench_inference.py [--weights weights/default.pt] [--data data/sample/test]

Rows (images/s, same model, same images):
- bare forward: the model on uint8 tensors already in memory (the limit on this hardware);
- end-to-end: core.evaluate.predict_dataset, files on disk -> decode -> preprocess -> model -> P(FAKE);
- seed V2.1 pipeline: the same, but each image downsampled to 32 and upscaled to 128 (16x the pixels),
  through the same architecture at 128x128 (a checkpoint trained that way when --seed-weights is given).
Latency (ms, one image): bare forward of one image vs Predict's decode + preprocess + forward + Grad-CAM.
"""
from __future__ import annotations

import argparse

from common import ROOT, best_of, print_table, save


from core.checkpoint import load_checkpoint
from core.datasets import open_dataset
from core.evaluate import decode_dataset, predict_dataset, predict_logits
from core.metrics import classification_metrics
from core.predict import predict_one
from core.preprocess import SEED_V21_PREPROCESS


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"), help="default: weights/default.pt")
    ap.add_argument("--seed-weights", default=str(ROOT / "weights" / "seed-v21-128.pt"),
                    help="checkpoint trained with --preprocess seed-v21 (default: weights/seed-v21-128.pt; "
                         "if missing, the default weights are run at 128 for speed only)")
    ap.add_argument("--data", default=str(ROOT / "data" / "sample" / "test"), help="default: data/sample/test")
    ap.add_argument("--batch-size", type=int, default=256, help="default: 256")
    ap.add_argument("--repeats", type=int, default=3, help="best of N (default: 3)")
    args = ap.parse_args()

    lm = load_checkpoint(args.weights)
    ds = open_dataset(args.data)
    n = len(ds)
    dec = decode_dataset(ds, lm.preprocess)
    x, y = dec.x, dec.y
    bs = args.batch_size

    def bare():
        for i in range(0, len(x), bs):
            predict_logits(lm.model, x[i:i + bs], lm.device)

    rows = []
    t_bare = best_of(bare, args.repeats)
    rows.append({"pipeline": "bare forward (tensors in memory)", "images_per_s": n / t_bare, "ratio_to_bare": 1.0})

    res = {}

    def e2e():
        res["df"], _ = predict_dataset(lm, ds, bs)
    t_e2e = best_of(e2e, args.repeats)
    acc = classification_metrics(res["df"].label.to_numpy(), res["df"].prob_fake.to_numpy())["accuracy"]
    rows.append({"pipeline": "end-to-end evaluate (files on disk)", "images_per_s": n / t_e2e,
                 "ratio_to_bare": t_bare / t_e2e, "accuracy": acc})
    for workers in (2,):
        t_w = best_of(lambda: predict_dataset(lm, ds, bs, workers=workers), args.repeats)
        rows.append({"pipeline": f"end-to-end, {workers} DataLoader workers", "images_per_s": n / t_w,
                     "ratio_to_bare": t_bare / t_w})

    try:
        seed_lm = load_checkpoint(args.seed_weights)
        seed_note = "trained on the 32->128 pipeline"
    except Exception:
        seed_lm = load_checkpoint(args.weights)
        seed_lm.preprocess = SEED_V21_PREPROCESS
        seed_note = "default weights run at 128 (speed only; accuracy not comparable)"
    t_seed = best_of(lambda: res.__setitem__("seed", predict_dataset(seed_lm, ds, bs)[0]), max(1, args.repeats - 1))
    seed_acc = classification_metrics(res["seed"].label.to_numpy(), res["seed"].prob_fake.to_numpy())["accuracy"]
    rows.append({"pipeline": f"seed V2.1 pipeline 32->128 ({seed_note})", "images_per_s": n / t_seed,
                 "ratio_to_bare": t_bare / t_seed, "accuracy": seed_acc})
    speedup = t_seed / t_e2e

    # Single-image latency.
    one = x[:1]
    path = ds.items[0][0]
    data = open(path, "rb").read() if isinstance(path, str) else None
    for _ in range(20):
        predict_logits(lm.model, one, lm.device)
    k = 200
    t_one = best_of(lambda: [predict_logits(lm.model, one, lm.device) for _ in range(k)], args.repeats) / k
    t_pred = best_of(lambda: [predict_one(lm, "x", data, with_cam=True) for _ in range(k)], args.repeats) / k
    t_pred_nocam = best_of(lambda: [predict_one(lm, "x", data, with_cam=False) for _ in range(k)], args.repeats) / k
    lat = [{"step": "bare forward, 1 image", "ms": t_one * 1e3, "ratio_to_bare": 1.0},
           {"step": "Predict: decode + preprocess + forward", "ms": t_pred_nocam * 1e3, "ratio_to_bare": t_pred_nocam / t_one},
           {"step": "Predict: decode + preprocess + forward + Grad-CAM", "ms": t_pred * 1e3, "ratio_to_bare": t_pred / t_one}]

    print(f"{n} images from {args.data}, model {lm.arch} ({lm.preprocess.describe()}), batch {bs}\n")
    print_table(rows, ["pipeline", "images_per_s", "ratio_to_bare", "accuracy"])
    print(f"\nend-to-end vs seed pipeline: {speedup:.1f}x faster\n")
    print_table(lat, ["step", "ms", "ratio_to_bare"])
    save("inference", {"images": n, "throughput": rows, "speedup_vs_seed": speedup, "latency": lat})


if __name__ == "__main__":
    main()
