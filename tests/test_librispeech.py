"""LibriSpeech reader on a synthetic LibriSpeech-layout tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fake_librispeech import make_fake_librispeech, tone
from speechssl.data.audio import load_audio
from speechssl.data.librispeech import SUBSETS, find_librispeech, librispeech_manifest, read_librispeech
from speechssl.data.manifest import read_manifest
from speechssl.errors import AudioError, ConfigError, CorpusNotFoundError


@pytest.fixture
def tree(tmp_path):
    return tmp_path, make_fake_librispeech(tmp_path)


def test_subsets_constant():
    assert len(SUBSETS) == 7
    assert {"train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "test-other"} <= set(SUBSETS)


def test_read_one_subset(tree):
    root, written = tree
    utts = read_librispeech(root, "train-clean-100")
    expected = {k: v for k, v in written.items() if v["subset"] == "train-clean-100"}
    assert [u.id for u in utts] == ["19-198-0000", "19-198-0001", "19-227-0000", "103-1240-0000", "103-1240-0001"]
    assert {u.id for u in utts} == set(expected)
    for u in utts:
        w = expected[u.id]
        assert u.num_samples == w["num_samples"]
        assert u.speaker == w["speaker"]
        assert u.text == w["text"]
        assert u.words == w["text"].split()
        assert u.sample_rate == 16_000
        assert u.path == f"LibriSpeech/train-clean-100/{w['speaker']}/{w['chapter']}/{u.id}.flac"
        assert (root / u.path).resolve() == w["path"].resolve()
        assert load_audio(root / u.path).shape == (u.num_samples,)
        assert u.phones == [] and u.alignment == []


def test_several_subsets_keep_order(tree):
    root, written = tree
    utts = read_librispeech(root, ["train-clean-100", "dev-clean"])
    assert len(utts) == len(written)
    subsets = [u.path.split("/")[1] for u in utts]
    assert subsets == sorted(subsets, key=["train-clean-100", "dev-clean"].index)
    # numeric, not lexicographic, speaker order: 84 before 174
    dev = [u.speaker for u in utts if "dev-clean" in u.path]
    assert dev == ["84"] * 3 + ["174"] * 3
    assert read_librispeech(root, ["train-clean-100", "dev-clean"]) == utts  # deterministic


def test_root_may_be_the_librispeech_folder(tree):
    root, _ = tree
    a = read_librispeech(root, "dev-clean")
    b = read_librispeech(root / "LibriSpeech", "dev-clean")
    assert find_librispeech(root) == find_librispeech(root / "LibriSpeech") == root / "LibriSpeech"
    assert [u.id for u in a] == [u.id for u in b]
    assert b[0].path.startswith("dev-clean/")
    assert all(a_.path == "LibriSpeech/" + b_.path for a_, b_ in zip(a, b))


def test_missing_root(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="does not exist") as e:
        read_librispeech(tmp_path / "nowhere")
    assert "nowhere" in str(e.value)


def test_missing_subset_lists_subsets(tree):
    root, _ = tree
    with pytest.raises(CorpusNotFoundError) as e:
        read_librispeech(root, "train-other-500")
    msg = str(e.value)
    assert "'train-other-500' not found" in msg
    assert "['dev-clean', 'train-clean-100']" in msg
    with pytest.raises(CorpusNotFoundError, match="standard subsets are"):
        read_librispeech(root, "train-clean-1000")


def test_transcript_line_without_audio(tree):
    root, written = tree
    victim = written["19-198-0001"]["path"]
    victim.unlink()
    with pytest.raises(CorpusNotFoundError) as e:
        read_librispeech(root, "train-clean-100")
    msg = str(e.value)
    assert "19-198.trans.txt:2" in msg and "19-198-0001" in msg and "does not exist" in msg


def test_audio_without_transcript_line(tree):
    root, written = tree
    folder = written["84-121123-0000"]["path"].parent
    sf.write(folder / "84-121123-0099.flac", tone(8000), 16_000)
    with pytest.raises(CorpusNotFoundError) as e:
        read_librispeech(root, "dev-clean")
    msg = str(e.value)
    assert "84-121123-0099.flac" in msg and "audio without transcript" in msg and "84-121123.trans.txt" in msg


def test_chapter_without_transcript_file(tree):
    root, written = tree
    trans = written["19-227-0000"]["path"].parent / "19-227.trans.txt"
    trans.unlink()
    with pytest.raises(CorpusNotFoundError, match=r"19-227-0000.flac: audio without transcript.*19-227.trans.txt"):
        read_librispeech(root, "train-clean-100")


@pytest.mark.parametrize(
    "line, what",
    [
        ("19-198-0001", "malformed transcript line"),  # no text
        ("19_198_0001 HELLO", "malformed transcript line"),  # bad id
        ("19-199-0001 HELLO", "expected an id starting with '19-198-'"),  # wrong chapter
        ("19-198-0000 AGAIN", "already appears on line 1"),  # duplicate
    ],
)
def test_malformed_transcript_line(tree, line, what):
    root, written = tree
    trans = written["19-198-0000"]["path"].parent / "19-198.trans.txt"
    lines = trans.read_text().splitlines()
    lines[1] = line
    trans.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusNotFoundError) as e:
        read_librispeech(root, "train-clean-100")
    assert "19-198.trans.txt:2" in str(e.value)
    assert what in str(e.value)


def test_blank_lines_and_extra_spaces_are_tolerated(tree):
    root, written = tree
    trans = written["19-198-0000"]["path"].parent / "19-198.trans.txt"
    lines = trans.read_text().splitlines()
    trans.write_text("\n" + lines[0].replace(" ", "   ", 1) + "\n\n" + lines[1] + "\n")
    utts = read_librispeech(root, "train-clean-100")
    assert utts[0].text == written["19-198-0000"]["text"]


def test_wrong_rate_and_unreadable_file(tree):
    root, written = tree
    path = written["174-84280-0000"]["path"]
    sf.write(path, tone(8000, 8000), 8000)
    with pytest.raises(AudioError, match=r"174-84280-0000.flac: expected 16000 Hz, found 8000 Hz"):
        read_librispeech(root, "dev-clean")
    path.write_bytes(b"junk" * 100)
    with pytest.raises(AudioError, match=r"174-84280-0000.flac: expected a readable audio file"):
        read_librispeech(root, "dev-clean")


def test_non_numeric_folder(tree):
    root, _ = tree
    (root / "LibriSpeech" / "dev-clean" / "notes").mkdir()
    with pytest.raises(CorpusNotFoundError, match="numeric folder names, found folder 'notes'"):
        read_librispeech(root, "dev-clean")


def test_empty_subset(tmp_path):
    (tmp_path / "LibriSpeech" / "test-clean").mkdir(parents=True)
    with pytest.raises(CorpusNotFoundError, match="found none"):
        read_librispeech(tmp_path, "test-clean")


def test_subsets_present_without_inner_folder(tmp_path):
    make_fake_librispeech(tmp_path, {"test-clean": {7: {11: 2}}}, inner=False)
    utts = read_librispeech(tmp_path, ["test-clean"])
    assert [u.path for u in utts] == ["test-clean/7/11/7-11-0000.flac", "test-clean/7/11/7-11-0001.flac"]


def test_manifest_in_root(tree):
    root, _ = tree
    path = librispeech_manifest(root, ["dev-clean"])
    assert path == root / "dev-clean.jsonl"
    assert read_manifest(root, "dev-clean") == read_librispeech(root, "dev-clean")


def test_manifest_elsewhere_is_rebased(tree):
    root, _ = tree
    out = root / "manifests" / "ls"
    path = librispeech_manifest(root, ["train-clean-100", "dev-clean"], out_dir=out)
    assert path == out / "train-clean-100+dev-clean.jsonl"
    utts = read_manifest(out, "train-clean-100+dev-clean")
    direct = read_librispeech(root, ["train-clean-100", "dev-clean"])
    assert [u.id for u in utts] == [u.id for u in direct]
    for u, d in zip(utts, direct):
        assert u.path.startswith("../../LibriSpeech/")
        assert (out / u.path).resolve() == (root / d.path).resolve()
        assert u.num_samples == d.num_samples and u.text == d.text
    named = librispeech_manifest(root, "dev-clean", out_dir=out, name="dev")
    assert named == out / "dev.jsonl" and Path(named).is_file()
    assert len(read_manifest(out, "dev")) == 6
    x = load_audio(out / utts[0].path)
    assert np.isfinite(x.numpy()).all()


def test_bad_subset_arguments(tree):
    root, _ = tree
    with pytest.raises(ConfigError, match="no LibriSpeech subsets"):
        read_librispeech(root, [])
    with pytest.raises(ConfigError, match="requested twice"):
        read_librispeech(root, ["dev-clean", "dev-clean"])
