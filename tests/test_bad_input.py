"""Every kind of bad input a user can give gets a clear answer: an exit status, a message that names the file or
argument, what was expected and what was found, no traceback, and nothing already written lost.

The commands run in a subprocess, as a user meets them; the kinds a user meets only through the library
(frame labels, hand-made batches) are called directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.data.manifest import Utterance

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]),
       "SPEECHSSL_PROGRESS": "0", "OMP_NUM_THREADS": "2"}


def run(*args: str, preexec=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=ENV, timeout=600,
                          preexec_fn=preexec)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def tree(root: Path, files: dict[str, tuple], ext: str = ".flac", subset: str = "train-clean-100") -> Path:
    """A LibriSpeech-layout tree of speaker 19, chapter 198: ``files`` maps utterance number to
    ``(waveform (T,) or (T, C), sample rate, transcript)``; a ``None`` transcript leaves its line out."""
    folder = root / "LibriSpeech" / subset / "19" / "198"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, (wav, rate, text) in files.items():
        if wav is not None:
            sf.write(folder / f"19-198-{n:04d}{ext}", wav, rate, subtype="FLOAT" if ext == ".wav" else "PCM_16")
        if text is not None:
            lines.append(f"19-198-{n:04d} {text}")
    (folder / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def noise(n: int = 16_000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def good(k: int = 4) -> dict[int, tuple]:
    return {i: (noise(seed=i), 16_000, "A CAT") for i in range(k)}


def train(data: Path, out: Path, *extra: str, ext: str = ".flac") -> subprocess.CompletedProcess:
    return run("speechssl.train", "wav2vec", "--scale", "tiny", "--data", f"librispeech:{data}", "--subsets",
               "train-clean-100", "--audio-ext", ext, "--max-steps", "1", "--out", str(out), *extra)


def expect(proc: subprocess.CompletedProcess, status: int, *parts: str) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr[-2000:])


# ------------------------------------------------------------------------------------------------- audio


def test_wrong_sample_rate(tmp_path):
    data = tree(tmp_path, {**good(), 9: (noise(8_000), 8_000, "A")})
    expect(train(data, tmp_path / "run"), 1, "19-198-0009.flac", "expected 16000 Hz", "found 8000 Hz")


def test_stereo(tmp_path):
    data = tree(tmp_path, {**good(), 9: (np.stack([noise(), noise(seed=1)], 1), 16_000, "A")})
    expect(train(data, tmp_path / "run"), 1, "19-198-0009.flac", "mono", "2 channels")


def test_empty_file(tmp_path):
    data = tree(tmp_path, {**good(), 9: (np.zeros(0, np.float32), 16_000, "A")})
    expect(train(data, tmp_path / "run"), 1, "19-198-0009.flac", "empty")


def test_shorter_than_the_model_needs(tmp_path):
    data = tree(tmp_path, {**good(), 9: (noise(300), 16_000, "A")})
    proc = train(data, tmp_path / "run")          # dropped with a count and an example, as fairseq's min_sample_size
    expect(proc, 0, "dropped 1 of 5 utterances shorter than 2385 samples (e.g. 19-198-0009, 300 samples)")
    short = tree(tmp_path / "short", {0: (noise(300), 16_000, "A")})
    expect(train(short, tmp_path / "run2"), 2, "every utterance is shorter than the model's minimum of 2385 samples",
           "the longest has 300")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf(tmp_path, bad):
    wav = noise()
    wav[100] = bad
    data = tree(tmp_path, {0: (wav, 16_000, "A")}, ext=".wav")
    expect(train(data, tmp_path / "run", ext=".wav"), 1, "19-198-0000.wav", "NaN" if np.isnan(bad) else "Inf")


def test_corrupt_or_truncated_flac(tmp_path):
    data = tree(tmp_path, good())
    path = data / "LibriSpeech/train-clean-100/19/198/19-198-0002.flac"
    path.write_bytes(path.read_bytes()[:60])
    expect(train(data, tmp_path / "run"), 1, "19-198-0002.flac")


# ------------------------------------------------------------------------------------------ corpus and labels


def test_missing_corpus(tmp_path):
    expect(train(tmp_path / "nowhere", tmp_path / "run"), 1, str(tmp_path / "nowhere"), "does not exist")


def test_transcript_line_without_audio(tmp_path):
    data = tree(tmp_path, {**good(2), 7: (None, 16_000, "A CAT")})
    expect(train(data, tmp_path / "run"), 1, "19-198.trans.txt", "19-198-0007", "does not exist")


def test_audio_without_transcript(tmp_path):
    data = tree(tmp_path, {**good(2), 7: (noise(), 16_000, None)})
    expect(train(data, tmp_path / "run"), 1, "19-198-0007.flac", "audio without transcript")


def test_frame_labels_of_the_wrong_length(tmp_path):
    from speechssl.data.dataset import AudioDataset
    from speechssl.errors import ConfigError

    sf.write(tmp_path / "a.wav", noise(), 16_000)
    utts = [Utterance(id="a", path="a.wav", num_samples=16_000, speaker="s")]
    with pytest.raises(ConfigError, match=r"frame labels of utterance 'a': expected 49 labels .* found 98; that is "
                                          r"the length at 100hz"):
        AudioDataset(utts, tmp_path, frame_labels={"a": np.zeros(98, np.int64)})


def test_letters_outside_the_vocabulary(tmp_path):
    pre = tmp_path / "pre"
    expect(run("speechssl.train", "wav2vec2", "--scale", "tiny", "--max-steps", "1", "--out", str(pre),
               "--data", f"librispeech:{tree(tmp_path / 'long', {i: (noise(40_000, i), 16_000, 'A') for i in range(2)})}",
               "--subsets", "train-clean-100"), 0)
    data = tree(tmp_path / "ft", {0: (noise(), 16_000, "A CAFÉ")})
    proc = run("speechssl.finetune", "--scale", "tiny", "--pretrained", str(pre), "--data", f"librispeech:{data}",
               "--subsets", "train-clean-100", "--eval-subsets", "train-clean-100", "--max-steps", "1", "--out",
               str(tmp_path / "run"))
    expect(proc, 2, "utterance '19-198-0000'", "symbols ['É'] are not in the CTC vocabulary")


# ------------------------------------------------------------------------------------ config and checkpoints


def test_invalid_config_value(tmp_path):
    expect(train(tmp_path, tmp_path / "run", "--lr", "-1"), 2, "TrainConfig.lr: expected a finite number > 0",
           "found -1.0")
    expect(run("speechssl.train", "wav2vec", "--scale", "tiny", "--batch-seconds", "0"), 2,
           "--batch-seconds: expected a positive number of seconds, found 0.0")


@pytest.fixture(scope="module")
def wav2vec_run(tmp_path_factory):
    """A one-update wav2vec run (checkpoint_last.pt) on a small tree."""
    tmp = tmp_path_factory.mktemp("w2v")
    data = tree(tmp / "data", good())
    expect(train(data, tmp / "run", "--ckpt-every", "1"), 0)
    return data, tmp / "run"


def test_pretrained_checkpoint_of_another_model(tmp_path, wav2vec_run):
    _, run_dir = wav2vec_run
    proc = run("speechssl.finetune", "--scale", "tiny", "--pretrained", str(run_dir), "--out", str(tmp_path / "ft"))
    expect(proc, 2, f"--pretrained {run_dir}: expected a checkpoint of wav2vec2 or hubert, found one of 'wav2vec'")


def test_truncated_checkpoint(tmp_path, wav2vec_run):
    data, run_dir = wav2vec_run
    copy = tmp_path / "run"
    copy.mkdir()
    blob = (run_dir / "checkpoint_last.pt").read_bytes()
    (copy / "checkpoint_last.pt").write_bytes(blob[: len(blob) // 2])
    proc = train(data, copy, "--resume", "--max-steps", "2")
    expect(proc, 1, "cannot resume", "checkpoint_last.pt is not a complete speechssl checkpoint", "truncated")
    assert "weights_only=False" not in proc.stderr          # torch's advice is unsafe for a corrupt file


# ------------------------------------------------------------------------------------------------ batches


def test_empty_batch():
    from speechssl.data.dataset import collate_audio
    from speechssl.errors import ConfigError
    from speechssl.recipes import recipe

    with pytest.raises(ConfigError, match="collate_audio got an empty batch"):
        collate_audio([])
    with pytest.raises(ConfigError, match=r"empty batch \(audio of shape \(0, 16000\)\)"):
        recipe("wav2vec2", "tiny").build().compute_loss({"audio": torch.zeros(0, 16_000)})


def test_fewer_frames_than_distractors():
    from speechssl.errors import AudioError
    from speechssl.recipes import recipe

    model = recipe("wav2vec2", "tiny").build()
    with pytest.raises(AudioError, match=r"has 16000 samples .* needs at least 32400 samples \(101 frames: a masked "
                                         r"target, its 100 distractors"):
        model.compute_loss({"audio": torch.randn(1, 16_000)})


# ---------------------------------------------------------------------------------------------- files and runs


def test_unwritable_runs_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "run"                      # a folder below a file cannot be created, not even by root
    proc = train(tmp_path / "no-corpus-needed", out)
    expect(proc, 2, f"--out {out}: expected a folder this user can write to")   # before the corpus is read


def test_out_naming_a_file(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    expect(train(tmp_path, out), 2, f"--out {out}: expected a folder for the run, found a file")
    assert out.read_text() == "keep me"


def test_disk_full_while_saving_a_checkpoint(tmp_path, wav2vec_run):
    import resource
    import shutil
    import signal

    data, run_dir = wav2vec_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = (copy / "checkpoint_last.pt").read_bytes()
    size = len(before)

    def small_files():                         # files may not grow past half a checkpoint: the next save fails
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    proc = run("speechssl.train", "wav2vec", "--scale", "tiny", "--data", f"librispeech:{data}", "--subsets",
               "train-clean-100", "--max-steps", "2", "--out", str(copy), "--resume", preexec=small_files)
    expect(proc, 1, "could not write the checkpoint", "the disk is full", "nothing was left half-written",
           f"the last good checkpoint is {copy / 'checkpoint_last.pt'} and intact")
    assert (copy / "checkpoint_last.pt").read_bytes() == before
    assert not list(copy.glob(".*.tmp"))


def test_transcript_longer_than_its_audio(tmp_path):
    from speechssl.data.dataset import AudioDataset
    from speechssl.data.transcripts import TranscribedAudio
    from speechssl.finetune import PHONE_VOCAB
    from speechssl.recipes import recipe

    model = recipe("wav2vec2_ctc_scratch", "tiny").build(vocab=PHONE_VOCAB)
    utts = []
    for i, n in enumerate((16_000, 3_200)):              # 49 and 9 frames
        sf.write(tmp_path / f"u{i}.wav", noise(n), 16_000)
        utts.append(Utterance(id=f"u{i}", path=f"u{i}.wav", num_samples=n, speaker="s", phones=["AA", "B"] * 6))
    with pytest.warns(UserWarning, match=r"1 of 2 utterances have a transcript longer than their audio allows "
                                         r"\(e.g. 'u1': 12 frames needed, 9 available\) and are left out"):
        data = TranscribedAudio(AudioDataset(utts, tmp_path), model)
    assert len(data) == 1 and data.dropped == ["u1"] and list(data.sizes) == [16_000]


def test_resume_with_other_data(tmp_path, wav2vec_run):
    import shutil

    data, run_dir = wav2vec_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    other = tree(tmp_path / "other", good(3), subset="dev-clean")
    proc = run("speechssl.train", "wav2vec", "--scale", "tiny", "--data", f"librispeech:{other}", "--subsets",
               "dev-clean", "--max-steps", "2", "--out", str(copy), "--resume")
    expect(proc, 2, f"the run in {copy} was trained on librispeech:{data} (subsets ['train-clean-100'])",
           f"this command gives librispeech:{other} (subsets ['dev-clean'])")
    assert (copy / "checkpoint_last.pt").read_bytes() == (run_dir / "checkpoint_last.pt").read_bytes()
