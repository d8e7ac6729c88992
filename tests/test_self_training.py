"""wav2vec-U's self-training round: the generator's transcripts as CTC labels."""

import pytest
import torch

from speechssl.data.manifest import Utterance
from speechssl.data.phones import PHONES, SILENCE
from speechssl.errors import ConfigError
from speechssl.models.wav2vec_u import GanConfig, Wav2VecU
from speechssl.self_training import pseudo_labels, relabelled
from speechssl.wav2vec_u import solution_weights


class CipherStages:
    """What pseudo_labels reads of a Stages: the training segments and the model of an evaluation point."""

    def __init__(self, sequences, dim=16):
        g = torch.Generator().manual_seed(0)
        self.code = torch.randn(len(PHONES), dim, generator=g)
        self.train = [self.code[torch.tensor([PHONES.index(p) for p in s])] for s in sequences]

    def segments(self):
        return {"train": self.train}

    def model(self, point):
        model = Wav2VecU(GanConfig(input_dim=self.code.size(1), num_phones=len(PHONES)))
        with torch.no_grad():
            model.generator.proj.weight.copy_(solution_weights(self.code, model.cfg.generator_kernel, point["margin"]))
        return model.eval()


def test_a_generator_that_solves_the_cipher_gives_the_true_phones_without_silence():
    a, b, c, d = [p for p in PHONES if p != SILENCE][:4]
    sequences = [[SILENCE, a, b, SILENCE, c, SILENCE], [SILENCE, d, a, c, b, SILENCE], [SILENCE, b, SILENCE]]
    stages = CipherStages(sequences)
    assert pseudo_labels(stages, {"margin": 10.0}) == [[a, b, c], [d, a, c, b], [b]]
    # a generator with no margin reads nothing: every output ties, and the transcripts are not the phones
    assert pseudo_labels(stages, {"margin": 0.0}) != [[a, b, c], [d, a, c, b], [b]]


def utterance(i, phones):
    return Utterance(id=f"u{i}", path=f"u{i}.flac", num_samples=16000, speaker="s", text="a b", words=["a", "b"],
                     phones=phones, alignment=[(phones[0], 0, 16000)] if phones else [])


def test_relabelled_copies_replace_the_transcript_and_drop_the_true_labels():
    utts = [utterance(0, ["AA", "B"]), utterance(1, ["K"]), utterance(2, ["D"])]
    kept, left_out = relabelled(utts, [["T"], [], ["S", "Z"]])
    assert [u.id for u in kept] == ["u0", "u2"] and left_out == ["u1"]
    assert [u.phones for u in kept] == [["T"], ["S", "Z"]]
    assert all(u.words == [] and u.text == "" and u.alignment == [] for u in kept)
    assert utts[0].phones == ["AA", "B"] and utts[0].words == ["a", "b"]          # the originals are untouched


def test_relabelled_refuses_a_transcript_count_that_does_not_match():
    with pytest.raises(ConfigError, match="expected one transcript per utterance \\(2\\), found 1"):
        relabelled([utterance(0, ["AA"]), utterance(1, ["B"])], [["T"]])


def test_the_command_stage_runs_once_per_transcripts_and_model(tmp_path, monkeypatch):
    """``fine_tune`` (and so ``self_train``) trains again only when the transcripts, the pre-trained model, the
    scale or the seed change; otherwise it returns what the JSON file beside its run folder holds."""
    import json
    import types

    import speechssl.self_training as st

    calls = []

    def fake_tune(stages, labels, pretrained, folder, *, scale, seed):
        calls.append((labels, folder.name))
        return {"labels": None, "left_out": 0, "updates": 7, "test": None}

    labels = [["AE", "T"], ["D"]]
    monkeypatch.setattr(st, "_tune", fake_tune)
    monkeypatch.setattr(st, "pseudo_labels", lambda stages, point: [list(t) for t in labels])
    stages = types.SimpleNamespace(folder=tmp_path, source="weights-a")
    point = {"seed": 2, "update": 750}
    first = st.self_train(stages, point, "model", scale="tiny")
    assert calls == [(labels, "self-training")] and (first["seed"], first["update"], first["updates"]) == (2, 750, 7)
    assert st.self_train(stages, point, "model", scale="tiny") == first
    saved = json.loads((tmp_path / "self-training.json").read_text())
    assert {k: saved[k] for k in ("labels", "left_out", "updates", "test")} == {"labels": None, "left_out": 0,
                                                                             "updates": 7, "test": None}
    assert len(calls) == 1
    labels[1] = ["T"]                                   # another generator's transcripts
    st.self_train(stages, point, "model", scale="tiny")
    stages.source = "weights-b"                         # another pre-trained model
    st.self_train(stages, point, "model", scale="tiny")
    st.self_train(stages, point, "model", scale="tiny", seed=1)     # another seed
    assert len(calls) == 4
    (tmp_path / "self-training.json").write_text("{")     # an interrupted write elsewhere: made again
    assert st.self_train(stages, point, "model", scale="tiny")["updates"] == 7 and len(calls) == 5
    # the chapter's reference run on the true transcripts is cached beside its own folder
    st.fine_tune(stages, [["D"]], "model", tmp_path / "true-labels", scale="tiny")
    st.fine_tune(stages, [["D"]], "model", tmp_path / "true-labels", scale="tiny")
    assert len(calls) == 6 and (tmp_path / "true-labels.json").is_file()
