"""Crash-safe checkpoints: atomic writes, a ``latest`` pointer, rotation and validation.

A training run's folder holds::

    checkpoint_1000.pt   checkpoint_2000.pt   checkpoint_3000.pt   # the last ``keep`` saves
    checkpoint_last.pt                                           # the newest complete save
    metrics.jsonl

Every file is written to a temporary file in the same folder, flushed to disk (``fsync``)
and only then renamed over its final name (``os.replace``, atomic on POSIX and Windows), so
a process killed at any instant (pre-emption, out-of-memory killer, Ctrl-C) leaves either
the previous complete file or the new complete file, never a truncated one.
``checkpoint_last.pt`` is made the same way (a hard link to the numbered file when the file
system has them, a copy otherwise), after the numbered file is complete.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with
``weights_only=True`` (no arbitrary code runs when loading), so it holds only tensors,
numbers, strings and containers of them. It records the name of the model it belongs to
and the model's configuration; :func:`load_checkpoint` refuses a checkpoint of another
model with a message naming both, instead of failing later on mismatched tensor shapes (or,
worse, succeeding on matching ones).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, SpeechSSLError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointManager",
    "check_model_config",
    "check_run_folder",
    "LAST_NAME",
    "capture_rng_state",
    "load_checkpoint",
    "model_config_of",
    "normalizes_input",
    "restore_rng_state",
    "save_checkpoint",
    "to_primitive",
]

CHECKPOINT_FORMAT = "speechssl-checkpoint"
CHECKPOINT_VERSION = 1
#: File name of the newest complete checkpoint of a run folder.
LAST_NAME = "checkpoint_last.pt"
_NUMBERED = re.compile(r"^checkpoint_(\d+)\.pt$")
_TEMP_SUFFIX = ".tmp"
REQUIRED_KEYS = ("format", "version", "model_name", "model_config", "model", "step")


class CheckpointError(SpeechSSLError, RuntimeError):
    """A checkpoint that is missing, unreadable, incomplete or of another model."""


# --------------------------------------------------------------------------- writing


def _write_state(state: Mapping[str, Any], f) -> None:
    """Serialise ``state`` into the open binary file ``f`` (one place to instrument in tests)."""
    torch.save(dict(state), f)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex}{_TEMP_SUFFIX}"


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically.

    The state is serialised into a temporary file next to ``path``, flushed and
    ``fsync``-ed, then renamed over ``path``: whatever happens, ``path`` is either its old
    content or the complete new one. The temporary file is removed on errors (a process
    killed outright may leave one behind, named ``.<name>.<hex>.tmp``;
    :meth:`CheckpointManager.remove_stale_temp_files` cleans them).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _atomic_target(path) as tmp, open(tmp, "xb") as f:
            _write_state(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        # torch's zip writer reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] ...
        # unexpected pos"; the OS as ENOSPC / EFBIG
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or \
            isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "file write failed" in str(e))
        if not full and isinstance(e, RuntimeError):
            raise
        reason = ("the disk is full (or the file is larger than the system allows)" if full
                  else f"{type(e).__name__}: {e.strerror or e}")
        raise CheckpointError(f"could not write the checkpoint {path}: {reason}; nothing was left half-written") \
            from None
    return path


@contextmanager
def _atomic_target(dst: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dst``; on success rename it over ``dst`` and ``fsync`` the
    folder, on any error (or interrupt) remove it and re-raise. The caller writes the file."""
    tmp = _temp_path(dst)
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(dst.parent)


def _atomic_link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a complete copy of ``src`` atomically (hard link where possible)."""
    with _atomic_target(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            with open(src, "rb") as fin, open(tmp, "xb") as fout:
                shutil.copyfileobj(fin, fout, length=1 << 20)
                fout.flush()
                os.fsync(fout.fileno())


def check_run_folder(folder: str | os.PathLike, option: str = "--out") -> Path:
    """``folder`` ready to hold a run: created if missing, and writable. A :class:`ConfigError` naming
    ``option`` otherwise, before any expensive work (reading a corpus, building a model) starts."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: expected a folder for the run, found a file; choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _temp_path(folder / "write-check")
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{option} {folder}: expected a folder this user can write to, found one that cannot be "
                          f"written ({e.strerror or e}); choose another folder or change its permissions") from None
    return folder


class CheckpointManager:
    """The checkpoints of one run folder: numbered saves, ``checkpoint_last.pt``, rotation.

    Args:
        directory: the run folder (created on the first save).
        keep: how many numbered checkpoints ``checkpoint_<step>.pt`` to keep (the newest);
            0 keeps only ``checkpoint_last.pt``.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise CheckpointError(f"keep: expected an integer >= 0, found {keep!r}")
        self.directory = Path(directory)
        self.keep = keep

    @property
    def last_path(self) -> Path:
        """``<directory>/checkpoint_last.pt``."""
        return self.directory / LAST_NAME

    def path_for(self, step: int) -> Path:
        return self.directory / f"checkpoint_{int(step)}.pt"

    def numbered(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of the numbered checkpoints present, by increasing step."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NUMBERED.match(p.name)
            if m is not None and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest complete checkpoint: ``checkpoint_last.pt`` if present, else the highest
        numbered one, else ``None``."""
        if self.last_path.is_file():
            return self.last_path
        numbered = self.numbered()
        return numbered[-1][1] if numbered else None

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        """Save ``state`` as the checkpoint of ``step``, update ``checkpoint_last.pt``, rotate.

        Returns:
            The path of the checkpoint written (``checkpoint_last.pt`` when ``keep=0``).
        """
        if self.keep == 0:
            return save_checkpoint(self.last_path, state)
        path = save_checkpoint(self.path_for(step), state)
        _atomic_link_or_copy(path, self.last_path)
        self.prune()
        return path

    def prune(self) -> None:
        """Delete numbered checkpoints beyond the newest ``keep``."""
        numbered = self.numbered()
        for _, p in numbered[: max(0, len(numbered) - self.keep)]:
            with suppress(FileNotFoundError):
                p.unlink()

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temporary files left by a process killed while saving; returns them.

        Call it only when no other process is saving into this folder.
        """
        removed: list[Path] = []
        if not self.directory.is_dir():
            return removed
        for p in self.directory.iterdir():
            if p.name.startswith(".checkpoint_") and p.name.endswith(_TEMP_SUFFIX):
                with suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
        return removed

    def remove_all(self) -> None:
        """Delete every checkpoint of the folder (numbered, last and temporary files)."""
        for _, p in self.numbered():
            with suppress(FileNotFoundError):
                p.unlink()
        with suppress(FileNotFoundError):
            self.last_path.unlink()
        self.remove_stale_temp_files()


# --------------------------------------------------------------------------- reading


def _describe_differences(saved: Mapping, current: Mapping) -> str:
    keys = sorted(set(saved) | set(current), key=str)
    diffs = []
    for k in keys:
        a, b = saved.get(k, "<absent>"), current.get(k, "<absent>")
        if a != b:
            diffs.append(f"{k}: checkpoint {a!r}, current {b!r}")
    shown = "; ".join(diffs[:8])
    more = f"; and {len(diffs) - 8} more" if len(diffs) > 8 else ""
    return shown + more


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model_name: str | None = None,
    model_config: Any = None,
    map_location: str | torch.device | None = "cpu",
    purpose: str = "resume",
    mmap: bool = False,
) -> dict[str, Any]:
    """Read and validate a checkpoint written by :class:`~speechssl.engine.Trainer`.

    Args:
        path: a checkpoint file, or a run folder (its ``checkpoint_last.pt``, else its newest
            numbered checkpoint).
        model_name: when given, the checkpoint must belong to this model.
        model_config: when given (a dataclass instance or a mapping, e.g.
            ``model_config_of(model)``), it must equal the model configuration stored in the
            checkpoint (checkpoints of models without one are not compared).
        map_location: where tensors are loaded (``"cpu"`` by default).
        purpose: what the checkpoint is loaded for, in error messages (``"resume"``, ``"load the
            pre-trained model"``).
        mmap: map the tensors from the file instead of reading them, for a caller that only needs the
            checkpoint's settings (a LARGE model's weights are 1.3 GB).

    Returns:
        The checkpoint dict (``model``, ``optimizer``, ``scheduler``, ``scaler``, ``rng``,
        ``data``, ``step``, ``config``, ``model_name``, ``model_config``, ...).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, not a checkpoint of this
            package, incomplete, or of another model / model configuration.
    """
    path = Path(path)
    if path.is_dir():
        found = CheckpointManager(path).latest()
        if found is None:
            raise CheckpointError(
                f"no checkpoint in {path}: expected {LAST_NAME} or checkpoint_<step>.pt, found none"
            )
        path = found
    if not path.is_file():
        raise CheckpointError(f"cannot {purpose}: no checkpoint at {path} (the file does not exist)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated zip, pickle errors, disallowed globals
        # torch's own message advises weights_only=False, which is unsafe for a corrupt or untrusted file: keep
        # only its first line, without that advice
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        detail = "" if "weights_only" in first or not first else f" ({type(e).__name__}: {first[:160]})"
        raise CheckpointError(
            f"cannot {purpose}: {path} is not a complete speechssl checkpoint; it is truncated, corrupt or of "
            f"another kind{detail}. Checkpoints are only read with weights_only=True; use the run's other "
            f"checkpoints or start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = type(state).__name__ if not isinstance(state, dict) else f"format={state.get('format')!r}"
        raise CheckpointError(
            f"cannot {purpose}: {path}: expected a speechssl checkpoint (format={CHECKPOINT_FORMAT!r}), found {found}"
        )
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {state['version']} is newer than this version of "
            f"speechssl reads ({CHECKPOINT_VERSION}); upgrade speechssl"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"cannot {purpose}: {path}: incomplete checkpoint, missing {missing}")
    if model_name is not None and state["model_name"] != model_name:
        raise CheckpointError(
            f"{path} is a checkpoint of model {state['model_name']!r}, not of model {model_name!r}: cannot "
            f"{purpose} from it" + (" (use another run folder, or start over)" if purpose == "resume" else "")
        )
    if model_config is not None:
        check_model_config(state, model_config, source=str(path), purpose=purpose)
    return state


def check_model_config(state: Mapping[str, Any], model_config: Any, *, source: str, purpose: str = "resume") -> None:
    """A :class:`CheckpointError` when the checkpoint ``state`` holds another model configuration than
    ``model_config`` (a dataclass instance or a mapping); checkpoints without one pass."""
    current = to_primitive(model_config)
    saved = state["model_config"]
    if isinstance(saved, Mapping) and dataclasses.is_dataclass(model_config):
        # a field added to the configuration after the checkpoint was written reads as its default there
        defaults = {f.name: to_primitive(f.default) for f in dataclasses.fields(model_config)
                    if f.default is not dataclasses.MISSING}
        saved = {**{k: defaults[k] for k in set(current) - set(saved) if k in defaults}, **saved}
    if saved is not None and current != saved:
        detail = (_describe_differences(saved, current) if isinstance(saved, Mapping) and isinstance(current, Mapping)
                  else f"checkpoint {saved!r}, current {current!r}")
        raise CheckpointError(f"{source}: cannot {purpose}: the checkpoint of model {state['model_name']!r} has "
                              f"another configuration ({detail}); was it trained at another scale?")


def normalizes_input(state: Mapping[str, Any]) -> bool:
    """Whether the model of checkpoint ``state`` reads each waveform standardised to zero mean and unit variance
    (fairseq's ``normalize: true``, which wav2vec 2.0 LARGE LV-60k and HuBERT LARGE were trained with): the
    run's ``normalize`` setting, or what ``python -m speechssl.interop`` recorded for released weights."""
    config = state.get("config")
    return bool(config.get("normalize", False)) if isinstance(config, Mapping) else False


# --------------------------------------------------------------------------- helpers


def to_primitive(obj: Any) -> Any:
    """``obj`` as nested dicts / lists / numbers / strings, loadable with ``weights_only=True``.

    Dataclasses become dicts, tuples stay tuples, paths and other objects become strings.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_primitive(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_primitive(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_primitive(v) for v in obj)
    if isinstance(obj, (list, set, frozenset)):
        return [to_primitive(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return str(obj)


def model_config_of(model: torch.nn.Module, *, primitive: bool = True) -> Any:
    """The configuration a model exposes as ``model.config`` or ``model.cfg`` (a dataclass
    instance or a mapping), as primitives (or as it is, with ``primitive=False``); ``None`` when it has none."""
    for attr in ("config", "cfg"):
        config = getattr(model, attr, None)
        if (dataclasses.is_dataclass(config) and not isinstance(config, type)) or isinstance(config, Mapping):
            return to_primitive(config) if primitive else config
    return None


def capture_rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator
    and, when ``device`` is a CUDA device, that device's generator.

    Only the generator of the device this process trains on is saved (under DDP each process
    owns one GPU; reading every GPU's state would create a CUDA context on each of them).
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).cpu()
    return state


def restore_rng_state(state: Mapping[str, Any], device: torch.device | str | None = None) -> None:
    """Restore the generators saved by :func:`capture_rng_state`.

    A saved CUDA state is restored into ``device`` when it is a CUDA device; otherwise a
    warning says that CUDA random numbers will differ from the original run.
    """
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            np.asarray(npst["keys"].numpy(), dtype=np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda")
    device = torch.device(device) if device is not None else None
    if cuda is not None:
        if device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda.cpu().to(torch.uint8), device)
        else:
            warnings.warn(
                f"the checkpoint holds a CUDA random state but training now runs on {device}: "
                f"random numbers will differ from the original run",
                stacklevel=2,
            )
