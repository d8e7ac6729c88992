"""Teacher labels on disk: provenance fingerprints, atomic files, and clear errors for labels that do not fit."""

import numpy as np
import pytest

from speechssl.data.manifest import Utterance, write_manifest
from speechssl.units import LabelError, UnitLabels, corpus_fingerprint, fingerprint


def utterances():
    return [Utterance(id=f"u{i}", path=f"u{i}.flac", num_samples=16_000 * (i + 1), speaker="s") for i in range(3)]


def labels_for(utts, rate=50, k=100, seed=0):
    rng = np.random.default_rng(seed)
    return {u.id: rng.integers(0, k, int(u.seconds * rate)) for u in utts}


def test_round_trip_keeps_labels_and_provenance(tmp_path):
    utts = utterances()
    lab = UnitLabels(labels_for(utts), num_classes=100, rate=50, corpus="c1", teacher="t1")
    path = lab.save(tmp_path / "labels" / "it1.npz")
    assert not list(path.parent.glob("*.tmp"))                          # written atomically
    back = UnitLabels.load(path, corpus="c1", teacher="t1")
    assert (back.num_classes, back.rate, back.corpus, back.teacher) == (100, 50, "c1", "t1")
    assert list(back.labels) == list(lab.labels)
    assert all(np.array_equal(back.labels[k], v) for k, v in lab.labels.items())
    back.check(utts)


def test_fingerprints_follow_the_corpus_and_the_teacher(tmp_path):
    utts = utterances()
    write_manifest(tmp_path, "pretrain", utts)
    before = corpus_fingerprint(tmp_path, ["pretrain"])
    assert corpus_fingerprint(tmp_path, ["pretrain"]) == before
    write_manifest(tmp_path, "pretrain", utts[:2])
    assert corpus_fingerprint(tmp_path, ["pretrain"]) != before
    with pytest.raises(LabelError, match="manifest of split 'dev'"):
        corpus_fingerprint(tmp_path, ["dev"])
    centres = np.zeros((100, 39), np.float32)
    assert fingerprint("mfcc", 100, centres) == fingerprint("mfcc", 100, centres.copy())
    assert fingerprint("mfcc", 100, centres) != fingerprint("mfcc", 100, centres + 1)
    assert fingerprint("layer", 6, 500) != fingerprint("layer", 9, 500)


def test_labels_of_another_corpus_or_teacher_are_refused(tmp_path):
    path = UnitLabels(labels_for(utterances()), 100, 50, corpus="c1", teacher="t1").save(tmp_path / "l.npz")
    with pytest.raises(LabelError, match=r"another corpus \(fingerprint c1, expected c2\)"):
        UnitLabels.load(path, corpus="c2")
    with pytest.raises(LabelError, match=r"another teacher \(fingerprint t1, expected t2\)"):
        UnitLabels.load(path, corpus="c1", teacher="t2")


def test_missing_and_unreadable_files_get_clear_errors(tmp_path):
    with pytest.raises(LabelError, match="expected a label file, found none"):
        UnitLabels.load(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a label file")
    with pytest.raises(LabelError, match="found an unreadable file"):
        UnitLabels.load(bad)


@pytest.mark.parametrize("change, message", [
    ("drop", r"found none for 1 of 3 \(first: 'u1'\)"),
    ("rate", r"expected about 100 frames at 50 Hz for 2.00 s of audio, found 200 \(4.00 s\); were they made at "
             r"another label rate\?"),
    ("id", r"expected unit ids in \[0, 100\), found ids from \d+ to 100"),
])
def test_labels_that_do_not_fit_the_audio_are_refused(change, message):
    utts = utterances()
    labels = labels_for(utts)
    if change == "drop":
        del labels["u1"]
    elif change == "rate":
        labels["u1"] = np.zeros(200, np.int64)                 # 100 Hz labels declared as 50 Hz
    else:
        labels["u1"][0] = 100
    with pytest.raises(LabelError, match=message):
        UnitLabels(labels, 100, 50, "c", "t").check(utts)


def test_a_length_within_fairseqs_tolerance_is_accepted():
    """fairseq allows 0.1 s between labels and audio: 4 frames at 50 Hz (0.08 s) pass, 6 (0.12 s) do not."""
    utts = utterances()[:1]
    UnitLabels({"u0": np.zeros(54, np.int64)}, 100, 50, "c", "t").check(utts)
    with pytest.raises(LabelError):
        UnitLabels({"u0": np.zeros(56, np.int64)}, 100, 50, "c", "t").check(utts)
