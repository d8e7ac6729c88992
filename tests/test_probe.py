"""Linear phone probe: accuracy on separable data, chance on noise, determinism, frame pairing."""

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.probe import collect_frames, fit_linear_probe, frame_pairs, train_linear_probe


def blobs(n_per_class, num_classes, dim, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 3
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=g) + 10.0  # offset: standardised away
    return feats, labels


def test_probe_beats_chance_on_separable_data():
    x, y = blobs(200, 5, 8, 0.5, seed=0)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    x, y = x[perm], y[perm]
    acc = fit_linear_probe(x[:800], y[:800], x[800:], y[800:], num_classes=5, epochs=20, lr=5e-2, seed=0)
    assert acc > 0.95


def test_probe_is_at_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 6, generator=g)
    y = torch.randint(0, 4, (2000,), generator=g)
    acc = fit_linear_probe(x[:1500], y[:1500], x[1500:], y[1500:], num_classes=4, epochs=10, seed=0)
    assert acc == pytest.approx(0.25, abs=0.07)


def test_probe_is_deterministic_given_the_seed():
    x, y = blobs(50, 3, 4, 2.0, seed=3)
    a = train_linear_probe(x, y, 3, epochs=5, batch_size=32, seed=11)
    b = train_linear_probe(x, y, 3, epochs=5, batch_size=32, seed=11)
    c = train_linear_probe(x, y, 3, epochs=5, batch_size=32, seed=12)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)
    torch.testing.assert_close(a.mean, x.mean(0))            # training statistics
    assert a.predict(x).shape == (150,) and 0 <= a.train_accuracy <= 1


def test_frame_pairs_align_and_drop_padding():
    feats = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)
    feat_lengths = torch.tensor([5, 3])
    labels = torch.tensor([[1, 2, 3, 4, -100, -100], [7, 8, 9, 9, -100, -100]])
    x, y = frame_pairs(feats, feat_lengths, labels)
    assert y.tolist() == [1, 2, 3, 4, 7, 8, 9]
    torch.testing.assert_close(x[4], feats[1, 0])
    assert x.shape == (7, 2)


def test_probe_errors():
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        fit_linear_probe(x, y + 1, x, y, num_classes=2)
    with pytest.raises(ConfigError, match="epochs"):
        fit_linear_probe(x, y, x, y, num_classes=2, epochs=0)
    with pytest.raises(ValueError, match="eval_feats"):
        fit_linear_probe(x, y, torch.randn(4, 5), y[:4], num_classes=2, epochs=1)
    with pytest.raises(ValueError, match="no training frames"):
        fit_linear_probe(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), x, y, num_classes=2)


def test_collect_frames_pairs_features_with_labels(tmp_path):
    import numpy as np
    import soundfile as sf

    from speechssl.data.manifest import Utterance
    from speechssl.features import mfcc

    rng = np.random.default_rng(0)
    utts, labels = [], {}
    for i, n in enumerate((4000, 6400)):
        sf.write(tmp_path / f"u{i}.wav", (0.1 * rng.standard_normal(n)).astype("float32"), 16000)
        frames = 1 + (n - 400) // 160
        labels[f"u{i}"] = np.arange(frames) % 5
        utts.append(Utterance(id=f"u{i}", path=f"u{i}.wav", num_samples=n, speaker="s"))
    x, y = collect_frames(lambda w: mfcc(w), utts, tmp_path, labels)
    assert x.shape == (23 + 38, 39) and torch.equal(y[:23], torch.arange(23) % 5)
    # a featurizer on another frame rate is refused, naming the file
    with pytest.raises(ValueError, match="u0.wav.*same frame grid"):
        collect_frames(lambda w: mfcc(w)[::2], utts, tmp_path, labels)
    with pytest.raises(ValueError, match="no frame labels"):
        collect_frames(lambda w: mfcc(w), utts, tmp_path, {})
