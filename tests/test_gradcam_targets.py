"""Grad-CAM localises the evidence for the class it explains, and the app explains the class called at
the threshold.

A hand-built detector makes the evidence known: its features are the red and the blue channel, and its
head is logit = mean(red) - mean(blue). Red pixels are evidence for FAKE and blue ones for REAL, so the
FAKE map must peak on a planted red square and the REAL map on a planted blue square. A constant map,
a map of the wrong class or a map at the wrong threshold fails these tests.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.model.checkpoint import LoadedModel
from core.model.gradcam import called_fake, deletion_test, gradcam, gradcam_pair
from core.inference.predict import predict_many
from core.data.preprocess import PreprocessConfig


class Planted(nn.Module):
    """features: ReLU of (red, blue) (B, 2, S, S); head: mean(red) - mean(blue) + bias (B,)."""

    def __init__(self, bias: float = 0.0):
        super().__init__()
        self.bias = bias

    def features(self, x):
        return torch.relu(x[:, [0, 2]] * 8)

    def head(self, f):
        return f[:, 0].mean(dim=(1, 2)) - f[:, 1].mean(dim=(1, 2)) + self.bias

    def forward(self, x):
        return self.head(self.features(x))


RED, BLUE = (slice(2, 10), slice(3, 11)), (slice(20, 28), slice(22, 30))   # (rows, cols) of the squares


def planted_image(red_side: int = 8) -> torch.Tensor:
    """float (3, 32, 32): grey background, a red square top-left, a blue square bottom-right."""
    x = torch.full((3, 32, 32), 0.0)
    x[0, 2:2 + red_side, 3:3 + red_side] = 1.0
    x[2, BLUE[0], BLUE[1]] = 1.0
    return x


def peak(cam: torch.Tensor) -> tuple[int, int]:
    return divmod(int(cam.flatten().argmax()), cam.shape[-1])


def inside(rc, square) -> bool:
    return square[0].start <= rc[0] < square[0].stop and square[1].start <= rc[1] < square[1].stop


def test_each_target_peaks_on_its_own_evidence():
    m = Planted()
    x = planted_image().unsqueeze(0)
    fake, _ = gradcam(m, x, "fake")
    real, _ = gradcam(m, x, "real")
    assert inside(peak(fake[0]), RED) and inside(peak(real[0]), BLUE)
    # Most of each map's heat sits on its square (8x8 of 1024 pixels; ~6% of a uniform map's heat).
    red_mask = torch.zeros(32, 32, dtype=torch.bool)
    red_mask[RED] = True
    assert fake[0][red_mask].sum() / fake[0].sum() > 0.6
    assert real[0][red_mask].sum() / real[0].sum() < 0.1
    # The bool target and the one-pass pair give the same maps.
    f2, r2, _ = gradcam_pair(m, x)
    both, _ = gradcam(m, torch.cat([x, x]), torch.tensor([True, False]))
    assert torch.allclose(both[0], fake[0]) and torch.allclose(both[1], real[0])
    assert torch.allclose(f2, fake) and torch.allclose(r2, real)


def test_called_class_follows_threshold_and_temperature():
    logits = torch.tensor([0.4, -0.4])
    assert called_fake(logits, 1.0, 0.5).tolist() == [True, False]
    # sigmoid(0.4) = 0.599: FAKE at threshold 0.55, REAL at 0.65; with T = 4, sigmoid(0.1) = 0.525.
    assert called_fake(logits, 1.0, 0.65).tolist() == [False, False]
    assert called_fake(logits, 4.0, 0.55).tolist() == [False, False]
    assert called_fake(logits, 1.0, 0.3).tolist() == [True, True]


@pytest.mark.parametrize("threshold, called, square", [(0.3, "FAKE", RED), (0.7, "REAL", BLUE)])
def test_prediction_explains_the_call_at_the_threshold(threshold, called, square):
    # Red square 9x9 vs blue 8x8: logit = 8 * (81 - 64) / 1024 = 0.133, P(AI) = 0.533, between the thresholds.
    lm = LoadedModel(model=Planted(), arch="planted", preprocess=PreprocessConfig(32), temperature=1.0, sha256="0")
    arr = (planted_image(red_side=9).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    from PIL import Image
    import io
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    pred = predict_many(lm, [("planted.png", buf.getvalue())], with_cam=True)[0]
    assert pred.prob_fake == pytest.approx(1 / (1 + np.exp(-8 * 17 / 1024)), abs=1e-6)
    assert pred.label(threshold) == called
    assert inside(peak(torch.from_numpy(pred.cam(threshold))), square)


def test_deletion_test_measures_the_called_class():
    m = Planted()
    x = planted_image(red_side=9).unsqueeze(0)                       # P(AI) = 0.533
    fake, real, _ = gradcam_pair(m, x)
    # Called FAKE at 0.5: deleting the red evidence lowers P(FAKE) and flips the call.
    d = deletion_test(m, x, fake, frac=0.1, threshold=0.5)
    assert d["drop_cam"].item() > 0.05 and d["flip_cam"].item()
    # Called REAL at 0.6: deleting the blue evidence lowers P(REAL) (= 1 - P(FAKE)), and the call flips to FAKE.
    d = deletion_test(m, x, real, frac=0.1, threshold=0.6)
    assert d["drop_cam"].item() > 0.05 and d["flip_cam"].item()
