"""Grad-CAM on the model's last conv block, computed without module hooks, plus its drawing and audit.

Contract: `gradcam(model, x)` takes float32 x (B, 3, S, S) in [0, 1] and returns cams (B, S, S) in
[0, 1] (each map divided by its max; an all-zero map stays zero) and the logits (B,).
The target is the predicted class by default (the map explains the decision shown), or "fake"/"real".

Why no hooks: the model is shared by every app session (st.cache_resource), and hooks registered
on a shared module fire for every concurrent call. The architectures expose `features` (the last
conv block) and `head`, so the gradient d score / d features comes from torch.autograd.grad on a
graph private to this call: thread-safe, nothing to remove, and parameter .grad is never touched.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def gradcam(model: torch.nn.Module, x: torch.Tensor, target: str = "predicted") -> tuple[torch.Tensor, torch.Tensor]:
    """(cams (B, S, S) in [0, 1], logits (B,)) for float x (B, 3, S, S) in [0, 1]. x is not modified."""
    if target not in ("predicted", "fake", "real"):
        raise ValueError("target must be 'predicted', 'fake' or 'real'")
    with torch.no_grad():
        feats = model.features(x)                        # (B, C, h, w)
    with torch.enable_grad():
        f = feats.detach().requires_grad_(True)
        logits = model.head(f)                           # (B,)
        if target == "fake":
            sign = torch.ones_like(logits)
        elif target == "real":
            sign = -torch.ones_like(logits)
        else:
            sign = torch.where(logits >= 0, 1.0, -1.0)
        (grads,) = torch.autograd.grad((logits * sign).sum(), f)
    weights = grads.mean(dim=(2, 3), keepdim=True)       # (B, C, 1, 1): channel importance
    cam = F.relu((weights * f.detach()).sum(dim=1, keepdim=True))   # (B, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)  # (B, S, S)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    cam = torch.where(peak > 1e-12, cam / peak, torch.zeros_like(cam))
    return cam.clamp_(0, 1), logits.detach()


def _jet(v: np.ndarray) -> np.ndarray:
    """Jet colour map: v (H, W) in [0, 1] -> float (H, W, 3) in [0, 1] (blue low, red high)."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a Grad-CAM map over an image.

    image: uint8 (H, W, 3); cam: float (h, w) in [0, 1] (resized to H x W bilinearly);
    alpha: heat opacity in [0, 1]. Returns uint8 (H, W, 3). Inputs are not modified.
    """
    h, w = image.shape[:2]
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam, mode="F").resize((w, h), Image.Resampling.BILINEAR))
    heat = _jet(np.clip(cam, 0, 1))
    out = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * heat
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def heat_concentration(cams: torch.Tensor, top: float = 0.1) -> torch.Tensor:
    """Share of total heat in the hottest `top` fraction of pixels, per map: (B,) in [top, 1].

    A uniform map gives `top`; a map whose heat sits in fewer than top*N pixels gives 1.
    All-zero maps give NaN (nothing to concentrate).
    """
    flat = cams.flatten(1)
    k = max(1, int(round(top * flat.shape[1])))
    total = flat.sum(dim=1)
    hot = flat.topk(k, dim=1).values.sum(dim=1)
    return torch.where(total > 0, hot / total.clamp_min(1e-12), torch.full_like(total, float("nan")))


@torch.no_grad()
def deletion_test(model, x: torch.Tensor, cams: torch.Tensor, frac: float = 0.1, seed: int = 0) -> dict:
    """Does removing the hottest pixels change the prediction more than removing random ones?

    x float (B, 3, S, S) in [0, 1]; cams (B, S, S). The chosen `frac` of pixels is replaced by the
    image's mean colour. Returns per-image drops in the probability of the originally predicted
    class: {"drop_cam": (B,), "drop_random": (B,), "flip_cam": (B,) bool, "flip_random": (B,) bool}.
    """
    b, _, s, _ = x.shape
    n = s * s
    k = max(1, int(round(frac * n)))
    base = model(x)
    pred_fake = base >= 0

    def p_pred(logits):
        p = torch.sigmoid(logits)
        return torch.where(pred_fake, p, 1 - p)

    mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    hot_idx = cams.flatten(1).topk(k, dim=1).indices                      # (B, k)
    g = torch.Generator().manual_seed(seed)
    rnd_idx = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(b)])

    def masked(idx):
        m = torch.zeros(b, n, dtype=torch.bool)
        m.scatter_(1, idx, True)
        m = m.view(b, 1, s, s)
        return torch.where(m, mean, x)

    z_cam, z_rnd = model(masked(hot_idx)), model(masked(rnd_idx))
    return {"drop_cam": p_pred(base) - p_pred(z_cam), "drop_random": p_pred(base) - p_pred(z_rnd),
            "flip_cam": (z_cam >= 0) != pred_fake, "flip_random": (z_rnd >= 0) != pred_fake}
