"""What the familiarity's content part costs: evaluation of the sample's test split with and without it, in one run.

    python benchmarks/bench_content_cost.py [--weights weights/default.pt] [--rounds 3]

The same loaded checkpoint is evaluated (core.inference.evaluate.predict_dataset, the default schedule) as it is
and with its content part removed (the model-feature and colour parts only), alternating, `--rounds` times each;
the ratio of the medians is the claim (the issue's budget: at most 1.25). Writes
benchmarks/results/bench_content_cost.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from common import ROOT, machine, save

from core.data.datasets import open_dataset
from core.inference.evaluate import predict_dataset
from core.model.checkpoint import load_checkpoint


def without_content(lm):
    fam = dataclasses.replace(lm.verdict.familiarity, content=None)
    return dataclasses.replace(lm, verdict=dataclasses.replace(lm.verdict, familiarity=fam),
                               inference_model=lm.inference_model)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"))
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    lm = load_checkpoint(a.weights)
    if lm.verdict.familiarity is None or lm.verdict.familiarity.content is None:
        raise SystemExit(f"{a.weights} has no content part")
    base = without_content(lm)
    ds = open_dataset(ROOT / "data" / "sample", split="test")
    predict_dataset(lm, ds)                                  # warm both paths once
    times = {"with content": [], "without content": []}
    for _ in range(a.rounds):
        for name, m in (("without content", base), ("with content", lm)):
            t0 = time.perf_counter()
            predict_dataset(m, ds)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["with content"] / med["without content"]
    print(f"{len(ds)} images: without {med['without content']:.2f} s, with {med['with content']:.2f} s, "
          f"ratio {ratio:.3f}")
    save("bench_content_cost", {"machine": machine(), "weights": a.weights, "images": len(ds), "seconds": times,
                                "median_seconds": med, "ratio": ratio})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
