"""On-disk results of the audit tools (forensics, stability, slices, compare) under runs/, written atomically.

Each result is a folder named `<kind>-<key>` where the key hashes everything the result depends on
(weights hash, dataset fingerprint, settings) *and* `RESULT_VERSION`, so results written by older code
are never read back as current. Folders are written to a temporary name and renamed, so an
interrupted run never leaves a result that looks complete.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.model.checkpoint import atomic_write_dir
from core.inference.evaluate import RESULT_FORMAT

# Bump when the content or meaning of any audit result changes. The keys also carry the project-wide
# core.inference.evaluate.RESULT_FORMAT (preprocessing, shifts, metrics), so bumping that invalidates these too.
RESULT_VERSION = 1


def result_dir(runs_dir, kind: str, *parts) -> Path:
    key = hashlib.sha256("|".join([f"v{RESULT_FORMAT}.{RESULT_VERSION}", kind, *map(str, parts)]).encode()
                         ).hexdigest()[:20]
    return Path(runs_dir) / f"{kind}-{key}"


def write_result_dir(out_dir, files: dict[str, bytes]) -> Path:
    """Write {name: bytes} into out_dir atomically (core.model.checkpoint.atomic_write_dir); returns out_dir."""
    def write(tmp: Path) -> None:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return atomic_write_dir(out_dir, write)


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=2, default=_default).encode()


def _default(o):
    import numpy as np
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.bool_):
        return bool(o)
    return str(o)
