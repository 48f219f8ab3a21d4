"""Resident memory while evaluating a generated Hemg-schema parquet larger than the row groups it reads.

    python benchmarks/bench_parquet_memory.py [--images 20000] [--weights weights/default.pt]

Writes N 32x32 JPEGs into parquet shards (image struct of bytes/path, ClassLabel label names in the
Hugging Face metadata), then evaluates them with core.inference.evaluate while sampling the process's RSS.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, print_table, save

import numpy as np
import psutil
from PIL import Image

from core.model.checkpoint import load_checkpoint
from core.data.datasets import open_dataset
from core.inference.evaluate import predict_dataset


def write_parquet(folder: Path, n: int, shards: int = 4, seed: int = 0) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    meta = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"},
                                                             "label": {"names": ["AiArtData", "RealArt"],
                                                                       "_type": "ClassLabel"}}}}).encode()}
    typ = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    per = n // shards
    total = 0
    for s in range(shards):
        imgs, labels = [], []
        for i in range(per):
            arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            imgs.append({"bytes": buf.getvalue(), "path": f"{i}.jpg"})
            labels.append(i % 2)
        t = pa.table({"image": pa.array(imgs, type=typ), "label": pa.array(labels, type=pa.int64())})
        pq.write_table(t.replace_schema_metadata(meta), folder / f"train-{s:05d}-of-{shards:05d}.parquet",
                       row_group_size=1000)
        total += sum(len(d["bytes"]) for d in imgs)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20000, help="default: 20000")
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"), help="default: weights/default.pt")
    args = ap.parse_args()
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        nbytes = write_parquet(folder, args.images)
        lm = load_checkpoint(args.weights)
        ds = open_dataset(folder)
        base = proc.memory_info().rss
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.05)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        df, skipped = predict_dataset(lm, ds, 256, workers=0)
        secs = time.perf_counter() - t0
        stop.set()
        th.join()
    rows = [{"images": len(df), "encoded_MB": nbytes / 2**20, "rss_before_MB": base / 2**20,
             "rss_peak_MB": peak[0] / 2**20, "growth_MB": (peak[0] - base) / 2**20, "images_per_s": len(df) / secs}]
    print_table(rows, list(rows[0]))
    save("parquet_memory", {"rows": rows})


if __name__ == "__main__":
    main()
