"""Verdicts a user can trust: REAL, FAKE or UNSURE, and why.

Two independent reasons make a verdict UNSURE:

- **near the threshold** (split-conformal, in distribution). Score each calibration image by its
  signed margin from the decision threshold in logit space, m = logit / T - logit(t), taken
  against its true class: s = -m for FAKE, s = m for REAL. With q the ceil((n+1)(1-alpha))-th
  smallest score, the prediction set of a new image is {FAKE if -m <= q} + {REAL if m <= q}.
  For exchangeable in-distribution images the true class is in the set with probability at least
  1 - alpha (Vovk et al.; Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction",
  2021). A set of both classes (|m| <= q, possible when q >= 0) is UNSURE; otherwise the verdict is
  the class called at the threshold (a one-class set always holds that class). An empty set (|m| <
  -q, when the model is more accurate than 1 - alpha needs) is decided too: the guarantee a user
  needs holds either way, since a decided verdict is wrong only when the true class is outside the
  set, so at most alpha of exchangeable in-distribution images are decided wrongly. (Counting
  empty sets as UNSURE would make the band *widen* as alpha grew past the model's error rate: asking
  for 98% coverage would give fewer UNSURE verdicts than 95%.)
  Smaller alpha -> larger q -> a wider band, monotonically. Because the score is relative to t, the
  band moves with the threshold and is recomputed per call from the stored calibration logits.
- **unlike the training data** (familiarity). The model's own features (global average of its last
  conv block, `model.features`) are scored by the smallest class-conditional Mahalanobis distance
  with a shared covariance (Lee et al., NeurIPS 2018). Familiarity is the share of held-out
  in-distribution calibration images that are at least as far away: an empirical p-value in
  [0, 1]. An image is flagged when familiarity < `flag_rate` (default 0.05), so by construction
  at most ~5% of in-distribution images are flagged.
  For an ensemble (core.model.models.Ensemble) familiarity has a second part: the spread of the members'
  calibrated P(FAKE) (largest minus smallest), scored the same way against the held-out images'
  spreads. Members trained on different views of the image agree where they learned and disagree
  off it (deep ensembles, Lakshminarayanan et al. 2017), which catches images whose features still
  look ordinary to each member. The two p-values combine by Bonferroni, min(1, 2 min(p1, p2)), so
  the flag rate on in-distribution images stays at most `flag_rate`.
  Colour: an image far less colourful than the held-out images (a
  grayscale photo, say, given to a model trained on colour ones) is unlike the training data too,
  whatever its features say: the shipped default calls 42% of the test FAKEs REAL once they are
  made grayscale, and only 12% of the grayscale test images were UNSURE without this part. The image's colourfulness (the
  mean over pixels of max(R, G, B) - min(R, G, B), over 255, on the model's input) is scored against
  the held-out images' colourfulness from below, p_c = (1 + #reference <= c) / (n + 1). The two parts
  combine by weighted Bonferroni, min(1, p / (1 - w), p_c / w) with w = `colour_share` (0.2): an
  image is flagged when p < flag_rate (1 - w) or p_c < flag_rate w, so in-distribution images are
  still flagged at most `flag_rate` of the time. At flag rate 0.05 and 1,002 reference images that
  flags an image at most as colourful as 9 of them. (w = 0.05 flagged nothing on the shipped default:
  its calibration split holds 6 grayscale crops, so a grayscale image's p_c is 7/1,003.)

Both are fitted once at training time (`fit_verdict`) on data the weights were not fitted to, and
stored in the checkpoint under "verdict" as plain tensors and numbers, so the checkpoint still
loads with weights_only=True. A checkpoint without them still predicts: the verdict then uses what
it has (`VerdictModel.from_checkpoint_meta` returns None parts) and `describe()` says so.

The command that summarises a checkpoint's verdict on a dataset, or writes a recalibrated copy, is
core.verdict.recalibrate (`python -m core recalibrate`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from core.verdict.content import ContentFamiliarity

REAL, FAKE, UNSURE = "REAL", "FAKE", "UNSURE"
VERDICTS = (REAL, FAKE, UNSURE)
WHY_BAND = "near the threshold"
WHY_UNFAMILIAR = "unlike the training data"
DEFAULT_ALPHA = 0.05          # conformal miscoverage: the true class is in the set for >= 95% of images
DEFAULT_FLAG_RATE = 0.05      # familiarity cut-off: flags at most ~5% of in-distribution images
SHRINKAGE = 0.1               # covariance shrinkage towards its diagonal; 256 features from ~9k images
COLOUR_SHARE = 0.2            # share of the familiarity flag rate spent on "far less colourful than held-out images"
CONTENT_SHARE = 0.4           # share spent on "content far from every training image" (docs/verdict.md: the probe)
PART_COLUMN = "familiarity_"  # evaluation column prefix of each part's value (familiarity_content, ...)
PART_NAMES = {"features": "far from the training data in the model's own features",
              "content": "its content is far from every training image",
              "colour": "far less colourful than the training images"}


def logit_of(p: float) -> float:
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def conformal_quantile(scores, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest score; +inf when that rank exceeds n (too few points)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    k = math.ceil((n + 1) * (1 - alpha))
    return float("inf") if k > n or n == 0 else float(s[k - 1])


def conformity_scores(logits, labels, threshold: float, temperature: float = 1.0) -> np.ndarray:
    """s = -m for FAKE, m for REAL, m = logit / T - logit(threshold): large when the true class is far
    on the wrong side of the threshold."""
    m = np.asarray(logits, np.float64) / temperature - logit_of(threshold)
    y = np.asarray(labels)
    return np.where(y == 1, -m, m)


def prediction_sets(logits, q: float, threshold: float, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(has_real, has_fake) boolean arrays of the conformal prediction set of each logit."""
    m = np.asarray(logits, np.float64) / temperature - logit_of(threshold)
    return m <= q, -m <= q


@dataclass(frozen=True)
class Familiarity:
    """Tied-covariance class-conditional Mahalanobis distance on pooled last-block features."""
    means: np.ndarray          # (2, C) class means (0 = REAL, 1 = FAKE)
    precision: np.ndarray      # (C, C) inverse of the shrunk shared covariance
    reference: np.ndarray      # (n,) sorted distances of held-out in-distribution images
    flag_rate: float = DEFAULT_FLAG_RATE
    spread_reference: np.ndarray | None = None   # (n,) sorted member spreads of held-out images (ensembles)
    colour_reference: np.ndarray | None = None   # (n,) sorted colourfulness of held-out images
    colour_share: float = COLOUR_SHARE
    content: ContentFamiliarity | None = None    # kNN on a content encoder's features (core.verdict.content)
    content_share: float = CONTENT_SHARE
    # Derived once at construction (never changed after): L with precision = L L^T, and the means times L, so a
    # distance is one matmul, ||f L - mu L||, instead of one per class. None where precision is not positive
    # definite (then `distance` takes the two-matmul form).
    _factor: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        try:
            p = np.asarray(self.precision, np.float64)
            # x P x^T = x ((P + P^T) / 2) x^T for any P; cholesky reads one triangle, so factor the symmetric part
            chol = np.linalg.cholesky((p + p.T) / 2)
        except np.linalg.LinAlgError:
            return
        factor = torch.as_tensor(chol)
        object.__setattr__(self, "_factor", (factor, torch.as_tensor(np.asarray(self.means, np.float64)) @ factor))

    @property
    def width(self) -> int:
        return self.means.shape[1]

    def distance(self, feats) -> np.ndarray:
        """feats (N, C [+ k]) -> smallest class-conditional Mahalanobis distance (N,), float64; columns past
        C (an ensemble's member logits, `pooled_features`) are not features and are left out."""
        # torch, not numpy: (diff @ P) is one matmul on torch's own threads. numpy's BLAS runs a second
        # thread pool that keeps spinning after each batch and takes the cores from the forward pass during
        # evaluation; and einsum("nc,cd,nd->n") without a contraction path loops over N*C*C terms (~240 us
        # per image, a quarter of the forward pass here).
        f = torch.as_tensor(np.asarray(feats, np.float64)[:, :self.width])    # (N, C)
        if self._factor is not None:            # (f - mu) P (f - mu)^T = ||(f - mu) L||^2 = ||f L - mu L||^2
            factor, means_l = self._factor
            g = f @ factor                                          # (N, C): the one matmul
            return torch.stack([(g - m).square_().sum(dim=1) for m in means_l]).amin(dim=0).sqrt_().numpy()
        precision = torch.as_tensor(self.precision)                 # (C, C)
        d = []
        for mu in self.means:
            diff = f - torch.as_tensor(mu)
            d.append(((diff @ precision) * diff).sum(dim=1))
        return torch.stack(d).amin(dim=0).clamp_min_(0).sqrt_().numpy()

    def spread(self, feats) -> np.ndarray:
        """feats (N, C + k) -> largest minus smallest of the k members' calibrated P(FAKE) (N,)."""
        p = 1 / (1 + np.exp(-np.asarray(feats, np.float64)[:, self.width:]))
        return p.max(axis=1) - p.min(axis=1)

    @property
    def shares(self) -> dict[str, float]:
        """The share of the flag rate each part may spend (weighted Bonferroni: they add up to 1)."""
        out = {}
        if self.colour_reference is not None:
            out["colour"] = self.colour_share
        if self.content is not None:
            out["content"] = self.content_share
        out["features"] = 1.0 - sum(out.values())
        return out

    def parts(self, feats, colour=None, content=None) -> dict[str, np.ndarray]:
        """Each part's p-value over its share of the flag rate, capped at 1, (N,) per part: an image is flagged
        by a part when its value is below `flag_rate`, and `score` is the smallest of them.

        - "features": share of held-out images at least as far (Mahalanobis, the model's own features); for an
          ensemble, Bonferroni-combined with the share whose members disagree at least as much;
        - "content" (with a content model): share of held-out images whose k-th nearest training image, in the
          content encoder's space, is at least as far (`content`: `ContentFamiliarity.features` of the images);
        - "colour" (with a colour reference): share of held-out images at most as colourful (`colour`:
          `colourfulness` of the model inputs)."""
        shares = self.shares
        p = tail_share(self.reference, self.distance(feats))
        if self.spread_reference is not None:
            p = np.minimum(1.0, 2 * np.minimum(p, tail_share(self.spread_reference, self.spread(feats))))
        out = {"features": p}
        if self.content is not None:
            if content is None:
                raise ValueError("this familiarity model has a content part: pass the images' content features")
            out["content"] = tail_share(self.content.reference, self.content.distance(content))
        if self.colour_reference is not None:
            if colour is None:
                raise ValueError("this familiarity model has a colour reference: pass the images' colourfulness")
            out["colour"] = head_share(self.colour_reference, colour)
        return {k: np.minimum(1.0, v / shares[k]) for k, v in out.items()}

    def score(self, feats, colour=None, content=None) -> np.ndarray:
        """Familiarity in [0, 1], the smallest of `parts`: flagged (unlike the training data) below `flag_rate`,
        which by construction happens to at most `flag_rate` of in-distribution images."""
        return np.minimum.reduce(list(self.parts(feats, colour, content).values()))


def colourfulness(x_uint8: torch.Tensor) -> np.ndarray:
    """uint8 model inputs (N, 3, S, S), or (N, K, 3, S, S) for K windows -> (N,) float64 in [0, 1]: the mean
    over pixels (and windows) of max(R, G, B) - min(R, G, B), over 255. 0 for a grayscale image."""
    x = torch.as_tensor(x_uint8)
    chroma = (x.amax(dim=-3) - x.amin(dim=-3)).float()            # (N, [K,] S, S)
    return chroma.flatten(1).mean(dim=1).double().div_(255).cpu().numpy()


def head_share(reference: np.ndarray, values) -> np.ndarray:
    """(1 + #reference <= v) / (1 + n) per value: an empirical p-value from below against sorted `reference`."""
    n = len(reference)
    at_most = np.searchsorted(reference, np.asarray(values, np.float64), side="right")
    return (at_most + 1) / (n + 1)


def tail_share(reference: np.ndarray, values) -> np.ndarray:
    """(1 + #reference >= v) / (1 + n) per value: an empirical p-value against sorted `reference`."""
    n = len(reference)
    at_least = n - np.searchsorted(reference, np.asarray(values, np.float64), side="left")
    return (at_least + 1) / (n + 1)


@dataclass(frozen=True)
class VerdictModel:
    """What a checkpoint knows for verdicts; immutable, so one instance is safely shared across sessions."""
    cal_logits: np.ndarray | None = None     # raw logits of the calibration split
    cal_labels: np.ndarray | None = None
    alpha: float = DEFAULT_ALPHA
    familiarity: Familiarity | None = None

    @classmethod
    def from_checkpoint_meta(cls, meta: dict) -> "VerdictModel":
        v = (meta or {}).get("verdict") or {}
        cal, fam = v.get("calibration"), v.get("familiarity")
        kw = {}
        if cal:
            kw.update(cal_logits=_np(cal["logits"]), cal_labels=_np(cal["labels"]).astype(np.int64),
                      alpha=float(cal.get("alpha", DEFAULT_ALPHA)))
        if fam:
            spread, colour = fam.get("spread_reference"), fam.get("colour_reference")
            kw["familiarity"] = Familiarity(means=_np(fam["means"]), precision=_np(fam["precision"]),
                                            reference=np.sort(_np(fam["reference"])),
                                            flag_rate=float(fam.get("flag_rate", DEFAULT_FLAG_RATE)),
                                            spread_reference=None if spread is None else np.sort(_np(spread)),
                                            colour_reference=None if colour is None else np.sort(_np(colour)),
                                            colour_share=float(fam.get("colour_share", COLOUR_SHARE)),
                                            content=(ContentFamiliarity.from_meta(fam["content"])
                                                     if fam.get("content") else None),
                                            content_share=float(fam.get("content_share", CONTENT_SHARE)))
        return cls(**kw)

    @property
    def has_band(self) -> bool:
        return self.cal_logits is not None and len(self.cal_logits) > 0

    def quantile(self, threshold: float, temperature: float = 1.0, alpha: float | None = None) -> float | None:
        if not self.has_band:
            return None
        s = conformity_scores(self.cal_logits, self.cal_labels, threshold, temperature)
        return conformal_quantile(s, self.alpha if alpha is None else alpha)

    def band(self, threshold: float, temperature: float = 1.0, alpha: float | None = None) -> tuple[float, float] | None:
        """P(FAKE) interval whose images are UNSURE at this threshold: the conformal set holds both classes,
        |m| <= q. None without calibration data; (0, 1) when q = +inf (too few calibration images for
        this alpha: every image is UNSURE); lo == hi == threshold when q < 0 (no set holds both
        classes: the band is empty, see `band_is_empty`)."""
        q = self.quantile(threshold, temperature, alpha)
        if q is None:
            return None
        if math.isinf(q):
            return (0.0, 1.0)
        lt = logit_of(threshold)
        w = max(q, 0.0)
        lo, hi = 1 / (1 + math.exp(-(lt - w))), 1 / (1 + math.exp(-(lt + w)))
        return (lo, hi)

    def band_is_empty(self, threshold: float, temperature: float = 1.0, alpha: float | None = None) -> bool:
        """True when no prediction set holds both classes (q < 0): the model errs on fewer calibration
        images than alpha allows, so no image is UNSURE for being near the threshold."""
        q = self.quantile(threshold, temperature, alpha)
        return q is not None and q < 0

    def describe(self, threshold: float = 0.5, temperature: float = 1.0) -> list[str]:
        """Plain sentences about what this checkpoint's verdicts can and cannot say."""
        out = []
        if self.has_band:
            lo, hi = self.band(threshold, temperature)
            head = (f"UNSURE near the threshold: split-conformal on {len(self.cal_logits):,} held-out "
                    f"calibration images at {1 - self.alpha:.0%} coverage (at most {self.alpha:.0%} of "
                    f"in-distribution images decided wrongly); at threshold {threshold:.2f} ")
            out.append(head + ("the band is empty: the model errs on fewer calibration images than "
                               f"{self.alpha:.0%}, so no prediction set holds both classes."
                               if self.band_is_empty(threshold, temperature) else
                               f"the band is P(AI) from {lo:.4f} to {hi:.4f}."))
        else:
            out.append("This checkpoint has no calibration data: no 'near the threshold' band (retrain with "
                       "core.model.train to add it).")
        if self.familiarity is not None:
            out.append(f"UNSURE unlike the training data: Mahalanobis distance on the model's own features, "
                       f"flagged when fewer than {self.familiarity.flag_rate * self.familiarity.shares['features']:.0%} "
                       f"of held-out in-distribution images are as far ({len(self.familiarity.reference):,} reference "
                       f"images).")
            if self.familiarity.spread_reference is not None:
                out.append("This checkpoint is an ensemble: an image is also 'unlike the training data' when its "
                           "members' P(AI) disagree more than on all but a few held-out in-distribution images "
                           "(the two signals share the flag rate, Bonferroni).")
            fam = self.familiarity
            if fam.content is not None:
                c = fam.content
                out.append(f"An image is also 'unlike the training data' when its content is far from every training "
                           f"image: the distance to its {c.k}th nearest of {len(c.paths):,} training images, in the "
                           f"features of an encoder trained self-supervised on them, is larger than for all but "
                           f"{fam.flag_rate * fam.content_share:.0%} of the held-out images (kNN, Sun et al. 2022). "
                           f"This part sees content the detector's own features ignore.")
            else:
                out.append("This checkpoint has no content part: new content (faces, drawings, art) can look familiar "
                           "to the model's own features (python -m core recalibrate --weights W --fit-content OUT "
                           "adds one).")
            if fam.colour_reference is not None:
                out.append(f"An image is also 'unlike the training data' when it is far less colourful than the "
                           f"{len(fam.colour_reference):,} held-out images (a grayscale image, for a model trained "
                           f"on colour ones): its colour p-value from below under {fam.flag_rate * fam.colour_share:.2%}"
                           f"; the other parts then flag under {fam.flag_rate * (1 - fam.colour_share):.2%} together, "
                           f"so all of them still flag at most {fam.flag_rate:.0%} of in-distribution images."
                           + ("" if 1 / (len(fam.colour_reference) + 1) < fam.flag_rate * fam.colour_share else
                              f" With {len(fam.colour_reference):,} reference images it cannot flag any image: it "
                              f"needs more than {math.ceil(1 / (fam.flag_rate * fam.colour_share)) - 1:,}."))
            else:
                out.append("This checkpoint has no colour reference: a grayscale image is judged by its features "
                           "alone (python -m core recalibrate --weights W --fit-colour OUT adds one).")
        else:
            out.append("This checkpoint has no familiarity model: images unlike the training data are NOT "
                       "flagged; the verdict uses the threshold band alone.")
        return out


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def decide(logits, familiarity, vm: VerdictModel | None, threshold: float = 0.5, temperature: float = 1.0
           ) -> tuple[list[str], list[list[str]]]:
    """The one definition of the verdict. logits: raw (N,); familiarity: (N,) in [0, 1] or None.

    Returns (verdicts, reasons): verdict in REAL/FAKE/UNSURE; reasons lists WHY_BAND and/or
    WHY_UNFAMILIAR for UNSURE, [] otherwise. Without a VerdictModel the verdict is the label at the
    threshold.
    """
    z = np.asarray(logits, np.float64).reshape(-1)
    p = 1 / (1 + np.exp(-z / temperature))
    label = np.where(p >= threshold, FAKE, REAL)
    near = np.zeros(len(z), bool)
    if vm is not None and vm.has_band:
        q = vm.quantile(threshold, temperature)
        has_real, has_fake = prediction_sets(z, q, threshold, temperature)
        near = has_real & has_fake               # both classes (an empty set is decided: see the module doc)
    far = np.zeros(len(z), bool)
    if familiarity is not None and vm is not None and vm.familiarity is not None:
        fam = np.asarray(familiarity, np.float64).reshape(-1)
        far = fam < vm.familiarity.flag_rate
    verdicts, reasons = [], []
    for i in range(len(z)):
        why = ([WHY_BAND] if near[i] else []) + ([WHY_UNFAMILIAR] if far[i] else [])
        verdicts.append(UNSURE if why else str(label[i]))
        reasons.append(why)
    return verdicts, reasons


def fired_parts(parts: dict | None, flag_rate: float) -> list[str]:
    """The familiarity parts (`Familiarity.parts` of one image: name -> value) that flag it, in PART_NAMES order."""
    return [k for k in PART_NAMES if parts and parts.get(k) is not None and parts[k] < flag_rate]


def explain(verdict: str, why: list[str], prob_fake: float, familiarity: float | None, vm: VerdictModel | None,
            threshold: float = 0.5, temperature: float = 1.0, colour: float | None = None,
            image_parts: dict | None = None) -> str:
    """The verdict in one or two plain sentences, as the app and the report show it. `colour`: the image's
    `colourfulness`, to say so when the colour part is what flagged it; `image_parts`: the image's familiarity
    parts (name -> value, `Familiarity.parts`), to name the ones that flagged it."""
    lean = FAKE if prob_fake >= threshold else REAL
    fam = "" if familiarity is None else f"familiarity {familiarity:.3f}"
    if verdict != UNSURE:
        band = vm.band(threshold, temperature) if vm is not None and vm.has_band else None
        bits = [f"P(AI) {prob_fake:.4f}"]
        if band and band[0] < band[1]:
            bits.append(f"outside the uncertainty band from {band[0]:.4f} to {band[1]:.4f}")
        if fam:
            bits.append(f"{fam}: it resembles the training data")
        return f"{verdict}: " + ", ".join(bits) + "."
    parts = []
    if WHY_BAND in why:
        band = vm.band(threshold, temperature)
        parts.append(f"near the threshold: P(AI) {prob_fake:.4f} is inside the band from {band[0]:.4f} to {band[1]:.4f} "
                     f"where the {1 - vm.alpha:.0%} conformal guarantee cannot tell REAL from FAKE")
    if WHY_UNFAMILIAR in why:
        what = ("are this far from what the model was trained on"
                if vm.familiarity.spread_reference is None else
                "are this far from what the model was trained on, or make its members disagree this much")
        fm = vm.familiarity
        if fm.colour_reference is not None:
            what += ", or are this much less colourful"
        if fm.content is not None:
            what += ", or have content this far from every training image"
        fired = fired_parts(image_parts, fm.flag_rate)
        parts.append(f"unlike the training data: {fam} (below {fm.flag_rate:.2f}: fewer than "
                     f"{fm.flag_rate:.0%} of held-out in-distribution images {what}), "
                     "so its P(AI) is not evidence"
                     + (f"; flagged by: {', '.join(PART_NAMES[k] for k in fired)}" if fired else ""))
        if colour is not None and fm.colour_reference is not None and \
                head_share(fm.colour_reference, [colour])[0] < fm.flag_rate * fm.colour_share:
            parts.append(f"it is far less colourful than the images the model was calibrated on (colourfulness "
                         f"{colour:.3f}; 0 is grayscale), and a model trained on colour images reads colour cues")
    return (f"UNSURE: do not trust this call. Why: " + "; ".join(parts)
            + f". The model leans {lean} (P(AI) {prob_fake:.4f}).")


def pooled_features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x float (B, 3, S, S) model input -> (logits (B,), pooled features (B, C)) in one pass. For an
    ensemble (a model with `member_logits`) the members' calibrated logits follow as k more columns,
    (B, C + k): the familiarity model reads their spread (`Familiarity.spread`)."""
    f = model.features(x)                        # (B, C, h, w)
    pooled = f.float().mean(dim=(2, 3))
    if hasattr(model, "member_logits"):
        return model.head(f), torch.cat([pooled, model.member_logits(f).float()], dim=1)
    return model.head(f), pooled


def fit_familiarity(train_feats, train_labels, ref_feats, flag_rate: float = DEFAULT_FLAG_RATE,
                    shrinkage: float = SHRINKAGE, members: int = 0, ref_colour=None) -> Familiarity:
    """Class means + shrunk tied covariance from training features; reference distances from held-out ones.
    members > 0: the last `members` columns are an ensemble's member logits (`pooled_features`), whose
    spreads on the held-out images become the second reference. ref_colour: the held-out images'
    `colourfulness`, the colour reference (None: no colour part)."""
    width = np.asarray(train_feats).shape[1] - members
    f = np.asarray(train_feats, np.float64)[:, :width]
    y = np.asarray(train_labels)
    means = np.stack([f[y == c].mean(0) for c in (0, 1)])
    centred = f - means[y]
    cov = centred.T @ centred / max(1, len(f) - 2)
    cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-6 * np.eye(cov.shape[0])
    fam = Familiarity(means=means, precision=np.linalg.inv(cov), reference=np.zeros(0), flag_rate=flag_rate)
    ref = np.sort(fam.distance(ref_feats))
    spread = np.sort(fam.spread(ref_feats)) if members else None
    return Familiarity(means=means, precision=fam.precision, reference=ref, flag_rate=flag_rate,
                       spread_reference=spread,
                       colour_reference=None if ref_colour is None else np.sort(np.asarray(ref_colour, np.float64)))


@torch.inference_mode()
def features_of(model, x_uint8: torch.Tensor, device, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, S, S) -> (raw logits (N,), pooled features (N, C)), batched, eval mode."""
    from core.data.preprocess import to_model_input
    model.eval()
    zs, fs = [], []
    for i in range(0, len(x_uint8), batch_size):
        z, f = pooled_features(model, to_model_input(x_uint8[i:i + batch_size].to(device)))
        zs.append(z.float().cpu())
        fs.append(f.cpu())
    return torch.cat(zs).numpy(), torch.cat(fs).numpy()


def fit_verdict(model, x_train, y_train, x_cal, y_cal, device, alpha: float = DEFAULT_ALPHA,
                flag_rate: float = DEFAULT_FLAG_RATE, max_train: int = 20000) -> dict:
    """Fit both verdict parts; returns the checkpoint's "verdict" entry (tensors and numbers only).

    x_train/y_train: what the weights were fitted to (for the class means and covariance);
    x_cal/y_cal: held out from training and model selection (conformal scores, familiarity reference).
    """
    if len(x_train) > max_train:
        idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[:max_train]
        x_train, y_train = x_train[idx], y_train[idx]
    _, f_tr = features_of(model, x_train, device)
    z_cal, f_cal = features_of(model, x_cal, device)
    members = len(model.members) if hasattr(model, "member_logits") else 0
    fam = fit_familiarity(f_tr, np.asarray(y_train), f_cal, flag_rate, members=members,
                          ref_colour=colourfulness(x_cal))
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)   # noqa: E731
    return {"calibration": {"logits": t(z_cal), "labels": torch.tensor(np.asarray(y_cal), dtype=torch.int64),
                            "alpha": float(alpha), "n": int(len(z_cal))},
            "familiarity": {"method": "mahalanobis-tied", "means": t(fam.means), "precision": t(fam.precision),
                            "reference": t(fam.reference), "flag_rate": float(flag_rate),
                            "shrinkage": float(SHRINKAGE), "train_images": int(len(f_tr)),
                            "colour_reference": t(fam.colour_reference), "colour_share": float(COLOUR_SHARE),
                            **({"spread_reference": t(fam.spread_reference)} if members else {})}}


def check_calibration_split(model, ck: dict, x_cal: torch.Tensor, device, path) -> None:
    """Raise ValueError unless `model`'s logits on the re-derived calibration split `x_cal` equal the ones
    stored in its checkpoint `ck` at training time (the split is then the one held out from it)."""
    stored = _np(ck["verdict"]["calibration"]["logits"])
    z, _ = features_of(model, x_cal, device)
    if len(z) != len(stored) or not np.allclose(z, stored, atol=1e-3):
        raise ValueError(f"{path}: its logits on the re-derived calibration split differ from the ones stored at "
                         "training time (different data?), so the split is not held out from it")


def verdict_summary(labels, logits, familiarity, vm: VerdictModel | None, threshold: float = 0.5,
                    temperature: float = 1.0) -> dict:
    """Dataset-level numbers: share UNSURE (and why), accuracy on decided images, share of all images
    wrong and not UNSURE, share of errors that UNSURE catches."""
    y = np.asarray(labels)
    v, why = decide(logits, familiarity, vm, threshold, temperature)
    v = np.asarray(v)
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64) / temperature))
    wrong = (p >= threshold).astype(int) != y
    unsure = v == UNSURE
    n = len(y)
    decided = ~unsure
    return {
        "n": int(n), "threshold": float(threshold),
        "share_unsure": float(unsure.mean()) if n else None,
        "share_unsure_band": float(np.mean([WHY_BAND in w for w in why])) if n else None,
        "share_unsure_unfamiliar": float(np.mean([WHY_UNFAMILIAR in w for w in why])) if n else None,
        "accuracy": float((~wrong).mean()) if n else None,
        "accuracy_decided": float((~wrong[decided]).mean()) if decided.any() else None,
        "share_wrong_decided": float((wrong & decided).mean()) if n else None,
        "errors": int(wrong.sum()),
        "errors_caught_by_unsure": float((wrong & unsure).sum() / wrong.sum()) if wrong.any() else None,
    }


def conformal_curve(labels, logits, familiarity, vm: VerdictModel, threshold: float = 0.5, temperature: float = 1.0,
                    alphas=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)):
    """Coverage and selective accuracy of the verdict as the conformal level alpha varies (familiarity fixed):
    a DataFrame with alpha, coverage, accuracy_decided, errors_caught_by_unsure, share_wrong_decided."""
    import pandas as pd
    from dataclasses import replace
    rows = []
    for a in alphas:
        s = verdict_summary(labels, logits, familiarity, replace(vm, alpha=a), threshold, temperature)
        rows.append({"alpha": a, "coverage": 1 - s["share_unsure"], "accuracy_decided": s["accuracy_decided"],
                     "errors_caught_by_unsure": s["errors_caught_by_unsure"],
                     "share_wrong_decided": s["share_wrong_decided"]})
    return pd.DataFrame(rows)


def calibration_temperature(verdict_meta: dict) -> float | None:
    """Temperature T minimising the NLL of sigmoid(logit / T) on the checkpoint's calibration split
    (the held-out images of the conformal band; never trained on). None without calibration data.

    The band does not move at threshold 0.5: scores and quantile both scale by 1/T."""
    cal = (verdict_meta or {}).get("calibration")
    if not cal or not len(cal["logits"]):
        return None
    from core.metrics.metrics import fit_temperature
    return fit_temperature(_np(cal["logits"]), _np(cal["labels"]))
