"""Atomic checkpoints: rotation, validation, and survival of a process killed mid-save."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import speechssl.checkpoint as ck
from speechssl.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    to_primitive,
)

LIB = str(Path(__file__).resolve().parents[1] / "lib")


def make_state(step, model_name="m", numel=1000, config=None):
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_name": model_name,
        "model_config": config if config is not None else {"dim": 4, "layers": (1, 2)},
        "model": {"w": torch.full((numel,), float(step))},
        "step": step,
    }


def temp_files(folder):
    return [p for p in Path(folder).iterdir() if p.name.endswith(".tmp")]


def test_save_and_load_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "sub" / "c.pt", make_state(3))
    state = load_checkpoint(path, model_name="m", model_config={"dim": 4, "layers": (1, 2)})
    assert state["step"] == 3 and torch.equal(state["model"]["w"], torch.full((1000,), 3.0))
    assert temp_files(tmp_path / "sub") == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", make_state(1))

    def broken(state, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_write_state", broken)
    with pytest.raises(ck.CheckpointError, match=r"could not write the checkpoint .*c.pt: OSError: disk full; "
                                                  r"nothing was left half-written"):
        save_checkpoint(path, make_state(2))
    assert load_checkpoint(path)["step"] == 1
    assert temp_files(tmp_path) == []


def test_manager_rotation_and_latest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    assert mgr.latest() is None
    for step in (10, 20, 30):
        mgr.save(make_state(step), step)
    assert [s for s, _ in mgr.numbered()] == [20, 30]
    assert mgr.latest() == mgr.last_path
    assert load_checkpoint(tmp_path)["step"] == 30  # a folder means its latest checkpoint
    assert load_checkpoint(mgr.path_for(20))["step"] == 20
    mgr.remove_all()
    assert list(tmp_path.iterdir()) == []


def test_manager_keep_zero_writes_only_last(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=0)
    mgr.save(make_state(1), 1)
    mgr.save(make_state(2), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]
    assert load_checkpoint(mgr.last_path)["step"] == 2


def test_last_survives_when_hard_links_fail(tmp_path, monkeypatch):
    def no_links(*a, **k):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    mgr = CheckpointManager(tmp_path, keep=1)
    mgr.save(make_state(1), 1)
    mgr.save(make_state(2), 2)
    assert load_checkpoint(mgr.last_path)["step"] == 2
    assert [s for s, _ in mgr.numbered()] == [2]


def test_other_model_is_refused_naming_both(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", make_state(5, model_name="wav2vec"))
    with pytest.raises(CheckpointError, match=r"checkpoint of model 'wav2vec', not of model 'hubert'"):
        load_checkpoint(path, model_name="hubert")


def test_other_model_config_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", make_state(5))
    with pytest.raises(CheckpointError, match=r"dim: checkpoint 4, current 8"):
        load_checkpoint(path, model_name="m", model_config={"dim": 8, "layers": (1, 2)})


def test_a_field_added_later_reads_as_its_default(tmp_path):
    """A checkpoint written before a configuration field existed still resumes when the field keeps its default
    (wav2vec 2.0's quantize_targets), and is refused when the run asks for another value."""
    import dataclasses

    from speechssl.models.wav2vec2 import Wav2Vec2Config

    cfg = Wav2Vec2Config.preset("tiny")
    old = to_primitive(cfg)
    del old["quantize_targets"]
    path = save_checkpoint(tmp_path / "c.pt", {**make_state(5), "model_config": old})
    load_checkpoint(path, model_name="m", model_config=cfg)
    with pytest.raises(CheckpointError, match=r"quantize_targets: checkpoint .*, current False"):
        load_checkpoint(path, model_name="m", model_config=dataclasses.replace(cfg, quantize_targets=False))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"", "is not a complete speechssl checkpoint"),
        ("truncated", "is not a complete speechssl checkpoint; it is truncated, corrupt"),
        ({"some": "dict"}, "expected a speechssl checkpoint"),
        ("incomplete", r"incomplete checkpoint, missing \['model'\]"),
        ("future", "newer than this version"),
    ],
)
def test_unusable_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "c.pt"
    if content == "truncated":
        save_checkpoint(path, make_state(1, numel=100_000))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "incomplete":
        state = make_state(1)
        del state["model"]
        save_checkpoint(path, state)
    elif content == "future":
        save_checkpoint(path, {**make_state(1), "version": CHECKPOINT_VERSION + 1})
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (random.random(), float(np.random.rand()), torch.rand(3))
    restore_rng_state(state)
    second = (random.random(), float(np.random.rand()), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


# --------------------------------------------------------------------- killed while saving

CHILD = textwrap.dedent(
    """
    import io, sys, time
    import torch
    import speechssl.checkpoint as ck

    folder, mode = sys.argv[1], sys.argv[2]
    mgr = ck.CheckpointManager(folder, keep=2)

    def state(step):
        return {"format": ck.CHECKPOINT_FORMAT, "version": ck.CHECKPOINT_VERSION,
                "model_name": "m", "model_config": None, "step": step,
                "model": {"w": torch.full((1 << 19,), float(step))}}

    if mode == "slow":
        mgr.save(state(1), 1)
        real = ck._write_state

        def slow(st, f):
            buf = io.BytesIO()
            real(st, buf)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            print("HALF", flush=True)
            time.sleep(60)
            f.write(data[len(data) // 2:])

        ck._write_state = slow
        mgr.save(state(2), 2)
    else:
        step = 0
        while True:
            step += 1
            mgr.save(state(step), step)
            print(step, flush=True)
    """
)


def _spawn(tmp_path, mode):
    script = tmp_path / "saver.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=LIB, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run"), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _read_until(proc, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child exited early: {proc.stderr.read()}")
        if predicate(line.strip()):
            return line.strip()
    raise AssertionError("child too slow")


def _check_complete(path, expected_step=None):
    state = load_checkpoint(path, model_name="m")
    step = state["step"]
    if expected_step is not None:
        assert step == expected_step
    w = state["model"]["w"]
    assert w.numel() == 1 << 19 and bool((w == float(step)).all())
    return step


def test_kill_during_slow_write_keeps_last_checkpoint(tmp_path):
    proc = _spawn(tmp_path, "slow")
    try:
        _read_until(proc, lambda s: s == "HALF")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = tmp_path / "run"
    mgr = CheckpointManager(run, keep=2)
    assert temp_files(run), "the half-written temporary file should be there"
    _check_complete(mgr.last_path, expected_step=1)
    assert [s for s, _ in mgr.numbered()] == [1]
    # the next run cleans up and carries on
    assert mgr.remove_stale_temp_files()
    mgr.save(make_state(2, numel=1 << 19), 2)
    _check_complete(mgr.last_path, expected_step=2)
    assert temp_files(run) == []


@pytest.mark.parametrize("delay_seed", [0, 1])
def test_kill_at_random_point_of_a_save_loop(tmp_path, delay_seed):
    proc = _spawn(tmp_path, "loop")
    try:
        _read_until(proc, lambda s: s.isdigit() and int(s) >= 3)
        time.sleep(random.Random(delay_seed).uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    mgr = CheckpointManager(tmp_path / "run", keep=2)
    last = _check_complete(mgr.last_path)
    assert last >= 3
    for step, path in mgr.numbered():
        _check_complete(path, expected_step=step)
