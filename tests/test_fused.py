"""Fused inference (Conv2d + BatchNorm2d folded): same numbers as the trained module, which is never modified,
and the copy that evaluation, prediction, the sweep and Grad-CAM actually run."""
from __future__ import annotations

import threading

import torch
from torch import nn

from core.model.checkpoint import LoadedModel, load_checkpoint, make_checkpoint, save_checkpoint
from core.model.gradcam import gradcam, gradcam_pair
from core.model.models import build_model, fuse_for_inference
from core.data.preprocess import PreprocessConfig


def _seed_v21_with_statistics(seed=0, arch="seed-v21") -> nn.Module:
    """seed-v21 (or `arch`) whose BatchNorms have non-trivial running statistics and affine parameters (fresh ones are
    the identity map, which any fusion, even a wrong one, would pass)."""
    torch.manual_seed(seed)
    m = build_model(arch, input_size=32)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c) * 0.5)
            mod.running_var.copy_(torch.rand(c) * 2 + 0.1)
            mod.weight.data.copy_(torch.randn(c))
            mod.bias.data.copy_(torch.randn(c))
    return m.to(memory_format=torch.channels_last).eval()


def test_fused_seed_v21_equals_unfused_and_leaves_model_untouched():
    m = _seed_v21_with_statistics()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    f = fuse_for_inference(m)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in f.modules())
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules()) == 4          # original keeps its 4
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not f.training and not any(p.requires_grad for p in f.parameters())
    x = torch.rand(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        z, zf = m(x), f(x)
        feats, feats_f = m.features(x), f.features(x)
        # Folding changes only float rounding. Tolerances: features (values up to ~10 here) within 1e-4
        # absolute + 1e-5 relative; logits within 1e-5.
        assert feats.abs().max() > 1.0 and feats.std() > 0.1
        assert torch.allclose(feats_f, feats, atol=1e-4, rtol=1e-5), (feats_f - feats).abs().max()
        assert torch.allclose(zf, z, atol=1e-5), (zf - z).abs().max()


def test_fused_two_stream_folds_both_streams():
    m = _seed_v21_with_statistics(arch="two-stream")
    f = fuse_for_inference(m)
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules()) == 8
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in f.modules())
    x = torch.rand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        z, zf = m(x), f(x)
        feats, feats_f = m.features(x), f.features(x)
        assert feats.std() > 0.1 and torch.allclose(feats_f, feats, atol=1e-4, rtol=1e-5)
        assert torch.allclose(zf, z, atol=1e-5), (zf - z).abs().max()


def test_fused_seed_v1_has_nothing_to_fold():
    torch.manual_seed(0)
    m = build_model("seed-v1", input_size=32).eval()
    f = fuse_for_inference(m)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(f(x), m(x))
    assert f is not m


def test_gradcam_on_fused_matches_unfused(tiny_cifake, trained_ckpt):
    """Grad-CAM differentiates the head (not folded) at the last block's output: exact up to the features'
    rounding. Tolerance: maps within 1e-3 (they are in [0, 1]), logits within 1e-4."""
    from core.data.datasets import collate_records, open_dataset
    from core.data.preprocess import to_model_input
    m = load_checkpoint(trained_ckpt).model                        # trained: BatchNorm statistics are real
    f = fuse_for_inference(m)
    ds = open_dataset(tiny_cifake, split="test")
    x = to_model_input(collate_records([ds[i] for i in range(0, len(ds), 6)])["x"])    # (8, 3, 32, 32)
    for target in ("fake", "real"):
        cams, z = gradcam(m, x, target)
        cams_f, z_f = gradcam(f, x, target)
        assert (cams.flatten(1).amax(1) > 0.99).sum() >= 4         # mostly non-trivial maps
        assert torch.allclose(z_f, z, atol=1e-4)
        assert torch.allclose(cams_f, cams, atol=1e-3), (cams_f - cams).abs().max()
    pair, pair_f = gradcam_pair(m, x), gradcam_pair(f, x)
    for a, b in zip(pair, pair_f):
        assert torch.allclose(b, a, atol=1e-3)


def test_loaded_model_runs_the_fused_copy(tmp_path):
    m = _seed_v21_with_statistics(2)
    save_checkpoint(make_checkpoint(m, "seed-v21", {"input_size": 32}, PreprocessConfig(32)), tmp_path / "m.pt")
    lm = load_checkpoint(tmp_path / "m.pt")
    assert lm.inference_model is not lm.model
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in lm.inference_model.modules())
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in lm.model.modules()) == 4


class _Constant(nn.Module):
    """A stand-in inference model: logit 2.0 for every image, whatever the trained weights say."""

    def forward(self, x):
        return torch.full((x.shape[0],), 2.0)

    def features(self, x):
        return x

    def head(self, f):
        return (f * 0).sum(dim=(1, 2, 3)) + 2.0


def test_evaluate_predict_and_sweep_use_inference_model(tiny_cifake, trained_ckpt):
    from core.data.datasets import open_dataset
    from core.inference.evaluate import predict_dataset
    from core.inference.predict import predict_many
    from core.audits.robustness import sweep
    real = load_checkpoint(trained_ckpt)
    lm = LoadedModel(model=real.model, arch=real.arch, preprocess=real.preprocess, temperature=1.0,
                     sha256="x", inference_model=_Constant())
    ds = open_dataset(tiny_cifake, split="test")
    df, _ = predict_dataset(lm, ds)
    assert (df["logit"] == 2.0).all()
    img = (tiny_cifake / "test" / "REAL" / "0000.jpg").read_bytes()
    assert predict_many(lm, [("a", img)])[0].logit == 2.0
    sw = sweep(lm, ds, levels={"blur": [1.0]})
    assert (sw["mean_prob_fake"] - torch.sigmoid(torch.tensor(2.0)).item()).abs().max() < 1e-6


def test_fused_model_shared_by_threads_gives_sequential_answers(trained_ckpt):
    lm = load_checkpoint(trained_ckpt)
    x = torch.rand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    want_cams, want_z = gradcam(lm.inference_model, x, "fake")
    out, errors = [None] * 8, []

    def work(i):
        try:
            out[i] = gradcam(lm.inference_model, x, "fake")
        except Exception as e:            # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for cams, z in out:
        assert torch.equal(z, want_z) and torch.equal(cams, want_cams)
