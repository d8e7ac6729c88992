"""Training objectives: wav2vec's binary contrastive future prediction and masked-token prediction.

wav2vec objective (Schneider et al. 2019, Sec. 2.2, Eq. 1). For every step ``k = 1..K`` the
context vector ``c_i`` must tell the latent frame ``z_{i+k}`` from distractors ``z~`` drawn
from the same utterance:

    L_k = - sum_i [ log sigma(z_{i+k}^T h_k(c_i)) + lambda * E_{z~ ~ p_n} log sigma(-z~^T h_k(c_i)) ]

with ``h_k(c) = W_k c + b_k`` a step-specific affine map, ``p_n`` uniform over the frames of the
utterance, and ``lambda`` the number of negatives, so that with the expectation estimated
from ``lambda`` samples the second term is a plain *sum* over the sampled distractors. The
model loss is ``L = sum_k L_k``.

Normalisation used here (and by fairseq, whose criterion sums the binary cross-entropy and
divides the gradient by ``sample_size`` = the number of positives): the returned ``loss`` is
``sum_k sum_i l_{k,i} / (number of (k, i) pairs)``, the mean over positives of
``-log sigma(pos) - sum_n log sigma(-neg_n)``. Its gradient is the paper's summed loss divided
by a per-batch constant, so its scale does not change with the batch or crop size.

``loss="infonce"`` (fairseq ``--infonce``, the cross-entropy of CPC, van den Oord et al. 2018)
scores the positive against its distractors with a softmax instead: ``-log softmax`` of the
positive among the ``N + 1`` candidates, chance ``ln(N + 1)``.

Chance levels of Eq. (1), for reading curves: scoring every candidate 0 gives ``(N + 1) ln 2`` (7.62 for
N = 10); the best classifier that ignores its input predicts ``p = 1 / (N + 1)`` everywhere and
gets :func:`binary_contrastive_chance` (3.35 for N = 10); the accuracy of ranking the positive
above all ``N`` distractors is ``1 / (N + 1)`` at chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ContrastiveOutput",
    "binary_contrastive_chance",
    "chance_loss",
    "future_prediction_loss",
    "masked_token_loss",
    "sample_negatives",
]


def binary_contrastive_chance(num_negatives: int) -> float:
    """Loss per positive of the best input-independent classifier, ``H(1/(N+1))`` scaled by ``N+1``.

    ``-log p - N log(1 - p)`` with ``p = 1 / (N + 1)``; 3.35 nats for ``N = 10``. A wav2vec loss
    below this value means the context predicts the future better than the class prior alone.
    """
    n = num_negatives
    p = 1.0 / (n + 1)
    return -math.log(p) - n * math.log1p(-p)


def chance_loss(loss: str, num_negatives: int) -> float:
    """Loss of the best input-independent predictor: :func:`binary_contrastive_chance` for
    ``"binary"`` (Eq. 1), ``ln(N + 1)`` for ``"infonce"``."""
    if loss == "binary":
        return binary_contrastive_chance(num_negatives)
    if loss == "infonce":
        return math.log(num_negatives + 1)
    raise ValueError(f"loss must be 'binary' or 'infonce', got {loss!r}")


def sample_negatives(lengths: torch.Tensor, num_frames: int, num_negatives: int, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Distractor indices drawn uniformly from the *same* utterance, never the target itself.

    For target frame ``j`` of utterance ``b`` each of the ``N`` indices is uniform over
    ``{0, ..., lengths[b] - 1} \\ {j}`` (with replacement), so distractors never come from
    padding nor from the positive (fairseq ``Wav2VecPredictionsModel.sample_negatives``:
    draw from ``T - 1`` values and shift those ``>= j`` by one). Padded targets
    (``j >= lengths[b]``) and utterances with fewer than 2 frames get index 0; the loss ignores
    them.

    Args:
        lengths: ``(B,)`` valid frames per utterance.
        num_frames: ``T``, the padded number of frames.
        num_negatives: ``N``.
        generator: optional generator (its device is used for sampling).

    Returns:
        ``(B, T, N)`` int64 on the device of ``lengths``.
    """
    bsz = lengths.shape[0]
    dev = generator.device if generator is not None else lengths.device
    lens = lengths.to(dev, torch.int64)
    high = (lens - 1).clamp_min(1).view(bsz, 1, 1)                       # candidates per target
    u = torch.rand(bsz, num_frames, num_negatives, generator=generator, device=dev)
    idx = torch.minimum((u * high).long(), high - 1)                     # (B, T, N) in [0, high)
    target = torch.arange(num_frames, device=dev).view(1, num_frames, 1)
    idx = idx + (idx >= target).long()                                   # skip the positive
    valid = (target < lens.view(bsz, 1, 1)) & (lens.view(bsz, 1, 1) >= 2)
    return torch.where(valid, idx, torch.zeros_like(idx)).to(lengths.device)


@dataclass
class ContrastiveOutput:
    """Result of :func:`future_prediction_loss`.

    ``loss``: scalar mean over positives; ``loss_sum``: the paper's summed loss
    ``sum_k L_k``; ``step_loss``/``step_accuracy``/``step_count``: ``(K,)`` per step ``k``;
    ``accuracy``: share of positives scored strictly above all their distractors.
    """

    loss: torch.Tensor
    loss_sum: torch.Tensor
    num_positives: int
    step_loss: torch.Tensor
    step_accuracy: torch.Tensor
    step_count: torch.Tensor
    accuracy: torch.Tensor


def future_prediction_loss(predictions: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                           negative_indices: torch.Tensor, *, offset: int = 1, loss: str = "binary") -> ContrastiveOutput:
    """wav2vec's Eq. (1) summed over steps, normalised by the number of positives.

    Args:
        predictions: ``(B, T, K, D)``: ``h_k(c_i)`` for every frame ``i`` and step ``k``.
        targets: ``(B, T, D)``: the latent frames ``z`` (or quantized ``z^`` for vq-wav2vec).
        lengths: ``(B,)`` valid frames per utterance.
        negative_indices: ``(B, T, N)`` distractor frame indices for every *target* frame
            (:func:`sample_negatives`); shared by all steps, as in fairseq.
        offset: the first step predicts ``offset`` frames ahead; step ``k`` (0-based) predicts
            ``offset + k`` ahead. 1 gives the paper's ``k = 1..K``.

    Returns:
        :class:`ContrastiveOutput`. Positions whose target falls in padding are left out.
    """
    if predictions.dim() != 4:
        raise ValueError(f"predictions must have shape (B, T, K, D), got {tuple(predictions.shape)}")
    if loss not in ("binary", "infonce"):
        raise ValueError(f"loss must be 'binary' or 'infonce', got {loss!r}")
    bsz, tsz, steps, dim = predictions.shape
    if targets.shape != (bsz, tsz, dim):
        raise ValueError(f"targets must have shape {(bsz, tsz, dim)}, got {tuple(targets.shape)}")
    if negative_indices.dim() != 3 or negative_indices.shape[:2] != (bsz, tsz):
        raise ValueError(f"negative_indices must have shape (B={bsz}, T={tsz}, N), got {tuple(negative_indices.shape)}")
    num_neg = negative_indices.shape[2]
    preds = predictions.float()
    tgt = targets.float()
    # distractor vectors for every target frame: (B, T, N, D)
    flat = negative_indices.reshape(bsz, tsz * num_neg, 1).expand(-1, -1, dim)
    negs = torch.gather(tgt, 1, flat).view(bsz, tsz, num_neg, dim)
    lens = lengths.to(preds.device)
    has_distractor = (lens >= 2).view(bsz, 1)

    step_sum, step_correct, step_count = [], [], []
    for k in range(steps):
        s = offset + k
        n_pos = tsz - s
        if n_pos <= 0:
            zero = preds.sum() * 0.0
            step_sum.append(zero)
            step_correct.append(zero.detach())
            step_count.append(zero.detach())
            continue
        # [eq step-scores]
        h = preds[:, :n_pos, k]                                           # (B, T-s, D)
        pos = (h * tgt[:, s:]).sum(-1)                                    # (B, T-s)
        neg = torch.einsum("btd,btnd->btn", h, negs[:, s:])              # (B, T-s, N)
        # [/eq step-scores]
        valid = (torch.arange(n_pos, device=preds.device)[None, :] + s < lens[:, None]) & has_distractor
        # [eq binary-or-infonce]
        if loss == "binary":
            per_pos = F.softplus(-pos) + F.softplus(neg).sum(-1)         # -log s(pos) - sum log s(-neg)
        else:                                                            # -log softmax(pos | pos, negs)
            per_pos = torch.logsumexp(torch.cat([pos.unsqueeze(-1), neg], -1), -1) - pos
        # [/eq binary-or-infonce]
        m = valid.to(per_pos.dtype)
        step_sum.append((per_pos * m).sum())
        correct = (pos > neg.amax(-1)) if num_neg > 0 else torch.ones_like(valid)
        step_correct.append((correct.to(per_pos.dtype) * m).sum().detach())
        step_count.append(m.sum().detach())

    step_sum_t = torch.stack(step_sum)          # (K,)
    step_count_t = torch.stack(step_count)      # (K,)
    step_correct_t = torch.stack(step_correct)  # (K,)
    total = step_count_t.sum()
    loss_sum = step_sum_t.sum()
    denom = total.clamp_min(1.0)
    return ContrastiveOutput(
        loss=loss_sum / denom,
        loss_sum=loss_sum,
        num_positives=int(total.item()),
        step_loss=(step_sum_t.detach() / step_count_t.clamp_min(1.0)),
        step_accuracy=step_correct_t / step_count_t.clamp_min(1.0),
        step_count=step_count_t,
        accuracy=step_correct_t.sum() / denom,
    )


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
                      ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Cross-entropy over the positions whose target is not ``ignore_index`` (BERT's MLM loss).

    Args:
        logits: ``(B, T, V)``.
        targets: ``(B, T)`` token ids at masked positions, ``ignore_index`` elsewhere.

    Returns:
        ``(loss, accuracy, count)``: mean cross-entropy over masked positions, the share of them
        predicted exactly (argmax), and their number. With no masked position the loss is a
        zero that keeps the graph.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, T, V) and targets (B, T); got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    sel = targets != ignore_index
    count = int(sel.sum().item())
    if count == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach(), 0
    lg = logits[sel].float()  # (M, V)
    tg = targets[sel]         # (M,)
    loss = F.cross_entropy(lg, tg)
    acc = (lg.argmax(-1) == tg).float().mean().detach()
    return loss, acc, count
