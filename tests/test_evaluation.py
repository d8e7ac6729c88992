"""The chapters' library calls: evaluation batches and held-out losses, per-frame features and codes, codebook
usage, the phone probe and the masked-unit baselines."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.data.manifest import Utterance
from speechssl.data.units import UnitVocabulary
from speechssl.evaluation import batches, features_of, held_out, masked_prediction, unit_sequences, units_of
from speechssl.metrics import codebook_usage
from speechssl.probe import collect_frames, phone_probe
from speechssl.recipes import recipe


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    utts, labels = [], {}
    for i in range(5):
        n = 4000 + 800 * i
        sf.write(root / f"u{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16_000, subtype="FLOAT")
        utts.append(Utterance(id=f"u{i}", path=f"u{i}.wav", num_samples=n, speaker="s"))
        labels[f"u{i}"] = np.arange(1 + (n - 400) // 160) % 3
    return root, utts, labels


def test_codebook_usage():
    u = codebook_usage(np.array([[0, 1], [0, 1], [2, 3]]), 4)
    assert u.entries_used == (2, 2) and u.units_used == 2 and u.units.tolist() == [0, 0, 1]
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert u.unit_perplexity == pytest.approx(math.exp(h)) and u.code_perplexity == pytest.approx(2 * math.exp(h))


def test_collect_frames_keeps_dtypes_and_takes_dicts(corpus):
    root, utts, labels = corpus

    def views(wav):
        n = 1 + (len(wav) - 400) // 160
        return {"codes": torch.arange(n)[:, None].repeat(1, 2), "vec": torch.ones(n - 1, 3)}   # one frame short

    out, lab = collect_frames(views, utts, root, labels)
    total = sum(len(v) - 1 for v in labels.values())
    assert out["codes"].dtype == torch.int64 and out["codes"].shape == (total, 2)
    assert out["vec"].shape == (total, 3) and lab.shape == (total,)
    with pytest.raises(ValueError, match="same frame grid"):
        collect_frames(lambda wav: torch.ones(3, 2), utts, root, labels)


def test_held_out_is_seeded_restores_state_and_weights_by_count(corpus):
    root, utts, _ = corpus
    torch.manual_seed(0)
    model = recipe("wav2vec", "tiny", prediction_steps=2, num_negatives=3).build()
    b = batches(utts, root, batch_size=2)
    assert [len(x["lengths"]) for x in b] == [2, 2, 1]
    state = torch.random.get_rng_state()
    a = held_out(model, b, seed=3, weight="num_positives")
    assert torch.equal(state, torch.random.get_rng_state()) and model.training
    assert a == held_out(model, b, seed=3, weight="num_positives")            # the same distractors every time
    assert a["num_positives"] == sum(float(model.compute_loss(x)[1]["num_positives"]) for x in b)
    one = held_out(model, b[:1], seed=3, weight="num_positives")
    assert one["loss"] != a["loss"]


def test_features_units_and_sequences(corpus):
    root, utts, labels = corpus
    torch.manual_seed(0)
    vq = recipe("vq_wav2vec", "tiny").build()
    codes, lab = collect_frames(units_of(vq), utts, root, labels)
    assert codes.shape[1] == 2 and codes.dtype == torch.int64 and len(codes) == len(lab)
    seqs = unit_sequences(vq, utts, root)
    assert [len(s) for s in seqs] == [int(vq.frame_lengths(torch.tensor([u.num_samples]))) for u in utts]
    feats = features_of(vq, "context")(torch.randn(4000))
    assert feats.shape == (int(vq.frame_lengths(torch.tensor([4000]))), 96) and vq.training


def test_phone_probe_reads_separable_features(corpus):
    root, utts, labels = corpus
    onehot = lambda wav: torch.nn.functional.one_hot(torch.arange(1 + (len(wav) - 400) // 160) % 3, 3).float()  # noqa
    res = phone_probe(onehot, utts[:3], utts[3:], root, labels, labels, 3, epochs=60, lr=0.1)
    assert res.accuracy == 1.0 and res.dims == 3 and res.train_frames == sum(len(labels[u.id]) for u in utts[:3])
    assert 0.3 < res.majority < 0.4


def test_masked_prediction_baselines():
    torch.manual_seed(0)
    seqs = [torch.full((300,), 7), torch.full((300,), 7)]
    vocab = UnitVocabulary.build(seqs)
    bert = recipe("unit_bert", "tiny", vocab_size=len(vocab)).build()
    scores, n = masked_prediction(bert, vocab, seqs, seed=0)
    assert n > 0 and scores["copy nearest unmasked unit"] == 1.0 and scores["most frequent unit"] == 1.0
    assert 0.0 <= scores["BERT"] <= 1.0
    assert masked_prediction(bert, vocab, seqs, seed=0) == (scores, n)        # the same masks for the same seed
