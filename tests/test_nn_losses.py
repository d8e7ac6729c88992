"""wav2vec's contrastive loss against a direct computation of Eq. (1); negatives; masked-token loss."""

import math

import pytest
import torch

from speechssl.nn.losses import (binary_contrastive_chance, chance_loss, future_prediction_loss, masked_token_loss,
                                 sample_negatives)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def test_negatives_come_from_the_same_utterance_never_padding_nor_the_positive():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([40, 7, 2, 1, 0])
    idx = sample_negatives(lengths, 40, 10, generator=g)
    assert idx.shape == (5, 40, 10) and idx.dtype == torch.int64
    for b, n in enumerate(lengths.tolist()):
        for t in range(n if n >= 2 else 0):
            assert torch.all(idx[b, t] < n), "a negative from the padding"
            assert torch.all(idx[b, t] != t), "the positive drawn as a negative"
        assert torch.all(idx[b, max(n, 0):] == 0) or n >= 40
    # an utterance of 2 frames has exactly one possible distractor
    assert torch.all(idx[2, 0] == 1) and torch.all(idx[2, 1] == 0)


def test_negatives_are_uniform_over_the_other_frames():
    g = torch.Generator().manual_seed(1)
    idx = sample_negatives(torch.tensor([6]), 6, 3000, generator=g)
    counts = torch.bincount(idx[0, 2], minlength=6).float()
    assert counts[2] == 0
    others = counts[[0, 1, 3, 4, 5]] / 3000
    assert torch.allclose(others, torch.full((5,), 0.2), atol=0.04)


def eq1_by_hand(preds, targets, lengths, neg, offset=1):
    """Eq. (1): -sum_k sum_i [log s(z_{i+k}.h_k(c_i)) + sum_n log s(-z_n.h_k(c_i))], and the count."""
    bsz, tsz, steps, _ = preds.shape
    total, count = 0.0, 0
    for b in range(bsz):
        for k in range(steps):
            s = offset + k
            for i in range(tsz):
                j = i + s
                if j >= int(lengths[b]) or int(lengths[b]) < 2:
                    continue
                h = preds[b, i, k]
                term = log_sigmoid(float(h @ targets[b, j]))
                for n in neg[b, j].tolist():
                    term += log_sigmoid(-float(h @ targets[b, n]))
                total -= term
                count += 1
    return total, count


@pytest.mark.parametrize("offset", [1, 3])
def test_loss_equals_a_direct_computation_of_eq1(offset):
    torch.manual_seed(0)
    bsz, tsz, steps, dim, n_neg = 2, 9, 3, 4, 5
    preds = torch.randn(bsz, tsz, steps, dim, dtype=torch.float64)
    targets = torch.randn(bsz, tsz, dim, dtype=torch.float64)
    lengths = torch.tensor([9, 6])
    neg = sample_negatives(lengths, tsz, n_neg, generator=torch.Generator().manual_seed(3))
    out = future_prediction_loss(preds, targets, lengths, neg, offset=offset)
    total, count = eq1_by_hand(preds, targets, lengths, neg, offset)
    assert out.num_positives == count
    assert float(out.loss_sum) == pytest.approx(total, rel=1e-5)
    assert float(out.loss) == pytest.approx(total / count, rel=1e-5)
    assert int(out.step_count.sum()) == count


def test_padding_does_not_change_the_loss():
    torch.manual_seed(0)
    preds = torch.randn(1, 12, 2, 3)
    targets = torch.randn(1, 12, 3)
    lengths = torch.tensor([8])
    neg = sample_negatives(lengths, 12, 4, generator=torch.Generator().manual_seed(0))
    a = future_prediction_loss(preds, targets, lengths, neg)
    preds2, targets2 = preds.clone(), targets.clone()
    preds2[:, 8:] = 100.0
    targets2[:, 8:] = -100.0
    b = future_prediction_loss(preds2, targets2, lengths, neg)
    assert float(a.loss) == pytest.approx(float(b.loss))
    assert a.num_positives == (8 - 1) + (8 - 2)


def test_a_perfect_predictor_is_always_right_and_gradients_flow():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(2, 30, 16), dim=-1).requires_grad_(True)
    preds = torch.zeros(2, 30, 2, 16)
    preds[:, :29, 0] = 20 * z.detach()[:, 1:]
    preds[:, :28, 1] = 20 * z.detach()[:, 2:]
    preds.requires_grad_(True)
    lengths = torch.tensor([30, 30])
    out = future_prediction_loss(preds, z, lengths, sample_negatives(lengths, 30, 10))
    assert out.step_accuracy.tolist() == [1.0, 1.0] and float(out.accuracy) == 1.0
    out.loss.backward()
    assert preds.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


def test_chance_levels():
    # best constant classifier: p = 1/11 everywhere
    assert binary_contrastive_chance(10) == pytest.approx(-math.log(1 / 11) - 10 * math.log(10 / 11))
    assert binary_contrastive_chance(10) == pytest.approx(3.351, abs=1e-3)
    assert chance_loss("infonce", 10) == pytest.approx(math.log(11))
    # all-zero scores give (N + 1) ln 2
    preds = torch.zeros(1, 20, 1, 4)
    out = future_prediction_loss(preds, torch.randn(1, 20, 4), torch.tensor([20]),
                                 sample_negatives(torch.tensor([20]), 20, 10))
    assert float(out.loss) == pytest.approx(11 * math.log(2), rel=1e-6)
    assert float(out.accuracy) == 0.0  # ties are not counted as correct


def test_infonce_variant():
    torch.manual_seed(0)
    preds = torch.randn(1, 6, 1, 3, dtype=torch.float64)
    targets = torch.randn(1, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6])
    neg = sample_negatives(lengths, 6, 4, generator=torch.Generator().manual_seed(0))
    out = future_prediction_loss(preds, targets, lengths, neg, loss="infonce")
    total = 0.0
    for i in range(5):
        h = preds[0, i, 0]
        scores = torch.stack([h @ targets[0, i + 1]] + [h @ targets[0, n] for n in neg[0, i + 1].tolist()])
        total += float(torch.logsumexp(scores, 0) - scores[0])
    assert float(out.loss) == pytest.approx(total / 5, rel=1e-6)


def test_masked_token_loss_counts_only_masked_positions():
    logits = torch.randn(2, 5, 7)
    targets = torch.full((2, 5), -100)
    targets[0, 1], targets[1, 3] = 4, 2
    loss, acc, count = masked_token_loss(logits, targets)
    ref = torch.nn.functional.cross_entropy(torch.stack([logits[0, 1], logits[1, 3]]), torch.tensor([4, 2]))
    assert count == 2 and float(loss) == pytest.approx(float(ref))
    logits2 = logits.clone()
    logits2[0, 0] += 100.0  # an unmasked position
    assert float(masked_token_loss(logits2, targets)[0]) == pytest.approx(float(loss))
    zero, _, none = masked_token_loss(logits, torch.full((2, 5), -100))
    assert none == 0 and float(zero) == 0.0
