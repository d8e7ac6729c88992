"""Acoustic features: MFCC with deltas (HuBERT's first-iteration targets) and log-mel.

All features use Kaldi-compatible framing through :mod:`torchaudio.compliance.kaldi`: a
25 ms Povey window every 10 ms with ``snip_edges=True``, so an utterance of ``N`` samples at
16 kHz has ``1 + (N - 400) // 160`` frames, exactly the 100 Hz grid of
:data:`speechssl.frames.MFCC_FRAMES` on which the phone labels are stored.
"""

from __future__ import annotations

import torch
import torchaudio

from .frames import MFCC_FRAMES, SAMPLE_RATE
from .errors import AudioError

#: 13 cepstra + deltas + delta-deltas, as the MFCC targets of HuBERT iteration 1
#: (HuBERT paper Sec. IV-C; fairseq ``examples/hubert/simple_kmeans/dump_mfcc_feature.py``).
MFCC_DIM = 39


def _as_row(waveform: torch.Tensor, sample_rate: int, name: str) -> torch.Tensor:
    if sample_rate != SAMPLE_RATE:
        raise AudioError(f"{name}: expected {SAMPLE_RATE} Hz audio, found {sample_rate} Hz")
    if waveform.dim() == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.dim() != 1:
        raise AudioError(f"{name}: expected a mono waveform of shape (T,), found shape {tuple(waveform.shape)}")
    if waveform.numel() < MFCC_FRAMES.window:
        raise AudioError(
            f"{name}: expected at least {MFCC_FRAMES.window} samples (one 25 ms window), "
            f"found {waveform.numel()}"
        )
    return waveform.float().unsqueeze(0)


def mfcc(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, deltas: bool = True,
         name: str = "waveform") -> torch.Tensor:
    """MFCC features of one utterance: ``(T,)`` samples -> ``(F, 39)`` (or ``(F, 13)``).

    13 cepstra from Kaldi's MFCC recipe without the energy term (``use_energy=False``), then
    first and second order deltas over a 5-frame window (``torchaudio.functional.compute_deltas``),
    as fairseq computes HuBERT's iteration-1 MFCC targets. Dither is 0, so the result is
    deterministic.
    """
    x = _as_row(waveform, sample_rate, name)
    c = torchaudio.compliance.kaldi.mfcc(x, sample_frequency=sample_rate, use_energy=False, dither=0.0)  # (F, 13)
    if not deltas:
        return c
    c = c.transpose(0, 1)  # (13, F)
    d1 = torchaudio.functional.compute_deltas(c)
    d2 = torchaudio.functional.compute_deltas(d1)
    return torch.cat([c, d1, d2], dim=0).transpose(0, 1).contiguous()  # (F, 39)


def log_mel(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, n_mels: int = 80,
            name: str = "waveform") -> torch.Tensor:
    """Log mel filterbank energies: ``(T,)`` -> ``(F, n_mels)`` on the same 100 Hz grid as MFCC."""
    x = _as_row(waveform, sample_rate, name)
    return torchaudio.compliance.kaldi.fbank(x, sample_frequency=sample_rate, num_mel_bins=n_mels, dither=0.0)


def log_spectrogram(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *,
                    name: str = "waveform") -> torch.Tensor:
    """Log power spectrogram ``(F, 257)`` on the 100 Hz grid (512-point FFT), for plots."""
    x = _as_row(waveform, sample_rate, name)
    return torchaudio.compliance.kaldi.spectrogram(x, sample_frequency=sample_rate, dither=0.0)
