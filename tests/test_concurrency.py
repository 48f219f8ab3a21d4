"""Objects shared across app sessions (one dataset, one model) give every concurrent call its own answer.

Streamlit's st.cache_resource hands the same ImageDataset to every session. Here 8+ threads run
evaluations with different models (different preprocessing) and different shifts on ONE dataset
object at once, and each result must equal the same call run alone, bit for bit. Before datasets
were frozen, calls set `ds.preprocess` / `ds.shift` on the shared object and the parquet row-group
cache was shared without a guard: P(AI) differed by up to 1.0 between these two runs.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

from conftest import make_hemg_parquet
from core.model.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from core.data.datasets import open_dataset
from core.inference.evaluate import decode_dataset, predict_dataset
from core.model.models import build_model
from core.data.preprocess import PreprocessConfig
from core.audits.robustness import gradcam_audit_dataset
from core.data.shifts import parse_shift

SHIFTS = [None, "jpeg:30", "blur:1.5", "noise:16", "grayscale", "downscale:2", "hue:0.25", "contrast:0.5"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two models that disagree on everything: architecture, weights, and input size (32 vs 48)."""
    out = []
    for seed, arch, size, args in ((0, "seed-v1", 32, {"channels": [4, 8, 8], "hidden": 8}),
                                   (1, "seed-v21", 48, {"channels": [4, 8, 8, 8], "hidden": 8})):
        torch.manual_seed(seed)
        m = build_model(arch, input_size=size, **args)
        p = tmp_path_factory.mktemp("m") / f"{arch}.pt"
        save_checkpoint(make_checkpoint(m, arch, {"input_size": size, **args}, PreprocessConfig(size=size)), p)
        out.append(load_checkpoint(p))
    return out


@pytest.fixture(scope="module", params=["folder", "parquet"])
def shared_ds(request, tiny_cifake, tmp_path_factory):
    if request.param == "folder":
        return open_dataset(tiny_cifake, split="test")
    # 40 rows in row groups of 3 over 2 shards: threads constantly need different row groups.
    return open_dataset(make_hemg_parquet(tmp_path_factory.mktemp("pq"), n_per_class=20, row_group_size=3))


def _run_concurrently(jobs):
    barrier = threading.Barrier(len(jobs))
    results, errors = [None] * len(jobs), []

    def work(k):
        try:
            barrier.wait()
            results[k] = jobs[k]()
        except BaseException as e:      # noqa: BLE001  reported below with the job number
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    # Switch threads every microsecond instead of every 5 ms: races that need an unlucky switch between
    # two lines (a shared row-group cache read just after another thread replaced it) then happen.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    return results


def test_eight_threads_on_one_dataset_equal_sequential_runs(shared_ds, models):
    jobs = []
    for k, text in enumerate(SHIFTS):
        lm, shift = models[k % 2], parse_shift(text)
        # batch_size 4: many batches per call, so the threads interleave inside each evaluation.
        jobs.append(lambda lm=lm, shift=shift: predict_dataset(lm, shared_ds, batch_size=4, workers=0, shift=shift)[0])
    for k, text in enumerate(SHIFTS[:4]):
        lm, shift = models[(k + 1) % 2], parse_shift(text)
        jobs.append(lambda lm=lm, shift=shift: decode_dataset(shared_ds, lm.preprocess, shift, workers=0, batch_size=4).x)
    jobs.append(lambda: gradcam_audit_dataset(models[1], shared_ds, n=16)["concentration"])
    sequential = [job() for job in jobs]
    concurrent = _run_concurrently(jobs)
    assert len(jobs) >= 8
    for k, (a, b) in enumerate(zip(sequential, concurrent)):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), f"job {k}: decoded images differ"
        elif isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f"job {k}")
        else:
            assert a["path"].tolist() == b["path"].tolist()
            np.testing.assert_array_equal(a["prob_fake"].to_numpy(), b["prob_fake"].to_numpy(), err_msg=f"job {k}")
    # The jobs really differ from each other (so a mix-up could not go unnoticed).
    probs = [r["prob_fake"].to_numpy() for r in sequential[:len(SHIFTS)]]
    assert all(not np.array_equal(probs[0], p) for p in probs[2::2])


def test_datasets_are_frozen(tiny_cifake):
    ds = open_dataset(tiny_cifake, split="test")
    for name, value in (("shift", parse_shift("jpeg:30")), ("preprocess", PreprocessConfig(64)), ("items", ())):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(ds, name, value)
    # A per-call view carries its own settings and leaves the dataset as it was.
    view = ds.view(PreprocessConfig(48), parse_shift("grayscale"))
    assert view[0]["image"].shape == (3, 48, 48) and ds[0]["image"].shape == (3, 32, 32)
    gray = view[0]["image"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_parquet_reader_under_many_threads(tmp_path):
    """8 threads reading random rows of one parquet dataset in a tight loop each get their own row's bytes."""
    ds = open_dataset(make_hemg_parquet(tmp_path / "pq", n_per_class=20, row_group_size=3))
    refs = [ds.items[i][0] for i in range(len(ds))]
    expected = [ds.read_bytes(r) for r in refs]
    assert len(set(expected)) == len(expected)                    # every row's image differs

    def reader(seed):
        rng = np.random.default_rng(seed)
        return [(int(i), ds.read_bytes(refs[int(i)])) for i in rng.integers(0, len(refs), 400)]

    for results in _run_concurrently([lambda s=s: reader(s) for s in range(8)]):
        wrong = [i for i, data in results if data != expected[i]]
        assert not wrong, f"{len(wrong)} reads returned another row's bytes"
