"""Generator families for the embedded sample, each trained here from scratch on the train REAL crops.

Used by ``data/build_sample.py``; ``data/train_generator.py`` trains one family on its own, in the background::

    python data/train_generator.py --family ddpm --minutes 25     # writes weights/generators/ddpm.pt

Families (``FAMILIES``), and how their images reach 32x32:

| family   | kind                                                | made at | to 32x32            |
|----------|-----------------------------------------------------|---------|---------------------|
| dcgan    | GAN: transposed-conv generator, SN discriminator    | 32      | as is               |
| vae      | convolutional VAE, samples from the prior           | 32      | as is               |
| ddpm     | diffusion: small UNet, DDPM training, DDIM sampling | 32      | as is               |
| pixelcnn | autoregressive: masked convolutions, 256-way softmax| 32      | as is               |
| regen    | real crops passed through a conv autoencoder        | 64      | LANCZOS downscale   |
| upgan64  | GAN: upsample+conv generator, SN discriminator      | 64      | LANCZOS downscale   |

``regen`` is content-matched: its fakes are real photos re-synthesised by a network, so only the
network's traces tell them apart. ``upgan64`` is kept out of train/test and makes the ``ood`` fakes.
Every checkpoint is a plain dict (``kind``, ``config``, ``steps``, ``train_seconds``, ``state_dict``)
that loads with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

FAMILIES = ("dcgan", "vae", "ddpm", "pixelcnn", "regen", "upgan64")
NATIVE_SIZE = {"dcgan": 32, "vae": 32, "ddpm": 32, "pixelcnn": 32, "regen": 64, "upgan64": 64}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- shared helpers
def to_tensor(arrs) -> torch.Tensor:
    """uint8 (N, H, W, 3) arrays -> float (N, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def downscale(arrs: np.ndarray, size: int = 32) -> list[np.ndarray]:
    """Antialiased resize to size x size, the same PIL call that made the REAL crops."""
    if arrs.shape[1] == size:
        return list(arrs)
    return [np.asarray(Image.fromarray(a).resize((size, size), Image.LANCZOS, reducing_gap=3.0)) for a in arrs]


def batches(x: torch.Tensor, bs: int, g: torch.Generator):
    """Endless random batches with horizontal flips (photos are flip-symmetric)."""
    while True:
        b = x[torch.randint(0, x.size(0), (bs,), generator=g)]
        flip = torch.rand(bs, generator=g) < 0.5
        b[flip] = b[flip].flip(3)
        yield b


def ema_update(ema: nn.Module, live: nn.Module, step: int, decay: float) -> None:
    with torch.no_grad():
        d = min(decay, (1 + step) / (10 + step))
        for pe, p in zip(ema.parameters(), live.parameters()):
            pe.lerp_(p, 1 - d)
        for be, b in zip(ema.buffers(), live.buffers()):
            be.copy_(b)


class Budget:
    """Stop a training loop at `steps` or after `minutes` of wall time, whichever comes first."""

    def __init__(self, steps: int, minutes: float, name: str):
        self.steps, self.minutes, self.name, self.t0, self.done = steps, minutes, name, time.time(), 0

    def __iter__(self):
        for step in range(self.steps):
            if self.minutes and time.time() - self.t0 > 60 * self.minutes:
                log(f"[{self.name}] time budget of {self.minutes} min reached at step {step}")
                return
            self.done = step + 1
            yield step

    @property
    def seconds(self) -> float:
        return time.time() - self.t0


# --------------------------------------------------------------------------- GANs
class DCGenerator(nn.Module):
    """Transposed-convolution generator, 32x32 (the original sample's DCGAN)."""

    def __init__(self, nz=100, ngf=48):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.net(z.view(z.size(0), -1, 1, 1))


class UpGenerator(nn.Module):
    """Nearest-upsample + 3x3 conv generator, 64x64: no transposed-conv checkerboard, other traces."""

    def __init__(self, nz=128, ngf=32):
        super().__init__()
        self.nz, self.ngf = nz, ngf
        self.fc = nn.Linear(nz, ngf * 8 * 16)
        chans = [ngf * 8, ngf * 4, ngf * 2, ngf, ngf]          # 4 -> 8 -> 16 -> 32 -> 64
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(b), nn.ReLU(True)]
        self.net = nn.Sequential(*layers, nn.Conv2d(ngf, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.net(F.relu(self.fc(z)).view(z.size(0), self.ngf * 8, 4, 4))


class SNDiscriminator(nn.Module):
    """Spectral-norm discriminator for 32 (depth 3) or 64 (depth 4) pixel images."""

    def __init__(self, ndf=64, size=32):
        super().__init__()
        sn = nn.utils.spectral_norm
        depth = int(math.log2(size)) - 2
        layers, c = [], 3
        for i in range(depth):
            out = ndf * 2 ** i if size == 32 else (ndf // 2) * 2 ** i
            layers += [sn(nn.Conv2d(c, out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            c = out
        self.net = nn.Sequential(*layers, sn(nn.Conv2d(c, 1, 4, 1, 0)))

    def forward(self, x):
        return self.net(x).view(-1)


def train_gan(x, cfg, steps, minutes, seed, name, progress_dir=None):
    """Hinge-loss GAN with an SN discriminator and an EMA generator; returns (G_ema, steps, seconds)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    size = x.shape[-1]
    G = DCGenerator(cfg["nz"], cfg["ngf"]) if size == 32 else UpGenerator(cfg["nz"], cfg["ngf"])
    D = SNDiscriminator(cfg["ndf"], size)
    G_ema = copy.deepcopy(G).eval()
    log(f"[{name}] G {sum(p.numel() for p in G.parameters()):,} params, D {sum(p.numel() for p in D.parameters()):,}")
    # lr 2e-4, betas (0.5, 0.999), one D step per G step: the setting the spectral-norm paper found robust.
    oG = torch.optim.Adam(G.parameters(), cfg["lr_g"], betas=(0.5, 0.999))
    oD = torch.optim.Adam(D.parameters(), cfg["lr_d"], betas=(0.5, 0.999))
    data = batches(x, cfg["batch"], g)
    budget = Budget(steps, minutes, name)
    for step in budget:
        real = next(data)
        fake = G(torch.randn(cfg["batch"], cfg["nz"], generator=g))
        lossD = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake.detach())).mean()
        oD.zero_grad(set_to_none=True)
        lossD.backward()
        oD.step()
        lossG = -D(fake).mean()
        oG.zero_grad(set_to_none=True)
        lossG.backward()
        oG.step()
        ema_update(G_ema, G, step, cfg["ema"])
        if step % 250 == 0:
            log(f"[{name}] step {step} lossD {lossD.item():.3f} lossG {lossG.item():.3f} ({budget.seconds:.0f} s)")
            if progress_dir:
                save_grid(fake[:64].detach(), Path(progress_dir) / f"{name}_{step:05d}.png")
    return G_ema, budget.done, budget.seconds


# --------------------------------------------------------------------------- VAE
class ConvVAE(nn.Module):
    """Convolutional VAE, 32x32 (the original sample's ood generator)."""

    def __init__(self, nz=64, ch=32):
        super().__init__()
        self.nz, self.ch = nz, ch
        self.enc = nn.Sequential(
            nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), nn.BatchNorm2d(ch * 4), nn.LeakyReLU(0.2, True),
            nn.Flatten())
        self.mu = nn.Linear(ch * 4 * 16, nz)
        self.logvar = nn.Linear(ch * 4 * 16, nz)
        self.fc = nn.Linear(nz, ch * 4 * 16)
        self.dec = nn.Sequential(
            nn.ReLU(True),
            nn.ConvTranspose2d(ch * 4, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.ReLU(True),
            nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Sigmoid())

    def decode(self, z):
        return self.dec(self.fc(z).view(-1, self.ch * 4, 4, 4)) * 2 - 1

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(z), mu, logvar


def train_vae(x, cfg, steps, minutes, seed, name="vae", progress_dir=None):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    V = ConvVAE(cfg["nz"], cfg["ch"])
    opt = torch.optim.Adam(V.parameters(), cfg["lr"])
    data = batches(x, cfg["batch"], g)
    budget = Budget(steps, minutes, name)
    for step in budget:
        real = next(data)
        rec, mu, logvar = V(real)
        # Summed over pixels (a Gaussian log-likelihood up to scale) so the KL term does not swamp it.
        recon = F.mse_loss(rec, real, reduction="none").flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        loss = recon / cfg["sigma2"] + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0:
            log(f"[{name}] step {step} recon {recon.item():.1f} kl {kl.item():.1f}")
    return V.eval(), budget.done, budget.seconds


# --------------------------------------------------------------------------- diffusion (DDPM / DDIM)
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], 1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, tdim):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """A small DDPM UNet for 32x32: widths ch, 2ch, 2ch at 32, 16, 8 pixels; predicts the noise."""

    def __init__(self, ch=32):
        super().__init__()
        self.ch, tdim = ch, ch * 4
        self.temb = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.inc = nn.Conv2d(3, ch, 3, 1, 1)
        self.d1, self.d2, self.d3 = ResBlock(ch, ch, tdim), ResBlock(ch, 2 * ch, tdim), ResBlock(2 * ch, 2 * ch, tdim)
        self.down1, self.down2 = nn.Conv2d(ch, ch, 3, 2, 1), nn.Conv2d(2 * ch, 2 * ch, 3, 2, 1)
        self.mid = ResBlock(2 * ch, 2 * ch, tdim)
        self.u3, self.u2, self.u1 = ResBlock(4 * ch, 2 * ch, tdim), ResBlock(4 * ch, 2 * ch, tdim), ResBlock(3 * ch, ch, tdim)
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, 1, 1))

    def forward(self, x, t):                                     # x (B, 3, 32, 32), t (B,)
        e = self.temb(timestep_embedding(t, self.ch))
        h1 = self.d1(self.inc(x), e)                             # (B, ch, 32, 32)
        h2 = self.d2(self.down1(h1), e)                          # (B, 2ch, 16, 16)
        h3 = self.d3(self.down2(h2), e)                          # (B, 2ch, 8, 8)
        h = self.mid(h3, e)
        h = self.u3(torch.cat([h, h3], 1), e)
        h = self.u2(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h2], 1), e)
        h = self.u1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h1], 1), e)
        return self.out(h)


def ddpm_alphas_bar(T: int) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, T)                        # the DDPM paper's linear schedule
    return torch.cumprod(1 - betas, 0)


def train_ddpm(x, cfg, steps, minutes, seed, name="ddpm", progress_dir=None):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = UNet(cfg["ch"])
    ema = copy.deepcopy(net).eval()
    log(f"[{name}] UNet {sum(p.numel() for p in net.parameters()):,} params")
    opt = torch.optim.Adam(net.parameters(), cfg["lr"])
    abar = ddpm_alphas_bar(cfg["T"])
    data = batches(x, cfg["batch"], g)
    budget = Budget(steps, minutes, name)
    for step in budget:
        x0 = next(data)
        t = torch.randint(0, cfg["T"], (x0.size(0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema_update(ema, net, step, cfg["ema"])
        if step % 250 == 0:
            log(f"[{name}] step {step} loss {loss.item():.4f} ({budget.seconds:.0f} s)")
    return ema, budget.done, budget.seconds


@torch.no_grad()
def ddim_sample(net: UNet, n: int, T: int, steps: int, g: torch.Generator, bs: int = 200) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from pure noise in `steps` evenly spaced timesteps."""
    abar = ddpm_alphas_bar(T)
    ts = torch.linspace(T - 1, 0, steps).round().long()
    out = []
    for i in range(0, n, bs):
        x = torch.randn(min(bs, n - i), 3, 32, 32, generator=g)
        for k, t in enumerate(ts):
            a = abar[t]
            a_prev = abar[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0)
            eps = net(x, t.repeat(x.size(0)))
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        out.append(x)
    return torch.cat(out)


# --------------------------------------------------------------------------- autoregressive (PixelCNN)
class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only pixels above, and left in the same row ('A': not the centre)."""

    def __init__(self, kind: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = self.kernel_size[0]
        mask = torch.ones_like(self.weight)
        mask[:, :, k // 2, k // 2 + (kind == "B"):] = 0
        mask[:, :, k // 2 + 1:] = 0
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


class PixelCNN(nn.Module):
    """Masked-convolution PixelCNN over 8-bit RGB: R | context, G | context+R, B | context+R+G.

    The context trunk sees only earlier pixels; the three 1x1 heads add the current pixel's
    already-sampled channels, so a whole pixel needs one trunk pass.
    """

    def __init__(self, ch=32, layers=4):
        super().__init__()
        self.layers = layers
        self.inp = MaskedConv2d("A", 3, ch, 7, padding=3)
        self.trunk = nn.ModuleList(MaskedConv2d("B", ch, ch, 3, padding=1) for _ in range(layers))
        self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(ch + c, ch, 1), nn.ReLU(True), nn.Conv2d(ch, 256, 1))
                                   for c in range(3))

    @property
    def radius(self) -> int:
        return 3 + self.layers                                   # receptive field, pixels up/left/right

    def context(self, x):                                        # x (B, 3, H, W) in [-1, 1]
        h = self.inp(x)
        for conv in self.trunk:
            h = h + conv(F.relu(h))
        return F.relu(h)

    def logits(self, h, x, c):                                   # (B, 256, H, W) for channel c
        return self.heads[c](torch.cat([h, x[:, :c]], 1))

    def loss(self, x):
        h = self.context(x)
        target = ((x + 1) * 127.5).round().long()                # (B, 3, H, W) in 0..255
        return sum(F.cross_entropy(self.logits(h, x, c), target[:, c]) for c in range(3)) / 3


def train_pixelcnn(x, cfg, steps, minutes, seed, name="pixelcnn", progress_dir=None):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = PixelCNN(cfg["ch"], cfg["layers"])
    ema = copy.deepcopy(net).eval()
    log(f"[{name}] {sum(p.numel() for p in net.parameters()):,} params")
    opt = torch.optim.Adam(net.parameters(), cfg["lr"])
    data = batches(x, cfg["batch"], g)
    budget = Budget(steps, minutes, name)
    for step in budget:
        loss = net.loss(next(data))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema_update(ema, net, step, cfg["ema"])
        if step % 250 == 0:
            log(f"[{name}] step {step} nll {loss.item() / math.log(2):.3f} bits/subpixel ({budget.seconds:.0f} s)")
    return ema, budget.done, budget.seconds


@torch.no_grad()
def pixelcnn_sample(net: PixelCNN, n: int, g: torch.Generator, temperature: float = 1.0, size: int = 32) -> torch.Tensor:
    """Sample pixel by pixel. Each step runs the trunk on the window the pixel can see (radius rows
    up, radius columns either side), which gives the same logits as the full image at ~1/7 the cost."""
    r = net.radius
    x = torch.zeros(n, 3, size, size)
    for i in range(size):
        top = max(0, i - r)
        for j in range(size):
            left, right = max(0, j - r), min(size, j + r + 1)
            win = x[:, :, top:i + 1, left:right]
            h = net.context(win)[:, :, i - top:i - top + 1, j - left:j - left + 1]   # (n, ch, 1, 1)
            px = x[:, :, i:i + 1, j:j + 1]
            for c in range(3):
                p = F.softmax(net.logits(h, px, c)[:, :, 0, 0] / temperature, 1)
                v = torch.multinomial(p, 1, generator=g).float().view(-1)
                x[:, c, i, j] = v / 127.5 - 1
                px = x[:, :, i:i + 1, j:j + 1]
    return x


# --------------------------------------------------------------------------- regenerated reals (autoencoder)
class AutoEncoder(nn.Module):
    """64x64 conv autoencoder with an 8x8x`nz` bottleneck (12x fewer numbers than the image at nz=16)."""

    def __init__(self, ch=32, nz=16):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), nn.BatchNorm2d(ch * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch * 4, nz, 1))
        self.dec = nn.Sequential(
            nn.Conv2d(nz, ch * 4, 1), nn.ReLU(True),
            nn.ConvTranspose2d(ch * 4, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.ReLU(True),
            nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Tanh())

    def forward(self, x):
        return self.dec(self.enc(x))


def train_regen(x, cfg, steps, minutes, seed, name="regen", progress_dir=None):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ae = AutoEncoder(cfg["ch"], cfg["nz"])
    log(f"[{name}] {sum(p.numel() for p in ae.parameters()):,} params")
    opt = torch.optim.Adam(ae.parameters(), cfg["lr"])
    data = batches(x, cfg["batch"], g)
    budget = Budget(steps, minutes, name)
    for step in budget:
        real = next(data)
        loss = F.l1_loss(ae(real), real)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0:
            log(f"[{name}] step {step} L1 {loss.item():.4f} ({budget.seconds:.0f} s)")
    return ae.eval(), budget.done, budget.seconds


# --------------------------------------------------------------------------- registry
CONFIGS = {
    "dcgan": dict(nz=100, ngf=48, ndf=64, batch=128, lr_g=2e-4, lr_d=2e-4, ema=0.999),
    "vae": dict(nz=64, ch=32, batch=128, lr=1e-3, sigma2=0.1),
    "ddpm": dict(ch=32, T=1000, batch=32, lr=4e-4, ema=0.995, ddim_steps=20),
    "pixelcnn": dict(ch=32, layers=4, batch=32, lr=1e-3, ema=0.995, temperature=1.0),
    "regen": dict(ch=32, nz=16, batch=32, lr=1e-3),
    "upgan64": dict(nz=128, ngf=16, ndf=64, batch=32, lr_g=2e-4, lr_d=2e-4, ema=0.999),
}
TRAINERS = {"dcgan": train_gan, "upgan64": train_gan, "vae": train_vae, "ddpm": train_ddpm,
            "pixelcnn": train_pixelcnn, "regen": train_regen}


def build_generator(kind: str, cfg: dict) -> nn.Module:
    return {"dcgan": lambda: DCGenerator(cfg["nz"], cfg["ngf"]),
            "upgan64": lambda: UpGenerator(cfg["nz"], cfg["ngf"]),
            "vae": lambda: ConvVAE(cfg["nz"], cfg["ch"]),
            "ddpm": lambda: UNet(cfg["ch"]),
            "pixelcnn": lambda: PixelCNN(cfg["ch"], cfg["layers"]),
            "regen": lambda: AutoEncoder(cfg["ch"], cfg["nz"])}[kind]()


def train_family(kind: str, x: torch.Tensor, steps: int, minutes: float, seed: int, progress_dir=None):
    """Train one family on float (N, 3, S, S) crops in [-1, 1]; returns (model, cfg, steps, seconds)."""
    cfg = dict(CONFIGS[kind])
    model, done, secs = TRAINERS[kind](x, cfg, steps, minutes, seed, name=kind, progress_dir=progress_dir)
    return model.eval(), cfg, done, secs


def save_generator(path: Path, model: nn.Module, kind: str, cfg: dict, steps: int, secs: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"kind": kind, "config": dict(cfg), "steps": int(steps), "train_seconds": float(round(secs, 1)),
                "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}, tmp)
    tmp.replace(path)


def load_generator(path: Path, kind: str):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg = {**CONFIGS[kind], **ck["config"]}
    model = build_generator(kind, cfg)
    model.load_state_dict(ck["state_dict"])
    return model.eval(), cfg, ck


@torch.no_grad()
def generate(kind: str, model: nn.Module, cfg: dict, n: int, seed: int, inputs: torch.Tensor | None = None
             ) -> list[tuple[np.ndarray, str]]:
    """n fakes as uint8 (32, 32, 3) arrays with an origin string. `regen` needs `inputs`: (n, 3, 64, 64)
    real crops in [-1, 1] that it re-synthesises."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if kind == "regen":
        imgs = torch.cat([model(inputs[i:i + 256]) for i in range(0, n, 256)])
    elif kind == "ddpm":
        imgs = ddim_sample(model, n, cfg["T"], cfg["ddim_steps"], g)
    elif kind == "pixelcnn":
        imgs = pixelcnn_sample(model, n, g, cfg.get("temperature", 1.0))
    else:
        z = torch.randn(n, cfg["nz"], generator=g)
        imgs = torch.cat([(model(z[i:i + 250]) if kind != "vae" else model.decode(z[i:i + 250]))
                          for i in range(0, n, 250)])
    arrs = downscale(to_uint8(imgs), 32)
    return [(a, f"{kind} seed={seed} index={i}") for i, a in enumerate(arrs)]


def save_grid(imgs: torch.Tensor, path: Path, cols=8, scale=2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(imgs)
    s = arr.shape[1]
    sheet = Image.new("RGB", (cols * s, math.ceil(len(arr) / cols) * s))
    for i, a in enumerate(arr):
        sheet.paste(Image.fromarray(a), ((i % cols) * s, (i // cols) * s))
    sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST).save(path)


def hash_family(kind: str) -> int:
    """A stable per-family seed offset (Python's hash() is salted per process)."""
    return 1 + FAMILIES.index(kind)
