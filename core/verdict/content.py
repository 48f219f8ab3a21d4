"""Content familiarity: a small encoder trained self-supervised on the training images (SimCLR), and a
k-nearest-neighbour distance on its L2-normalised features.

Why a second feature space: a detector's own features keep only what tells REAL from FAKE, so content it
never saw lands on a class it knows and looks familiar there ("feature collapse"). An encoder trained to tell
every training image from every other (contrastive, Chen et al. 2020) has to keep content, and the distance to
the k-th nearest training image in its space (Sun et al. 2022, "Out-of-distribution detection with deep
nearest neighbors") grows for content the training set lacks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def content_size(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> uint8 (N, 3, 32, 32), area-resampled when S differs (a model fed at 128 px, say)."""
    if x_uint8.shape[-1] == CONTENT_SIZE and x_uint8.shape[-2] == CONTENT_SIZE:
        return x_uint8
    return F.interpolate(x_uint8.float(), size=(CONTENT_SIZE, CONTENT_SIZE), mode="area").round_().clamp_(0, 255).byte()


class ContentEncoder(nn.Module):
    """uint8-range float input in [0, 1] (B, 3, 32, 32) -> (B, width) features (before the projection head)."""

    def __init__(self, channels: tuple = (16, 32, 64, 128), width: int = 128, proj: int = 64):
        super().__init__()
        self.model_args = {"channels": list(channels), "width": width, "proj": proj}
        layers, c_in = [], 3
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, width)
        self.proj = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(width, proj))

    def forward(self, x):                        # (B, 3, S, S) in [0, 1] -> (B, width)
        f = self.body((x - 0.5) / 0.25).mean(dim=(2, 3))
        return self.fc(f)


def simclr_views(x_uint8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float (B, 3, S, S) in [0, 1]: random resized crop (scale 0.35-1), flip, colour
    jitter (brightness, contrast, saturation 0.4 each), grayscale with p 0.2."""
    b, _, s, _ = x_uint8.shape
    x = x_uint8.float() / 255
    scale = torch.empty(b).uniform_(0.35, 1.0, generator=gen)
    ratio = torch.exp(torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen))
    w = (scale * ratio).sqrt().clamp(max=1.0)
    h = (scale / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, (b, 3, s, s), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    u = lambda: torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)   # noqa: E731
    x = x * u()                                                     # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u() + mean                                     # contrast
    grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
    x = (x - grey) * u() + grey                                     # saturation
    to_grey = torch.rand(b, 1, 1, 1, generator=gen) < 0.2
    x = torch.where(to_grey, grey, x)
    return x.clamp_(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def train_content_encoder(x_uint8: torch.Tensor, epochs: int = 30, batch_size: int = 256, lr: float = 2e-3,
                          seed: int = 0, minutes: float | None = None, log=print, model_args: dict | None = None
                          ) -> tuple[ContentEncoder, dict]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    enc = ContentEncoder(**(model_args or {}))
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=1e-4)
    if len(x_uint8) < 2:
        raise ValueError("the content encoder needs at least 2 training images")
    batch_size = min(batch_size, len(x_uint8))
    steps_per_epoch = len(x_uint8) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    t0 = time.perf_counter()
    done = 0
    for ep in range(epochs):
        perm = torch.randperm(len(x_uint8), generator=gen)
        tot = 0.0
        enc.train()
        for i in range(steps_per_epoch):
            xb = x_uint8[perm[i * batch_size:(i + 1) * batch_size]]
            v1, v2 = simclr_views(xb, gen), simclr_views(xb, gen)
            loss = nt_xent(enc.proj(enc(v1)), enc.proj(enc(v2)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
        done = ep + 1
        log(f"content encoder epoch {done}/{epochs} loss {tot / steps_per_epoch:.3f} {time.perf_counter() - t0:.0f}s")
        if minutes and time.perf_counter() - t0 > minutes * 60:
            break
    enc.eval()
    return enc, {"epochs": done, "seconds": round(time.perf_counter() - t0, 1)}


@torch.inference_mode()
def encode(enc: ContentEncoder, x_uint8: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    out = [F.normalize(enc(x_uint8[i:i + batch_size].float() / 255), dim=1) for i in range(0, len(x_uint8), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, enc.fc.out_features), np.float32)


def knn_distance(bank: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distance of each normalised query row to its k-th nearest bank row."""
    b, qq = torch.as_tensor(bank, dtype=torch.float32), torch.as_tensor(q, dtype=torch.float32)
    sim = qq @ b.T
    kth = sim.topk(k, dim=1).values[:, -1]
    return (2 - 2 * kth).clamp_min(0).sqrt().numpy()


CONTENT_EPOCHS = 30           # content encoder epochs when fitted by `python -m core recalibrate --fit-content`
CONTENT_SIZE = 32             # the encoder sees 32 x 32 images: content, not resolution
CONTENT_K = 10                # k-th nearest training image (chosen on the new-content probe: docs/verdict.md)
BANK_DTYPE = torch.float16    # bank features: half the checkpoint bytes; distances move by < 1e-3


@dataclass(frozen=True)
class ContentFamiliarity:
    """kNN distance on the content encoder's normalised features; immutable, safe to share across sessions.

    bank: (M, D) normalised features of the training images, in `paths` order, with their `labels`;
    reference: (n,) sorted k-th-nearest distances of held-out in-distribution images."""
    encoder: ContentEncoder
    bank: torch.Tensor
    labels: np.ndarray
    paths: tuple
    reference: np.ndarray
    k: int = CONTENT_K

    def features(self, x_uint8: torch.Tensor) -> np.ndarray:
        """uint8 (N, 3, S, S), or (N, K, 3, S, S) for K windows -> (N, D) normalised (windows averaged)."""
        views = x_uint8.shape[1] if x_uint8.ndim == 5 else 0
        x = content_size(x_uint8.flatten(0, 1) if views else x_uint8)
        with torch.inference_mode():
            f = self.encoder(x.float() / 255)
            if views:
                f = f.view(-1, views, f.shape[1]).mean(dim=1)
            return F.normalize(f, dim=1).numpy()

    def neighbours(self, feats: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) normalised features -> (indices (N, n) into the bank, Euclidean distances (N, n)), nearest first."""
        sim = torch.as_tensor(feats, dtype=torch.float32) @ self.bank.float().T       # (N, M)
        top = sim.topk(min(n, len(self.paths)), dim=1)
        return top.indices.numpy(), (2 - 2 * top.values).clamp_min(0).sqrt().numpy()

    def distance(self, feats: np.ndarray) -> np.ndarray:
        """(N, D) -> (N,) distance to the k-th nearest training image."""
        return self.neighbours(feats, self.k)[1][:, -1].astype(np.float64)

    def as_meta(self, train_info: dict | None = None) -> dict:
        """The checkpoint entry: tensors, numbers and strings only (loads with weights_only=True)."""
        enc = self.encoder
        return {"method": "knn-simclr", "k": int(self.k),
                "encoder": {"model_args": dict(enc.model_args), "state_dict": {k: v.detach().clone() for k, v in enc.state_dict().items()}},
                "bank": self.bank.to(BANK_DTYPE), "labels": torch.as_tensor(self.labels, dtype=torch.int8),
                "paths": list(self.paths), "reference": torch.tensor(self.reference, dtype=torch.float32),
                **({"train": dict(train_info)} if train_info else {})}

    @classmethod
    def from_meta(cls, meta: dict) -> "ContentFamiliarity":
        enc = ContentEncoder(**meta["encoder"]["model_args"])
        enc.load_state_dict(meta["encoder"]["state_dict"])
        from core.model.models import fuse_for_inference
        enc = fuse_for_inference(enc.eval())          # BatchNorm folded into the convolutions: the same features
        for p in enc.parameters():
            p.requires_grad_(False)
        return cls(encoder=enc, bank=torch.as_tensor(meta["bank"]).float(), labels=np.asarray(meta["labels"], np.int64),
                   paths=tuple(meta["paths"]), reference=np.sort(np.asarray(meta["reference"], np.float64)),
                   k=int(meta.get("k", CONTENT_K)))


def fit_content(x_train: torch.Tensor, y_train, paths, x_ref: torch.Tensor, epochs: int = 30, k: int = CONTENT_K,
                seed: int = 0, bank_size: int = 20000, log=print) -> tuple[ContentFamiliarity, dict]:
    """Train the content encoder on the training images, keep their features as the bank (at most `bank_size`,
    seeded), and the k-th-nearest distances of the held-out `x_ref` images as the reference."""
    x_train = content_size(x_train)
    enc, info = train_content_encoder(x_train, epochs=epochs, seed=seed, log=log)
    for p in enc.parameters():
        p.requires_grad_(False)
    idx = np.arange(len(x_train))
    if len(idx) > bank_size:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), bank_size, replace=False))
    probe = ContentFamiliarity(encoder=enc, bank=torch.zeros(1, enc.fc.out_features), labels=np.zeros(1, np.int64),
                               paths=("",), reference=np.zeros(1), k=k)
    bank = torch.as_tensor(probe.features(x_train[torch.as_tensor(idx)]))
    fam = ContentFamiliarity(encoder=enc, bank=bank, labels=np.asarray(y_train)[idx].astype(np.int64),
                             paths=tuple(str(paths[i]) for i in idx), reference=np.zeros(1), k=k)
    ref = np.sort(fam.distance(fam.features(x_ref)))
    return ContentFamiliarity(encoder=enc, bank=bank, labels=fam.labels, paths=fam.paths, reference=ref, k=k), info
