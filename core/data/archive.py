"""Reading image files out of zip archives safely: bounded entry count and total size, no paths.

Entries are only read into memory (never extracted to disk), so `../` and absolute names cannot
write anywhere; they are still reported, since such a zip was not made innocently. Nested zips are
not opened. A zip bomb is stopped by the declared sizes, and again by counting bytes actually read.
"""
from __future__ import annotations

import io
import zipfile

from core.data.images import IMAGE_EXTENSIONS

MAX_ENTRIES = 5_000
MAX_TOTAL_BYTES = 500 * 1024 * 1024      # uncompressed, all entries together
MAX_ENTRY_BYTES = 100 * 1024 * 1024      # uncompressed, one entry


class ArchiveError(ValueError):
    pass


def read_zip_images(data: bytes, max_entries: int = MAX_ENTRIES, max_total: int = MAX_TOTAL_BYTES,
                    max_entry: int = MAX_ENTRY_BYTES) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """Return ([(name, bytes)] of image-named entries, [(name, reason)] skipped). Raises ArchiveError
    only when the archive as a whole is unusable (not a zip, too many entries)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ArchiveError("not a valid zip archive") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > max_entries:
        raise ArchiveError(f"zip has {len(infos)} entries, over the limit of {max_entries}")
    images, skipped, total = [], [], 0
    for info in infos:
        name = info.filename
        low = name.lower()
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") or (len(name) > 1 and name[1] == ":"):
            skipped.append((name, "unsafe path in zip (absolute or '..'): skipped"))
            continue
        if low.endswith(".zip"):
            skipped.append((name, "nested zip archives are not opened"))
            continue
        ext = "." + low.rsplit(".", 1)[-1] if "." in low else ""
        if ext not in IMAGE_EXTENSIONS:
            skipped.append((name, "not an image file name: skipped"))
            continue
        if info.file_size > max_entry:
            skipped.append((name, f"entry declares {info.file_size / 1e6:.0f} MB uncompressed, over the "
                                  f"{max_entry / 1e6:.0f} MB limit"))
            continue
        if total + info.file_size > max_total:
            skipped.append((name, f"total uncompressed size would exceed {max_total / 1e6:.0f} MB: skipped"))
            continue
        try:
            with zf.open(info) as f:
                # Never trust the declared size: read at most the limit plus one byte.
                blob = f.read(max_entry + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as e:
            skipped.append((name, f"damaged or encrypted zip entry ({type(e).__name__})"))
            continue
        if len(blob) > max_entry:
            skipped.append((name, f"entry is larger than the {max_entry / 1e6:.0f} MB limit"))
            continue
        if total + len(blob) > max_total:
            skipped.append((name, f"total uncompressed size would exceed {max_total / 1e6:.0f} MB: skipped"))
            continue
        total += len(blob)
        images.append((name, blob))
    return images, skipped
