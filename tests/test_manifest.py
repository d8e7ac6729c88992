"""Manifest round trips and frame-label conventions."""

import numpy as np
import pytest

from speechssl.data.manifest import (Utterance, frame_labels, read_frame_labels, read_manifest, write_frame_labels,
                                     write_manifest)
from speechssl.frames import MFCC_FRAMES, MODEL_FRAMES, WAV2VEC2_ENCODER, output_length
from speechssl.errors import CorpusNotFoundError

P2I = {"sil": 0, "AA": 1, "B": 2}
ALI = [("sil", 0, 800), ("B", 800, 1600), ("AA", 1600, 4000)]


@pytest.mark.parametrize("n", [0, 399, 400, 719, 720, 16000, 31999, 123457])
def test_model_grid_is_the_conv_encoder(n):
    assert MODEL_FRAMES.num_frames(n) == output_length(n, WAV2VEC2_ENCODER)


def test_frame_labels_take_the_phone_at_the_window_centre():
    # 100 Hz centres: 200, 360, 520, 680 (sil < 800), 840 ... 1480 (B < 1600), 1640 (AA)
    assert frame_labels(ALI, 4000, MFCC_FRAMES, P2I).tolist()[:10] == [0, 0, 0, 0, 2, 2, 2, 2, 2, 1]
    # 50 Hz centres: 200, 520 (sil), 840, 1160, 1480 (B), 1800 ... 3720 (AA): 12 frames
    assert frame_labels(ALI, 4000, MODEL_FRAMES, P2I).tolist() == [0, 0, 2, 2, 2] + [1] * 7
    assert len(frame_labels(ALI, 4000, MFCC_FRAMES, P2I)) == MFCC_FRAMES.num_frames(4000)


def test_round_trip_and_deterministic_bytes(tmp_path):
    u = Utterance("u1", "wav/u1.wav", 4000, "spk1", "a b", ["A", "B"], ["B", "AA"], ALI)
    write_manifest(tmp_path, "dev", [u])
    assert read_manifest(tmp_path, "dev") == [u]
    p = write_frame_labels(tmp_path, "dev", [u], P2I)
    first = p.read_bytes()
    write_frame_labels(tmp_path, "dev", [u], P2I)
    assert p.read_bytes() == first
    labs = read_frame_labels(tmp_path, "dev", "50hz")
    assert labs["u1"].tolist() == frame_labels(ALI, 4000, MODEL_FRAMES, P2I).tolist()


def test_missing_corpus_and_split(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="does not exist; generate it"):
        read_manifest(tmp_path / "nope", "dev")
    write_manifest(tmp_path, "dev", [])
    with pytest.raises(CorpusNotFoundError, match=r"split 'test'.*splits found: \['dev'\]"):
        read_manifest(tmp_path, "test")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(CorpusNotFoundError, match="bad.jsonl:1"):
        read_manifest(tmp_path, "bad")
