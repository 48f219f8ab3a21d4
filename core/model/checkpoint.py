"""Checkpoints that rebuild their model from the file alone, loaded only with weights_only=True.

A checkpoint is a plain dict (tensors, str, int, float, list, dict, None only):
  format, version, arch, model_args, state_dict, preprocess, label_map, temperature,
  train_config, history, metrics, created, and optionally verdict (core.verdict.verdict: calibration
  logits/labels and the familiarity model, as tensors)
`load_checkpoint` refuses anything else with a `CheckpointError` whose message says why.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import io
import os
import pickle
import re
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field

try:
    import fcntl                    # POSIX: result locks across processes
except ImportError:                 # elsewhere: across this process's threads only
    fcntl = None

import numpy as np
import torch

from core.data.labels import CLASS_NAMES
from core.model.models import build_model, fuse_for_inference
from core.data.preprocess import PreprocessConfig
from core.verdict.verdict import VerdictModel

FORMAT = "ai-image-detector-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "arch", "model_args", "state_dict", "preprocess")


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of ours; str(e) says why in one line."""


@dataclass
class LoadedModel:
    """A checkpoint's model and everything needed to use it. Shared read-only by every app session.

    `model` is the trained module (its parameters, for inspection); `inference_model` is the copy that
    evaluation, prediction, the sweep and Grad-CAM run: BatchNorm folded into the convolutions
    (core.model.models.fuse_for_inference), built once here, never mutated afterwards.
    """
    model: torch.nn.Module            # eval mode, on `device`
    arch: str
    preprocess: PreprocessConfig
    temperature: float                # logits are divided by this before the sigmoid (1.0 = uncalibrated)
    sha256: str                       # of the file's bytes: the cache key for everything derived from it
    meta: dict = field(default_factory=dict)   # the rest of the checkpoint dict (no state_dict)
    device: torch.device = torch.device("cpu")
    verdict: VerdictModel = field(default_factory=VerdictModel)   # conformal band + familiarity (may be empty)
    inference_model: torch.nn.Module | None = None    # built from `model` when not given

    def __post_init__(self):
        if self.inference_model is None:
            self.inference_model = fuse_for_inference(self.model)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.arch


def file_sha256(path_or_bytes) -> str:
    h = hashlib.sha256()
    if isinstance(path_or_bytes, (bytes, bytearray)):
        h.update(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _plain(obj):
    """Make configs JSON/weights_only friendly (tuples -> lists, paths -> str)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool)):
        return str(obj) if isinstance(obj, str) else obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)     # numpy scalars would be pickled as numpy objects, which weights_only refuses
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj
    return str(obj)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a killed process leaves no half file."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_dir(out_dir, write) -> Path:
    """Fill a folder atomically: `write(tmp_dir)` writes the files into a temporary sibling folder, which then
    replaces out_dir (an older out_dir is moved aside first, so there is never a half result). Returns out_dir."""
    import shutil
    from pathlib import Path
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".tmp-{out_dir.name}-"))
    try:
        write(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".old-{out_dir.name}-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


class ResultLock:
    """The lock of one stored result (a runs/ folder or file), held around "read it, else compute and write it",
    across the threads of this process (a threading.Lock) and across processes (an flock on
    `<parent>/.locks/<name>.lock`): run_app.py's warm-up runs in a process of its own, beside the server's.

    A second caller of the same result (the warm-up and a first page view, two sessions, two processes) waits
    for the first and reads what it wrote instead of computing it again on the same cores. The kernel drops a
    process's flock when it exits (and when the processes it forked meanwhile, which share the locked file
    description, have exited too), so a crashed holder never leaves the result locked. Where the lock file
    cannot be opened (a read-only runs/, no fcntl), only this process's threads are coordinated.
    """

    def __init__(self, out_path: str):
        head, name = os.path.split(out_path)
        self.file = os.path.join(head, ".locks", name + ".lock")
        self._thread = threading.Lock()
        self._fd: int | None = None
        self.held = False                   # acquired by a thread of this process (not merely waiting for it)

    def acquire(self, blocking: bool = True) -> bool:
        if not self._thread.acquire(blocking):
            return False
        try:
            fd = self._open()
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:          # another process holds it
                    if not blocking:
                        os.close(fd)
                        self._thread.release()
                        return False
                    try:
                        with self.waiting():     # its holder may run faster while someone waits (run_app)
                            fcntl.flock(fd, fcntl.LOCK_EX)
                    except BaseException:
                        os.close(fd)
                        raise
            self._fd = fd
            self.held = True
            return True
        except BaseException:
            self._thread.release()
            raise

    def _open(self) -> int | None:
        if fcntl is None:
            return None
        try:
            os.makedirs(os.path.dirname(self.file), exist_ok=True)
            return os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None

    def release(self) -> None:
        self.held = False
        fd, self._fd = self._fd, None
        if fd is not None:
            # Unlock explicitly, then close: a process forked while the lock was held (a DataLoader worker of an
            # evaluation in another thread) shares the locked file description, so closing only our descriptor
            # left the result locked until that process exited (a Limitations page waited 20 s for the Grad-CAM
            # audit's lock after the warm-up had stored the audit; tests/test_run_app.py).
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._thread.release()

    def locked(self) -> bool:
        """Held by a thread of this process (another process's hold shows only as a failed acquire)."""
        return self._thread.locked()

    @contextlib.contextmanager
    def waiting(self):
        """Say, for as long as the block runs, that a caller waits for this result: a file
        `<lock file>.waiting-<pid>-<thread>` next to the lock file, removed afterwards. A holder in another
        process sees it with `waited_for` (run_app.py's warm-up then leaves its low CPU priority while a page
        waits for what it computes). Where the folder cannot be written, nothing is said."""
        marker = f"{self.file}{WAITING_SUFFIX}{os.getpid()}-{threading.get_native_id()}"
        try:
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            with open(marker, "w"):
                pass
        except OSError:
            marker = None
        try:
            yield
        finally:
            if marker is not None:
                try:
                    os.unlink(marker)
                except OSError:
                    pass

    def waited_for(self) -> bool:
        """Whether a caller (of any process) is waiting for this result now (`waiting`)."""
        return bool(glob.glob(glob.escape(self.file + WAITING_SUFFIX) + "*"))

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


WAITING_SUFFIX = ".waiting-"
_RESULT_LOCKS: dict[str, ResultLock] = {}
_RESULT_LOCKS_GUARD = threading.Lock()


def waited_for_here() -> bool:
    """Whether a caller, in any process, waits for a result a thread of this process is computing now
    (holds its ResultLock; a thread of this process that is itself waiting for one does not count): run_app.py's
    warm-up process asks it four times a second."""
    with _RESULT_LOCKS_GUARD:
        held = [lock for lock in _RESULT_LOCKS.values() if lock.held]
    return any(lock.waited_for() for lock in held)


def result_lock(out_path) -> ResultLock:
    """The one ResultLock of a stored result (a runs/ folder or file) in this process: with it, threads of
    this process and other processes (the app's warm-up) compute the result once."""
    key = os.path.abspath(os.fspath(out_path))
    with _RESULT_LOCKS_GUARD:
        return _RESULT_LOCKS.setdefault(key, ResultLock(key))


def make_checkpoint(model, arch: str, model_args: dict, preprocess: PreprocessConfig, *, temperature: float = 1.0,
                    train_config: dict | None = None, history: list | None = None, metrics: dict | None = None,
                    name: str | None = None, verdict: dict | None = None) -> dict:
    model = getattr(model, "module", model)   # unwrap DDP
    return {
        "format": FORMAT, "version": VERSION, "name": name, "arch": arch, "model_args": _plain(model_args),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "preprocess": preprocess.to_dict(), "label_map": {str(i): n for i, n in enumerate(CLASS_NAMES)},
        "temperature": float(temperature), "train_config": _plain(train_config or {}),
        "history": _plain(history or []), "metrics": _plain(metrics or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **({"verdict": verdict} if verdict else {}),
    }


def save_checkpoint(ckpt: dict, path) -> None:
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(source) -> tuple[dict, str]:
    """Read and validate a checkpoint dict from a path or bytes; returns (dict, sha256 of the bytes)."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint not found: {source}") from None
        except IsADirectoryError:
            raise CheckpointError(f"{source} is a folder, not a checkpoint file") from None
        except OSError as e:
            raise CheckpointError(f"checkpoint could not be read: {e}") from None
    if not data:
        raise CheckpointError("checkpoint file is empty (0 bytes)")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError("refused: the file contains pickled Python objects that safe (weights_only) loading "
                              "does not allow; it may run code, so it is not loaded. Only checkpoints saved by "
                              "core.model.train load here") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"not a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    except Exception as e:
        raise CheckpointError(f"not a PyTorch checkpoint ({type(e).__name__} while reading it)") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"not one of our checkpoints: it holds a {type(ckpt).__name__}, not a checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        hint = " (it looks like a bare state_dict)" if all(isinstance(v, torch.Tensor) for v in ckpt.values()) else ""
        raise CheckpointError(f"not one of our checkpoints{hint}: missing {', '.join(missing)}")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(f"not one of our checkpoints: format is {ckpt['format']!r}")
    if ckpt["version"] > VERSION:
        raise CheckpointError(f"checkpoint version {ckpt['version']} is newer than this code understands ({VERSION})")
    return ckpt, hashlib.sha256(data).hexdigest()


def load_checkpoint(source, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model from a checkpoint file (or its bytes) alone; eval mode, on `device`."""
    ckpt, digest = read_checkpoint(source)
    try:
        model = build_model(ckpt["arch"], **ckpt["model_args"])
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint does not match its architecture {ckpt['arch']!r}: {str(e).splitlines()[0][:300]}") from None
    device = torch.device(device)
    # channels_last: oneDNN's faster conv layout on CPU (1.5x on seed-v21 here, benchmarks/), and
    # the tensor-core layout on GPU. Inputs are converted in core.data.preprocess.to_model_input.
    model.to(device, memory_format=torch.channels_last).eval()
    # The verdict tensors stay out of `meta` (pages render meta as JSON); a summary goes in.
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "verdict")}
    v = ckpt.get("verdict") or {}
    meta["verdict_summary"] = {
        "calibration_images": int((v.get("calibration") or {}).get("n", 0)),
        "alpha": (v.get("calibration") or {}).get("alpha"),
        "familiarity": (v.get("familiarity") or {}).get("method"),
        "familiarity_flag_rate": (v.get("familiarity") or {}).get("flag_rate")}
    return LoadedModel(model=model, arch=ckpt["arch"], preprocess=PreprocessConfig.from_dict(ckpt["preprocess"]),
                       temperature=float(ckpt.get("temperature", 1.0)), sha256=digest, meta=meta, device=device,
                       verdict=VerdictModel.from_checkpoint_meta(ckpt))


def with_crops(lm: LoadedModel, crops: int | None) -> LoadedModel:
    """The same model (shared modules, nothing copied or modified) averaging `crops` windows per image.

    None keeps the checkpoint's setting. Raises ValueError for a checkpoint not trained on windows.
    """
    if crops is None or crops == lm.preprocess.crops:
        return lm
    if lm.preprocess.fit != "crop":
        raise ValueError(f"--crops needs a checkpoint trained with --fit crop; this one uses "
                         f"{lm.preprocess.describe()}")
    return dataclasses.replace(lm, preprocess=dataclasses.replace(lm.preprocess, crops=crops))


def with_verdict_alpha(source_path, alpha: float, out_path) -> None:
    """Save a copy of a checkpoint whose conformal band is at level alpha (its stored calibration logits are
    unchanged: the band's quantile is computed from them at that level). The original is not modified."""
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    ckpt, _ = read_checkpoint(source_path)
    cal = (ckpt.get("verdict") or {}).get("calibration")
    if not cal:
        raise CheckpointError(f"{source_path} has no calibration split: retrain it with core.model.train for a band")
    cal["alpha"] = float(alpha)
    ckpt.setdefault("metrics", {})["verdict_alpha_set"] = float(alpha)
    save_checkpoint(ckpt, out_path)


def with_temperature(source_path, temperature: float, out_path) -> None:
    """Save a copy of a checkpoint with a fitted temperature (the original is not modified)."""
    ckpt, _ = read_checkpoint(source_path)
    ckpt["temperature"] = float(temperature)
    ckpt.setdefault("metrics", {})["temperature_fitted"] = float(temperature)
    save_checkpoint(ckpt, out_path)


def logit_bias_key(state_dict: dict) -> str:
    """The state_dict key of the bias of the layer that outputs the logit: the last one-output Linear of
    `classifier` (every single-model architecture in core.model.models ends so)."""
    keys = [k for k, v in state_dict.items() if re.fullmatch(r"classifier\.\d+\.bias", k) and v.numel() == 1]
    if not keys:
        raise CheckpointError("this checkpoint's model has no single-logit classifier layer (an ensemble is "
                              "calibrated through its members: calibrate each, then rebuild it)")
    return keys[-1]


def platt_calibrated(ckpt: dict) -> dict:
    """A copy of checkpoint dict `ckpt` Platt-calibrated on its stored calibration split (`ckpt` is not modified).

    (T, b) minimise the NLL of sigmoid(logit / T + b) on the calibration logits (core.metrics.metrics.fit_platt).
    The offset b * T is added to the bias of the layer that outputs the logit and to the stored
    calibration logits, and T becomes the checkpoint's temperature, so every consumer (evaluation, the
    band, Grad-CAM, the sweep) sees P(FAKE) = sigmoid(logit / T) = the Platt-calibrated probability with
    no new field to read. Features (familiarity) do not change. metrics["platt"] records T, the total
    offset added to the trained model's logit and b = offset / T (P(FAKE) = sigmoid(trained logit / T + b)),
    so calibrating a calibrated checkpoint again leaves it and its record as they are (the new fit's
    offset is 0).
    """
    from core.metrics.metrics import fit_platt
    cal = (ckpt.get("verdict") or {}).get("calibration")
    if not cal or not len(cal["logits"]):
        raise CheckpointError("this checkpoint has no calibration split to fit on: retrain it with core.model.train")
    t, b = fit_platt(cal["logits"].double().numpy(), cal["labels"].numpy())
    offset = b * t
    total = offset + float(((ckpt.get("metrics") or {}).get("platt") or {}).get("logit_offset", 0.0))
    key = logit_bias_key(ckpt["state_dict"])
    out = dict(ckpt)
    out["state_dict"] = {**ckpt["state_dict"], key: ckpt["state_dict"][key] + offset}
    out["verdict"] = {**ckpt["verdict"], "calibration": {**cal, "logits": cal["logits"] + offset}}
    out["temperature"] = float(t)
    out["metrics"] = {**(ckpt.get("metrics") or {}),
                      "platt": {"temperature": float(t), "b": total / t, "logit_offset": total,
                                "calibration_images": int(len(cal["logits"]))}}
    return out


def is_platt_calibrated(ckpt: dict) -> bool:
    return "platt" in (ckpt.get("metrics") or {})


def with_platt(source_path, out_path) -> dict:
    """Save a Platt-calibrated copy of a checkpoint (`platt_calibrated`); returns its metrics["platt"]."""
    ckpt, _ = read_checkpoint(source_path)
    out = platt_calibrated(ckpt)
    save_checkpoint(out, out_path)
    return out["metrics"]["platt"]
