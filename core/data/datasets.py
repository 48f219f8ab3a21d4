"""Dataset adapters: every format users bring yields the same records, labelled 0 = REAL, 1 = FAKE.

Formats (`open_dataset(path, fmt="auto")` detects which; `fmt` forces one):
- "cifake":   ROOT/{train,test}/{REAL,FAKE}/*.jpg as downloaded from Kaggle; `split` picks the folder
              (training uses "train", evaluation "test"; any other split folder such as "ood" works).
- "folder":   DIR/{CLASS}/... one subfolder per class; names map to REAL/FAKE case-insensitively
              (REAL/FAKE and other known names), or through a user mapping `class_map`.
              A `manifest.csv` beside the class folders, if present, supplies each file's `source`
              and `group` (see `groups`).
- "manifest": a CSV with columns file,label[,source][,group | origin]; paths relative to the CSV's folder.
- "parquet":  Hugging Face parquet shards (Hemg/AI-Generated-vs-Real-Images-Datasets schema: an
              `image` struct of bytes/path and an integer ClassLabel `label`). Label names come from
              the Hugging Face metadata in the parquet schema; their REAL/FAKE meaning is mapped by
              name, overridable, and always reported. Shards are read lazily, one row group at a time.

Each item is a dict: image (uint8 (3, S, S) or None), label (0/1), id (str), source (str),
index (int), error (None or a one-line reason). Undecodable files come back with image=None and
the reason; `collate_records` drops them from the batch and reports them, so one bad file never
stops a run.

Datasets are shared by every app session (st.cache_resource) and by threads, so they are frozen
after construction: preprocessing and shift are per-call settings, passed to `record(i, preprocess,
shift)` or carried by a per-call `view(preprocess, shift)` (what DataLoaders iterate). The parquet
reader keeps its open files and its row-group cache per thread.
"""
from __future__ import annotations

import csv
import json
import os
import threading
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset

from core.data.images import IMAGE_EXTENSIONS, ImageError, load_image
from core.data.labels import CLASS_NAMES, LabelMappingError, describe_mapping, label_from_name, parse_label_value
from core.data.preprocess import PreprocessConfig, preprocess_image, preprocess_views, random_crop_position

FORMATS = ("auto", "cifake", "folder", "manifest", "parquet")


class DatasetError(ValueError):
    """A dataset that cannot be used at all (empty, unknown layout, unmappable labels)."""


class ImageDataset:
    """Base: `items` is a tuple of (ref, label, source); subclasses implement `read_bytes(ref)`.

    Immutable once built (setting an attribute raises): per-call settings go through `record` or `view`.
    """

    format = "base"

    def __init__(self, items, root: str, label_mapping: dict, warnings: list[str] | None = None,
                 format: str | None = None, groups=None):
        if not items:
            raise DatasetError(f"no images found in {root}")
        groups = None if groups is None or not any(groups) else tuple(groups)
        if groups is not None and len(groups) != len(items):
            raise ValueError(f"{len(groups)} groups for {len(items)} items")
        self._init(items=tuple(items), root=str(root), label_mapping=dict(label_mapping),
                   warnings=tuple(warnings or ()), _groups=groups)
        if format:
            self._init(format=format)
        object.__setattr__(self, "_frozen", True)

    def _init(self, **attrs) -> None:
        """Set attributes during construction (the only way: instances are frozen afterwards)."""
        for k, v in attrs.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is shared and immutable; pass preprocessing and shift "
                                 f"per call (ds.record(i, preprocess, shift) or ds.view(preprocess, shift)), "
                                 f"not by setting {name!r}")
        object.__setattr__(self, name, value)

    def __len__(self):
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [it[1] for it in self.items]

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels)
        return {CLASS_NAMES[k]: c.get(k, 0) for k in (0, 1)}

    def describe(self) -> str:
        c = self.counts()
        return f"{self.format} {self.root} ({c['REAL']} REAL, {c['FAKE']} FAKE; {describe_mapping(self.label_mapping)})"

    def item_id(self, i: int) -> str:
        return str(self.items[i][0])

    def subset(self, indices) -> "ImageDataset":
        """A new dataset of the same kind over items[indices] (this one is not changed)."""
        import copy
        import threading
        indices = list(indices)
        items = tuple(self.items[i] for i in indices)
        if not items:
            raise DatasetError(f"no images left in {self.root} after selection")
        sub = copy.copy(self)
        sub._init(items=items, _groups=None if self._groups is None else tuple(self._groups[i] for i in indices))
        if "_local" in self.__dict__:          # parquet: its own per-thread file handles and row-group cache
            sub._init(_local=threading.local())
        return sub

    def sources(self) -> list[str]:
        return [it[2] for it in self.items]

    def groups(self) -> list[str] | None:
        """Per item, the photo (or other unit) it was cut from, when the dataset says so; None otherwise.

        Crops of one photo are not independent draws: a split that must hold for *new* photos (the
        verdict's calibration split, core.model.train) keeps each group on one side. Read from a manifest's
        `group` column, else derived from its `origin` column (`group_of_origin`); items without one
        are their own group."""
        return None if self._groups is None else list(self._groups)

    def read_bytes(self, ref) -> bytes | str:
        return ref  # a path: load_image opens it

    def load(self, i: int, draft_side: int | None = None):
        """The decoded RGB image of item i (core.data.images.LoadedImage); raises ImageError."""
        return load_image(self.read_bytes(self.items[i][0]), draft_side=draft_side)

    def record(self, i: int, preprocess: PreprocessConfig = PreprocessConfig(), shift=None,
               crop_seed: int | None = None) -> dict:
        """Item i decoded, shifted (`shift(uint8 (3, H, W), seed)`, before preprocessing) and preprocessed.

        The shift is called with seed = shift's own seed + i, so a seeded shift (noise) gives item i the
        same pixels however the items are batched (core.data.shifts.apply_shift defines the batched case).
        image: (3, S, S), or (K, 3, S, S) for K inference windows (preprocess.crops). With `crop_seed`
        (training, fit "crop") one random window per item and seed instead.
        """
        ref, label, source = self.items[i]
        rec = {"image": None, "label": label, "id": self.item_id(i), "source": source, "index": i, "error": None}
        try:
            loaded = self.load(i, preprocess.draft_side)
            img = loaded.decoded if shift is None else shift.apply(loaded.pixels, index=i)
            rec["image"] = preprocess_views(img, preprocess) if crop_seed is None else \
                preprocess_image(img, preprocess, random_crop_position(crop_seed, i))
        except ImageError as e:
            rec["error"] = str(e)
        return rec

    def view(self, preprocess: PreprocessConfig = PreprocessConfig(), shift=None,
             crop_seed: int | None = None) -> "DatasetView":
        """A per-call torch Dataset over these items with its own preprocessing, shift and (training)
        random-window seed."""
        return DatasetView(self, preprocess, shift, crop_seed)

    def __getitem__(self, i: int) -> dict:
        return self.record(i)


class DatasetView(Dataset):
    """(dataset, preprocessing, shift) for one call: what DataLoaders iterate. Cheap; the base is shared."""

    def __init__(self, base: ImageDataset, preprocess: PreprocessConfig = PreprocessConfig(), shift=None,
                 crop_seed: int | None = None):
        self.base, self.preprocess, self.shift, self.crop_seed = base, preprocess, shift, crop_seed

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return self.base.record(i, self.preprocess, self.shift, self.crop_seed)


def stratified_subset(labels, max_items: int | None, seed: int = 0) -> list[int] | None:
    """Sorted positions of a seeded random subsample of at most max_items items, each label keeping its
    share (rounded); None when everything fits (use all items)."""
    import numpy as np
    labels = np.asarray(labels)
    if max_items is None or len(labels) <= max_items:
        return None
    rng = np.random.default_rng(seed)
    out = []
    for lab in np.unique(labels):
        pos = np.flatnonzero(labels == lab)
        k = int(round(max_items * len(pos) / len(labels)))
        out.append(rng.permutation(pos)[:k])
    return sorted(int(i) for i in np.concatenate(out))


def collate_records(batch: list[dict]) -> dict:
    """Stack decodable records; report the others in `skipped` as (id, reason)."""
    good = [r for r in batch if r["image"] is not None]
    skipped = [(r["id"], r["error"]) for r in batch if r["image"] is None]
    x = torch.stack([r["image"] for r in good]) if good else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
    return {"x": x,                                                    # uint8 (B, 3, S, S)
            "y": torch.tensor([r["label"] for r in good], dtype=torch.long),
            "index": torch.tensor([r["index"] for r in good], dtype=torch.long),   # dataset positions
            "ids": [r["id"] for r in good], "sources": [r["source"] for r in good], "skipped": skipped}


# ----------------------------------------------------------------------------- folders

def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def group_of_origin(origin: str) -> str:
    """The photo an `origin` text names (sample manifests: "baboon.jpg box=(...)" for a real crop,
    "regen seed=.. index=.. of opencv-doc baboon.jpg box=(...) @64" for a regenerated one): the first
    word with an image extension after the last " of ", else the whole text (a generated image is its
    own group)."""
    text = (origin or "").strip()
    tail = text.rsplit(" of ", 1)[-1]
    for word in tail.split():
        if Path(word).suffix.lower() in IMAGE_EXTENSIONS:
            return word
    return text


def _row_group(row: dict) -> str:
    return (row.get("group") or "").strip() or group_of_origin(row.get("origin") or "")


def _read_manifest_sources(root: Path) -> dict[str, tuple[str, str]]:
    """file -> (source, group) from ROOT/manifest.csv ({} when there is none or it cannot be read)."""
    m = root / "manifest.csv"
    if not m.is_file():
        return {}
    try:
        with open(m, newline="") as f:
            return {row["file"]: (row.get("source", "") or "", _row_group(row))
                    for row in csv.DictReader(f) if row.get("file")}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return {}


class FolderDataset(ImageDataset):
    """DIR/{CLASS}/**/image files, class names mapped onto REAL/FAKE."""

    format = "folder"

    def __init__(self, root, class_map: dict[str, int] | None = None, case_sensitive: bool = False,
                 format: str | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root} is not a folder")
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subdirs:
            raise DatasetError(f"{root} has no class subfolders (expected e.g. {root}/REAL and {root}/FAKE)")
        mapping, warnings, unknown = {}, [], []
        for d in subdirs:
            if class_map:
                table = class_map if case_sensitive else {k.lower(): v for k, v in class_map.items()}
                key = d.name if case_sensitive else d.name.lower()
                if key in table:
                    mapping[d.name] = table[key]
                else:
                    warnings.append(f"folder {d.name!r} is not in the class mapping: ignored")
                continue
            try:
                mapping[d.name] = label_from_name(d.name, case_sensitive=case_sensitive)
            except LabelMappingError:
                unknown.append(d.name)
        if unknown:
            raise DatasetError(
                f"class folder name(s) {', '.join(map(repr, unknown))} in {root} are not REAL/FAKE names; "
                f"give a mapping such as --class-map '{unknown[0]}=FAKE'")
        if not mapping:
            raise DatasetError(f"none of the folders in {root} matches the class mapping")
        sources = _read_manifest_sources(root)
        items, other, groups = [], [], []
        for name, label in mapping.items():
            n_before = len(items)
            for p in sorted((root / name).rglob("*")):
                if not p.is_file():
                    continue
                if not _is_image_name(p):
                    other.append(p.relative_to(root).as_posix())
                    continue
                rel = p.relative_to(root).as_posix()
                src, grp = sources.get(rel, ("", ""))
                items.append((str(p), label, src))
                groups.append(grp or rel)
            if len(items) == n_before:
                warnings.append(f"class folder {name!r} has no images")
        if other:
            # Named, not just counted: a .heic or .svg the user expected to be used is visible here.
            warnings.append(f"{len(other)} file(s) without an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                            f"not used: {', '.join(other[:10])}" + (f" and {len(other) - 10} more" if len(other) > 10 else ""))
        present = {lab for _, lab, _ in items}
        for lab in (0, 1):
            if items and lab not in present:
                warnings.append(f"no {CLASS_NAMES[lab]} images: metrics that need both classes are undefined")
        super().__init__(items, str(root), mapping, warnings, format=format,
                         groups=groups if any(v for _, v in sources.values()) else None)

    def item_id(self, i):
        p = self.items[i][0]
        # Items are built as root/relative, so the prefix is the relative path; os.path.relpath (the
        # fallback, e.g. for root ".") costs ~18 us per image, as much as reading the file.
        prefix = self.root + os.sep
        return p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, self.root)


# ----------------------------------------------------------------------------- manifest CSV

class ManifestDataset(ImageDataset):
    """CSV with columns file,label[,source]; labels 0/1/REAL/FAKE or names in `class_map`."""

    format = "manifest"

    def __init__(self, csv_path, class_map: dict[str, int] | None = None):
        csv_path = Path(csv_path)
        base = csv_path.parent
        items, warnings, mapping, groups = [], [], {}, []
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                fields = [c.strip().lower() for c in (reader.fieldnames or [])]
                if "file" not in fields or "label" not in fields:
                    raise DatasetError(f"{csv_path}: a manifest needs columns 'file' and 'label' (has: {', '.join(fields) or 'none'})")
                bad = []
                for n, row in enumerate(reader, start=2):
                    row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                    raw = row["label"]
                    try:
                        label = label_from_name(raw, class_map) if class_map and raw.lower() in {k.lower() for k in class_map} \
                            else parse_label_value(raw)
                    except LabelMappingError:
                        bad.append(f"line {n}: label {raw!r}")
                        continue
                    mapping[raw] = label
                    p = Path(row["file"])
                    items.append((str(p if p.is_absolute() else base / p), label, row.get("source", "")))
                    groups.append(_row_group(row) or row["file"])
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"{csv_path}: cannot read manifest ({e})") from None
        if bad:
            warnings.append(f"{len(bad)} row(s) with labels outside the mapping skipped: " + "; ".join(bad[:5])
                            + (" ..." if len(bad) > 5 else ""))
        super().__init__(items, str(csv_path), mapping, warnings,
                         groups=groups if ("group" in fields or "origin" in fields) else None)

    def item_id(self, i):
        p = self.items[i][0]
        try:
            return os.path.relpath(p, os.path.dirname(self.root))
        except ValueError:
            return p


# ----------------------------------------------------------------------------- parquet (Hugging Face)

def _hf_label_names(schema) -> list[str] | None:
    meta = schema.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return None
    try:
        info = json.loads(raw)
        feats = info.get("info", {}).get("features", {})
        lab = feats.get("label", {})
        names = lab.get("names")
        return list(names) if names else None
    except (ValueError, AttributeError):
        return None


class ParquetDataset(ImageDataset):
    """Hugging Face image parquet shards, read lazily one row group at a time."""

    format = "parquet"

    # A per-row generator/source column, when present, feeds per-source tables and LOGO.
    SOURCE_COLUMNS = ("source", "generator", "model", "origin")

    def __init__(self, path, class_map: dict[str, int] | None = None, image_column: str = "image",
                 label_column: str = "label"):
        import pyarrow.parquet as pq
        path = Path(path)
        shards = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet"))
        if not shards:
            raise DatasetError(f"no .parquet files in {path}")
        self.shards = [str(s) for s in shards]
        self.image_column = image_column
        items, names, warnings = [], None, []
        for si, shard in enumerate(shards):
            try:
                pf = pq.ParquetFile(shard)
            except Exception as e:
                warnings.append(f"{shard.name}: not a readable parquet file ({type(e).__name__}): skipped")
                continue
            cols = pf.schema_arrow.names
            if image_column not in cols or label_column not in cols:
                warnings.append(f"{shard.name}: has columns {cols}, needs {image_column!r} and {label_column!r}: skipped")
                continue
            names = names or _hf_label_names(pf.schema_arrow)
            labels = pf.read(columns=[label_column]).column(0).to_pylist()   # labels only: a few bytes per row
            src_col = next((c for c in self.SOURCE_COLUMNS if c in cols), None)
            srcs = [("" if v is None else str(v)) for v in pf.read(columns=[src_col]).column(0).to_pylist()] \
                if src_col else [""] * len(labels)
            row = 0
            for rg in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                for j in range(n):
                    items.append(((si, rg, j, row + j), labels[row + j], srcs[row + j]))
                row += n
        # Map the dataset's integer labels to REAL/FAKE by *name*, never by position.
        mapping: dict[str, int] = {}
        values = sorted({lab for _, lab, _ in items if lab is not None})
        for v in values:
            name = names[v] if names and isinstance(v, int) and 0 <= v < len(names) else None
            keys = [str(v)] + ([name] if name else [])
            hit = None
            if class_map:
                low = {k.lower(): val for k, val in class_map.items()}
                for k in keys:
                    if k.lower() in low:
                        hit = low[k.lower()]
                        break
            if hit is None and name:
                try:
                    hit = label_from_name(name)
                except LabelMappingError:
                    pass
            if hit is None:
                where = f"named {name!r} in the metadata" if name else "with no name in the parquet metadata"
                raise DatasetError(
                    f"label value {v} ({where}) cannot be mapped to REAL/FAKE without guessing; pass a mapping "
                    f"such as --class-map '0=REAL,1=FAKE' (for Hemg, check which integer means AI: it is disputed)")
            mapping[f"{v} ({name})" if name else str(v)] = hit
            for k in keys:
                mapping.setdefault("_" + k, hit)   # lookup table, stripped below
        lookup = {k[1:]: v for k, v in mapping.items() if k.startswith("_")}
        mapping = {k: v for k, v in mapping.items() if not k.startswith("_")}
        out, bad = [], 0
        for ref, lab, src in items:
            if lab is None or str(lab) not in lookup:
                bad += 1
                continue
            out.append((ref, lookup[str(lab)], src))
        if bad:
            warnings.append(f"{bad} row(s) with a missing or unmapped label skipped")
        self.label_names = names
        self._local = threading.local()     # per thread: open files and the current row group
        super().__init__(out, str(path), mapping, warnings)

    def __getstate__(self):
        # Open file handles and the row-group cache stay in each thread / DataLoader worker.
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__["_local"] = threading.local()

    def item_id(self, i):
        si, rg, j, row = self.items[i][0]
        return f"{Path(self.shards[si]).name}#{row}"

    def read_bytes(self, ref):
        import pyarrow.parquet as pq
        si, rg, j, _ = ref
        local = self._local
        if getattr(local, "key", None) != (si, rg):
            files = local.__dict__.setdefault("files", {})
            if si not in files:
                files[si] = pq.ParquetFile(self.shards[si])
            # One row group per thread in memory: memory is bounded by threads x the row-group size.
            local.rows = files[si].read_row_group(rg, columns=[self.image_column]).column(0)
            local.key = (si, rg)
        cell = local.rows[j].as_py()
        if isinstance(cell, dict):
            data = cell.get("bytes")
            if data is None and cell.get("path"):
                return cell["path"]
        else:
            data = cell
        if data is None:
            raise ImageError("row has no image bytes")
        return data


# ----------------------------------------------------------------------------- detection

def _split_dirs(root: Path) -> dict[str, Path]:
    """Subfolders of root that themselves hold class folders (train/test/ood...)."""
    out = {}
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            subs = {s.name.lower() for s in d.iterdir() if s.is_dir()}
            if {"real", "fake"} & subs:
                out[d.name] = d
    return out


def detect_format(path) -> str:
    """Guess the format of PATH; raise DatasetError with what was looked for."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p} does not exist")
    if p.is_file():
        suf = p.suffix.lower()
        if suf == ".csv":
            return "manifest"
        if suf == ".parquet":
            return "parquet"
        raise DatasetError(f"{p} is a file but neither a manifest .csv nor a .parquet")
    subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if _split_dirs(p) and not any(d.name.lower() in ("real", "fake") for d in subdirs):
        return "cifake"
    if next(p.rglob("*.parquet"), None) is not None:
        return "parquet"
    if subdirs:
        return "folder"
    if (p / "manifest.csv").is_file():
        return "manifest"
    raise DatasetError(f"{p}: no class subfolders, split folders, parquet shards or manifest.csv found")


def open_dataset(path, split: str | None = None, fmt: str = "auto", class_map: dict[str, int] | None = None,
                 case_sensitive: bool = False) -> ImageDataset:
    """Open any supported dataset at PATH (see module docstring); `split` is used for CIFAKE roots.

    The result is immutable; preprocessing and shifts are chosen per call (`record`, `view`)."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "cifake":
        splits = _split_dirs(path)
        want = split or "test"
        match = {k.lower(): v for k, v in splits.items()}.get(want.lower())
        if match is None:
            raise DatasetError(f"{path} has no split folder {want!r} (found: {', '.join(sorted(splits)) or 'none'})")
        ds = FolderDataset(match, class_map, case_sensitive, format="cifake")
    elif fmt == "folder":
        ds = FolderDataset(path, class_map, case_sensitive)
    elif fmt == "manifest":
        ds = ManifestDataset(path if path.is_file() else path / "manifest.csv", class_map)
    else:
        ds = ParquetDataset(path, class_map)
    return ds


def concat_datasets(datasets: list[ImageDataset]) -> ImageDataset:
    """One dataset over the items of several (training on a sample plus extra domains, say); the first one's
    format and label mapping describe it. Photo groups are kept per dataset (prefixed with its root), so a
    grouped split still holds out whole photos. Items are read through each item's own dataset."""
    if len(datasets) == 1:
        return datasets[0]
    kinds = {type(d) for d in datasets}
    if any(k is ParquetDataset for k in kinds):
        raise DatasetError("extra training data must be image folders or manifests, not parquet")
    items, groups, warnings = [], [], []
    for d in datasets:
        items += d.items
        g = d.groups()
        groups += [f"{d.root}:{x}" for x in (g if g is not None else [it[0] for it in d.items])]
        warnings += d.warnings
    first = datasets[0]
    return ImageDataset(items, " + ".join(d.root for d in datasets), first.label_mapping, warnings,
                        format=first.format, groups=groups)


def cifake_splits(path) -> list[str]:
    """Split folder names of a CIFAKE-layout root ([] for anything else)."""
    p = Path(path)
    return sorted(_split_dirs(p)) if p.is_dir() else []
