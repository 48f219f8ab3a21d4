"""How each generator family's images differ from the REAL images in energy per frequency band.

    python benchmarks/family_spectra.py [--data data/sample] [--split test]

For every image of the split (greyscale, mean removed): the 2-D power spectrum |FFT|^2, its log,
averaged over rings of integer radius 1..S/2 (radius on the wrapped frequency grid). Per family
(`source` of the FAKEs; all REALs together) the mean over images; printed and written as the
difference to the REALs' mean (log power: +0.7 is about twice the power). Writes
benchmarks/results/family_spectra.json. This is the image's own spectrum, not the high-pass residual
`core.audits.forensics` shows, and it is what the README's sentence on the ddpm family quotes.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from common import ROOT, save

sys.path.insert(0, str(ROOT))
from core.data.datasets import open_dataset  # noqa: E402
from core.data.images import ImageError  # noqa: E402


def radial_log_power(grey: np.ndarray) -> np.ndarray:
    """(S, S) float -> mean log power per integer radius 0..S//2 of the wrapped frequency grid."""
    s = grey.shape[0]
    k = np.minimum(np.arange(s), s - np.arange(s))
    r = np.hypot(k[:, None], k[None, :]).astype(int)
    logp = np.log(np.abs(np.fft.fft2(grey - grey.mean())) ** 2 + 1e-3)
    n = np.bincount(r.ravel(), minlength=s)
    return (np.bincount(r.ravel(), logp.ravel(), minlength=s) / np.maximum(n, 1))[: s // 2 + 1]


def family_spectra(ds) -> dict[str, np.ndarray]:
    """Mean radial log power per family ("REAL" for every REAL), and the images counted per family."""
    sums, counts, high = {}, {}, {}
    for i, (label, source) in enumerate(zip(ds.labels, ds.sources())):
        fam = "REAL" if label == 0 else (source or "FAKE")
        try:
            img = ds.load(i).image
        except ImageError:
            continue
        grey = np.asarray(img.convert("L"), dtype=np.float64)
        if grey.shape[0] != grey.shape[1]:
            continue
        prof = radial_log_power(grey)
        sums[fam] = sums.get(fam, 0) + prof
        counts[fam] = counts.get(fam, 0) + 1
        high.setdefault(fam, []).append(float(prof[len(prof) // 2:].mean()))
    return {f: sums[f] / counts[f] for f in sums}, counts, high


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "data" / "sample"))
    p.add_argument("--split", default="test")
    args = p.parse_args(argv)
    ds = open_dataset(args.data, split=args.split)
    spectra, counts, high = family_spectra(ds)
    real = spectra["REAL"]
    rows = {f: [round(float(v), 3) for v in (spec - real)[1:]] for f, spec in sorted(spectra.items()) if f != "REAL"}
    print(f"log power minus the REALs' ({counts['REAL']} images), radius 1..{len(real) - 1}:")
    for f, v in rows.items():
        print(f"{f:>10} ({counts[f]:>4}) " + " ".join(f"{x:+.2f}" for x in v))
    # per image: mean log power over the upper half of the radii; how far each family's mean sits from
    # the REALs', in units of the REALs' own spread from image to image
    real_high = np.asarray(high["REAL"])
    spread = {f: {"mean_minus_real": round(float(np.mean(v) - real_high.mean()), 3),
                  "in_real_sd": round(float((np.mean(v) - real_high.mean()) / real_high.std()), 2)}
              for f, v in sorted(high.items()) if f != "REAL"}
    print(f"\nupper-half radii, per image: REAL sd {real_high.std():.2f}; family mean minus REAL mean (in REAL sd):")
    for f, v in spread.items():
        print(f"{f:>10} {v['mean_minus_real']:+.2f} ({v['in_real_sd']:+.2f} sd)")
    save("family_spectra", {"data": str(args.data).replace(str(ROOT) + "/", ""), "split": args.split, "counts": counts, "radii": list(range(1, len(real))),
                            "difference_to_real": rows,
                            "upper_half_real_sd": round(float(real_high.std()), 3), "upper_half_shift": spread})
    return 0


if __name__ == "__main__":
    sys.exit(main())
