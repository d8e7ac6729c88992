"""CTC's collapse and forward recursion, decoding (best path, lexicon-free beam search), and the
error rate of a model.

Greedy (best-path) decoding takes the most likely output of every frame, merges repeats and drops
blanks. Beam search (torchaudio's ``ctc_decoder``, flashlight-text) sums the probabilities of the
paths that collapse to the same labelling, without a lexicon or language model.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch

from .data.transcripts import BLANK, WORD_BOUNDARY
from .metrics import ErrorRate, phone_error_rate

__all__ = ["beam_decode", "collapse", "ctc_forward", "evaluate_per", "greedy_decode"]


def collapse(path: Sequence[int], blank: int = BLANK) -> list[int]:
    """CTC's many-to-one map B (Graves et al. 2006, Sec. 3): merge repeated outputs, then drop blanks.

    ``B(a a - a b b) = a a b``: a blank between two equal labels keeps them apart.
    """
    # [eq ctc-collapse]
    merged = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    return [int(p) for p in merged if p != blank]
    # [/eq ctc-collapse]


def ctc_forward(log_probs: torch.Tensor, target: Sequence[int], blank: int = BLANK) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward variables of CTC for one utterance (Graves et al. 2006, Sec. 4.1), in log space.

    ``log_probs`` ``(T, 1 + V)`` per-frame log-probabilities, ``target`` the label indices ``l``.
    Returns ``(alpha, log p(l | x))``: ``alpha[t, s]`` is the log of the summed probability of every
    path prefix up to frame ``t`` that ends in state ``s`` of ``l' = (-, l_1, -, l_2, ..., l_U, -)``;
    ``log p(l | x)`` adds the last two states at the last frame. ``-log p`` is what
    ``torch.nn.functional.ctc_loss`` returns for the utterance (``reduction="sum"``); this plain
    version is for small examples and figures, the training loss is torch's.
    """
    ext = [blank]
    for label in target:
        ext += [int(label), blank]
    num_frames, num_states = log_probs.shape[0], len(ext)
    lp = log_probs.float()
    alpha = torch.full((num_frames, num_states), float("-inf"))
    alpha[0, 0] = lp[0, ext[0]]
    if num_states > 1:
        alpha[0, 1] = lp[0, ext[1]]
    for t in range(1, num_frames):
        for s in range(num_states):
            # [eq ctc-forward]
            prev = [alpha[t - 1, s]]                                  # stay in the same state
            if s >= 1:
                prev.append(alpha[t - 1, s - 1])                      # advance by one state
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                prev.append(alpha[t - 1, s - 2])                      # skip the blank between different labels
            alpha[t, s] = torch.logsumexp(torch.stack(prev), 0) + lp[t, ext[s]]
            # [/eq ctc-forward]
    total = torch.logsumexp(alpha[-1, -2:], 0) if num_states > 1 else alpha[-1, -1]
    return alpha, total


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: the most likely output per frame, collapsed by :func:`collapse`.

    ``log_probs`` ``(B, T, 1 + V)``, ``lengths`` ``(B,)`` -> output indices per utterance.
    """
    best = log_probs.argmax(-1).cpu()
    return [collapse(best[b, : int(n)].tolist()) for b, n in enumerate(lengths.tolist())]


@functools.lru_cache(maxsize=4)
def _beam_decoder(vocab: tuple[str, ...], beam_size: int):
    """torchaudio's lexicon-free decoder for ``vocab``, built once per vocabulary and beam size."""
    try:
        from torchaudio.models.decoder import ctc_decoder
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("beam search needs torchaudio's CTC decoder and the flashlight-text package "
                          "(pip install flashlight-text)") from e
    # the decoder wants a silence token: the word boundary of letter vocabularies, else an extra
    # token that the model never emits (phones have no word boundary)
    extra = [] if WORD_BOUNDARY in vocab else [WORD_BOUNDARY]
    return ctc_decoder(lexicon=None, tokens=["<blank>", *vocab, *extra], lm=None, nbest=1, beam_size=beam_size,
                       blank_token="<blank>", sil_token=WORD_BOUNDARY, unk_word="<unk>", log_add=True)


def beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Sequence[str], *, beam_size: int = 50
                ) -> list[list[int]]:
    """Lexicon-free beam search without a language model (``torchaudio.models.decoder.ctc_decoder``),
    merging hypotheses that reach the same labelling by adding their probabilities (``log_add``).

    Needs the ``flashlight-text`` package; raises ``ImportError`` naming it otherwise. Returns
    output indices (as :func:`greedy_decode`) of the best hypothesis per utterance. With a word
    boundary ``|`` in ``vocab`` (letters), the hypothesis has no leading boundary and ends with
    one, as the targets do.
    """
    decoder = _beam_decoder(tuple(vocab), beam_size)
    lp = log_probs.detach().float().cpu()
    if WORD_BOUNDARY not in vocab:
        never = torch.full((*lp.shape[:2], 1), -1e4)                      # log-probability of the extra silence
        lp = torch.cat([lp, never], -1)
    hyps = decoder(lp.contiguous(), lengths.to(torch.int32).cpu())
    out = [[int(t) for t in h[0].tokens if 0 < int(t) <= len(vocab)] for h in hyps]
    if WORD_BOUNDARY in vocab:
        # the decoder starts and ends every hypothesis with its silence token (the word boundary):
        # normalise to the targets' form, every word followed by one boundary
        b = list(vocab).index(WORD_BOUNDARY) + 1
        for toks in out:
            while toks and toks[0] == b:
                toks.pop(0)
            while toks and toks[-1] == b:
                toks.pop()
            if toks:
                toks.append(b)
    return out


@torch.no_grad()
def evaluate_per(model, batches: Sequence[Mapping], *, beam_size: int | None = None
                 ) -> tuple[ErrorRate, list[tuple[list[str], list[str]]]]:
    """Unit error rate of greedy (``beam_size=None``) or beam-search decoding over ``batches``
    (from :func:`collate_ctc`): ``(ErrorRate, [(reference, hypothesis), ...])``. The units are the
    model's vocabulary: the phone error rate for phones, the letter error rate for letters
    (see :func:`word_error_rate` for words)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pairs = []
    for b in batches:
        log_probs, frames = model(b["audio"].to(device), b["lengths"].to(device))
        hyps = (greedy_decode(log_probs, frames) if beam_size is None
                else beam_decode(log_probs, frames, model.vocab, beam_size=beam_size))
        for i, h in enumerate(hyps):
            ref = b["targets"][i, : int(b["target_lengths"][i])].tolist()
            pairs.append((model.decode_ids(ref), model.decode_ids(h)))
    model.train(was_training)
    return phone_error_rate([r for r, _ in pairs], [h for _, h in pairs]), pairs
