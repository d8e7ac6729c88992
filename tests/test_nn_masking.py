"""Span masking (vq-wav2vec BERT, wav2vec 2.0) and BERT token corruption."""

import pytest
import torch

from speechssl.errors import ConfigError
from speechssl.nn.masking import corrupt_tokens, expected_mask_fraction, span_mask


def test_mask_rate_matches_one_minus_one_minus_p_to_the_m():
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((64,), 2000)
    mask = span_mask(lengths, 2000, 0.05, 10, generator=g)
    expected = expected_mask_fraction(0.05, 10)  # 0.401
    assert expected == pytest.approx(1 - 0.95 ** 10)
    assert float(mask.float().mean()) == pytest.approx(expected, abs=0.02)
    w2v2 = span_mask(lengths, 2000, 0.065, 10, generator=g)  # wav2vec 2.0: about 49%
    assert float(w2v2.float().mean()) == pytest.approx(expected_mask_fraction(0.065, 10), abs=0.02)


def test_spans_never_touch_padding_and_have_length_m():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([50, 23, 5, 0])
    mask = span_mask(lengths, 50, 0.02, 10, min_spans=1, generator=g)
    for b, n in enumerate(lengths.tolist()):
        assert not mask[b, n:].any()
    assert mask[0].sum() >= 10 and mask[1].sum() >= 10
    # shorter than a span: fairseq draws the start from the first n + 1 = 2 positions and cuts the span
    assert mask[2, 1:5].all() and mask[2].sum() >= 4
    assert not mask[3].any()
    # a single span is M contiguous positions
    one = span_mask(torch.tensor([100]), 100, 0.0, 10, min_spans=1, generator=g)[0]
    pos = one.nonzero().flatten()
    assert len(pos) == 10 and int(pos[-1] - pos[0]) == 9


def test_span_starts_follow_fairseq_range():
    # fairseq compute_mask_indices draws starts from 0 .. L - M - 1: with L = 30 and M = 10 the
    # last start is 19, so the last frame is never masked, while frame 28 can be
    g = torch.Generator().manual_seed(2)
    masks = span_mask(torch.full((4000,), 30), 30, 0.05, 10, min_spans=1, generator=g)
    assert not masks[:, 29].any() and masks[:, 28].any() and masks[:, 0].any()


def test_masks_are_reproducible_with_a_generator():
    a = span_mask(torch.tensor([300, 200]), 300, 0.05, 10, generator=torch.Generator().manual_seed(5))
    b = span_mask(torch.tensor([300, 200]), 300, 0.05, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_corrupt_tokens_mask_only():
    tokens = torch.arange(3, 23).view(2, 10)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 2:5] = True
    inputs, targets = corrupt_tokens(tokens, mask, mask_id=1)
    assert torch.all(inputs[mask] == 1) and torch.equal(inputs[~mask], tokens[~mask])
    assert torch.equal(targets[mask], tokens[mask]) and torch.all(targets[~mask] == -100)


def test_corrupt_tokens_bert_80_10_10():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 50, (1, 20000), generator=g)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    inputs, _ = corrupt_tokens(tokens, mask, 1, random_prob=0.1, keep_prob=0.1, random_range=(3, 50), generator=g)
    frac_mask = float((inputs == 1).float().mean())
    frac_same = float((inputs == tokens).float().mean())
    assert frac_mask == pytest.approx(0.8, abs=0.02)
    assert frac_same == pytest.approx(0.1 + 0.1 / 47, abs=0.02)   # kept, or a random draw of the same id
    assert int(inputs[inputs != 1].min()) >= 3


def test_masking_errors():
    with pytest.raises(ConfigError, match="start_prob"):
        span_mask(torch.tensor([10]), 10, 1.5, 10)
    with pytest.raises(ConfigError, match="span_length"):
        span_mask(torch.tensor([10]), 10, 0.1, 0)
    with pytest.raises(ConfigError, match="random_range"):
        corrupt_tokens(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool), 1, random_prob=0.1)
