"""Training on the CPU is bit-exact: two runs of the same tiny recipe with 2 threads give the same losses
and weights, bit for bit. An op whose backward accumulates from several threads in no fixed order
(advanced indexing with repeated indices, scatter-add) breaks this; the wav2vec 2.0 distractor gather did."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechssl.data.manifest import Utterance, write_manifest
from speechssl.finetune import PHONE_VOCAB

TESTS = Path(__file__).resolve().parent
MODELS = ["wav2vec", "vq_wav2vec", "vq_wav2vec_kmeans", "wav2vec2", "hubert", "unit_bert", "wav2vec2_ctc_scratch"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(16):
        n = int(rng.integers(34_000, 60_000))
        sf.write(root / f"u{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16_000, subtype="FLOAT")
        phones = list(rng.choice(PHONE_VOCAB, size=int(rng.integers(8, 20))))
        utts.append(Utterance(id=f"u{i}", path=f"u{i}.wav", num_samples=n, speaker=f"s{i % 4}", phones=phones))
    write_manifest(root, "train", utts)
    return root


def run_twice(model: str, corpus: Path, tmp_path: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "lib"), os.environ.get("PYTHONPATH", "")]),
           "SPEECHSSL_PROGRESS": "0", "OMP_NUM_THREADS": "2"}
    out = []
    for i in range(2):
        proc = subprocess.run([sys.executable, str(TESTS / "determinism_worker.py"), model, str(corpus),
                               str(tmp_path / f"run{i}")], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.parametrize("model", MODELS)
def test_two_runs_with_two_threads_are_identical(model, corpus, tmp_path):
    a, b = run_twice(model, corpus, tmp_path)
    assert len(a["losses"]) == 12
    assert a["losses"] == b["losses"]                  # exact: float equality of every logged loss
    assert a["weights"] == b["weights"]                # and of every weight, bit for bit


# The graph check below finds the cause directly: two runs can agree by luck of thread timing, a graph
# with an atomically accumulating backward cannot be trusted to.

#: Backward nodes whose forward adds into shared slots (index_put with accumulate, scatter-add).
ACCUMULATING = {"IndexPutBackward0", "ScatterAddBackward0", "ScatterReduceBackward0", "IndexPutImplBackward0"}


def atomic_accumulations(loss) -> list[str]:
    """Nodes of ``loss``'s graph whose backward adds into the same slot from several threads: advanced
    indexing with repeated integer indices (its backward is ``index_put_(accumulate=True)``, parallel with
    atomic adds on the CPU) and the ops in :data:`ACCUMULATING`."""
    import torch

    found, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__
        if name in ACCUMULATING:
            found.append(name)
        if name == "IndexBackward0":
            index = [i for i in node._saved_indices if i is not None and not i.dtype == torch.bool]
            if index:
                rows = torch.stack(torch.broadcast_tensors(*index), -1).reshape(-1, len(index))
                if len(torch.unique(rows, dim=0)) < len(rows):
                    found.append(f"{name} with repeated indices {tuple(index[0].shape)}")
        stack.extend(n for n, _ in node.next_functions)
    return found


def test_the_check_finds_a_gather_with_repeated_indices():
    import torch

    y = torch.randn(10, 4, requires_grad=True)
    idx = torch.randint(0, 10, (30, 5))
    assert atomic_accumulations(y[idx].sum()) == ["IndexBackward0 with repeated indices (30, 5)"]
    assert atomic_accumulations(y.index_select(0, idx.reshape(-1)).sum()) == []
    assert atomic_accumulations(y[torch.arange(10) % 2 == 0].sum()) == []                 # a boolean mask: no repeats
    target = torch.zeros(10, 4, requires_grad=True)
    assert atomic_accumulations(target.index_put((idx[:, 0],), y[idx[:, 0]], accumulate=True).sum()) == [
        "IndexPutBackward0", "IndexBackward0 with repeated indices (30,)"]


@pytest.mark.parametrize("model", MODELS)
def test_no_loss_accumulates_atomically(model, corpus):
    import torch

    from speechssl.data.dataset import AudioDataset, collate_audio
    from speechssl.data.manifest import read_manifest
    from speechssl.data.transcripts import collate_ctc
    from speechssl.data.units import collate_units
    from speechssl.finetune import transcribed
    from speechssl.recipes import recipe

    torch.manual_seed(0)
    utts = read_manifest(corpus, "train")[:4]
    if model == "unit_bert":
        m = recipe(model, "tiny", vocab_size=40).build()
        batch = collate_units([torch.randint(3, 40, (200,)) for _ in range(4)])
    elif model.startswith("wav2vec2_ctc"):
        m = recipe(model, "tiny").build(vocab=PHONE_VOCAB)
        data = transcribed(m, utts, corpus, "phones")
        batch = collate_ctc([data[i] for i in range(4)])
    else:
        m = recipe(model, "tiny").build()
        batch = collate_audio([AudioDataset(utts, corpus)[i] for i in range(4)])
        if model == "hubert":
            batch["labels"] = torch.randint(0, 100, (4, batch["audio"].shape[1] // 320))
    loss, _ = m.compute_loss(batch, 10_000)
    assert atomic_accumulations(loss) == []
