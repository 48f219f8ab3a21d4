"""The cheaper per-image paths of end-to-end evaluation compute exactly what the slower ones did.

Each path here was rewritten for speed (benchmarks/bench_inference.py): the familiarity distance (a
matmul instead of a three-operand einsum), the file read (os.read instead of open().read()) and the
item id (a prefix cut instead of os.path.relpath), and decoding between batches instead of in a thread
where the forward occupies every core. Each test checks the new path against numbers worked
by hand or against the old definition.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import jpeg_bytes, make_cifake, smooth_image
from core.datasets import open_dataset
from core.images import ImageError, load_image
from core.verdict import Familiarity


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


def test_decoding_beside_or_between_batches_gives_the_same_rows(trained_ckpt, tiny_cifake, monkeypatch):
    import torch

    from core import evaluate as ev
    from core.checkpoint import load_checkpoint
    # the rule: a thread only where the forward leaves a core free
    monkeypatch.setattr(ev.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert not ev.decode_overlaps(torch.device("cpu"))
    assert ev.decode_overlaps(torch.device("cuda"))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert ev.decode_overlaps(torch.device("cpu"))
    monkeypatch.undo()
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    frames = []
    for overlap in (True, False):
        monkeypatch.setattr(ev, "OVERLAP_DECODING", overlap)
        frames.append(ev.predict_dataset(lm, ds, batch_size=7, workers=0)[0])
    assert frames[0]["path"].tolist() == frames[1]["path"].tolist() == [ds.item_id(i) for i in range(len(ds))]
    np.testing.assert_allclose(frames[0]["prob_fake"], frames[1]["prob_fake"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(frames[0]["familiarity"], frames[1]["familiarity"], rtol=0, atol=1e-6)


def test_the_cpu_forward_runs_in_chunks_with_the_same_logits_and_features(trained_ckpt, monkeypatch):
    """A batch larger than FORWARD_CHUNK reaches the model FORWARD_CHUNK images at a time on a CPU (its activations
    stay in the caches), and the logits and pooled features equal those of the whole batch at once, for one window
    per image and for K windows (the per-image mean is taken after the chunks are joined)."""
    import torch

    from core import evaluate as ev
    from core.checkpoint import load_checkpoint
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
