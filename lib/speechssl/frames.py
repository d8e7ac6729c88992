"""Signal geometry: the sample rate, the convolution stacks, and the frame grids they define.

Every fact about where frames fall on the waveform lives here, so that the models (``nn/``),
the data (``data/``) and the features agree by construction:

- audio is 16 kHz mono (the rate of LibriSpeech and of the synthetic corpus);
- a stack of unpadded 1-D convolutions ``(kernel, stride)`` maps ``N`` samples to
  ``floor((N - k) / s) + 1`` outputs per layer; its *receptive field* is the number of samples
  one output frame sees and its *hop* the product of the strides;
- a :class:`FrameGrid` is the resulting sliding window over the waveform. Two grids matter:
  100 Hz (Kaldi MFCC: 25 ms windows every 10 ms, ``snip_edges=True``) and 50 Hz (the wav2vec
  2.0 / HuBERT feature encoder: a 400-sample receptive field every 320 samples).

Phone labels are stored on both grids; :func:`labels_on_grid` moves labels from one grid to
another the way fairseq's HuBERT reads 100 Hz MFCC labels for its 50 Hz frames
(``HubertModel.forward_targets``: frame ``i`` takes label ``floor(i * rate_labels / rate_frames)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "FrameGrid", "MFCC_FRAMES", "MODEL_FRAMES", "FRAME_GRIDS", "SAMPLE_RATE", "WAV2VEC_ENCODER", "WAV2VEC2_ENCODER",
    "kernel_strides", "labels_on_grid", "output_length", "output_lengths", "receptive_field", "total_stride",
]

#: Audio sample rate of every corpus and model of the book (Hz).
SAMPLE_RATE = 16_000

#: wav2vec's encoder (Schneider et al. 2019, Sec. 2.1): (channels, kernel, stride); 10 ms hop, 465-sample window.
WAV2VEC_ENCODER: tuple[tuple[int, int, int], ...] = ((512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2))
#: The wav2vec 2.0 / HuBERT feature encoder (Baevski et al. 2020, Sec. 4.2; fairseq ``conv_feature_layers``):
#: (channels, kernel, stride); 20 ms hop, 400-sample window.
WAV2VEC2_ENCODER: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


def kernel_strides(layers: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """``(kernel, stride)`` of each layer, from ``(channels, kernel, stride)`` or ``(kernel, stride)`` tuples."""
    return [(int(layer[-2]), int(layer[-1])) for layer in layers]


def receptive_field(layers: Sequence[Sequence[int]]) -> int:
    """Input samples seen by one output frame of the stack (400 for wav2vec 2.0, 465 for wav2vec)."""
    rf = 1
    for kernel, stride in reversed(kernel_strides(layers)):
        rf = (rf - 1) * stride + kernel
    return rf


def total_stride(layers: Sequence[Sequence[int]]) -> int:
    """Input samples between two consecutive output frames: the product of the strides."""
    return math.prod(stride for _, stride in kernel_strides(layers))


def output_length(num_samples: int, layers: Sequence[Sequence[int]]) -> int:
    """Frames a stack of unpadded convolutions makes of ``num_samples`` samples (0 when too short)."""
    length = int(num_samples)
    for kernel, stride in kernel_strides(layers):
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def output_lengths(lengths: torch.Tensor, layers: Sequence[Sequence[int]]) -> torch.Tensor:
    """:func:`output_length` of every entry of a ``(B,)`` tensor -> ``(B,)`` int64."""
    out = lengths.to(torch.int64)
    for kernel, stride in kernel_strides(layers):
        out = torch.where(out >= kernel, torch.div(out - kernel, stride, rounding_mode="floor") + 1,
                          torch.zeros_like(out))
    return out


@dataclass(frozen=True)
class FrameGrid:
    """A sliding-window frame grid over the waveform, in samples (``snip_edges=True`` semantics)."""

    name: str
    window: int
    hop: int

    @classmethod
    def of(cls, name: str, layers: Sequence[Sequence[int]]) -> "FrameGrid":
        """The grid of a convolution stack: its receptive field every ``total_stride`` samples."""
        return cls(name, receptive_field(layers), total_stride(layers))

    @property
    def rate(self) -> float:
        """Frames per second at :data:`SAMPLE_RATE`."""
        return SAMPLE_RATE / self.hop

    def num_frames(self, num_samples: int) -> int:
        """Number of whole windows that fit in ``num_samples``."""
        if num_samples < self.window:
            return 0
        return 1 + (num_samples - self.window) // self.hop

    def samples_for(self, num_frames: int) -> int:
        """The fewest samples that give ``num_frames`` frames."""
        return self.window + (max(num_frames, 1) - 1) * self.hop

    def centres(self, num_samples: int) -> np.ndarray:
        """Centre sample of every frame."""
        return np.arange(self.num_frames(num_samples)) * self.hop + self.window // 2


#: 100 Hz MFCC frames (25 ms window, 10 ms hop; ``torchaudio.compliance.kaldi``).
MFCC_FRAMES = FrameGrid("100hz", window=400, hop=160)
#: 50 Hz model frames of the wav2vec 2.0 / HuBERT feature encoder.
MODEL_FRAMES = FrameGrid.of("50hz", WAV2VEC2_ENCODER)
FRAME_GRIDS = {MFCC_FRAMES.name: MFCC_FRAMES, MODEL_FRAMES.name: MODEL_FRAMES}


def labels_on_grid(labels: np.ndarray | torch.Tensor, source: FrameGrid, target: FrameGrid, num_frames: int):
    """Labels of ``source`` frames read at the first ``num_frames`` frames of ``target``.

    fairseq's HuBERT (``forward_targets``) takes, for model frame ``i``, the label at index
    ``floor(i * label_rate / frame_rate)``: with 100 Hz MFCC labels and 50 Hz frames every second
    label (``labels[::2]``). Frames beyond the labels are dropped, as fairseq trims its features.
    Works on NumPy arrays and tensors (the last dimension is time).
    """
    ratio = source.rate / target.rate                   # fairseq feat2tar_ratio (2 for 100 Hz labels)
    n = num_frames if ratio * num_frames <= labels.shape[-1] else int(labels.shape[-1] / ratio)
    idx = np.floor(np.arange(n) * ratio).astype(np.int64)
    if torch.is_tensor(labels):
        return labels[..., torch.from_numpy(idx).to(labels.device)]
    return labels[..., idx]
