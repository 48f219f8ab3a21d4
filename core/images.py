"""Decoding untrusted image files into RGB PIL images, with a readable reason for every refusal.

`load_image` is the only place the project opens an image file. It never raises anything but
`ImageError` for bad input, and never decodes more than `MAX_PIXELS` pixels: a JPEG declared larger
is decoded at a reduced DCT scale (PIL's draft mode), anything else larger is refused. That makes
decompression bombs (tiny file, enormous declared size) cost nothing.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 40 MP decoded is ~120 MB of RGB: large enough for any camera photo, small enough for many users.
MAX_PIXELS = 40_000_000
# PIL's own bomb guard raises past 2x this; we check sizes ourselves first, so keep it out of the way.
Image.MAX_IMAGE_PIXELS = None

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}


class ImageError(ValueError):
    """An input that cannot be used as an image; str(e) is a one-line reason for the user."""


@dataclass
class LoadedImage:
    """A decoded RGB image and what had to be done to get it (shown to the user)."""
    image: Image.Image                       # mode RGB
    original_size: tuple[int, int]           # (W, H) as declared by the file, after EXIF rotation
    original_mode: str
    format: str | None
    notes: list[str] = field(default_factory=list)


def _sniff(head: bytes) -> str:
    """A readable guess of what a non-image file is, from its first bytes."""
    h = head.lstrip()[:512].lower()
    if head.startswith(b"%PDF"):
        return "a PDF document, not an image"
    if h.startswith(b"<svg") or (h.startswith(b"<?xml") and b"<svg" in h):
        return "an SVG vector image, which is not supported (convert it to PNG or JPEG)"
    if h.startswith(b"<!doctype html") or h.startswith(b"<html") or b"<html" in h[:200]:
        return "an HTML document, not an image"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypheim", b"ftypheis", b"ftyphevc"):
        return "a HEIC/HEIF image, which is not supported here (no decoder installed); convert it to JPEG"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "an AVIF image, which is not supported here; convert it to JPEG or PNG"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, not an image"
    if head.startswith(b"\xff\xd8"):
        return "a damaged JPEG (header unreadable)"
    if head.startswith(b"\x89PNG"):
        return "a damaged PNG (header unreadable)"
    try:
        head.decode("utf-8")
        return "a text file, not an image"
    except UnicodeDecodeError:
        return "not a recognised image format"


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, keeping the full range of 16-bit and float data."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
            notes.append("32-bit float image: rescaled min..max to 0..255")
        else:
            hi = 65535.0 if arr.max() > 255 else 255.0
            arr = arr * (255.0 / hi)
            notes.append(f"{mode} image: scaled to 8 bits")
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparency flattened onto white")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB without a colour profile")
    if mode == "1":
        img = img.convert("L")
    return img.convert("RGB")


def load_image(source, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode a path, bytes or binary file object into an RGB image; raise ImageError with a reason.

    EXIF orientation is honoured; animated images give their first frame (said in `notes`); the
    decoded size never exceeds `max_pixels` (JPEGs are decoded at reduced scale, others refused).
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except IsADirectoryError:
            raise ImageError("is a folder, not a file") from None
        except PermissionError:
            raise ImageError("file is not readable (permission denied)") from None
        except OSError as e:
            raise ImageError(f"file could not be read ({e.strerror or e})") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = source.read()
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(_sniff(data[:64])) from None
    except Exception as e:  # PIL raises many types on hostile headers
        if "truncated" in str(e).lower():
            raise ImageError(f"truncated or corrupt image data ({_sniff(data[:64]).replace('a damaged ', '')})") from None
        raise ImageError(f"unreadable image header ({type(e).__name__}: {e})") from None

    fmt = img.format
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"image declares an empty size {w}x{h}")
    n_frames = getattr(img, "n_frames", 1)
    if n_frames > 1:
        notes.append(f"animated {fmt} with {n_frames} frames: first frame used")
    if w * h > max_pixels:
        if fmt == "JPEG":
            # Draft mode decodes at 1/2, 1/4 or 1/8 scale straight from the DCT: memory never holds
            # the full-size image.
            scale = 1
            while (w // scale) * (h // scale) > max_pixels and scale < 8:
                scale *= 2
            img.draft(img.mode, (max(1, w // scale), max(1, h // scale)))
            if img.size[0] * img.size[1] > max_pixels:
                raise ImageError(f"image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP limit "
                                 "even at 1/8 scale")
            notes.append(f"huge JPEG {w}x{h} decoded at 1/{scale} scale ({img.size[0]}x{img.size[1]})")
        else:
            raise ImageError(f"image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP limit "
                             "(possible decompression bomb); downscale it first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            original_mode = img.mode
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img, notes)
            rgb.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e)
        if "truncated" in msg or isinstance(e, EOFError) or "broken data stream" in msg:
            raise ImageError(f"truncated or corrupt {fmt or 'image'} data") from None
        raise ImageError(f"corrupt {fmt or 'image'} data ({msg})") from None
    except MemoryError:
        raise ImageError("image too large to decode in memory") from None
    except Exception as e:
        raise ImageError(f"could not decode {fmt or 'image'} ({type(e).__name__}: {e})") from None
    if min(rgb.size) < 8:
        notes.append(f"very small image ({rgb.size[0]}x{rgb.size[1]}): upscaled, little to go on")
    return LoadedImage(rgb, rgb.size, original_mode, fmt, notes)
