"""Grad-CAM on the model's last conv block, computed without module hooks, plus its drawing and audit.

Contract: `gradcam(model, x, target)` takes float32 x (B, 3, S, S) in [0, 1] and returns cams (B, S, S)
in [0, 1] (each map divided by its max; an all-zero map stays zero) and the logits (B,). The target
is the class to explain: "fake", "real", or a bool tensor (B,) of the classes called (True = FAKE),
which callers take from `called_fake(logits, temperature, threshold)`: the map explains the call the
user sees at the chosen threshold, not the call at 0.5. `gradcam_pair` returns both classes' maps
from one backward pass (the REAL map uses the negated gradient), so a threshold change needs no rerun.

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


def called_fake(logits: torch.Tensor, temperature: float, threshold: float) -> torch.Tensor:
    """bool (B,): the class called at `threshold` on P(FAKE) = sigmoid(logit / T), True = FAKE."""
    return torch.sigmoid(logits.float() / float(temperature)) >= threshold


def _signed_cam(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_c w_c A_c for the FAKE logit (B, h, w), logits (B,)); for REAL the gradient, so the sum, flips sign."""
    with torch.no_grad():
        feats = model.features(x)                        # (B, C, h, w)
    with torch.enable_grad():
        f = feats.detach().requires_grad_(True)
        logits = model.head(f)                           # (B,)
        (grads,) = torch.autograd.grad(logits.sum(), f)
    weights = grads.mean(dim=(2, 3), keepdim=True)       # (B, C, 1, 1): channel importance for FAKE
    return (weights * f.detach()).sum(dim=1), logits.detach()


def _finish(raw: torch.Tensor, size) -> torch.Tensor:
    """ReLU, upsample to the input size, divide each map by its max: (B, h, w) -> (B, S, S) in [0, 1]."""
    cam = F.relu(raw).unsqueeze(1)                                                          # (B, 1, h, w)
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False).squeeze(1)   # (B, S, S)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    cam = torch.where(peak > 1e-12, cam / peak, torch.zeros_like(cam))
    return cam.clamp_(0, 1)


def gradcam(model: torch.nn.Module, x: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
    """(cams (B, S, S) in [0, 1], logits (B,)) for float x (B, 3, S, S) in [0, 1]. x is not modified.

    target: "fake", "real" or bool (B,) with True where FAKE is to be explained (the called class).
    """
    raw, logits = _signed_cam(model, x)
    if isinstance(target, str):
        if target not in ("fake", "real"):
            raise ValueError("target must be 'fake', 'real' or a bool tensor of called classes (True = FAKE)")
        sign = 1.0 if target == "fake" else -1.0
        return _finish(sign * raw, x.shape[-2:]), logits
    target = torch.as_tensor(target, dtype=torch.bool, device=raw.device)
    if target.shape != logits.shape:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected {tuple(logits.shape)}")
    return _finish(torch.where(target.view(-1, 1, 1), raw, -raw), x.shape[-2:]), logits


def gradcam_pair(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cams explaining FAKE (B, S, S), cams explaining REAL (B, S, S), logits (B,)) from one backward pass."""
    raw, logits = _signed_cam(model, x)
    return _finish(raw, x.shape[-2:]), _finish(-raw, x.shape[-2:]), logits


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
def deletion_test(model, x: torch.Tensor, cams: torch.Tensor, frac: float = 0.1, seed: int = 0,
                  temperature: float = 1.0, threshold: float = 0.5) -> dict:
    """Does removing the hottest pixels change the call more than removing random ones?

    x float (B, 3, S, S) in [0, 1]; cams (B, S, S), explaining the class called at `threshold` on
    P(FAKE) = sigmoid(logit / temperature). The chosen `frac` of pixels is replaced by the image's mean
    colour. Returns per-image drops in P(called class) and whether the call flips:
    {"drop_cam": (B,), "drop_random": (B,), "flip_cam": (B,) bool, "flip_random": (B,) bool}.
    """
    b, _, s, _ = x.shape
    n = s * s
    k = max(1, int(round(frac * n)))
    base = model(x)
    pred_fake = called_fake(base, temperature, threshold)

    def p_pred(logits):
        p = torch.sigmoid(logits.float() / float(temperature))
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
            "flip_cam": called_fake(z_cam, temperature, threshold) != pred_fake,
            "flip_random": called_fake(z_rnd, temperature, threshold) != pred_fake}
