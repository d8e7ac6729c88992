"""AudioDataset, collate_audio and LengthGroupedSampler."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from speechssl.data.dataset import (
    ENCODER_RECEPTIVE_FIELD,
    IGNORE_INDEX,
    AudioDataset,
    LengthGroupedSampler,
    collate_audio,
)
from speechssl.data.manifest import Utterance
from speechssl.frames import MFCC_FRAMES, MODEL_FRAMES, WAV2VEC2_ENCODER, output_length, receptive_field
from speechssl.errors import AudioError, ConfigError

SCALE = 2.0**20  # sample n holds n / 2**20, exact in float32, so a crop's start can be read back


def ramp(n: int) -> np.ndarray:
    return (np.arange(n) / SCALE).astype(np.float32)


def make_corpus(root, lengths, rate=16_000):
    utts = []
    for i, n in enumerate(lengths):
        path = f"wav/u{i:03d}.wav"
        (root / "wav").mkdir(exist_ok=True)
        sf.write(root / path, ramp(n), rate, subtype="FLOAT")
        utts.append(Utterance(id=f"u{i:03d}", path=path, num_samples=n, speaker=f"s{i % 3}"))
    return utts


def frame_index_labels(utts, frames):
    """Label of frame i is i: a crop's labels then say which frames they came from."""
    return {u.id: np.arange(frames.num_frames(u.num_samples), dtype=np.int16) for u in utts}


@pytest.fixture
def corpus(tmp_path):
    lengths = [400, 1000, 3200, 5000, 8000, 12345, 16000, 20000]
    return tmp_path, make_corpus(tmp_path, lengths)


def test_receptive_field_matches_encoder():
    assert ENCODER_RECEPTIVE_FIELD == receptive_field(WAV2VEC2_ENCODER) == 400
    assert output_length(ENCODER_RECEPTIVE_FIELD, WAV2VEC2_ENCODER) == 1
    assert output_length(ENCODER_RECEPTIVE_FIELD - 1, WAV2VEC2_ENCODER) == 0


def test_items_without_cropping(corpus):
    root, utts = corpus
    ds = AudioDataset(utts, root, crop="none")
    assert len(ds) == len(utts)
    for i, u in enumerate(utts):
        item = ds[i]
        assert set(item) == {"id", "audio", "speaker"}
        assert item["id"] == u.id and item["speaker"] == u.speaker
        assert item["audio"].dtype == torch.float32
        np.testing.assert_array_equal(item["audio"].numpy(), ramp(u.num_samples))
    np.testing.assert_array_equal(ds.sizes, [u.num_samples for u in utts])


def test_labels_are_int64_and_aligned(corpus):
    root, utts = corpus
    labels = frame_index_labels(utts, MODEL_FRAMES)
    ds = AudioDataset(utts, root, crop="none", frame_labels=labels)
    for i, u in enumerate(utts):
        item = ds[i]
        assert item["labels"].dtype == torch.int64
        assert len(item["labels"]) == MODEL_FRAMES.num_frames(u.num_samples) == output_length(u.num_samples, WAV2VEC2_ENCODER)


def _start_of(audio: torch.Tensor) -> int:
    return int(round(float(audio[0]) * SCALE))


@pytest.mark.parametrize("frames", [MODEL_FRAMES, MFCC_FRAMES])
def test_random_crop_with_labels_is_hop_aligned(corpus, frames):
    root, utts = corpus
    ds = AudioDataset(utts, root, max_samples=3000, seed=3, frame_labels=frame_index_labels(utts, frames),
                      frames=frames)
    starts = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i, u in enumerate(utts):
            item = ds[i]
            n = len(item["audio"])
            assert n == min(u.num_samples, 3000)
            start = _start_of(item["audio"])
            assert (start, n) == ds.crop_window(i)
            np.testing.assert_array_equal(item["audio"].numpy(), ramp(u.num_samples)[start:start + n])
            assert start % frames.hop == 0
            assert start + n <= u.num_samples
            # exactly the frames of the whole utterance that lie inside the crop
            expected = np.arange(start // frames.hop, start // frames.hop + frames.num_frames(n))
            np.testing.assert_array_equal(item["labels"].numpy(), expected)
            if u.num_samples > 3000:
                starts.add((i, start))
    assert len(starts) > 10  # crops do move around between epochs


def test_random_crop_determinism(corpus):
    root, utts = corpus
    a = AudioDataset(utts, root, max_samples=2000, seed=7)
    b = AudioDataset(utts, root, max_samples=2000, seed=7)
    c = AudioDataset(utts, root, max_samples=2000, seed=8)
    # order of access does not matter, only (seed, epoch, index)
    first = [a.crop_window(i) for i in range(len(utts))]
    assert [b.crop_window(i) for i in reversed(range(len(utts)))][::-1] == first
    assert [c.crop_window(i) for i in range(len(utts))] != first
    a.set_epoch(1)
    second = [a.crop_window(i) for i in range(len(utts))]
    assert second != first
    a.set_epoch(0)
    assert [a.crop_window(i) for i in range(len(utts))] == first
    # without labels the start is any sample, not only multiples of the hop
    starts = {a.crop_window(i)[0] for e in range(20) for i in range(3, len(utts)) if not a.set_epoch(e)}
    assert any(s % MODEL_FRAMES.hop for s in starts)
    a.set_epoch(0)
    torch.testing.assert_close(a[6]["audio"], b[6]["audio"])


def test_crop_start(corpus):
    root, utts = corpus
    ds = AudioDataset(utts, root, max_samples=1000, crop="start")
    for e in range(3):
        ds.set_epoch(e)
        assert all(_start_of(ds[i]["audio"]) == 0 for i in range(len(ds)))
    np.testing.assert_array_equal(ds.sizes, np.minimum([u.num_samples for u in utts], 1000))


def test_normalize(corpus):
    root, utts = corpus
    ds = AudioDataset(utts, root, crop="none", normalize=True)
    x = ds[7]["audio"]
    raw = torch.from_numpy(ramp(utts[7].num_samples))
    # fairseq's F.layer_norm: biased variance, eps 1e-5 (it matters for this quiet ramp)
    expected = (raw - raw.mean()) / torch.sqrt(raw.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)
    assert abs(float(x.mean())) < 1e-4
    (root / "loud").mkdir()
    loud = make_corpus(root / "loud", [8000])
    sf.write(root / "loud" / loud[0].path, 0.5 * np.sin(np.arange(8000) / 7), 16_000, subtype="FLOAT")
    y = AudioDataset(loud, root / "loud", normalize=True)[0]["audio"]
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std(unbiased=False)) - 1) < 1e-3
    # normalised over the whole utterance, then cropped (as fairseq)
    full = ds[7]["audio"]
    cropped = AudioDataset(utts, root, max_samples=4000, normalize=True, crop="start")[7]["audio"]
    torch.testing.assert_close(cropped, full[:4000])


def test_too_short_names_utterance_and_receptive_field(tmp_path):
    utts = make_corpus(tmp_path, [1000, 399])
    with pytest.raises(AudioError) as e:
        AudioDataset(utts, tmp_path)
    msg = str(e.value)
    assert "u001" in msg and "u001.wav" in msg
    assert "expected at least 400 samples" in msg and "found 399 samples" in msg
    assert "receptive field of the wav2vec 2.0 feature encoder" in msg
    AudioDataset(utts, tmp_path, min_samples=399)


def test_file_that_disagrees_with_manifest(tmp_path):
    utts = make_corpus(tmp_path, [1000, 2000])
    sf.write(tmp_path / utts[1].path, ramp(1500), 16_000, subtype="FLOAT")
    ds = AudioDataset(utts, tmp_path, crop="none")
    with pytest.raises(AudioError, match=r"u001.*expected 2000 samples.*found 1500"):
        ds[1]


def test_items_are_validated_on_load(tmp_path):
    utts = make_corpus(tmp_path, [1000, 2000])
    x = ramp(2000)
    x[123] = np.nan
    sf.write(tmp_path / utts[1].path, x, 16_000, subtype="FLOAT")
    ds = AudioDataset(utts, tmp_path)
    ds[0]
    with pytest.raises(AudioError, match=r"u001.wav: expected finite samples.*first at index 123"):
        ds[1]
    (tmp_path / utts[0].path).unlink()
    with pytest.raises(AudioError, match="u000.wav.*does not exist"):
        ds[0]


def test_wrong_rate_in_manifest(tmp_path):
    utts = make_corpus(tmp_path, [1000])
    utts[0].sample_rate = 8000
    with pytest.raises(AudioError, match="u000.*expected 16000 Hz, found 8000 Hz"):
        AudioDataset(utts, tmp_path)


def test_label_length_mismatch(corpus):
    root, utts = corpus
    labels = frame_index_labels(utts, MFCC_FRAMES)  # 100 Hz labels ...
    with pytest.raises(ConfigError) as e:
        AudioDataset(utts, root, frame_labels=labels, frames=MODEL_FRAMES)  # ... on the 50 Hz grid
    msg = str(e.value)
    u = utts[1]  # u000 has one frame at both rates; u001 is the first that differs
    assert f"utterance {u.id!r}" in msg
    assert f"expected {MODEL_FRAMES.num_frames(u.num_samples)} labels" in msg
    assert f"found {MFCC_FRAMES.num_frames(u.num_samples)}" in msg
    assert "100hz" in msg
    labels = frame_index_labels(utts, MODEL_FRAMES)
    del labels["u003"]
    with pytest.raises(ConfigError, match="no frame labels for utterance 'u003'"):
        AudioDataset(utts, root, frame_labels=labels)


def test_bad_configuration(corpus):
    root, utts = corpus
    with pytest.raises(ConfigError, match="crop must be one of"):
        AudioDataset(utts, root, crop="middle")
    with pytest.raises(ConfigError, match="crop='none' never crops"):
        AudioDataset(utts, root, crop="none", max_samples=1000)
    with pytest.raises(ConfigError, match="below min_samples"):
        AudioDataset(utts, root, max_samples=100)
    with pytest.raises(ConfigError, match="appears twice"):
        AudioDataset(utts + utts[:1], root)


def test_collate_shapes_masks_and_padding(corpus):
    root, utts = corpus
    ds = AudioDataset(utts, root, crop="none", frame_labels=frame_index_labels(utts, MODEL_FRAMES))
    items = [ds[1], ds[4], ds[0]]
    batch = collate_audio(items)
    lengths = [1000, 8000, 400]
    assert batch["audio"].shape == (3, 8000) and batch["audio"].dtype == torch.float32
    assert batch["lengths"].tolist() == lengths and batch["lengths"].dtype == torch.int64
    assert batch["padding_mask"].dtype == torch.bool and batch["padding_mask"].shape == (3, 8000)
    assert batch["ids"] == ["u001", "u004", "u000"]
    assert batch["speakers"] == ["s1", "s1", "s0"]
    for b, n in enumerate(lengths):
        assert not batch["padding_mask"][b, :n].any() and batch["padding_mask"][b, n:].all()
        torch.testing.assert_close(batch["audio"][b, :n], items[b]["audio"])
        assert (batch["audio"][b, n:] == 0).all()
    f = [MODEL_FRAMES.num_frames(n) for n in lengths]
    assert batch["labels"].shape == (3, max(f)) and batch["labels"].dtype == torch.int64
    assert batch["label_lengths"].tolist() == f
    for b, k in enumerate(f):
        assert batch["labels"][b, :k].tolist() == list(range(k))
        assert (batch["labels"][b, k:] == IGNORE_INDEX).all()
    # cross_entropy's default ignore_index skips exactly the padded frames
    logits = torch.randn(3, max(f), 100)
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"])
    valid = batch["labels"] != IGNORE_INDEX
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[valid], batch["labels"][valid]))


def test_collate_pad_to_multiple_and_no_labels(corpus):
    root, utts = corpus
    ds = AudioDataset(utts, root, crop="none")
    batch = collate_audio([ds[1], ds[2]], pad_to_multiple=320)
    assert batch["audio"].shape == (2, 3200)
    batch = collate_audio([ds[1], ds[5]], pad_to_multiple=320)
    assert batch["audio"].shape == (2, 12480)  # 12345 rounded up
    assert batch["padding_mask"][1, 12345:].all() and not batch["padding_mask"][1, :12345].any()
    assert "labels" not in batch and "label_lengths" not in batch


def test_collate_errors():
    with pytest.raises(ConfigError, match="empty batch"):
        collate_audio([])
    a = {"id": "a", "audio": torch.zeros(10), "labels": torch.zeros(1, dtype=torch.int64)}
    b = {"id": "b", "audio": torch.zeros(20)}
    with pytest.raises(ConfigError, match=r"labels present in some items but not in \['b'\]"):
        collate_audio([a, b])
    with pytest.raises(ConfigError, match="expected \\(T,\\) audio"):
        collate_audio([{"id": "c", "audio": torch.zeros(1, 5)}])


def test_dataloader_end_to_end(corpus):
    root, utts = corpus
    ds = AudioDataset(utts, root, max_samples=6400, frame_labels=frame_index_labels(utts, MODEL_FRAMES))
    sampler = LengthGroupedSampler(ds.sizes, max_samples=16_000, pad_to_multiple=320, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=functools.partial(collate_audio, pad_to_multiple=320),
                        num_workers=0)
    seen = []
    for batch in loader:
        assert batch["audio"].numel() <= 16_000
        assert batch["audio"].shape[1] % 320 == 0
        assert batch["labels"].shape[1] == int(batch["label_lengths"].max())
        seen += batch["ids"]
    assert sorted(seen) == [u.id for u in utts]


def test_crops_do_not_depend_on_workers(corpus):
    root, utts = corpus
    ds = AudioDataset(utts, root, max_samples=3000, seed=4)
    ds.set_epoch(2)

    def run(workers):
        loader = DataLoader(ds, batch_size=3, collate_fn=collate_audio, num_workers=workers)
        return torch.cat([b["audio"].flatten() for b in loader])

    torch.testing.assert_close(run(0), run(2), rtol=0, atol=0)


# --------------------------------------------------------------------------- sampler

def random_lengths(n=500, seed=0):
    return np.random.default_rng(seed).integers(400, 50_000, size=n)


def test_sampler_covers_every_index_once_and_respects_budget():
    lengths = random_lengths()
    s = LengthGroupedSampler(lengths, max_samples=200_000)
    batches = list(s)
    assert len(batches) == len(s)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * lengths[b].max() <= 200_000
        assert all(isinstance(i, int) for i in b)
    # length grouping: padding is a small fraction of the batch
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert lengths.sum() / padded > 0.9


def test_sampler_max_batch_size_and_pad_to_multiple():
    lengths = random_lengths(seed=1)
    s = LengthGroupedSampler(lengths, max_samples=400_000, max_batch_size=4, pad_to_multiple=1000)
    for b in s:
        assert len(b) <= 4
        assert len(b) * (-(-lengths[b].max() // 1000) * 1000) <= 400_000


def test_sampler_is_deterministic_and_shuffles_per_epoch():
    lengths = random_lengths()
    a = LengthGroupedSampler(lengths, max_samples=200_000, seed=5)
    b = LengthGroupedSampler(lengths, max_samples=200_000, seed=5)
    assert list(a) == list(b)
    e0 = list(a)
    a.set_epoch(1)
    e1 = list(a)
    assert e0 != e1
    assert sorted(i for x in e1 for i in x) == list(range(len(lengths)))
    a.set_epoch(0)
    assert list(a) == e0
    c = LengthGroupedSampler(lengths, max_samples=200_000, seed=6)
    assert list(c) != e0
    # batch order is shuffled, not by length
    maxima = [lengths[x].max() for x in e0]
    assert maxima != sorted(maxima)


def test_sampler_without_shuffle_is_sorted():
    lengths = random_lengths()
    s = LengthGroupedSampler(lengths, max_samples=200_000, shuffle=False)
    flat = [i for b in s for i in b]
    assert list(lengths[flat]) == sorted(lengths)
    s.set_epoch(3)
    assert [i for b in s for i in b] == flat


@pytest.mark.parametrize("n, replicas", [(500, 2), (500, 3), (37, 4), (101, 8), (9, 8)])
def test_sampler_ddp_ranks(n, replicas):
    lengths = random_lengths(n, seed=n)
    for epoch in range(3):
        per_rank = []
        for rank in range(replicas):
            s = LengthGroupedSampler(lengths, max_samples=150_000, num_replicas=replicas, rank=rank, seed=2)
            s.set_epoch(epoch)
            per_rank.append(list(s))
            assert len(per_rank[-1]) == len(s)
        counts = {len(r) for r in per_rank}
        assert len(counts) == 1, counts  # every rank steps the same number of times
        flat = Counter(i for r in per_rank for b in r for i in b)
        assert sorted(flat) == list(range(n)) and set(flat.values()) == {1}  # each index once
        for r in per_rank:
            for b in r:
                assert b and len(b) * lengths[b].max() <= 150_000


def test_sampler_repeats_only_when_there_are_too_few_items():
    # 5 items that each fill a batch, over 4 ranks: 2 batches per rank needs 8 batches
    lengths = np.full(5, 1000)
    ranks = [list(LengthGroupedSampler(lengths, max_samples=1000, num_replicas=4, rank=r)) for r in range(4)]
    assert {len(r) for r in ranks} == {2}
    flat = Counter(i for r in ranks for b in r for i in b)
    assert sorted(flat) == list(range(5))


def test_sampler_errors():
    with pytest.raises(ConfigError, match=r"item 2 alone is 5000 samples .*above max_samples=4000"):
        LengthGroupedSampler([100, 200, 5000], max_samples=4000)
    with pytest.raises(ConfigError, match=r"rank must be in \[0, 2\)"):
        LengthGroupedSampler([100], max_samples=4000, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="cannot be spread over 4 replicas"):
        LengthGroupedSampler([100, 200], max_samples=4000, num_replicas=4, rank=0)
    with pytest.raises(ConfigError, match="lengths must be >= 1"):
        LengthGroupedSampler([100, 0], max_samples=4000)
    assert list(LengthGroupedSampler([], max_samples=10)) == []
