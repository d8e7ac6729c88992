"""Audio loading and validation: round trips and every error message."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.data.audio import AudioInfo, audio_info, check_info, check_length, check_waveform, load_audio
from speechssl.errors import AudioError, ConfigError


def _write(path, x, rate=16_000, subtype=None):
    sf.write(path, x, rate, subtype=subtype)
    return path


@pytest.mark.parametrize(
    "fmt, subtype, tol", [("wav", "FLOAT", 0.0), ("wav", "PCM_16", 1 / 32768), ("flac", "PCM_16", 1 / 32768)]
)
def test_round_trip(tmp_path, fmt, subtype, tol):
    x = (0.5 * np.sin(np.linspace(0, 200, 4000))).astype(np.float32)
    path = _write(tmp_path / f"a.{fmt}", x, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == torch.float32 and y.shape == (4000,)
    np.testing.assert_allclose(y.numpy(), x, atol=tol)
    assert audio_info(path) == AudioInfo(4000, 16_000, 1)
    assert audio_info(path).num_samples == 4000


def test_missing_file(tmp_path):
    path = tmp_path / "nope.flac"
    with pytest.raises(AudioError, match="nope.flac") as e:
        load_audio(path)
    assert "does not exist" in str(e.value)
    with pytest.raises(AudioError, match="does not exist"):
        audio_info(path)


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="found a directory"):
        load_audio(tmp_path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.flac"
    path.write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    msg = str(e.value)
    assert "bad.flac" in msg and "expected a readable audio file" in msg and "cannot decode" in msg
    assert isinstance(e.value.__cause__, sf.SoundFileError)
    with pytest.raises(AudioError, match="bad.flac"):
        audio_info(path)


def test_truncated_flac(tmp_path):
    good = _write(tmp_path / "good.flac", np.random.default_rng(0).standard_normal(16000) * 0.1)
    data = good.read_bytes()
    bad = tmp_path / "truncated.flac"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated.flac.*cannot decode"):
        load_audio(bad)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero.wav: expected audio, found an empty file \(0 bytes\)"):
        load_audio(path)


def test_wrong_sample_rate(tmp_path):
    path = _write(tmp_path / "fast.wav", np.zeros(22050, np.float32), rate=22050)
    with pytest.raises(AudioError, match=r"fast.wav: expected 16000 Hz, found 22050 Hz"):
        load_audio(path)
    # the expected rate is a parameter
    assert load_audio(path, sample_rate=22050).shape == (22050,)


def test_stereo(tmp_path):
    path = _write(tmp_path / "stereo.wav", np.zeros((1000, 2), np.float32))
    with pytest.raises(AudioError, match=r"stereo.wav: expected mono, found 2 channels"):
        load_audio(path)


def test_empty_audio(tmp_path):
    path = _write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match=r"empty.wav: expected audio, found 0 samples"):
        load_audio(path)


def test_too_short_says_how_many_and_why(tmp_path):
    path = _write(tmp_path / "short.wav", np.zeros(120, np.float32))
    with pytest.raises(AudioError) as e:
        load_audio(path, min_samples=400, min_reason="the receptive field of the encoder")
    msg = str(e.value)
    assert "short.wav" in msg
    assert "expected at least 400 samples (25.0 ms at 16000 Hz)" in msg
    assert "found 120 samples (7.5 ms)" in msg
    assert "receptive field" in msg
    assert load_audio(path, min_samples=120).shape == (120,)


def test_nan_and_inf(tmp_path):
    x = np.zeros(1000, np.float32)
    x[17] = np.nan
    x[500] = np.inf
    x[900] = np.nan
    path = _write(tmp_path / "nan.wav", x, subtype="FLOAT")
    with pytest.raises(AudioError) as e:
        load_audio(path)
    msg = str(e.value)
    assert "nan.wav" in msg and "expected finite samples" in msg
    assert "found 3 non-finite (2 NaN, 1 Inf) of 1000, the first at index 17" in msg


def test_check_waveform_in_memory():
    x = torch.randn(1, 800)
    y = check_waveform(x, name="utt-1", min_samples=400)
    assert y.shape == (800,) and y.dtype == torch.float32
    z = torch.randn(800)
    assert check_waveform(z, name="utt-1") is z
    assert check_waveform(np.zeros(10, np.float64), name="np").dtype == torch.float32
    with pytest.raises(AudioError, match="utt-2: expected mono, found 2 channels"):
        check_waveform(torch.randn(2, 800), name="utt-2")
    shape_msg = r"utt-3: expected a \(T,\) or \(1, T\) waveform, found shape \(1, 1, 5\)"
    with pytest.raises(AudioError, match=shape_msg):
        check_waveform(torch.randn(1, 1, 5), name="utt-3")
    with pytest.raises(AudioError, match="utt-4: expected floating-point samples.*int16"):
        check_waveform(torch.zeros(10, dtype=torch.int16), name="utt-4")
    with pytest.raises(AudioError, match="utt-5: expected 16000 Hz, found 8000 Hz"):
        check_waveform(torch.zeros(10), name="utt-5", source_rate=8000)
    with pytest.raises(AudioError, match="utt-6: expected audio, found 0 samples"):
        check_waveform(torch.zeros(0), name="utt-6")
    bad = torch.zeros(50)
    bad[3] = float("-inf")
    with pytest.raises(AudioError, match="utt-7: .*found 1 non-finite .*first at index 3"):
        check_waveform(bad, name="utt-7")


def test_check_length_and_info():
    check_length(400, name="u", min_samples=400)
    with pytest.raises(AudioError, match="u: too short: expected at least 400 samples"):
        check_length(399, name="u", min_samples=400)
    with pytest.raises(ConfigError, match="min_samples must be >= 0"):
        check_length(10, name="u", min_samples=-1)
    info = AudioInfo(1000, 16_000, 1)
    assert check_info(info, name="f") is info
    with pytest.raises(AudioError, match="f: expected mono, found 6 channels"):
        check_info(AudioInfo(1000, 16_000, 6), name="f")
    with pytest.raises(AudioError, match="f: expected 16000 Hz, found 44100 Hz"):
        check_info(AudioInfo(1000, 44_100, 1), name="f")
