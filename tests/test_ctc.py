"""CTC fine-tuning: vocabulary, freezing schedule, SpecAugment-style masking, the loss and greedy decoding."""

import pytest
import torch
import torch.nn.functional as F

from speechssl.errors import ConfigError
from speechssl.models.ctc import BLANK, CTCConfig, Wav2Vec2CTC, collate_ctc, greedy_decode
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
    x = torch.randn(3, 50, m.encoder.cfg.embed_dim)
    cm = m.channel_mask(x)
    assert cm.shape == (3, x.shape[-1]) and cm.any()
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
