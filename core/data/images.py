"""Decoding untrusted image files into RGB PIL images, with a readable reason for every refusal.

`load_image` is the only place the project opens an image file. It never raises anything but
`ImageError` for bad input, and never decodes more than `MAX_PIXELS` pixels: a JPEG declared larger
is decoded at a reduced DCT scale (PIL's draft mode), anything else larger is refused. That makes
decompression bombs (tiny file, enormous declared size) cost nothing.

Plain JPEGs (1 or 3 components, baseline or progressive, complete) take a fast path: the header is
read here (size checked before any pixel is decoded), the pixels by libjpeg-turbo through
torchvision's decoder straight into a uint8 tensor, EXIF orientation applied. The result is the
same pixels as Pillow's (bit-identical on all 13,000 sample images and every orientation,
tests/test_fast_decode.py) at ~1/4 of the time: Pillow parses JPEG markers in Python, which costs
more than decoding a 32x32 image. Anything else, or any failure of the fast path, goes through Pillow,
which also gives the refusal reasons. torchvision's codecs are deprecated from 0.29 on (the pinned
version keeps them); without them every JPEG goes through Pillow, slower, same pixels.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError, features

# 40 MP decoded is ~120 MB of RGB: large enough for any camera photo, small enough for many users.
MAX_PIXELS = 40_000_000
# PIL's own bomb guard raises past 2x this; we check sizes ourselves first, so keep it out of the way.
Image.MAX_IMAGE_PIXELS = None

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif",
                    ".avif", ".heic", ".heif"}

# Phone photos: HEIC/HEIF through pillow-heif (requirements.txt). AVIF is decoded by Pillow itself.
# pillow-heif applies the HEIF rotation/mirror at decode and resets EXIF orientation to 1, so the
# exif_transpose below never turns a HEIC twice (tests/test_heic.py).
try:
    from pillow_heif import register_heif_opener
    register_heif_opener()
    HEIF_DECODER = True
except ImportError:            # optional: without it HEIC files are refused with a reason
    HEIF_DECODER = False


class ImageError(ValueError):
    """An input that cannot be used as an image; str(e) is a one-line reason for the user."""


class LoadedImage:
    """A decoded RGB image and what had to be done to get it (shown to the user).

    `image` is an RGB PIL image; `pixels` the same pixels as a uint8 tensor (3, H, W). Whichever the
    decoder did not produce is made on first use, so the fast path never builds a PIL image that
    nobody looks at. `decoded` is the one the decoder produced (both are accepted by
    core.data.preprocess.preprocess_image).
    """

    __slots__ = ("_image", "_pixels", "original_size", "original_mode", "format", "notes")

    def __init__(self, image: Image.Image | None, original_size: tuple[int, int], original_mode: str,
                 format: str | None, notes: list[str] | None = None, pixels: torch.Tensor | None = None):
        if image is None and pixels is None:
            raise ValueError("LoadedImage needs an image or pixels")
        self._image, self._pixels = image, pixels
        self.original_size = original_size        # (W, H) as declared by the file, after EXIF rotation
        self.original_mode = original_mode
        self.format = format
        self.notes = notes if notes is not None else []

    @property
    def image(self) -> Image.Image:
        """RGB PIL image."""
        if self._image is None:
            self._image = Image.fromarray(self._pixels.permute(1, 2, 0).contiguous().numpy(), "RGB")
        return self._image

    @property
    def pixels(self) -> torch.Tensor:
        """uint8 (3, H, W)."""
        if self._pixels is None:
            self._pixels = torch.from_numpy(np.asarray(self._image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
        return self._pixels

    @property
    def decoded(self) -> Image.Image | torch.Tensor:
        return self._pixels if self._image is None else self._image

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the decoded image."""
        return self._image.size if self._image is not None else (self._pixels.shape[2], self._pixels.shape[1])


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
        if HEIF_DECODER:
            return "a damaged HEIC/HEIF image (its header or data cannot be decoded)"
        return "a HEIC/HEIF image, which is not supported here (no decoder installed: pip install pillow-heif)"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        if features.check("avif"):
            return "a damaged AVIF image (its header or data cannot be decoded)"
        return "an AVIF image, which this Pillow cannot decode (Pillow >= 11.3 can); convert it to JPEG or PNG"
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


def _jpeg_segments(data: bytes):
    """(marker, payload start, payload end) of each length-carrying marker segment of a JPEG, in file order, up
    to and including the start of scan (SOS, whose payload is the scan header); stops at anything malformed.
    Only segment lengths are followed, nothing is decoded; `end` may lie past the data (truncated file)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:                               # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:     # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            return
        yield marker, i + 4, i + 2 + length
        if marker == 0xDA:
            return
        i += 2 + length


def _jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from the frame header of a plain JPEG, or None.

    Plain: Huffman-coded baseline, extended or progressive (SOF0/1/2) and no multi-picture (MPF)
    segment. Only segment lengths are followed, nothing is decoded.
    """
    if data[:2] != b"\xff\xd8":
        return None
    n, sof = len(data), None
    for marker, a, b in _jpeg_segments(data):
        if marker in (0xC0, 0xC1, 0xC2):
            if b - a < 6 or a + 6 > n:
                return None
            h, w, comps = (data[a + 1] << 8) | data[a + 2], (data[a + 3] << 8) | data[a + 4], data[a + 5]
            sof = (w, h, comps)
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None                                  # lossless / arithmetic coding: Pillow decides
        elif marker == 0xE2 and data[a:a + 4] == b"MPF\x00":
            return None                                  # multi-picture file: Pillow reports its frames
        elif marker == 0xDA:                             # start of scan: the header is complete
            return sof
    return None


# Position in the file's (zig-zag) order of each coefficient in natural (row-major) order: quantisation tables
# are stored zig-zag (ITU-T T.81, figure 5); read_jpeg_header gives them in natural order, as Pillow does.
_ZIGZAG = [0] * 64
for _k, (_r, _c) in enumerate(sorted(((r, c) for r in range(8) for c in range(8)),
                                     key=lambda rc: (rc[0] + rc[1], rc[1] if (rc[0] + rc[1]) % 2 == 0 else rc[0]))):
    _ZIGZAG[8 * _r + _c] = _k


class JpegHeader(NamedTuple):
    """What a plain JPEG's header says (read_jpeg_header); nothing decoded."""
    width: int
    height: int
    components: int                            # 1 (grey) or 3
    sampling: tuple                            # per component (horizontal, vertical) sampling factors, SOF order
    quantization: dict                         # table id -> 64 ints in natural order (= Pillow's im.quantization)
    has_exif: bool                             # an APP1 Exif segment
    progressive: bool


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The header facts of a plain JPEG (8-bit, 1 or 3 components, SOF0/1/2, no MPF) from its marker segments,
    without decoding or building a PIL image: Pillow parses the same markers in Python, which cost more than
    reading them here (Forensics' shortcut check and the slices' JPEG quality read every file's header).

    None for anything else, and for whatever Pillow would read differently: XMP or other APP1 segments (Pillow
    takes an EXIF orientation from XMP), several frame headers, a table or frame header that does not parse, a
    header without its start of scan. Callers then ask Pillow (core.audits.forensics.file_properties); its answers
    and these are the same on every file (tests/test_images.py).
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    sof, tables, exif, progressive = None, {}, False, False
    for marker, a, b in _jpeg_segments(data):
        seg = data[a:b]
        if marker in (0xC0, 0xC1, 0xC2):
            if sof is not None or len(seg) < 6 or seg[0] != 8 or seg[5] not in (1, 3) or len(seg) < 6 + 3 * seg[5]:
                return None
            comps = seg[5]
            sof = ((seg[3] << 8) | seg[4], (seg[1] << 8) | seg[2], comps,
                   tuple((seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15) for k in range(comps)))
            progressive = marker == 0xC2
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None
        elif marker == 0xDB:                             # one or more tables: Pq/Tq byte, then 64 values
            while seg:
                wide = seg[0] >> 4 != 0                  # 16-bit values
                size = 1 + (128 if wide else 64)
                if len(seg) < size:
                    return None
                vals = ([(seg[1 + 2 * k] << 8) | seg[2 + 2 * k] for k in range(64)] if wide else seg[1:size])
                tables[seg[0] & 15] = [vals[z] for z in _ZIGZAG]
                seg = seg[size:]
        elif marker == 0xE1:
            if not seg.startswith(b"Exif\x00\x00"):
                return None
            exif = True
        elif marker == 0xE2 and seg[:4] == b"MPF\x00":
            return None
        elif marker == 0xDA:
            return None if sof is None else JpegHeader(*sof, tables, exif, progressive)
    return None


_FAST_JPEG = None          # torchvision's decode_jpeg once imported, False when unavailable


def _fast_jpeg_decoder():
    """torchvision.io.decode_jpeg: uint8 (N,) bytes -> uint8 (3, H, W) RGB, EXIF orientation applied; False
    when torchvision has no image codecs (every JPEG then goes through Pillow)."""
    global _FAST_JPEG
    if _FAST_JPEG is None:
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
            # deprecated from 0.29 on and used knowingly (module docstring): no warning per image
            warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision",
                                    DeprecationWarning)
            _FAST_JPEG = lambda t: decode_jpeg(t, mode=ImageReadMode.RGB, apply_exif_orientation=True)  # noqa: E731
        except Exception:
            _FAST_JPEG = False
    return _FAST_JPEG


def _load_plain_jpeg(data: bytes, max_pixels: int, draft_side: int | None = None) -> LoadedImage | None:
    """The fast path (module docstring); None sends the file to Pillow (which also does draft decoding)."""
    head = _jpeg_header(data)
    if head is None or head[2] not in (1, 3) or not 0 < head[0] * head[1] <= max_pixels:
        return None
    if draft_side and min(head[0], head[1]) >= 2 * draft_side:
        return None
    if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return None                                      # truncated: Pillow gives the reason
    decode = _fast_jpeg_decoder()
    if not decode:
        return None
    try:
        x = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))     # (3, H, W) uint8, EXIF applied
    except Exception:
        return None
    h, w = x.shape[1:]
    notes = [f"very small image ({w}x{h}): upscaled, little to go on"] if min(w, h) < 8 else []
    return LoadedImage(None, (w, h), "RGB" if head[2] == 3 else "L", "JPEG", notes, pixels=x)


def _read_file(path) -> bytes:
    """The whole file. os.open/os.read: a third of the cost of open().read() (no buffered file object),
    which is measurable next to decoding a 1 KB JPEG (~6 vs ~22 us here)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        first = os.read(fd, st.st_size + 1)          # a regular file: one call, a short read is its end
        if stat.S_ISREG(st.st_mode) and len(first) <= st.st_size:
            return first
        chunks = [first]                             # grew meanwhile, or not a regular file
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 20))
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_image(source, max_pixels: int = MAX_PIXELS, draft_side: int | None = None) -> LoadedImage:
    """Decode a path, bytes or binary file object into an RGB image; raise ImageError with a reason.

    EXIF orientation is honoured; animated images give their first frame (said in `notes`); the
    decoded size never exceeds `max_pixels` (JPEGs are decoded at reduced scale, others refused).
    `draft_side`: a JPEG whose short side is at least twice this is decoded at the smallest DCT scale
    (1/2, 1/4, 1/8) that keeps its short side >= draft_side (PreprocessConfig.draft_side).
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            data = _read_file(source)
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
    fast = _load_plain_jpeg(data, max_pixels, draft_side) if data[:2] == b"\xff\xd8" else None
    if fast is not None:
        return fast
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
    if draft_side and fmt == "JPEG" and min(w, h) >= 2 * draft_side and w * h <= max_pixels:
        m = min(w, h)
        img.draft(img.mode, (-(-w * draft_side // m), -(-h * draft_side // m)))   # smallest scale >= request
        if img.size != (w, h):
            notes.append(f"JPEG {w}x{h} decoded at 1/{round(w / img.size[0])} scale ({img.size[0]}x{img.size[1]}): "
                         "the model's draft setting")
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
