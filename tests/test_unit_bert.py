"""BERT on units: vocabulary, span-masking rate, loss on masked positions only, a short training run."""

import pytest
import torch
import torch.nn.functional as F

from speechssl.errors import ConfigError
from speechssl.nn.masking import corrupt_tokens, expected_mask_fraction, span_mask
from speechssl.data.units import UnitSequences, UnitVocabulary, collate_units
from speechssl.models.unit_bert import UnitBert, UnitBertConfig
from speechssl.recipes import recipe


def test_vocabulary_of_observed_units():
    vocab = UnitVocabulary.build([torch.tensor([5, 5, 9, -1]), [9, 9, 700]])
    assert vocab.units == [9, 5, 700]                       # by count, then id
    assert len(vocab) == 3 + 3
    enc = vocab.encode(torch.tensor([[9, 5, 700, 4, -1, 10 ** 6]]))
    assert enc.tolist() == [[3, 4, 5, UnitVocabulary.UNK, UnitVocabulary.PAD, UnitVocabulary.UNK]]
    assert vocab.decode(enc).tolist() == [[9, 5, 700, -1, -1, -1]]
    with pytest.raises(ConfigError):
        UnitVocabulary.build([[-1, -1]])


def test_collate_units_pads_and_crops():
    batch = collate_units([torch.arange(3, 10), torch.arange(3, 6)])
    assert batch["tokens"].shape == (2, 7) and batch["lengths"].tolist() == [7, 3]
    assert torch.all(batch["tokens"][1, 3:] == UnitVocabulary.PAD)
    cropped = collate_units([torch.arange(100)], max_len=10, generator=torch.Generator().manual_seed(0))
    assert cropped["tokens"].shape == (1, 10)
    assert torch.equal(cropped["tokens"][0], torch.arange(int(cropped["tokens"][0, 0]), int(cropped["tokens"][0, 0]) + 10))


def tiny_model(vocab=40, **kw):
    return UnitBert(UnitBertConfig.preset("tiny", vocab_size=vocab, **kw))


def test_masking_rate_of_the_paper():
    torch.manual_seed(0)
    m = tiny_model()
    tokens = torch.randint(3, 40, (8, 1000))
    _, metrics = m.compute_loss({"tokens": tokens, "lengths": torch.full((8,), 1000)}, 0)
    assert m.cfg.mask_start_prob == 0.05 and m.cfg.mask_span == 10
    assert metrics["mask_frac"] == pytest.approx(expected_mask_fraction(0.05, 10), abs=0.03)


def test_loss_is_the_cross_entropy_of_masked_positions_only():
    m = tiny_model().eval()                     # no dropout: the same RNG draws below
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 40, (3, 60), generator=g)
    lengths = torch.tensor([60, 45, 30])
    tokens[1, 45:] = 0
    tokens[2, 30:] = 0
    torch.manual_seed(7)
    loss, metrics = m.compute_loss({"tokens": tokens, "lengths": lengths}, 0)
    torch.manual_seed(7)
    mask = span_mask(lengths, 60, 0.05, 10, min_spans=1)
    inputs, targets = corrupt_tokens(tokens, mask, UnitVocabulary.MASK)
    assert not mask[1, 45:].any() and not mask[2, 30:].any()
    assert torch.all(targets[~mask] == -100) and torch.all(inputs[mask] == UnitVocabulary.MASK)
    logits = m.lm_head(m(inputs, lengths).x)                  # (B, T, V)
    ref = F.cross_entropy(logits.view(-1, 40), targets.view(-1), ignore_index=-100)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert metrics["num_masked"] == float(mask.sum())


def test_tiny_model_learns_a_repetitive_unit_language():
    torch.manual_seed(0)
    m = tiny_model(vocab=20, dropout=0.0, attention_dropout=0.0)
    # units that persist for 4-8 frames, like 10 ms units inside a phone
    seqs = []
    for _ in range(8):
        units = torch.randint(3, 20, (25,))
        durations = torch.randint(4, 9, (25,))
        seqs.append(torch.repeat_interleave(units, durations)[:120])
    batch = collate_units(seqs)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    first = None
    for step in range(40):
        loss, metrics = m.compute_loss(batch, step)
        opt.zero_grad(); loss.backward(); opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < first - 0.5
    assert float(metrics["acc"]) > 1 / 17 * 2


def test_errors():
    with pytest.raises(ConfigError, match="vocab_size"):
        UnitBertConfig(vocab_size=3)
    with pytest.raises(ConfigError, match="num_heads"):
        UnitBertConfig.preset("tiny", vocab_size=10, num_heads=3)
    with pytest.raises(ConfigError, match="preset"):
        UnitBertConfig.preset("huge", vocab_size=10)
    m = tiny_model(vocab=10)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        m(torch.tensor([[3, 11]]))
    with pytest.raises(ConfigError, match="empty batch"):
        m.compute_loss({"tokens": torch.zeros(0, 5, dtype=torch.long)}, 0)
    with pytest.raises(ValueError, match="max_positions"):
        m(torch.full((1, 2000), 3))


def test_preset_sizes():
    base = UnitBertConfig.preset("base", vocab_size=13_503)
    assert (base.embed_dim, base.num_layers, base.num_heads, base.ffn_dim) == (768, 12, 12, 3072)
    small = UnitBertConfig.preset("small", vocab_size=100)
    assert (small.embed_dim, small.ffn_dim, small.num_heads, small.dropout) == (512, 2048, 8, 0.05)
    m = tiny_model(vocab=50)
    assert m.lm_head.embedding.weight is m.token_embedding.weight   # tied output matrix
    hidden = m.extract_features(torch.randint(3, 50, (2, 12)), layer=1)
    assert hidden.shape == (2, 12, 128)


def test_unit_sequences_crop_deterministically_per_epoch():
    seqs = [torch.arange(3, 3 + n) for n in (5, 40, 300)]
    ds = UnitSequences(seqs, max_len=32, seed=1)
    assert list(ds.sizes) == [5, 32, 32]
    assert torch.equal(ds[0], seqs[0])
    a = ds[2]
    assert a.numel() == 32 and torch.equal(a, torch.arange(int(a[0]), int(a[0]) + 32))  # a contiguous window
    assert torch.equal(ds[2], a)                   # same epoch, same crop, whatever the access order
    starts = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        starts.add(int(ds[2][0]))
    assert len(starts) > 1                         # a new crop each epoch
    with pytest.raises(ConfigError, match="empty"):
        UnitSequences([torch.arange(4), torch.zeros(0)])
    with pytest.raises(ConfigError, match="max_len"):
        UnitSequences(seqs, max_len=0)


def test_trainer_trains_unit_bert_on_token_batches(tmp_path):
    from speechssl.engine import Trainer

    torch.manual_seed(0)
    seqs = []
    for _ in range(24):
        units = torch.randint(3, 20, (12,))       # long runs: a masked span is mostly its neighbours' unit
        seqs.append(torch.repeat_interleave(units, torch.randint(14, 22, (12,)))[:150])
    cfg = recipe("unit_bert", "tiny", vocab_size=20, out_dir=str(tmp_path), device="cpu", log_every=5, ckpt_every=0,
                 max_steps=60, warmup_steps=5, lr=3e-3, max_batch_samples=1024, crop_samples=128).train
    model = tiny_model(vocab=20, dropout=0.0, attention_dropout=0.0)
    history = Trainer(model, cfg, UnitSequences(seqs, max_len=cfg.crop_samples, seed=cfg.seed), collate_units).fit()
    assert [h["step"] for h in history] == list(range(5, 61, 5))
    assert history[-1]["loss"] < history[0]["loss"] - 0.4          # measured: 2.97 -> 2.44
    assert history[-1]["acc"] > 2 / 17                              # twice chance among 17 units (0.25)
    assert 0.2 < history[-1]["mask_frac"] < 0.7


@pytest.mark.parametrize("scale", ["tiny", "reduced", "full"])
def test_training_settings_are_engine_configs(scale):
    r = recipe("unit_bert", scale, vocab_size=100)
    cfg = r.train
    assert r.model.vocab_size == 100
    with pytest.raises(ConfigError, match=r"expected a value for \['vocab_size'\]"):
        recipe("unit_bert", scale)
    assert cfg.schedule == "polynomial" and cfg.min_lr == 0.0      # linear warm-up, linear decay to 0 (Sec. 5.3)
    if scale == "full":
        assert (cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.max_batch_samples) == (1e-5, 10_000, 250_000, 3_072)
