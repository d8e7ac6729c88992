"""Signal geometry: receptive fields, frame counts and label grids agree with the encoders and fairseq."""

import numpy as np
import pytest
import torch

from speechssl.frames import (MFCC_FRAMES, MODEL_FRAMES, WAV2VEC2_ENCODER, WAV2VEC_ENCODER, FrameGrid, labels_on_grid,
                              output_length, output_lengths, receptive_field, total_stride)
from speechssl.nn.conv import ConvFeatureEncoder


def test_the_two_encoders():
    assert (receptive_field(WAV2VEC_ENCODER), total_stride(WAV2VEC_ENCODER)) == (465, 160)   # wav2vec Sec. 2.1
    assert (receptive_field(WAV2VEC2_ENCODER), total_stride(WAV2VEC2_ENCODER)) == (400, 320)  # wav2vec 2.0 Sec. 4.2
    assert (MODEL_FRAMES.window, MODEL_FRAMES.hop, MODEL_FRAMES.rate) == (400, 320, 50.0)
    assert (MFCC_FRAMES.window, MFCC_FRAMES.hop, MFCC_FRAMES.rate) == (400, 160, 100.0)


@pytest.mark.parametrize("n", [0, 399, 400, 719, 720, 16_000, 31_999, 123_457])
def test_frame_counts_agree_with_the_encoder(n):
    enc = ConvFeatureEncoder([(4, k, s) for _, k, s in WAV2VEC2_ENCODER])
    expected = enc(torch.zeros(1, n), torch.tensor([n]))[0].shape[-1] if n >= 400 else 0
    assert output_length(n, WAV2VEC2_ENCODER) == MODEL_FRAMES.num_frames(n) == expected
    assert int(output_lengths(torch.tensor([n]), WAV2VEC2_ENCODER)[0]) == expected
    assert MODEL_FRAMES.num_frames(MODEL_FRAMES.samples_for(max(expected, 1))) == max(expected, 1)


def fairseq_forward_targets(num_frames: int, labels: np.ndarray, label_rate: float, frame_rate: float):
    """fairseq HubertModel.forward_targets, written out for one utterance."""
    ratio = label_rate / frame_rate
    if ratio * num_frames > len(labels):
        num_frames = int(len(labels) / ratio)
    return labels[(np.arange(num_frames) * ratio).astype(np.int64)]


@pytest.mark.parametrize("n", [400, 720, 16_000, 16_159, 16_160, 48_321])
def test_labels_on_grid_is_fairseqs_label_rate_rule(n):
    labels = np.arange(MFCC_FRAMES.num_frames(n))
    frames = MODEL_FRAMES.num_frames(n)
    ours = labels_on_grid(labels, MFCC_FRAMES, MODEL_FRAMES, frames)
    assert ours.tolist() == fairseq_forward_targets(frames, labels, 100, 50).tolist()
    assert ours.tolist() == labels[::2][:len(ours)].tolist()            # every second 100 Hz label
    assert torch.equal(labels_on_grid(torch.from_numpy(labels), MFCC_FRAMES, MODEL_FRAMES, frames),
                       torch.from_numpy(ours))
    same = labels_on_grid(labels[::2], MODEL_FRAMES, MODEL_FRAMES, frames)
    assert same.tolist() == labels[::2][:frames].tolist()


def test_short_labels_trim_the_frames():
    labels = np.arange(7)                                                  # 100 Hz labels for fewer frames
    assert labels_on_grid(labels, MFCC_FRAMES, MODEL_FRAMES, 5).tolist() == [0, 2, 4]   # int(7 / 2) = 3 frames
    grid = FrameGrid("20hz", 400, 800)
    assert labels_on_grid(np.arange(10), MODEL_FRAMES, grid, 4).tolist() == [0, 2, 5, 7]    # 2.5 labels per frame
