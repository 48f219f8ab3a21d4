"""Model comparison (core.audits.compare) and error slices (core.audits.slices) with hand-built tables and tiny fixtures.

    python -m pytest -q tests/test_compare_slices.py
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from core.audits import compare, slices
from core.metrics.stats import wilson_interval


def _joined():
    """10 images. At threshold 0.5: A right on 0-3 and 4; B right on 0-3 and 5-9.
    both_right = 4 (0-3), only_a = 1 (4), only_b = 5 (5-9), both_wrong = 0."""
    label = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0]
    prob_a = [0.1, 0.2, 0.9, 0.8, 0.7, 0.6, 0.7, 0.3, 0.4, 0.9]
    prob_b = [0.3, 0.1, 0.6, 0.9, 0.2, 0.4, 0.1, 0.8, 0.7, 0.2]
    source = ["s1", "s1", "s2", "s2", "s2", "s1", "s1", "s2", "s2", "s1"]
    return pd.DataFrame({"path": [f"i{k}" for k in range(10)], "label": label, "source": source,
                         "prob_a": prob_a, "prob_b": prob_b})


def test_compare_counts_mcnemar_and_per_source_hand_checked():
    res = compare.compare_predictions(_joined(), 0.5, n_boot=200)
    assert (res["n"], res["both_right"], res["only_a"], res["only_b"], res["both_wrong"]) == (10, 4, 1, 5, 0)
    # 2 * P(X <= 1 | n = 6, 1/2) = 2 * (1 + 6) / 64
    assert res["mcnemar_p"] == pytest.approx(14 / 64)
    m = res["metrics"]
    assert m["a"]["accuracy"]["value"] == pytest.approx(0.5) and m["b"]["accuracy"]["value"] == pytest.approx(0.9)
    assert m["delta"]["accuracy"]["value"] == pytest.approx(0.4)
    # recall of FAKE: A catches 2, 3, 4 of {2, 3, 4, 7, 8} = 0.6; B catches 2, 3, 7, 8 = 0.8
    assert m["a"]["recall_FAKE"]["value"] == pytest.approx(0.6) and m["b"]["recall_FAKE"]["value"] == pytest.approx(0.8)
    assert res["full_metrics"]["a"]["accuracy"] == pytest.approx(0.5)
    for side in ("a", "b", "delta"):
        d = m[side]["accuracy"]
        assert d["ci_low"] <= d["value"] <= d["ci_high"]
    per = {r["source"]: r for r in res["per_source"]}
    # s1 = images 0, 1, 5, 6, 9: A right on 0, 1 (2/5); B right on 0, 1, 5, 6, 9 (5/5)
    assert (per["s1"]["accuracy_a"], per["s1"]["accuracy_b"], per["s1"]["delta"]) == pytest.approx((0.4, 1.0, 0.6))
    # s2 = images 2, 3, 4, 7, 8: A right on 2, 3, 4 (3/5); B right on 2, 3, 7, 8 (4/5)
    assert (per["s2"]["only_a"], per["s2"]["only_b"]) == (1, 2)
    assert (per["s2"]["ci_low_a"], per["s2"]["ci_high_a"]) == pytest.approx(wilson_interval(3, 5))
    cells = compare.disagreement_cells(_joined(), 0.5)
    assert cells.tolist() == ["both_right"] * 4 + ["only_a"] + ["only_b"] * 5


def test_weighted_stats_equal_core_metrics_on_repeated_rows():
    """Each bootstrap replicate, scored as weights, equals core.metrics.metrics on the images it draws (ties included)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.round(np.clip(0.3 * y + rng.random(60) * 0.7, 0, 1), 1)      # coarse values: many ties
    W = rng.integers(0, 3, (6, 60))
    ws = compare.weighted_stats(y, p, 0.5, W)
    for b in range(6):
        idx = np.repeat(np.arange(60), W[b])
        want = compare.point_stats(y[idx], p[idx], 0.5)
        for k in compare.STATS:
            assert ws[k][b] == pytest.approx(want[k], abs=1e-12), k


def test_bootstrap_is_seeded_and_paired():
    a = compare.compare_predictions(_joined(), 0.5, n_boot=200, seed=3)
    b = compare.compare_predictions(_joined(), 0.5, n_boot=200, seed=3)
    assert a["metrics"] == b["metrics"]
    same = _joined().assign(prob_b=lambda d: d["prob_a"])
    r = compare.compare_predictions(same, 0.5, n_boot=100)
    # identical models: every paired replicate has delta 0, McNemar has nothing to test
    assert (r["metrics"]["delta"]["accuracy"]["ci_low"], r["metrics"]["delta"]["accuracy"]["ci_high"]) == (0.0, 0.0)
    assert r["mcnemar_p"] == 1.0 and r["only_a"] == r["only_b"] == 0


def test_cached_comparison_is_the_core_result_stored_once(tiny_cifake, trained_ckpt, tmp_path, monkeypatch):
    """The Compare page's result: compare_predictions on the two stored evaluations, stored per threshold under
    runs/ and read back (the same numbers, the same types either way); another threshold is another result."""
    import json
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import cached_evaluation
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    joined, first = compare.cached_comparison(lm, lm, ds, tmp_path, 0.5, n_boot=50)
    df = cached_evaluation(lm, ds, tmp_path)[0]
    want = compare.compare_predictions(compare.join_predictions(df, df), 0.5, n_boot=50)
    assert first == json.loads(json.dumps(want, default=float))
    assert first["metrics"]["a"]["accuracy"]["value"] == pytest.approx(float(((df["prob_fake"] >= 0.5).astype(int) == df["label"]).mean()))
    calls = []
    monkeypatch.setattr(compare, "compare_predictions", lambda *a, **k: calls.append(a) or want)
    again = compare.cached_comparison(lm, lm, ds, tmp_path, 0.5, n_boot=50)[1]
    assert again == first and not calls                          # read back, not computed
    compare.cached_comparison(lm, lm, ds, tmp_path, 0.7, n_boot=50)
    assert len(calls) == 1                                        # another threshold: computed
    assert len(joined) == len(df)


def test_join_refuses_different_data():
    a = _joined()[["path", "label", "source"]].assign(prob_fake=0.5)
    with pytest.raises(compare.CompareError, match="no image in common"):
        compare.join_predictions(a, a.assign(path=lambda d: "x" + d["path"]))
    with pytest.raises(compare.CompareError, match="different labels"):
        compare.join_predictions(a, a.assign(label=1 - a["label"]))


def test_compare_cli(trained_ckpt, tiny_cifake, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = compare.main(["--weights", str(trained_ckpt), str(trained_ckpt), "--data", str(tiny_cifake), "--out", str(out),
                       "--runs", str(tmp_path / "runs"), "--n-boot", "50"])
    assert rc == 0
    res = json.loads((out / "compare.json").read_text())
    for k in ("n", "both_right", "only_a", "only_b", "both_wrong", "mcnemar_p"):
        assert k in res
    assert res["n"] == 48 and res["only_a"] == res["only_b"] == 0 and res["mcnemar_p"] == 1.0
    assert res["metrics"]["a"]["accuracy"] == res["metrics"]["b"]["accuracy"]
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluate
    _, m = evaluate(load_checkpoint(trained_ckpt), open_dataset(tiny_cifake))
    assert res["metrics"]["a"]["accuracy"]["value"] == pytest.approx(m["accuracy"])
    assert res["metrics"]["a"]["roc_auc"]["value"] == pytest.approx(m["roc_auc"])
    for f in ("disagreements.csv", "per_source.csv", "roc.csv", "roc.png", "metrics.csv"):
        assert (out / f).is_file()
    assert compare.main(["--weights", str(trained_ckpt), str(tmp_path / "none.pt"), "--data", str(tiny_cifake),
                         "--out", str(out)]) == 2


# ----------------------------------------------------------------------------- slices

def test_measure_hand_checked():
    img = Image.new("RGB", (8, 6), (100, 50, 200))
    m = slices.measure(img)
    assert m["brightness"] == pytest.approx(0.299 * 100 + 0.587 * 50 + 0.114 * 200)      # 82.05
    assert m["saturation"] == pytest.approx(round(150 / 200 * 255) / 255)                # (max - min) / max
    assert m["sharpness"] == 0.0
    rng = np.random.default_rng(0)
    sharp = Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8))
    assert slices.measure(sharp)["sharpness"] > 10 * slices.measure(sharp.filter(ImageFilter.GaussianBlur(2)))["sharpness"]


def _measure_one_at_a_time(img):
    # The per-image definition the vectorised measure_batch replaced: Pillow's HSV, scipy's Laplacian.
    from scipy.ndimage import laplace
    rgb = np.asarray(img, dtype=np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    sat = np.asarray(img.convert("HSV"), dtype=np.float64)[..., 1] / 255.0
    return luma.mean(), sat.mean(), laplace(luma, mode="reflect").var()


def test_vectorised_measurements_equal_pillow_and_scipy_one_image_at_a_time(tmp_path, monkeypatch):
    """measure_batch = Pillow's HSV saturation and scipy's Laplacian per image (grey, black and saturated
    pixels included); image_properties over mixed sizes, in batches, gives each row its own image's numbers."""
    from conftest import make_cifake
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 9, 7, 3)).astype(np.uint8)
    x[0] = 0                                                      # black: max = 0
    x[1, :, :, :] = x[1, :, :, :1]                                # grey: max = min
    x[2, ::2, ::2] = (255, 0, 0)
    b, sat, sh = slices.measure_batch(x)
    for k in range(6):
        assert (b[k], sat[k], sh[k]) == pytest.approx(_measure_one_at_a_time(Image.fromarray(x[k])), rel=1e-12, abs=1e-12)
    root = make_cifake(tmp_path / "d", n_train=1, n_test=5)
    big = Image.fromarray(rng.integers(0, 256, (40, 48, 3)).astype(np.uint8))
    big.save(root / "test" / "REAL" / "big.png")                  # another size: its own batch
    from core.data.datasets import open_dataset
    from core.data.images import load_image
    ds = open_dataset(root, split="test")
    monkeypatch.setattr(slices, "MEASURE_PIXELS", 3 * 32 * 32)    # batches of 3 32x32 images
    props = slices.image_properties(ds)
    assert props["path"].tolist() == [ds.item_id(i) for i in range(len(ds))]
    for i in range(len(ds)):
        want = _measure_one_at_a_time(load_image(ds.read_bytes(ds.items[i][0])).image)
        got = props.loc[i, ["brightness", "saturation", "sharpness"]].to_numpy(float)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert (props["original_size"] == "48x40").sum() == 1


def _merged():
    """8 images: source a holds 0-3 (1 error), b holds 4-7 (3 errors); brightness 10..80."""
    df = pd.DataFrame({"path": [f"p{k}" for k in range(8)], "label": [0, 0, 1, 1, 0, 1, 1, 0],
                       "prob_fake": [0.1, 0.2, 0.9, 0.3, 0.8, 0.2, 0.1, 0.3],
                       "source": ["a"] * 4 + ["b"] * 4})
    props = pd.DataFrame({"path": df["path"], "brightness": np.arange(10, 90, 10.0), "saturation": 0.5,
                          "sharpness": 1.0, "jpeg_quality": 90.0, "width": 32, "height": 32,
                          "original_size": "32x32", "error": ""})
    return slices.join(df, props)


def test_slice_table_hand_checked_worst_first():
    t = slices.slice_table(_merged(), 0.5)
    top = t.iloc[0]
    # b: images 4 (FP), 5 (FN), 6 (FN), 7 right -> 1/4. Brightness 10..80 has quartile edges 27.5, 45, 62.5;
    # the bin (45, 62.5] holds images 4 and 5 (50, 60): 0/2.
    assert (top["dimension"], top["slice"], top["images"], top["accuracy"]) == ("brightness", "45.0-62.5", 2, 0.0)
    assert t[t["dimension"] == "brightness"]["slice"].tolist()[-1] in ("10.0-27.5", "62.5-80.0")
    b = t[(t["dimension"] == "source") & (t["slice"] == "b")].iloc[0]
    assert (b["images"], b["errors"], b["false_positives"], b["false_negatives"]) == (4, 3, 1, 2)
    assert (b["ci_low"], b["ci_high"]) == pytest.approx(wilson_interval(1, 4))
    a = t[(t["dimension"] == "source") & (t["slice"] == "a")].iloc[0]
    assert a["accuracy"] == pytest.approx(0.75)
    assert t["accuracy"].is_monotonic_increasing
    # one JPEG quality, one size: one slice each, holding all 8 images
    assert t[t["dimension"] == "jpeg_quality"]["slice"].tolist() == ["90"]
    assert t[t["dimension"] == "original_size"]["images"].tolist() == [8]
    mem = slices.members(_merged(), "source", "b", 0.5)
    assert mem["path"].tolist()[:3] == ["p6", "p4", "p5"]      # errors, most confident first: 0.9, 0.8, 0.8 (ties in order)
    assert mem["path"].tolist()[-1] == "p7"


def test_slices_cli_on_fixture(trained_ckpt, tiny_cifake, tmp_path, capsys):
    rc = slices.main(["--weights", str(trained_ckpt), "--data", str(tiny_cifake), "--out", str(tmp_path / "s"),
                      "--runs", str(tmp_path / "runs")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    t = pd.read_csv(tmp_path / "s" / "slices.csv")
    assert len(res["worst"]) == 3 and res["worst"][0]["accuracy"] == pytest.approx(t["accuracy"].min())
    props = pd.read_csv(tmp_path / "s" / "properties.csv")
    assert len(props) == 48 and (props["original_size"] == "32x32").all() and (props["jpeg_quality"] == 90).all()
