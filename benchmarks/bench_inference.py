"""Evaluation throughput against the fused forward pass (the limit) and the machine's peak, plus latency.

    python benchmarks/bench_inference.py [--weights weights/default.pt] [--data data/sample/test]
    python benchmarks/bench_inference.py --profile      # where end-to-end evaluation spends its time

Throughput rows (images/s, same model, same images, measured in interleaved rounds, best of --repeats):
- fused forward: LoadedModel.inference_model (BatchNorm folded into the convolutions) on uint8 tensors
  already in memory, the best of batch sizes 32/64/128/256 on the process's torch threads, and of the same
  batches split over lanes of one torch thread each (one lane per thread, core.inference.threads.map_in_lanes). This is
  the limit: everything else adds work to it.
- unfused forward: the trained module as saved (what inference ran before folding).
- end-to-end: core.inference.evaluate.predict_dataset, files on disk -> decode -> preprocess -> model -> P(FAKE)
  (+ familiarity), in-process as evaluate runs by default (core.inference.evaluate.decoding_schedule: lanes on this
  CPU), then with each other schedule (a decoding thread beside the forward; decoding between batches), with
  2 DataLoader workers, and with Pillow decoding every JPEG (the fast JPEG path of core.data.images switched off).
- seed V2.1 pipeline: each image downsampled to 32 and upscaled to 128 (16x the pixels), same architecture
  at 128x128 (a checkpoint trained that way when --seed-weights exists).
Roofline: FLOPs per image (convolutions and linear layers, counted by torch.utils.flop_counter on the
fused model) x fused images/s, against the machine's fp32 peak measured with a 2048x2048 matmul on the
same threads (and the nominal AVX2 peak from /proc/cpuinfo, for reference).
Latency (ms, one image): fused forward of one image vs Predict's decode + preprocess + forward (+ Grad-CAM).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from common import ROOT, print_table, save

from core.data import images
from core.model.checkpoint import load_checkpoint
from core.data.datasets import open_dataset
from core.inference.evaluate import decode_dataset, decoding_schedule, predict_dataset, predict_logits
from core.metrics.metrics import classification_metrics
from core.inference.predict import predict_one
from core.data.preprocess import SEED_V21_PREPROCESS, to_model_input
from core.inference.threads import map_in_lanes


def flops_per_image(model: torch.nn.Module, size: int) -> int:
    """Floating-point operations of one forward pass (2 per multiply-add; convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = to_model_input(torch.zeros(1, 3, size, size, dtype=torch.uint8))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 GFLOP/s of an n x n matmul (the best a BLAS gets from these cores)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def nominal_peak() -> tuple[float | None, str]:
    """cores x 2 FMA units x 8 fp32 lanes x 2 FLOPs x clock, for AVX2+FMA CPUs (from /proc/cpuinfo)."""
    import os
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None, "unknown"
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    if not mhz or " avx2" not in flags or " fma" not in flags or " avx512f" in flags:
        return None, "not an AVX2 (non-AVX-512) CPU: no nominal figure"
    cores = torch.get_num_threads() if torch.get_num_threads() <= (os.cpu_count() or 1) else os.cpu_count()
    ghz = max(mhz) / 1000
    return cores * 32 * ghz, f"{cores} cores x 32 FLOP/cycle (2 FMA x 8 fp32 lanes x 2) x {ghz:.2f} GHz"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def profile(args) -> None:
    import cProfile
    import pstats

    lm, ds = load_checkpoint(args.weights), open_dataset(args.data)
    run = lambda: predict_dataset(lm, ds, batch_size=args.batch_size, workers=0, schedule="serial")  # noqa: E731
    run()                                                            # warm-up: page cache, oneDNN primitives
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(run)
    print(f"{len(ds)} images in {time.perf_counter() - t0:.2f} s, {torch.get_num_threads()} torch threads")
    pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    step_costs(lm, ds, args.repeats)


def step_costs(lm, ds, repeats: int) -> None:
    """CPU time per image of each step a lane runs, on one torch thread (what a lane has), best of `repeats`,
    without the profiler's overhead: these add up to a lane's work per image."""
    from core.data.datasets import collate_records
    from core.inference.evaluate import FORWARD_CHUNK
    from core.verdict.verdict import colourfulness, pooled_features

    view, n, unit = ds.view(lm.preprocess), len(ds), FORWARD_CHUNK
    recs = [view[i] for i in range(n)]
    batches = [collate_records(recs[i:i + unit]) for i in range(0, n, unit)]
    inputs = [to_model_input(b["x"]) for b in batches]
    fam = lm.verdict.familiarity
    feats = []

    def forward():
        feats.clear()
        with torch.inference_mode():
            for x in inputs:
                feats.append(pooled_features(lm.inference_model, x)[1].float().numpy())
    steps = {
        "read, check and decode each file, preprocess (dataset record)": lambda: [view[i] for i in range(n)],
        f"collate {unit} records": lambda: [collate_records(recs[i:i + unit]) for i in range(0, n, unit)],
        "forward with pooled features (one thread)": forward,
        "familiarity (distance, colour, p-values)": lambda: [fam.score(f, colourfulness(b["x"]))
                                                             for f, b in zip(feats, batches)] if fam else None,
    }
    rows = []

    def one_thread():
        for name, fn in steps.items():
            fn()
            rows.append({"step": name, "us_per_image": min(_timed(fn) for _ in range(max(1, repeats))) / n * 1e6})
    from core.inference.threads import start_single_threaded
    for t in start_single_threaded([one_thread]):
        t.join()
    total = sum(r["us_per_image"] for r in rows)
    for r in rows:
        r["share"] = r["us_per_image"] / total
    print(f"\nCPU time per image of a lane's steps ({n} images, one torch thread, best of {repeats}):")
    print_table(rows + [{"step": "total", "us_per_image": total, "share": 1.0}], ["step", "us_per_image", "share"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"), help="default: weights/default.pt")
    ap.add_argument("--seed-weights", default=str(ROOT / "weights" / "seed-v21-128.pt"),
                    help="checkpoint trained with --preprocess seed-v21 (default: weights/seed-v21-128.pt; "
                         "if missing, the default weights are run at 128 for speed only)")
    ap.add_argument("--data", default=str(ROOT / "data" / "sample" / "test"), help="default: data/sample/test")
    ap.add_argument("--batch-size", type=int, default=256, help="batch size of the end-to-end rows (default: 256)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds, best of N (default: 5)")
    ap.add_argument("--name", default="inference", help="results file benchmarks/results/NAME.json (default: inference)")
    ap.add_argument("--profile", action="store_true",
                    help="only print a cProfile of one end-to-end prediction (core.inference.evaluate.predict_dataset, "
                         "schedule 'serial' so that one thread holds all the work), top 20 by own time")
    args = ap.parse_args()
    if args.profile:
        return profile(args)

    lm = load_checkpoint(args.weights)
    ds = open_dataset(args.data)
    n = len(ds)
    x = decode_dataset(ds, lm.preprocess).x                 # uint8 (N, 3, S, S)
    bs = args.batch_size

    def gpu_autocast():                         # as core.inference.evaluate.predict_logits runs a GPU forward
        return torch.autocast("cuda", dtype=torch.float16, enabled=lm.device.type == "cuda")

    def batch(model, b, i):                     # the forward of x[i:i + b] as it is (not cut into FORWARD_CHUNKs)
        with torch.inference_mode(), gpu_autocast():
            return model(to_model_input(x[i:i + b].to(lm.device))).float().cpu()

    def forward(model, b):
        def run():                              # on the process's torch threads
            for i in range(0, len(x), b):
                batch(model, b, i)
        return run

    def forward_lanes(model, b):
        def run():                              # the same batches, one lane per torch thread (one thread each)
            for _ in map_in_lanes(lambda i: batch(model, b, i), range(0, len(x), b), lanes=torch.get_num_threads()):
                pass
        return run

    res = {}

    def e2e(workers=None):
        def run():
            res["df"], _ = predict_dataset(lm, ds, bs, workers=workers)
        return run

    def e2e_schedule(schedule: str):
        def run():
            predict_dataset(lm, ds, bs, workers=0, schedule=schedule)
        return run

    def e2e_pillow():
        saved = images._FAST_JPEG
        images._FAST_JPEG = False
        try:
            predict_dataset(lm, ds, bs)
        finally:
            images._FAST_JPEG = saved

    batches = (32, 64, 128, 256)
    jobs = {("fused", b): forward(lm.inference_model, b) for b in batches}
    jobs.update({("fused-lanes", b): forward_lanes(lm.inference_model, b) for b in batches})
    jobs.update({("unfused", b): forward(lm.model, b) for b in batches})
    jobs.update({("e2e", 0): e2e(), ("e2e", 2): e2e(2), ("e2e-pillow", 0): e2e_pillow,
                 ("e2e-thread", 0): e2e_schedule("thread"), ("e2e-serial", 0): e2e_schedule("serial")})
    for fn in jobs.values():                       # warm-up: allocator, oneDNN primitives, page cache
        fn()
    best = {k: float("inf") for k in jobs}
    for _ in range(args.repeats):                   # interleaved: every row sees the same machine load
        for k, fn in jobs.items():
            best[k] = min(best[k], _timed(fn))
    acc = classification_metrics(res["df"].label.to_numpy(), res["df"].prob_fake.to_numpy())["accuracy"]
    fused_k = min((k for k in best if k[0] in ("fused", "fused-lanes")), key=best.get)
    unfused_b = min(batches, key=lambda b: best[("unfused", b)])
    t_fused = best[fused_k]
    how = f"{torch.get_num_threads()} lanes of 1 thread" if fused_k[0] == "fused-lanes" else \
        f"{torch.get_num_threads()} threads"
    rows = [
        {"pipeline": f"fused forward, batch {fused_k[1]}, {how} (tensors in memory): the limit",
         "images_per_s": n / t_fused, "ratio_to_fused": 1.0},
        {"pipeline": f"unfused forward, batch {unfused_b} (the trained module as saved)",
         "images_per_s": n / best[("unfused", unfused_b)], "ratio_to_fused": t_fused / best[("unfused", unfused_b)]},
        {"pipeline": f"end-to-end evaluate, files on disk, batch {bs} (schedule "
                     f"'{decoding_schedule(lm.device)}': the default here)",
         "images_per_s": n / best[("e2e", 0)],
         "ratio_to_fused": t_fused / best[("e2e", 0)], "accuracy": acc},
        {"pipeline": "end-to-end, decoding in a thread beside the forward", "images_per_s": n / best[("e2e-thread", 0)],
         "ratio_to_fused": t_fused / best[("e2e-thread", 0)]},
        {"pipeline": "end-to-end, decoding between batches", "images_per_s": n / best[("e2e-serial", 0)],
         "ratio_to_fused": t_fused / best[("e2e-serial", 0)]},
        {"pipeline": "end-to-end, 2 DataLoader workers", "images_per_s": n / best[("e2e", 2)],
         "ratio_to_fused": t_fused / best[("e2e", 2)]},
        {"pipeline": "end-to-end, Pillow decoding every JPEG (fast path off)", "images_per_s": n / best[("e2e-pillow", 0)],
         "ratio_to_fused": t_fused / best[("e2e-pillow", 0)]},
    ]

    try:
        seed_lm = load_checkpoint(args.seed_weights)
        seed_note = "trained on the 32->128 pipeline"
    except Exception:
        seed_lm = dataclasses.replace(load_checkpoint(args.weights), preprocess=SEED_V21_PREPROCESS)
        seed_note = "default weights run at 128 (speed only; accuracy not comparable)"
    t_seed = min(_timed(lambda: res.__setitem__("seed", predict_dataset(seed_lm, ds, bs)[0]))
                 for _ in range(max(1, args.repeats // 2)))
    seed_acc = classification_metrics(res["seed"].label.to_numpy(), res["seed"].prob_fake.to_numpy())["accuracy"]
    rows.append({"pipeline": f"seed V2.1 pipeline 32->128 ({seed_note})", "images_per_s": n / t_seed,
                 "ratio_to_fused": t_fused / t_seed, "accuracy": seed_acc})
    speedup = t_seed / best[("e2e", 0)]

    # Roofline.
    flops = flops_per_image(lm.inference_model, lm.preprocess.size)
    achieved = flops * n / t_fused / 1e9
    peak = matmul_peak()
    nominal, nominal_how = nominal_peak()
    roof = {"flops_per_image": flops, "achieved_gflops": achieved, "matmul_peak_gflops": peak,
            "share_of_matmul_peak": achieved / peak, "nominal_peak_gflops": nominal, "nominal_peak_how": nominal_how}

    # Single-image latency.
    one = x[:1]
    path = ds.items[0][0]
    data = open(path, "rb").read() if isinstance(path, str) else None
    for _ in range(20):
        predict_logits(lm.inference_model, one, lm.device)
    k = 200
    t_one = min(_timed(lambda: [predict_logits(lm.inference_model, one, lm.device) for _ in range(k)])
                for _ in range(args.repeats)) / k
    t_pred = min(_timed(lambda: [predict_one(lm, "x", data, with_cam=True) for _ in range(k)])
                 for _ in range(args.repeats)) / k
    t_pred_nocam = min(_timed(lambda: [predict_one(lm, "x", data, with_cam=False) for _ in range(k)])
                       for _ in range(args.repeats)) / k
    lat = [{"step": "fused forward, 1 image", "ms": t_one * 1e3, "ratio_to_forward": 1.0},
           {"step": "Predict: decode + preprocess + forward", "ms": t_pred_nocam * 1e3,
            "ratio_to_forward": t_pred_nocam / t_one},
           {"step": "Predict: decode + preprocess + forward + Grad-CAM", "ms": t_pred * 1e3,
            "ratio_to_forward": t_pred / t_one}]

    print(f"{n} images from {args.data}, model {lm.arch} ({lm.preprocess.describe()}), "
          f"{torch.get_num_threads()} threads\n")
    print_table(rows, ["pipeline", "images_per_s", "ratio_to_fused", "accuracy"])
    print(f"\nend-to-end vs seed pipeline: {speedup:.1f}x faster")
    print(f"\nroofline: {flops / 1e6:.1f} MFLOP/image x {n / t_fused:,.0f} img/s = {achieved:.1f} GFLOP/s; "
          f"measured matmul peak {peak:.1f} GFLOP/s ({achieved / peak:.0%} of it)"
          + (f"; nominal {nominal:.0f} GFLOP/s = {nominal_how}" if nominal else "") + "\n")
    print_table(lat, ["step", "ms", "ratio_to_forward"])
    save(args.name, {"weights": args.weights, "images": n, "batch_size": bs, "repeats": args.repeats, "throughput": rows,
                       "speedup_vs_seed": speedup, "roofline": roof, "latency": lat,
                       "best_seconds": {f"{k[0]}:{k[1]}": v for k, v in best.items()}})


if __name__ == "__main__":
    main()
