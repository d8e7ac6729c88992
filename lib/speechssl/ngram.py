"""A phone n-gram language model with interpolated Kneser-Ney smoothing, for wav2vec-U.

wav2vec-U uses a phone language model twice: to select a generator without labels (paper Sec. 3.3,
fairseq ``weighted_lm_ppl``) and to decode. fairseq trains it with KenLM's ``lmplz`` (a 4-gram on the
phonemised unpaired text, ``prepare_text.sh``). The ``kenlm`` package on PyPI can only *query* a model:
``lmplz``, which estimates one, is a C++ program that no package registry ships. A phone vocabulary of
about 40 symbols and a text of tens of thousands of phones make a model small enough to estimate here.

The smoothing is interpolated Kneser-Ney (Chen & Goodman 1998, Sec. 3.5), KenLM's family, with one
discount per order estimated as ``D = n1 / (n1 + 2 n2)`` from the counts of n-grams seen once and
twice (Ney, Essen & Kneser 1994), or 0.5 where an order has none of either (a tiny text, where the
estimate would be 0 or 1 and leave no mass for unseen symbols or none for seen ones):

    p(w | h) = max(c(h w) - D, 0) / c(h .) + D N1+(h .) / c(h .) * p(w | h')

where ``h'`` drops the oldest symbol of ``h``. The highest order counts tokens; lower orders count
*continuations*, the number of distinct symbols seen before ``h w`` (so a symbol that only follows one
context is not believed to be common). The unigram level interpolates with the uniform distribution
over the vocabulary, so every symbol has a probability above zero. A history never seen backs off to
``p(w | h')`` with weight 1. Sentences are wrapped in ``<s>`` and ``</s>``, as KenLM scores them.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from .errors import ConfigError

__all__ = ["BOS", "EOS", "PhoneLM"]

BOS, EOS = "<s>", "</s>"


class PhoneLM:
    """An ``order``-gram model of symbol sequences (interpolated Kneser-Ney, see the module notes)."""

    def __init__(self, sentences: Iterable[Sequence[str]], order: int = 4, vocabulary: Iterable[str] | None = None):
        if not isinstance(order, int) or order < 1:
            raise ConfigError(f"PhoneLM.order: expected a positive integer, found {order!r}")
        sentences = [list(s) for s in sentences]
        if not sentences or not any(sentences):
            raise ConfigError("PhoneLM: expected at least one non-empty sentence to estimate from, found none")
        seen = {w for s in sentences for w in s}
        self.vocabulary = sorted(set(vocabulary) | seen if vocabulary is not None else seen) + [EOS]
        if BOS in seen or EOS in seen:
            raise ConfigError(f"PhoneLM: sentences may not contain {BOS!r} or {EOS!r}")
        self.order = order
        top = Counter()
        for s in sentences:
            padded = [BOS] * (order - 1) + s + [EOS]
            for i in range(order - 1, len(padded)):
                top[tuple(padded[i - order + 1:i + 1])] += 1
        # counts[n]: counts of n-grams (n = order: tokens; n < order: continuation counts).
        counts: dict[int, Counter] = {order: top}
        for n in range(order - 1, 0, -1):
            counts[n] = Counter(g[1:] for g in counts[n + 1])
        self._prob: dict[int, dict[tuple, float]] = {}
        self._backoff: dict[int, dict[tuple, float]] = {}
        self.discounts: dict[int, float] = {}
        for n in range(1, order + 1):
            c = counts[n]
            n1 = sum(1 for v in c.values() if v == 1)
            n2 = sum(1 for v in c.values() if v == 2)
            d = n1 / (n1 + 2 * n2) if n1 and n2 else 0.5     # no singletons or doubletons: a fixed 0.5
            self.discounts[n] = d
            total: dict[tuple, int] = defaultdict(int)
            types: dict[tuple, int] = defaultdict(int)
            for g, v in c.items():
                total[g[:-1]] += v
                types[g[:-1]] += 1
            self._prob[n] = {g: max(v - d, 0.0) / total[g[:-1]] for g, v in c.items()}
            self._backoff[n] = {h: d * types[h] / total[h] for h in total}
        self._uniform = 1.0 / len(self.vocabulary)

    def prob(self, word: str, history: Sequence[str]) -> float:
        """``p(word | history)``; only the last ``order - 1`` symbols of the history are read."""
        history = tuple(history)[max(0, len(history) - self.order + 1):]
        return self._p(word, history)

    def _p(self, word: str, history: tuple) -> float:
        n = len(history) + 1
        lower = self._uniform if n == 1 else self._p(word, history[1:])
        if history not in self._backoff[n]:
            return lower
        return self._prob[n].get(history + (word,), 0.0) + self._backoff[n][history] * lower

    def sample(self, rng: random.Random, max_length: int = 200) -> list[str]:
        """One sentence drawn symbol by symbol from the model, up to ``</s>`` or ``max_length`` symbols (the
        baseline "the language model alone": fluent phones that ignore the audio)."""
        history, out = [BOS] * (self.order - 1), []
        while len(out) < max_length:
            w = rng.choices(self.vocabulary, weights=[self.prob(v, history) for v in self.vocabulary])[0]
            if w == EOS:
                break
            out.append(w)
            history = history[1:] + [w] if self.order > 1 else history
        return out

    def sentence_logprob(self, sentence: Sequence[str]) -> float:
        """Natural log of ``p(sentence </s> | <s>)``."""
        history = [BOS] * (self.order - 1)
        total = 0.0
        for w in list(sentence) + [EOS]:
            total += math.log(self.prob(w, history))
            history = history[1:] + [w] if self.order > 1 else history
        return total

    def perplexity(self, sentences: Sequence[Sequence[str]]) -> float:
        """``exp(-sum log p / number of predicted symbols)``, ``</s>`` counted (KenLM's convention)."""
        tokens = sum(len(s) + 1 for s in sentences)
        return math.exp(-sum(self.sentence_logprob(s) for s in sentences) / tokens)
