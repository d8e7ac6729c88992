"""Validated audio loading.

Every waveform that enters a model in this package goes through :func:`check_waveform`,
either directly (in-memory tensors) or through :func:`load_audio` (files). Both raise
:class:`~speechssl.errors.AudioError` with a message that names the file (or tensor), what
was expected and what was found, so that a bad file in a 100-hour corpus is found from the
error message alone instead of from a NaN loss three hours into training.

Audio I/O uses :mod:`soundfile` (libsndfile), which reads WAV, FLAC and OGG without FFmpeg.
Samples are returned as ``float32`` in ``[-1, 1]`` (integer PCM is scaled by soundfile).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch

from ..errors import AudioError, ConfigError
from ..frames import SAMPLE_RATE

__all__ = ["AudioInfo", "audio_info", "check_info", "check_length", "check_waveform", "load_audio"]


class AudioInfo(NamedTuple):
    """Header information of an audio file (read without decoding the samples)."""

    num_samples: int
    sample_rate: int
    channels: int


def _ms(num_samples: int, sample_rate: int) -> str:
    return f"{1000.0 * num_samples / sample_rate:.1f} ms"


def _check_file(path: Path) -> None:
    """Errors that can be told before libsndfile opens the file."""
    if not path.exists():
        raise AudioError(f"{path}: expected an audio file, found nothing (the file does not exist)")
    if path.is_dir():
        raise AudioError(f"{path}: expected an audio file, found a directory")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: expected audio, found an empty file (0 bytes)")


def _wrap_soundfile_error(path: Path, err: Exception) -> AudioError:
    return AudioError(
        f"{path}: expected a readable audio file (WAV, FLAC, OGG), found one that libsndfile "
        f"cannot decode: {err}"
    )


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Number of samples, sample rate and channels of an audio file, from its header.

    Uses :func:`soundfile.info`, so nothing is decoded; this is how manifests get
    ``num_samples`` cheaply.

    Raises:
        AudioError: the file is missing, a directory, empty, or not decodable.
    """
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as e:
        raise _wrap_soundfile_error(path, e) from e
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def _check_rate(name: str, sample_rate: int, found: int) -> None:
    if found != sample_rate:
        raise AudioError(
            f"{name}: expected {sample_rate} Hz, found {found} Hz "
            f"(resample it first, e.g. with torchaudio.functional.resample)"
        )


def _check_channels(name: str, channels: int, detail: str = "") -> None:
    if channels != 1:
        raise AudioError(f"{name}: expected mono, found {channels} channels{detail}")


def check_info(
    info: AudioInfo,
    *,
    name: str,
    sample_rate: int = SAMPLE_RATE,
    min_samples: int = 1,
    min_reason: str | None = None,
) -> AudioInfo:
    """Validate an :class:`AudioInfo` (rate, mono, length) without decoding the file.

    The header-only counterpart of :func:`check_waveform` (everything but the NaN/Inf check),
    used when indexing a corpus. Returns ``info`` unchanged.

    Raises:
        AudioError: wrong rate, more than one channel, empty, or shorter than ``min_samples``.
    """
    _check_rate(name, sample_rate, info.sample_rate)
    _check_channels(name, info.channels)
    check_length(
        info.num_samples, name=name, sample_rate=sample_rate, min_samples=min_samples, min_reason=min_reason
    )
    return info


def check_length(
    num_samples: int,
    *,
    name: str,
    sample_rate: int = SAMPLE_RATE,
    min_samples: int = 1,
    min_reason: str | None = None,
) -> None:
    """Raise :class:`AudioError` when ``num_samples`` is 0 or below ``min_samples``.

    This is the length part of :func:`check_waveform`, usable on a length alone (for
    example on a manifest's ``num_samples`` before any file is opened).

    Args:
        num_samples: length of the waveform in samples.
        name: what the waveform is (a file path or an utterance id), for the message.
        sample_rate: rate used to also state lengths in milliseconds.
        min_samples: the shortest acceptable length; must be ``>= 0``.
        min_reason: why ``min_samples`` is the minimum (for example "the receptive field of
            the wav2vec 2.0 feature encoder"); appended to the message.
    """
    if min_samples < 0:
        raise ConfigError(f"min_samples must be >= 0, got {min_samples}")
    if num_samples == 0:
        raise AudioError(f"{name}: expected audio, found 0 samples (the audio is empty)")
    if num_samples < min_samples:
        why = f"; {min_reason}" if min_reason else ""
        raise AudioError(
            f"{name}: too short: expected at least {min_samples} samples "
            f"({_ms(min_samples, sample_rate)} at {sample_rate} Hz), found {num_samples} samples "
            f"({_ms(num_samples, sample_rate)}){why}"
        )


def check_waveform(
    x: torch.Tensor | np.ndarray,
    *,
    name: str = "waveform",
    sample_rate: int = SAMPLE_RATE,
    min_samples: int = 1,
    min_reason: str | None = None,
    source_rate: int | None = None,
) -> torch.Tensor:
    """Validate a waveform and return it as a 1-D ``float32`` tensor.

    Checks, in this order: the shape is mono, ``source_rate`` (when given) equals
    ``sample_rate``, the audio is not empty, it has at least ``min_samples`` samples, and
    every sample is finite.

    Args:
        x: ``(T,)`` waveform, or channels-first ``(C, T)`` as torchaudio returns it (only
            ``C == 1`` is accepted). A floating-point tensor or NumPy array.
        name: what the waveform is (a file path, an utterance id), used in messages.
        sample_rate: the rate the caller expects, in Hz.
        min_samples: shortest acceptable length in samples.
        min_reason: why ``min_samples`` is the minimum, appended to the "too short" message.
        source_rate: the rate the samples were recorded at, when known (a file's rate).

    Returns:
        ``(T,)`` ``float32`` tensor: the input itself (or its single channel) when it
        already is ``float32``, otherwise a converted copy.

    Raises:
        AudioError: with ``name``, what was expected and what was found.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise AudioError(f"{name}: expected a torch.Tensor or numpy array, found {type(x).__name__}")
    if not x.is_floating_point():
        raise AudioError(
            f"{name}: expected floating-point samples in [-1, 1], found dtype {x.dtype} "
            f"(convert integer PCM first, e.g. x.float() / 32768 for int16)"
        )
    if x.dim() == 2:
        _check_channels(name, x.shape[0], f" (shape {tuple(x.shape)}, read as channels-first (C, T))")
        x = x[0]
    elif x.dim() != 1:
        raise AudioError(f"{name}: expected a (T,) or (1, T) waveform, found shape {tuple(x.shape)}")
    if source_rate is not None:
        _check_rate(name, sample_rate, source_rate)
    check_length(
        x.shape[0], name=name, sample_rate=sample_rate, min_samples=min_samples, min_reason=min_reason
    )
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        n_nan = int(torch.isnan(x).sum())
        n_inf = bad.shape[0] - n_nan
        raise AudioError(
            f"{name}: expected finite samples, found {bad.shape[0]} non-finite "
            f"({n_nan} NaN, {n_inf} Inf) of {x.shape[0]}, the first at index {int(bad[0, 0])}"
        )
    return x.to(torch.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    min_samples: int = 1,
    *,
    min_reason: str | None = None,
) -> torch.Tensor:
    """Read a mono audio file into a ``(T,)`` ``float32`` tensor and validate it.

    Args:
        path: a WAV, FLAC or OGG file.
        sample_rate: the rate the file must have, in Hz (files are never resampled silently).
        min_samples: shortest acceptable length in samples.
        min_reason: why ``min_samples`` is the minimum, for the "too short" message.

    Returns:
        ``(T,)`` ``float32`` tensor in ``[-1, 1]``.

    Raises:
        AudioError: the file is missing, unreadable/corrupt, not at ``sample_rate``, not mono,
            empty, shorter than ``min_samples``, or holds NaN/Inf samples. The message names
            the file, what was expected and what was found.
    """
    path = Path(path)
    _check_file(path)
    try:
        data, found_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise _wrap_soundfile_error(path, e) from e
    # soundfile gives (T, C); check_waveform wants channels first.
    return check_waveform(
        np.ascontiguousarray(data.T),
        name=str(path),
        sample_rate=sample_rate,
        min_samples=min_samples,
        min_reason=min_reason,
        source_rate=int(found_rate),
    )
