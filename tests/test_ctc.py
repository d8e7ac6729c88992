"""CTC fine-tuning: vocabulary, freezing schedule, SpecAugment-style masking, the loss and greedy decoding."""

import pytest
import torch
import torch.nn.functional as F

from speechssl.errors import ConfigError
from speechssl.data.transcripts import BLANK, collate_ctc
from speechssl.decoding import greedy_decode
from speechssl.models.ctc import CTCConfig, Wav2Vec2CTC
from speechssl.models.wav2vec2 import Wav2Vec2, Wav2Vec2Config

VOCAB = ["AA", "B", "K", "S"]


def small_model(**cfg):
    cfg.setdefault("layer_drop", 0.0)                  # every layer runs, so gradient checks are exact
    torch.manual_seed(0)
    enc = Wav2Vec2(Wav2Vec2Config.preset("tiny", num_layers=2))
    return Wav2Vec2CTC(enc, VOCAB, CTCConfig(**cfg))


def batch(model, lengths=(16_000, 12_000), seqs=(["AA", "B", "K"], ["S", "S"])):
    g = torch.Generator().manual_seed(1)
    items = [{"id": f"u{i}", "audio": torch.randn(n, generator=g), "targets": model.encode_targets(s)}
             for i, (n, s) in enumerate(zip(lengths, seqs))]
    return collate_ctc(items)


def test_vocabulary_and_targets():
    m = small_model()
    assert m.num_outputs == 1 + len(VOCAB) and BLANK == 0
    assert m.encode_targets(["B", "AA"]).tolist() == [2, 1]
    assert m.decode_ids([0, 2, 0, 1]) == ["B", "AA"]
    with pytest.raises(ConfigError, match=r"utt7: symbols \['ZH'\] are not in the CTC vocabulary"):
        m.encode_targets(["AA", "ZH"], source="utt7")
    with pytest.raises(ConfigError, match="distinct symbols"):
        Wav2Vec2CTC(Wav2Vec2(Wav2Vec2Config.preset("tiny")), ["A", "A"])
    b = batch(m)
    assert b["targets"].tolist() == [[1, 2, 3], [4, 4, -1]] and b["target_lengths"].tolist() == [3, 2]


def test_freeze_schedule_and_feature_encoder_never_trained():
    m = small_model(freeze_updates=5)
    b = batch(m)
    for step, encoder_learns in ((0, False), (4, False), (5, True)):
        m.zero_grad(set_to_none=True)
        loss, met = m.compute_loss(b, num_updates=step)
        loss.backward()
        assert met["frozen"] == float(not encoder_learns)
        assert m.head.weight.grad is not None                                       # the output layer always learns
        layer_grad = m.encoder.encoder.layers[0].attention.q_proj.weight.grad
        assert (layer_grad is not None) == encoder_learns, step
        assert all(p.grad is None for p in m.encoder.feature_encoder.parameters())  # feature_grad_mult 0.0
    scratch = small_model(freeze_updates=0, train_feature_encoder=True)
    scratch.compute_loss(batch(scratch))[0].backward()
    assert all(p.grad is not None for p in scratch.encoder.feature_encoder.parameters())
    with pytest.raises(ConfigError, match="train_feature_encoder"):
        small_model(linear_probe=True, train_feature_encoder=True)
    probe = small_model(freeze_updates=0, linear_probe=True)
    loss, met = probe.compute_loss(batch(probe), num_updates=10**6)
    loss.backward()
    assert met["frozen"] == 1.0
    assert [n for n, p in probe.named_parameters() if p.grad is not None] == ["head.weight", "head.bias"]


def test_loss_is_ctc_summed_per_utterance_and_averaged():
    m = small_model(mask_prob=0.0, mask_channel_prob=0.0).eval()
    b = batch(m)
    loss, _ = m.compute_loss(b, num_updates=0)
    lp, frames = m(b["audio"], b["lengths"])
    per_utt = [F.ctc_loss(lp[i, : frames[i]].unsqueeze(1), b["targets"][i, : b["target_lengths"][i]].unsqueeze(0),
                          frames[i : i + 1], b["target_lengths"][i : i + 1], blank=0, reduction="sum")
               for i in range(2)]
    assert torch.allclose(loss, torch.stack(per_utt).mean(), atol=1e-4)


def test_masking_only_in_training_and_channel_spans():
    m = small_model(mask_prob=0.65, mask_channel_prob=0.25, mask_channel_length=8)
    cm = m.channel_mask(3)
    assert cm.shape == (3, m.encoder.cfg.embed_dim) and cm.any()
    m.eval()
    b = batch(m)
    with torch.no_grad():
        a, _ = m(b["audio"], b["lengths"])
        c, _ = m(b["audio"], b["lengths"])
    assert torch.equal(a, c)                                                         # no masking at evaluation
    m.train()
    torch.manual_seed(3)
    with torch.no_grad():
        d, _ = m(b["audio"], b["lengths"])
    assert not torch.allclose(a, d)
    with pytest.raises(ConfigError, match="mask_channel_prob"):
        CTCConfig(mask_channel_prob=70.0)
    with pytest.raises(ConfigError, match="freeze_updates"):
        CTCConfig(freeze_updates=-1)


def test_greedy_decode_merges_repeats_and_drops_blanks():
    path = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3, 3]])
    lp = F.one_hot(path, 5).float().log_softmax(-1)
    assert greedy_decode(lp, torch.tensor([10])) == [[1, 1, 2, 3]]
    assert greedy_decode(lp, torch.tensor([5])) == [[1, 1, 2]]                       # frames past the length ignored


def test_missing_targets_is_a_clear_error():
    m = small_model()
    b = batch(m)
    del b["targets"]
    with pytest.raises(ConfigError, match="needs 'targets' and 'target_lengths'"):
        m.compute_loss(b)


def test_beam_search_agrees_with_greedy_on_a_peaked_path():
    pytest.importorskip("flashlight.lib.text")  # in requirements-lock.txt, so CI runs this
    from speechssl.decoding import beam_decode

    path = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3, 4], [2, 0, 2, 2, 0, 0, 0, 0, 0, 0]])
    lp = (F.one_hot(path, 5).float() * 8).log_softmax(-1)
    lengths = torch.tensor([10, 6])
    assert beam_decode(lp, lengths, VOCAB, beam_size=8) == greedy_decode(lp, lengths) == [[1, 1, 2, 3, 4], [2, 2]]
    # where greedy's best path is not the most likely labelling, beam search finds the better one:
    # two frames each 0.6 blank / 0.4 "AA": best path = blank blank (empty), but p("AA") = 0.64 > p("") = 0.36
    two = torch.tensor([[[0.6, 0.4, 0.0, 0.0, 0.0]] * 2]).clamp_min(1e-6).log()
    assert greedy_decode(two, torch.tensor([2])) == [[]]
    assert beam_decode(two, torch.tensor([2]), VOCAB, beam_size=8) == [[1]]


def test_transcribed_audio_and_per(tmp_path):
    import soundfile as sf

    from speechssl.data.dataset import AudioDataset
    from speechssl.data.manifest import Utterance
    from speechssl.data.transcripts import TranscribedAudio
    from speechssl.decoding import evaluate_per

    m = small_model()
    utts = []
    for i, phones in enumerate((["AA", "B"], ["K", "S", "S"], [])):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, torch.randn(8_000).numpy() * 0.1, 16_000)
        utts.append(Utterance(id=f"u{i}", path=path.name, num_samples=8_000, speaker="s", phones=phones))
    with pytest.raises(ConfigError, match=r"utterance 'u2' \(u2.wav\): no phone transcript"):
        TranscribedAudio(AudioDataset(utts, tmp_path), m)
    utts[2].phones = ["AA", "ZH"]
    with pytest.raises(ConfigError, match=r"utterance 'u2': symbols \['ZH'\]"):
        TranscribedAudio(AudioDataset(utts, tmp_path), m)
    data = TranscribedAudio(AudioDataset(utts[:2], tmp_path), m)
    assert list(data.sizes) == [8_000, 8_000]                              # for the engine's length-grouped batches
    b = collate_ctc([data[0], data[1]])
    assert b["targets"].tolist() == [[1, 2, -1], [3, 4, 4]]
    per, pairs = evaluate_per(m, [b])
    assert [r for r, _ in pairs] == [["AA", "B"], ["K", "S", "S"]] and per.reference_length == 5
    assert per.errors == sum(__import__("torchaudio").functional.edit_distance(r, h) for r, h in pairs)
    assert m.training                                                      # mode restored


# ---- the collapse map and the forward recursion shown in chapter 4 ----

def test_collapse_merges_repeats_then_drops_blanks():
    from speechssl.decoding import collapse
    assert collapse([1, 1, 0, 1, 2, 2]) == [1, 1, 2]          # a blank keeps two equal labels apart
    assert collapse([1, 1, 1, 2]) == [1, 2] and collapse([0, 0]) == [] and collapse([]) == []


@pytest.mark.parametrize("target", [[1, 2], [1, 1], [2, 1, 2], [3]])
def test_ctc_forward_sums_every_path_that_collapses_to_the_target(target):
    """The recursion equals brute force over all (1 + V)^T paths, and torch's CTC loss."""
    import itertools

    import torch.nn.functional as F

    from speechssl.decoding import collapse, ctc_forward
    g = torch.Generator().manual_seed(len(target))
    lp = torch.randn(6, 4, generator=g, dtype=torch.float64).log_softmax(-1)
    alpha, total = ctc_forward(lp, target)
    paths = [p for p in itertools.product(range(4), repeat=6) if collapse(list(p)) == target]
    brute = torch.logsumexp(torch.stack([sum(lp[t, k] for t, k in enumerate(p)) for p in paths]), 0)
    torch_loss = F.ctc_loss(lp.float().unsqueeze(1), torch.tensor([target]), torch.tensor([6]),
                            torch.tensor([len(target)]), reduction="sum")
    assert alpha.shape == (6, 2 * len(target) + 1)
    assert abs(float(total) - float(brute)) < 1e-5
    assert abs(-float(total) - float(torch_loss)) < 1e-4


def test_ctc_forward_has_no_path_when_the_target_needs_more_frames():
    from speechssl.decoding import ctc_forward
    lp = torch.zeros(2, 3).log_softmax(-1)
    assert ctc_forward(lp, [1, 1])[1] == float("-inf")         # "a a" needs a, -, a: three frames
