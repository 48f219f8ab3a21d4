"""Wilson intervals, McNemar's exact test and bootstrap CIs (core.metrics.stats) against values worked by hand, and the
verdict-stability battery (core.audits.stability, core.inference.predict --stability).

    python -m pytest -q tests/test_stats_stability.py
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes, noise_image, smooth_image
from core.audits import stability
from core.metrics.stats import bootstrap_ci, mcnemar_exact, mean_interval, wilson_interval


# ----------------------------------------------------------------------------- statistics

def test_wilson_interval_hand_worked():
    # 8 of 10, z = 1.959964: centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.99208 / 1.38415 = 0.716745,
    # half = z * sqrt(0.016 + z^2/400) / 1.38415 = 1.959964 * 0.160012 / 1.38415 = 0.226582
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.490162, abs=1e-5) and hi == pytest.approx(0.943327, abs=1e-5)
    # 0 of 4: lo = 0, hi = z^2/4 / (1 + z^2/4) = 0.960342 / 1.960342 = 0.489884
    lo, hi = wilson_interval(0, 4)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.489884, abs=1e-5)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_mean_interval_hand_worked():
    # 1, 2, 3, 4, 5: mean 3, sd (n - 1) = sqrt(10 / 4) = 1.581139, t(0.975, 4) = 2.776445,
    # half = 2.776445 * 1.581139 / sqrt(5) = 1.963243
    lo, hi = mean_interval([1, 2, 3, 4, 5])
    assert lo == pytest.approx(1.036757, abs=1e-5) and hi == pytest.approx(4.963243, abs=1e-5)
    # NaNs are dropped: 0, 1 (and nan): mean 0.5, sd 0.707107, t(0.975, 1) = 12.706205, half = 6.353102
    lo, hi = mean_interval([0.0, float("nan"), 1.0])
    assert lo == pytest.approx(-5.853102, abs=1e-5) and hi == pytest.approx(6.853102, abs=1e-5)
    assert all(math.isnan(v) for v in mean_interval([2.0]))


def test_mcnemar_exact_hand_worked():
    # 1 vs 9 discordant: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * (1 + 10) / 1024 = 0.021484375
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024, rel=1e-12)
    # 3 vs 3: 2 * P(X <= 3 | n = 6) = 2 * 42/64 > 1 -> 1
    assert mcnemar_exact(3, 3) == 1.0
    # 0 vs 5: 2 * (1/32) = 0.0625
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(0, 0) == 1.0


def _wilson_by_formula(k, n, level):
    from scipy.stats import norm
    z = float(norm.ppf(0.5 + level / 2))
    p, denom = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / denom, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def test_the_scipy_statistics_give_the_numbers_of_the_textbook_formulas():
    """scipy.stats behind wilson_interval, mcnemar_exact and mean_interval: the same numbers as the formulas in
    their docstrings (Wilson's score interval, 2 * P(X <= min), mean +- t * sd / sqrt(n)) over a grid."""
    from scipy.stats import binom, t
    for n in (1, 2, 5, 10, 37, 100, 1000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for level in (0.9, 0.95, 0.99):
                assert wilson_interval(k, n, level) == pytest.approx(_wilson_by_formula(k, n, level), abs=1e-12)
    for a in range(25):
        for b in range(25):
            want = 1.0 if a + b == 0 else min(1.0, 2 * binom.cdf(min(a, b), a + b, 0.5))
            assert mcnemar_exact(a, b) == pytest.approx(want, abs=1e-12)
    v = np.random.default_rng(0).normal(size=50)
    half = t.ppf(0.975, 49) * v.std(ddof=1) / math.sqrt(50)
    assert mean_interval(v) == pytest.approx((v.mean() - half, v.mean() + half), abs=1e-12)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    x = np.r_[np.ones(70), np.zeros(30)]
    a = bootstrap_ci(np.mean, (x,), n_boot=500, seed=1)
    assert a == bootstrap_ci(np.mean, (x,), n_boot=500, seed=1)
    assert a != bootstrap_ci(np.mean, (x,), n_boot=500, seed=2)
    # normal approximation of the mean's 95% interval: 0.7 +- 1.96 * sqrt(0.21 / 100) = [0.610, 0.790]
    assert a[0] == pytest.approx(0.61, abs=0.03) and a[1] == pytest.approx(0.79, abs=0.03)


# ----------------------------------------------------------------------------- stability

def test_changes_do_what_they_say():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8))
    assert stability.apply_change(img, "downscale:0.5").size == (25, 20)
    assert stability.apply_change(img, "upscale:2").size == (100, 80)
    assert stability.apply_change(img, "crop:0.9").size == (45, 36)
    np.testing.assert_array_equal(np.asarray(stability.apply_change(img, "hflip")), np.asarray(img)[:, ::-1])
    g = np.asarray(stability.apply_change(img, "grayscale"))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    j = stability.apply_change(img, "jpeg:50")
    assert j.size == img.size and not np.array_equal(np.asarray(j), np.asarray(img))
    with pytest.raises(ValueError):
        stability.apply_change(img, "rotate:90")
    big = Image.new("RGB", (4000, 3000))                        # 12 MP: x2 would be 48 MP, over the 40 MP limit
    w, h = stability.apply_change(big, "upscale:2").size
    assert w * h <= stability.MAX_PIXELS and w > 4000


def test_image_at_the_threshold_flips_and_far_from_it_is_stable(trained_ckpt):
    """With the threshold exactly at the image's own P(AI), every change that lowers P(AI) flips the call."""
    from core.model.checkpoint import load_checkpoint
    lm = load_checkpoint(trained_ckpt)
    img = noise_image(np.random.default_rng(5))
    row = stability.stability_probs(lm, [img])[0]
    t = float(row[0])
    res = stability.check_image(lm, img, threshold=t)
    assert res["label"] == "FAKE" and res["prob_fake"] == pytest.approx(t)
    lowered = [c for c, p in zip(stability.CHANGES, row[1:]) if p < t]
    assert lowered, "no change lowered P(AI) on the fixture image"
    assert res["flips_under"] == lowered and res["stable"] is False
    assert all(ch["flipped"] == (ch["prob_fake"] < t) for ch in res["changes"])
    far = stability.check_image(lm, img, threshold=1e-9)        # every call is FAKE
    assert far["flips_under"] == [] and far["stable"] is True


def test_flip_table_hand_checked():
    import pandas as pd
    cols = {f"p:{c}": [0.9, 0.2, 0.6] for c in stability.CHANGES}
    cols["p:hflip"] = [0.4, 0.7, 0.6]           # image 0 flips to REAL, image 1 flips to FAKE
    df = pd.DataFrame({"path": ["a", "b", "c"], "label": [1, 0, 1], "source": "", "prob_fake": [0.9, 0.2, 0.6],
                       **cols})
    t = stability.flip_table(df, 0.5).set_index("change")
    assert t.loc["hflip", "flips"] == 2 and t.loc["hflip", "flip_rate"] == pytest.approx(2 / 3)
    assert t.loc["hflip", "flips_to_FAKE"] == 1 and t.loc["hflip", "flips_to_REAL"] == 1
    assert t.loc["jpeg:95", "flips"] == 0 and t.loc["any", "flips"] == 2
    assert t.loc["hflip", "accuracy_changed"] == pytest.approx(1 / 3)
    assert (t.loc["hflip", "ci_low"], t.loc["hflip", "ci_high"]) == pytest.approx(wilson_interval(2, 3))
    assert list(stability.flips_column(df, 0.5)) == ["flips under: hflip", "flips under: hflip", "stable"]
    # At 0.65 image 2 (0.6) is REAL unchanged and under every change: still stable.
    assert stability.flip_table(df, 0.65).set_index("change").loc["hflip", "flips"] == 2
    v = stability.stability_verdict(stability.flip_table(df, 0.5))
    assert v.startswith("Holds: 66.7% of the calls (2 of 3)") and "horizontal flip (66.7%: 1 to REAL, 1 to FAKE)" in v
    calm = df.assign(**{"p:hflip": df["prob_fake"]})
    assert stability.stability_verdict(stability.flip_table(calm, 0.5)).startswith("Not observed here")


def test_predict_cli_stability_adds_flips_under(trained_ckpt, tmp_path, capsys):
    from core.inference import predict
    rng = np.random.default_rng(2)
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(smooth_image(rng)))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert predict.main(["--weights", str(trained_ckpt), "--stability", str(tmp_path / "a.jpg"),
                         str(tmp_path / "bad.jpg")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert isinstance(lines[0]["flips_under"], list)
    assert set(lines[0]["flips_under"]) <= set(stability.CHANGES)
    assert "error" in lines[1] and "flips_under" not in lines[1]
    assert predict.main(["--weights", str(trained_ckpt), str(tmp_path / "a.jpg")]) == 0
    assert "flips_under" not in json.loads(capsys.readouterr().out)


def test_dataset_stability_matches_evaluate(trained_ckpt, tiny_cifake):
    """The unchanged column is the evaluation's P(AI): one model, one preprocessing."""
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    df, skipped = stability.dataset_stability(lm, ds, chunk=10)
    ev, _ = evaluate(lm, ds)
    assert skipped == [] and len(df) == len(ev)
    np.testing.assert_allclose(df.set_index("path")["prob_fake"], ev.set_index("path").loc[df["path"], "prob_fake"],
                               rtol=1e-5, atol=1e-6)
