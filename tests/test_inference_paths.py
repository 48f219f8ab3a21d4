"""The cheaper per-image paths of end-to-end evaluation compute exactly what the slower ones did.

Each path here was rewritten for speed (benchmarks/bench_inference.py): the familiarity distance (a
matmul instead of a three-operand einsum), the file read (os.read instead of open().read()) and the
item id (a prefix cut instead of os.path.relpath), and lanes that each decode and run their own unit instead of a
decoding thread beside a forward that occupies every core. Each test checks the new path against numbers worked
by hand or against the old definition.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import jpeg_bytes, make_cifake, smooth_image
from core.data.datasets import open_dataset
from core.data.images import ImageError, load_image
from core.verdict.verdict import Familiarity


def test_familiarity_distance_by_hand_and_against_the_definition():
    # precision [[1, 0.5], [0.5, 2]]; class means (0, 0) and (3, 0); the point (1, 1):
    #   to REAL: d = (1, 1):  1*1 + 2*0.5*1*1 + 2*1 = 4      -> sqrt 2
    #   to FAKE: d = (-2, 1): 4 + 2*0.5*(-2)*1 + 2 = 4        -> sqrt 2 (tie)
    # the point (2, 0): REAL d^2 = 4, FAKE d = (-1, 0): 1 -> sqrt 1 (the nearer class wins)
    fam = Familiarity(means=np.array([[0.0, 0.0], [3.0, 0.0]]), precision=np.array([[1.0, 0.5], [0.5, 2.0]]),
                      reference=np.array([0.5, 1.5]))
    np.testing.assert_allclose(fam.distance(np.array([[1.0, 1.0], [2.0, 0.0]])), [2.0, 1.0], rtol=0, atol=1e-12)
    # against the textbook definition on random features (float32 in, float64 out, never negative)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    fam = Familiarity(means=rng.normal(size=(2, 16)), precision=a @ a.T + np.eye(16), reference=np.sort(rng.random(9)))
    f = rng.normal(size=(300, 16)).astype(np.float32)
    x = f.astype(np.float64)
    want = np.sqrt(np.min([np.einsum("nc,cd,nd->n", x - mu, fam.precision, x - mu) for mu in fam.means], axis=0))
    got = fam.distance(f)
    assert got.dtype == np.float64 and got.shape == (300,)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert fam.distance(np.zeros((0, 16), np.float32)).shape == (0,)
    assert fam._factor is not None                        # the one-matmul form (Cholesky factor) was taken
    # a precision that is not positive definite (a foreign checkpoint) has no factor: the two-matmul form, clamped
    # precision [[1, 2], [2, 1]], means (0, 0) and (3, 0): the point (1, 0): REAL 1, FAKE (-2, 0): 4 -> 1;
    # the point (1, -1): REAL 1 - 4 + 1 = -2, FAKE (-2, -1): 4 + 8 + 1 = 13 -> -2, clamped to 0
    odd = Familiarity(means=np.array([[0.0, 0.0], [3.0, 0.0]]), precision=np.array([[1.0, 2.0], [2.0, 1.0]]),
                      reference=np.array([0.5]))
    assert odd._factor is None
    # a precision that is not symmetric (a foreign checkpoint): the quadratic form is that of its symmetric part,
    # which the factor is taken of; the same numbers as the definition with the matrix as given
    skew = a @ a.T + np.eye(16) + 0.05 * np.triu(rng.normal(size=(16, 16)), 1)
    fam = Familiarity(means=fam.means, precision=skew, reference=np.sort(rng.random(9)))
    assert fam._factor is not None
    want = np.sqrt(np.min([np.einsum("nc,cd,nd->n", x - mu, skew, x - mu) for mu in fam.means], axis=0))
    np.testing.assert_allclose(fam.distance(f), want, rtol=1e-10)
    np.testing.assert_allclose(odd.distance(np.array([[1.0, 0.0], [1.0, -1.0]])), [1.0, 0.0], rtol=0, atol=1e-12)


def test_load_image_from_a_path_reads_the_whole_file_and_keeps_its_reasons(tmp_path):
    rng = np.random.default_rng(1)
    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg_bytes(smooth_image(rng)))
    # larger than a 1 MB chunk: an uncompressed 700 px BMP (1.5 MB)
    big = tmp_path / "big.bmp"
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, (700, 700, 3)).astype(np.uint8)).save(big)
    assert big.stat().st_size > (1 << 20)
    for p in (small, big):
        from_path, from_bytes = load_image(p), load_image(p.read_bytes())
        assert from_path.size == from_bytes.size
        assert (from_path.pixels == from_bytes.pixels).all()
    with pytest.raises(ImageError, match="^file not found$"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="^is a folder, not a file$"):
        load_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"^empty file \(0 bytes\)$"):
        load_image(tmp_path / "empty.jpg")
    # not a regular file (a pipe: size 0 to fstat): read in chunks to its end
    r, w = os.pipe()
    data = small.read_bytes()
    os.write(w, data)
    os.close(w)
    try:
        assert (load_image(f"/proc/self/fd/{r}").pixels == load_image(data).pixels).all()
    finally:
        os.close(r)


@pytest.mark.parametrize("how", ["relative", "absolute", "dot"])
def test_item_ids_are_paths_relative_to_the_dataset(tmp_path, monkeypatch, how):
    make_cifake(tmp_path / "c", n_train=2, n_test=3)
    test = tmp_path / "c" / "test"
    monkeypatch.chdir(tmp_path if how == "relative" else test)
    root = {"relative": "c/test", "absolute": str(test) + "/", "dot": "."}[how]
    ds = open_dataset(root, fmt="folder")
    ids = [ds.item_id(i) for i in range(len(ds))]
    assert ids == [f"{c}/{i:04d}.jpg" for c in ("FAKE", "REAL") for i in range(3)]
    assert ids == [os.path.relpath(ds.items[i][0], ds.root) for i in range(len(ds))]


def test_the_default_schedule_by_device_and_threads():
    """Lanes on a CPU where the caller has several torch threads, decoding between batches on one thread (a warm-up
    or sweep lane), a decoding thread beside a GPU's forward."""
    import torch

    from core.inference import evaluate as ev
    assert ev.decoding_schedule(torch.device("cpu"), 2) == "lanes"
    assert ev.decoding_schedule(torch.device("cpu"), 1) == "serial"
    assert ev.decoding_schedule(torch.device("cuda"), 2) == "thread"
    assert ev.decoding_schedule(torch.device("mps"), 1) == "thread"


def test_every_schedule_gives_the_same_rows_in_dataset_order(trained_ckpt, tiny_cifake, tmp_path, monkeypatch):
    """Lanes, a decoding thread, decoding between batches and DataLoader workers: the same rows, skipped items and
    positions, for the whole set and for a subset (a sweep's sample), with an undecodable file among them; with lanes
    the work runs on two threads of one torch thread each and progress reaches the calling thread."""
    import shutil
    import threading

    import torch

    from core.inference import evaluate as ev
    from core.model.checkpoint import load_checkpoint
    lm = load_checkpoint(trained_ckpt)
    root = tmp_path / "c"
    shutil.copytree(tiny_cifake, root)
    (root / "test" / "FAKE" / "0003.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    ds = open_dataset(root, split="test")
    bad = ds.item_id(3)
    assert bad == "FAKE/0003.jpg"
    seen, progress_threads = [], set()
    score = ev._score_batch

    def spy(lm_, batch):
        seen.append((threading.get_ident(), torch.get_num_threads(), len(batch["ids"]) + len(batch["skipped"])))
        return score(lm_, batch)
    monkeypatch.setattr(ev, "_score_batch", spy)
    monkeypatch.setattr(ev, "FORWARD_CHUNK", 5)                  # lanes take units of 5 items
    subset = [1, 3, 4, 7, 20, 30, 31, 47]
    results = {}
    lanes = torch.get_num_threads()                               # one lane per torch thread of the caller
    for how in ("lanes", "thread", "serial", "workers"):
        kw = {"workers": 2, "schedule": "serial"} if how == "workers" else {"workers": 0, "schedule": how}
        calls = []
        for extra in ({"progress": lambda d, t: progress_threads.add((how, threading.get_ident(), d, t))},
                      {"indices": subset}):
            seen.clear()
            calls.append((ev._predict_rows(lm, ds, batch_size=7, **extra, **kw), list(seen)))
        results[how] = tuple(r for r, _ in calls)
        if how == "lanes":                                        # per call: lanes of one torch thread each
            for _, work in calls:
                tids = {t for t, _, _ in work}
                assert {n for _, n, _ in work} == {1} and 1 <= len(tids) <= lanes
                assert threading.get_ident() not in tids
            # units of 5 items: 48 in 9 x 5 + 3, the 8 subset items in 5 + 3
            assert sorted(k for _, _, k in calls[0][1]) == [3] + [5] * 9
            assert sorted(k for _, _, k in calls[1][1]) == [3, 5]
    lanes_progress = sorted(d for how, t, d, _ in progress_threads if how == "lanes")
    assert {t for how, t, _, _ in progress_threads} == {threading.get_ident()}
    assert lanes_progress == [5, 10, 15, 20, 25, 30, 35, 40, 45, 48]
    for whole, part in results.values():
        df, skipped, row_index, skipped_index = whole
        assert df["path"].tolist() == [ds.item_id(i) for i in range(len(ds)) if i != 3]
        assert row_index.tolist() == [i for i in range(len(ds)) if i != 3]
        assert [s[0] for s in skipped] == [bad] and skipped_index == [3]
        df_s, skipped_s, row_index_s, skipped_index_s = part
        assert row_index_s.tolist() == [i for i in subset if i != 3] and skipped_index_s == [3]
        assert df_s["path"].tolist() == [ds.item_id(i) for i in subset if i != 3]
    ref = results["serial"][0][0]
    for how in ("lanes", "thread", "workers"):
        for col in ("prob_fake", "familiarity", "logit"):
            np.testing.assert_allclose(results[how][0][0][col], ref[col], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="schedule must be one of"):
        ev.predict_dataset(lm, ds, schedule="fast")


def test_map_in_lanes_keeps_order_raises_at_the_failing_unit_and_joins_its_lanes():
    import threading
    import time

    import torch

    from core.inference.threads import map_in_lanes

    def work(k):                                   # later units finish first: the output is still in unit order
        time.sleep(0.002 * (10 - k))
        return k, threading.get_ident(), torch.get_num_threads()
    before = threading.active_count()
    out = list(map_in_lanes(work, range(10), lanes=2))
    assert [k for k, _, _ in out] == list(range(10))
    assert len({t for _, t, _ in out}) == 2 and {n for _, _, n in out} == {1}
    assert threading.active_count() == before
    assert list(map_in_lanes(work, [], lanes=2)) == []

    done = []

    def failing(k):
        if k == 4:
            raise KeyError("unit 4")
        done.append(k)
        return k
    got = []
    with pytest.raises(KeyError, match="unit 4"):
        for v in map_in_lanes(failing, range(50), lanes=2):
            got.append(v)
    assert got == [0, 1, 2, 3]                    # every unit before the failing one, in order
    assert len(done) < 49                         # the lanes stopped taking units
    assert threading.active_count() == before

    calls = []

    def slow(k):
        calls.append(k)
        time.sleep(0.005)
        return k
    gen = map_in_lanes(slow, range(50), lanes=2)  # a consumer that stops early: the lanes stop and are joined
    assert next(gen) == 0
    gen.close()
    assert threading.active_count() == before
    assert len(calls) < 10                        # units taken after the close: none (at most those in flight)


def test_start_single_threaded_from_many_threads_keeps_the_process_thread_count():
    """Concurrent starts (two sessions evaluating at once, a page beside the warm-up) take turns: none reads another's
    momentary 1 as the process value and puts that back for every later thread."""
    import threading

    from core.inference.threads import process_threads, start_single_threaded
    before = process_threads()
    errors = []

    def starter():
        try:
            for _ in range(60):
                for t in start_single_threaded([lambda: None, lambda: None]):
                    t.join()
        except Exception as e:                    # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=starter) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert process_threads() == before


def test_a_failing_progress_or_unit_stops_the_lanes(trained_ckpt, tiny_cifake, monkeypatch):
    """An exception from the progress callback (a Streamlit rerun) or from a unit reaches the caller, and the lanes
    stop taking units and are gone when it does."""
    import threading

    from core.inference import evaluate as ev
    from core.model.checkpoint import load_checkpoint
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")                  # 48 images: 48 units of 1
    monkeypatch.setattr(ev, "FORWARD_CHUNK", 1)
    units = []
    score = ev._score_batch

    def spy(lm_, batch):
        units.append(batch["ids"])
        if batch["ids"] == [ds.item_id(5)] and failing_unit[0]:
            raise KeyError("unit 5")
        return score(lm_, batch)
    monkeypatch.setattr(ev, "_score_batch", spy)
    before = threading.active_count()

    class Rerun(Exception):
        pass

    def progress(done, total):
        if done == 3:
            raise Rerun()
    failing_unit = [False]
    # `info` keeps the traceback, and with it the call's frame, alive: the lanes must stop without waiting for it
    with pytest.raises(Rerun) as info:
        ev._predict_rows(lm, ds, batch_size=48, progress=progress, schedule="lanes", workers=0)
    assert threading.active_count() == before and len(units) < 48
    units.clear()
    failing_unit[0] = True
    with pytest.raises(KeyError, match="unit 5") as info2:
        ev._predict_rows(lm, ds, batch_size=48, schedule="lanes", workers=0)
    assert threading.active_count() == before and len(units) < 48
    assert info.traceback and info2.traceback


def test_the_cpu_forward_runs_in_chunks_with_the_same_logits_and_features(trained_ckpt, monkeypatch):
    """A batch larger than FORWARD_CHUNK reaches the model FORWARD_CHUNK images at a time on a CPU (its activations
    stay in the caches), and the logits and pooled features equal those of the whole batch at once, for one window
    per image and for K windows (the per-image mean is taken after the chunks are joined)."""
    import torch

    from core.inference import evaluate as ev
    from core.model.checkpoint import load_checkpoint
    lm = load_checkpoint(trained_ckpt)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (23, 3, lm.preprocess.size, lm.preprocess.size),
                                                             dtype=np.uint8))
    whole = ev.predict_logits(lm.inference_model, x, lm.device, with_features=True)      # 23 <= 64: one pass
    seen = []
    hook = lm.inference_model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    monkeypatch.setattr(ev, "FORWARD_CHUNK", 5)
    try:
        z = ev.predict_logits(lm.inference_model, x, lm.device)
        zf, f = ev.predict_logits(lm.inference_model, x, lm.device, with_features=True)
        windows = ev.predict_logits(lm.inference_model, x.view(23, 1, *x.shape[1:]).expand(23, 2, *x.shape[1:]),
                                    lm.device)
    finally:
        hook.remove()
    assert seen[:5] == [5, 5, 5, 5, 3] and max(seen) == 5
    np.testing.assert_allclose(z.numpy(), whole[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(zf.numpy(), whole[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(f.numpy(), whole[1].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(windows.numpy(), whole[0].numpy(), rtol=0, atol=1e-5)   # 2 equal windows: same mean
    assert z.shape == (23,) and f.shape == whole[1].shape
