"""Features: shapes on the 100 Hz label grid, Kaldi semantics, errors."""

import numpy as np
import pytest
import torch
import torchaudio

from speechssl.frames import MFCC_FRAMES
from speechssl.errors import AudioError
from speechssl.features import MFCC_DIM, log_mel, log_spectrogram, mfcc


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 23456])
def test_frame_count_matches_label_grid(n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.1
    assert mfcc(x).shape == (MFCC_FRAMES.num_frames(n), MFCC_DIM)
    assert log_mel(x).shape == (MFCC_FRAMES.num_frames(n), 80)
    assert log_spectrogram(x).shape == (MFCC_FRAMES.num_frames(n), 257)


def test_mfcc_is_kaldi_cepstra_plus_deltas():
    x = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1
    f = mfcc(x)
    base = torchaudio.compliance.kaldi.mfcc(x[None], use_energy=False, dither=0.0)
    torch.testing.assert_close(f[:, :13], base)
    d1 = torchaudio.functional.compute_deltas(base.T).T
    torch.testing.assert_close(f[:, 13:26], d1)
    assert torch.equal(mfcc(x), f)  # deterministic (no dither)


def test_mfcc_separates_tones():
    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * np.pi * 200 * t), torch.sin(2 * np.pi * 3000 * t)
    fl, fh = mfcc(low)[:, :13].mean(0), mfcc(high)[:, :13].mean(0)
    assert torch.linalg.norm(fl - fh) > 10


def test_feature_errors():
    with pytest.raises(AudioError, match="expected 16000 Hz audio, found 8000 Hz"):
        mfcc(torch.zeros(1000), 8000)
    with pytest.raises(AudioError, match=r"mono.*\(2, 1000\)"):
        mfcc(torch.zeros(2, 1000))
    with pytest.raises(AudioError, match="at least 400 samples.*found 100"):
        mfcc(torch.zeros(100), name="clip.wav")
