"""Large images: decode-bound evaluation throughput and peak memory on a Hemg-schema parquet of big JPEGs.

    python benchmarks/bench_large_images.py [--images 240] [--repeats 2]

Generates (once, cached in benchmarks/_cache/, not committed) a Hugging Face Hemg-schema parquet of
--images JPEGs of 512-1024 px per side (quality 90, smooth colour fields plus texture noise, so they
compress like photos: ~100-250 kB each), then evaluates it with core.inference.evaluate.evaluate under several
preprocessing settings, each in a fresh process whose peak memory is recorded: the proportional set
size (PSS: shared pages split between the processes sharing them, so forked DataLoader workers are not
counted twice) of the process and its workers, sampled every 100 ms:

- squash 32, full decoding: every pixel decoded (libjpeg-turbo), then resized to 32x32;
- squash 32, draft decoding (PreprocessConfig.draft): JPEGs decoded at 1/8 scale straight from the DCT;
- crop 128 (fit "crop"): a 128x128 window at native resolution, 1 window and 5 windows averaged;
each in-process in lanes (evaluate's default on a CPU: core.inference.evaluate.decoding_schedule), in-process decoding
between batches on one thread team, and with 2 DataLoader workers. The model is an untrained seed-v21 at the right input size:
this measures speed, not accuracy. "forward only" is the same model on in-memory tensors of the same
shape: the gap to it is decoding. Ratios are within one run; the machine may be shared.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

from common import ROOT, print_table, save

CONFIGS = {
    "squash32-full": {"size": 32, "fit": "squash"},
    "squash32-draft": {"size": 32, "fit": "squash", "draft": True},
    "crop128-k1": {"size": 128, "fit": "crop", "crops": 1},
    "crop128-k5": {"size": 128, "fit": "crop", "crops": 5},
}


def make_parquet(path, n: int, seed: int = 0) -> None:
    """Hemg schema: image struct<bytes, path>, int label with ClassLabel names (AiArtData, RealArt)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(512, 1025, 2))
        base = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC))
        tex = rng.normal(0, 12, (h, w, 1))
        img = np.clip(base + tex, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        rows.append({"bytes": buf.getvalue(), "path": f"{i:05d}.jpg", "label": i % 2})
    meta = {b"huggingface": json.dumps({"info": {"features": {
        "image": {"_type": "Image"}, "label": {"names": ["AiArtData", "RealArt"], "_type": "ClassLabel"}}}}).encode()}
    t = pa.table({"image": pa.array([{"bytes": r["bytes"], "path": r["path"]} for r in rows],
                                    type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                  "label": pa.array([r["label"] for r in rows], type=pa.int64())}).replace_schema_metadata(meta)
    tmp = str(path) + ".tmp"
    pq.write_table(t, tmp, row_group_size=32)
    os.replace(tmp, path)


def child(config: str, workers: int, schedule: str, parquet: str, repeats: int) -> None:
    """Runs in its own process: evaluate the parquet, print one JSON line."""
    import torch
    from core.model.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate, predict_logits
    from core.model.models import build_model
    from core.data.preprocess import PreprocessConfig
    pcfg = PreprocessConfig(**CONFIGS[config])
    torch.manual_seed(0)
    ckpt = os.path.join(os.path.dirname(parquet), f"{config}.pt")
    save_checkpoint(make_checkpoint(build_model("seed-v21", input_size=pcfg.size), "seed-v21",
                                    {"input_size": pcfg.size}, pcfg), ckpt)
    lm = load_checkpoint(ckpt)
    ds = open_dataset(parquet, class_map={"AiArtData": 1, "RealArt": 0})
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        df, m = evaluate(lm, ds, workers=workers, batch_size=32, schedule=schedule)
        best = min(best, time.perf_counter() - t0)
    k = pcfg.crops
    x = torch.randint(0, 256, (32, k, 3, pcfg.size, pcfg.size), dtype=torch.uint8).squeeze(1)
    predict_logits(lm.inference_model, x, lm.device)
    t0 = time.perf_counter()
    for _ in range(max(1, len(ds) // 32)):
        predict_logits(lm.inference_model, x, lm.device)
    fwd = (time.perf_counter() - t0) / (max(1, len(ds) // 32) * 32)
    print(json.dumps({"n": m["n"], "n_skipped": m["n_skipped"], "seconds": best, "images_per_s": len(ds) / best,
                      "forward_only_images_per_s": 1 / fwd}))


def run_measured(cmd: list[str]) -> tuple[dict, float]:
    """Run cmd; return its JSON line and the peak PSS (MB) of it and its children together."""
    import psutil
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(p.pid)
    peak = 0
    while p.poll() is None:
        try:
            pss = proc.memory_full_info().pss + sum(c.memory_full_info().pss for c in proc.children(recursive=True))
            peak = max(peak, pss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=240, help="JPEGs in the generated parquet (default: 240)")
    ap.add_argument("--repeats", type=int, default=2, help="evaluations per process, best of N (default: 2)")
    ap.add_argument("--name", default="large_images", help="results file benchmarks/results/NAME.json")
    ap.add_argument("--child", nargs=4, metavar=("CONFIG", "WORKERS", "SCHEDULE", "PARQUET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.child[3], args.repeats)
        return
    cache = ROOT / "benchmarks" / "_cache"
    cache.mkdir(exist_ok=True)
    parquet = cache / f"hemg-large-{args.images}.parquet"
    if not parquet.exists():
        t0 = time.perf_counter()
        make_parquet(parquet, args.images)
        print(f"generated {parquet.relative_to(ROOT)} ({parquet.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.0f} s")
    # Baseline memory: a process that imports the same modules and opens the dataset, evaluating nothing.
    base_cmd = [sys.executable, "-c", "import sys; sys.path.insert(0, '.'); import json, torch, core.inference.evaluate, "
                "core.data.datasets as d; d.open_dataset(sys.argv[1], class_map={'AiArtData': 1, 'RealArt': 0}); "
                "print(json.dumps({}))", str(parquet)]
    _, base_mb = run_measured(base_cmd)
    rows = []
    for config in CONFIGS:
        for workers, schedule in ((0, "lanes"), (0, "serial"), (2, "serial")):
            res, peak = run_measured([sys.executable, __file__, "--repeats", str(args.repeats),
                                      "--child", config, str(workers), schedule, str(parquet)])
            rows.append({"preprocessing": config, "workers": workers,
                         "schedule": schedule if workers == 0 else "-", "images_per_s": res["images_per_s"],
                         "forward_only_images_per_s": res["forward_only_images_per_s"],
                         "share_of_forward": res["images_per_s"] / res["forward_only_images_per_s"],
                         "peak_pss_mb": peak, "over_baseline_mb": peak - base_mb, "n": res["n"]})
            print(f"{config} workers={workers} {schedule}: {res['images_per_s']:.1f} img/s, peak {peak:.0f} MB",
                  flush=True)
    full0 = next(r for r in rows if r["preprocessing"] == "squash32-full" and r["schedule"] == "serial")["images_per_s"]
    for r in rows:
        r["vs_squash32_full_serial"] = r["images_per_s"] / full0
    print(f"\n{args.images} JPEGs of 512-1024 px in one Hemg-schema parquet; baseline process {base_mb:.0f} MB\n")
    print_table(rows, ["preprocessing", "workers", "schedule", "images_per_s", "vs_squash32_full_serial",
                       "forward_only_images_per_s", "peak_pss_mb", "over_baseline_mb"])
    save(args.name, {"images": args.images, "repeats": args.repeats, "baseline_pss_mb": base_mb,
                          "parquet_mb": parquet.stat().st_size / 1e6, "rows": rows})


if __name__ == "__main__":
    main()
