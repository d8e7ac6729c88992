"""wav2vec-U's first test: a substitution cipher of the true phone segments, and generators that read it.

The GAN of :mod:`speechssl.models.wav2vec_u` is hard to debug on speech, so chapter 6 first gives it the
easiest input there is: the segments of the true phone alignment, each phone replaced by a fixed random
vector. One linear generator reads that code exactly (:func:`solution_weights`); another reads each code as
the text phone of the same frequency rank (:func:`frequency_code`), which is all that the phones' frequencies
can tell. Both are built here so that a discriminator can be asked which of them it tells from text
(:meth:`speechssl.wav2vec_u.Stages.discriminator_probe`). :func:`decipher` asks the text itself, as
decipherment does (Knight et al. 2006, "Unsupervised analysis for decipherment problems", Sec. 3: a key is
scored by a bigram model of the plaintext; they search over probabilistic keys with EM, here a greedy search
over one-to-one readings): it tells whether the text's statistics are enough to identify the code at all.
:func:`pair_cross_entropy` asks whether gradient descent can get there with an exact critic that needs no
training (output-distribution matching, Yeh et al. 2019): :meth:`CipherStages.pair_matching` fits the GAN's
generator to it, which separates what the search costs from what the adversary costs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

import torch

from .data.phones import PHONES, SILENCE
from .ngram import PhoneLM
from .unpaired import pad_sequences, phones_without_silence, text_batches

__all__ = ["true_segments", "cipher_features", "solution_weights", "frequency_code", "reading_weights", "read_segments",
           "decipher", "pair_distribution", "pair_cross_entropy", "CipherStages"]


def true_segments(utterance, inventory: Sequence[str] = PHONES) -> list[int]:
    """The phone ids of an utterance's alignment, one per aligned segment (``sil`` included): the segments
    a perfect segmenter would find."""
    index = {p: i for i, p in enumerate(inventory)}
    return [index[p] for p, _, _ in utterance.alignment]


def cipher_features(utterances: Sequence, dim: int, seed: int = 0, noise: float = 0.0,
                    inventory: Sequence[str] = PHONES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A substitution cipher of the true segments: phone ``p`` becomes a fixed random vector ``E[p]`` (plus
    Gaussian noise of standard deviation ``noise``). Returns the padded features (N, T, dim), the lengths
    and ``E``."""
    g = torch.Generator().manual_seed(seed)
    code = torch.randn(len(inventory), dim, generator=g)
    seqs = [torch.tensor(true_segments(u, inventory)) for u in utterances]
    feats = [code[s] + noise * torch.randn(len(s), dim, generator=g) for s in seqs]
    x, lengths = pad_sequences(feats)
    return x, lengths, code


def solution_weights(code: torch.Tensor, kernel: int, margin: float) -> torch.Tensor:
    """Generator weights (V, D, kernel) that solve the cipher of ``code`` (V, D): on the tap that reads the
    current segment (``kernel // 2``, the generator's left padding), phone ``p``'s filter is ``E[p]`` scaled so
    that segment ``E[p]`` gives phone ``p`` the logit ``margin``; the other taps are zero."""
    w = torch.zeros(code.size(0), code.size(1), kernel)
    w[:, :, kernel // 2] = margin * code / code.square().sum(1, keepdim=True)
    return w


def frequency_code(audio: Iterable[str], text: Iterable[str]) -> dict[str, str]:
    """Each phone of ``audio`` (a stream of phone tokens) -> the phone of ``text`` with the same frequency
    rank. When the text uses fewer phones, the audio's rarest ones are read, in rank order, as the audio phones
    that the text never uses (a name the text lacks, wrong like any other), so the reading stays one-to-one."""
    ranked = [p for p, _ in Counter(audio).most_common()]
    by_text = [p for p, _ in Counter(text).most_common()]
    return dict(zip(ranked, by_text + [p for p in ranked if p not in by_text]))


def read_segments(utterances: Sequence, code: Mapping[str, str]) -> list[list[str]]:
    """Each utterance's true segments read through ``code`` (phones it lacks read as themselves), runs of one
    phone joined as JOIN does, and ``sil`` removed: the transcripts a generator with that reading writes."""
    out = []
    for u in utterances:
        seq = [code.get(p, p) for p, _, _ in u.alignment]
        out.append([q for i, q in enumerate(seq) if q != SILENCE and (i == 0 or q != seq[i - 1])])
    return out


def reading_weights(code: torch.Tensor, kernel: int, margin: float, reading: Mapping[str, str],
                    inventory: Sequence[str] = PHONES) -> torch.Tensor:
    """Generator weights (V, D, kernel) that read the segment of phone ``a`` as phone ``reading[a]`` with the
    logit ``margin`` (:func:`solution_weights` with each filter moved to the phone it is read as); phones
    that nothing is read as get zero filters."""
    index = {p: i for i, p in enumerate(inventory)}
    solved = solution_weights(code, kernel, margin)
    w = torch.zeros_like(solved)
    for a, b in reading.items():
        w[index[b]] = solved[index[a]]
    return w


def _bigrams(sequences: Iterable[Sequence[str]], index: Mapping[str, int]) -> torch.Tensor:
    """Counts (V, V) of the consecutive pairs within each sequence, in float64."""
    pairs = Counter((index[a], index[b]) for seq in sequences for a, b in pairwise(seq))
    out = torch.zeros(len(index), len(index), dtype=torch.float64)
    for (a, b), n in pairs.items():
        out[a, b] = n
    return out


def decipher(audio: Iterable[Sequence[str]], text: Iterable[Sequence[str]], start: Mapping[str, str],
             smoothing: float = 0.1) -> tuple[dict[str, str], int]:
    """The reading of the cipher that the text's phone pairs favour, found by steepest ascent from ``start``.

    ``audio`` are the phone sequences under the code (the true segments), ``text`` the sentences the
    discriminator reads and ``start`` a one-to-one reading of the audio's phones (:func:`frequency_code`).
    A reading is scored by the log-likelihood of the audio's sequences read through it, under the text's
    bigram model with add-``smoothing`` counts; each step swaps the two phones' readings whose swap raises the
    score most, and the search stops when no swap raises it. Returns the reading and the number of swaps.
    """
    audio, text = [list(s) for s in audio], [list(s) for s in text]
    src = list(start)
    names = sorted({*start.values(), *(p for s in text for p in s)})
    counts = _bigrams(text, {p: i for i, p in enumerate(names)}) + smoothing
    log_p = (counts / counts.sum(1, keepdim=True)).log()               # log P(b | a) of the text
    pairs = _bigrams(audio, {p: i for i, p in enumerate(src)})         # (n, n) the audio's pairs
    reading = torch.tensor([names.index(start[a]) for a in src])
    i, j = torch.triu_indices(len(src), len(src), 1)
    rows = torch.arange(i.numel())
    score, swaps = float((pairs * log_p[reading][:, reading]).sum()), 0
    while i.numel():
        cand = reading.repeat(i.numel(), 1)                            # every reading one swap away
        cand[rows, i], cand[rows, j] = reading[j], reading[i]
        scores = (pairs * log_p[cand[:, :, None], cand[:, None, :]]).sum((1, 2))
        best = int(scores.argmax())
        if not float(scores[best]) > score + 1e-9:
            break
        reading, score, swaps = cand[best], float(scores[best]), swaps + 1
    return {a: names[int(r)] for a, r in zip(src, reading)}, swaps


def pair_distribution(sequences: Iterable[Sequence[str]], inventory: Sequence[str] = PHONES) -> torch.Tensor:
    """The distribution (V, V) of consecutive phone pairs within ``sequences``, over ``inventory``."""
    counts = _bigrams(sequences, {p: i for i, p in enumerate(inventory)})
    return (counts / counts.sum()).float()


def pair_cross_entropy(probs: torch.Tensor, lengths: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Output-distribution matching on phone pairs (Yeh et al. 2019, after Liu et al. 2017): the
    cross-entropy ``-sum_ab P(a, b) log Q(a, b)`` of the text's pair distribution ``pairs`` (V, V) against ``Q``,
    the pairs that the output distributions ``probs`` (B, T, V) give in expectation, ``sum_t p_t p_(t+1)^T`` over
    the consecutive valid steps of the batch, normalised. A critic that needs no training: it is lowest where the
    outputs' pairs are the text's."""
    from .models.wav2vec_u import lengths_mask

    valid = lengths_mask(lengths, probs.size(1))[:, 1:, None].to(probs)
    # one (V, V) product per sequence, then their sum: a GEMM over the whole batch's steps would let MKL split that
    # long sum between threads, and its last bits would depend on the thread count
    q = torch.bmm((probs[:, :-1] * valid).transpose(1, 2), probs[:, 1:]).sum(0)
    return -(pairs * torch.log(q / q.sum() + 1e-8)).sum()


class CipherStages:
    """The cipher's stages of :class:`speechssl.wav2vec_u.Stages` (its ``train``, ``dev``, ``plan``, ``folder``,
    :meth:`sentences`, :meth:`references`, :meth:`_cached` and :meth:`_gan_config`), kept here with the cipher's
    code."""

    def cipher(self, seed: int = 0, *, solved: float = 0.0, reading: Mapping[str, str] | None = None,
               max_updates: int | None = None, train: Mapping | None = None, on_eval=None, **gan) -> list[dict]:
        """The GAN of this plan (``gan``: settings over the plan's) on a substitution cipher of the true segments
        (:func:`cipher_features` of dimension ``pca_dim``, code seed 0) against the same text, evaluated on
        ``dev`` as :meth:`gan` is; ``train`` are training settings over the plan's (its ``cipher`` schedule, for
        one), and ``max_updates`` over both. ``solved > 0`` starts the generator at the solution with that logit margin
        (:func:`solution_weights`): whether training stays there tells whether the solution is a fixed point; with
        ``reading``, at that reading of the code instead (:func:`~speechssl.cipher.reading_weights`).

        Cached like the command's stages, in ``cipher-<fingerprint>.pt`` of the stages' folder, the fingerprint of
        the training and dev utterances, the text and every setting of the run (not of the features or the test
        split, which the cipher does not read): the same run asked for again (by chapter 6 and page 6c, or by a
        second execution) is read back, and ``on_eval`` is then called on each stored point."""
        from dataclasses import asdict

        from .checkpoint import save_checkpoint
        from .gan import GanData, GanTrainConfig, track
        from .models.wav2vec_u import Wav2VecU
        from .units import fingerprint

        text = self.sentences()
        cfg = self._gan_config(**gan)
        train = GanTrainConfig(**{**self.plan.train, **(train or {}), "seed": seed,
                                  **({"max_updates": max_updates} if max_updates else {})})
        audio = sorted((u.id, u.num_samples) for u in [*self.train, *self.dev])   # the cipher reads no test split
        key = fingerprint("cipher", audio, text["key"], self.plan.pca_dim, asdict(cfg), asdict(train), solved,
                          sorted(reading.items()) if reading is not None else None)
        name = f"cipher-{key}.pt"
        state = self._cached(name, key)
        if state is not None:
            for point in state["history"] if on_eval is not None else ():
                on_eval(point)
            return state["history"]
        x, lengths, code = cipher_features(self.train, self.plan.pca_dim, seed=0)
        dx, dlengths, _ = cipher_features(self.dev, self.plan.pca_dim, seed=0)
        torch.manual_seed(seed)
        model = Wav2VecU(cfg)
        if solved > 0:
            with torch.no_grad():
                k = model.cfg.generator_kernel
                model.generator.proj.weight.copy_(solution_weights(code, k, solved) if reading is None else
                                                  reading_weights(code, k, solved, reading))
        history = track(model, GanData(x, lengths, *text_batches(text["with_silence"])), train,
                        PhoneLM(text["plain"], order=4), dx, dlengths, self.references(self.dev), on_eval=on_eval,
                        evaluate_first=True)
        save_checkpoint(self.folder / name, {"key": key, "history": history})
        return history

    def pair_matching(self, seed: int = 0, *, updates: int = 1500, batch_size: int = 128, lr: float = 4e-3,
                      kernel: int = 1) -> dict:
        """The search without the adversary: the GAN's generator (a convolution of ``kernel``) on the cipher of
        :meth:`cipher`, fitted from a random start by Adam (lr ``lr``, betas (0.5, 0.98)) to
        :func:`pair_cross_entropy` against the text the discriminator reads, ``updates`` batches of ``batch_size``
        training utterances drawn with ``seed``. Returns the dev PER at the end (``None`` without transcripts) and
        the objective on the whole training set at the end (``loss``) and at the solution (``solution_loss``,
        logit margin 10): an end above the solution is a local minimum of the objective."""
        from .gan import decode
        from .metrics import phone_error_rate
        from .models.wav2vec_u import Wav2VecU

        x, lengths, code = cipher_features(self.train, self.plan.pca_dim, seed=0)
        dx, dlengths, _ = cipher_features(self.dev, self.plan.pca_dim, seed=0)
        pairs = pair_distribution(self.sentences()["with_silence"])
        torch.manual_seed(seed)
        model = Wav2VecU(self._gan_config(generator_kernel=kernel))
        opt = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=(0.5, 0.98))
        rng = torch.Generator().manual_seed(seed)

        def objective(feats: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            logits, out = model.generator(feats[:, :int(n.max())], n)
            return pair_cross_entropy(logits.softmax(-1), out, pairs)

        model.train()
        for _ in range(updates):
            idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=rng)
            loss = objective(x[idx], lengths[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        refs = self.references(self.dev)
        hyps = [phones_without_silence(h, PHONES) for h in decode(model, dx, dlengths)]
        with torch.no_grad():
            end = float(objective(x, lengths))
            model.generator.proj.weight.copy_(solution_weights(code, kernel, 10.0))
            at_solution = float(objective(x, lengths))
        return {"dev_per": None if refs is None else phone_error_rate(refs, hyps).rate, "loss": end,
                "solution_loss": at_solution}

    def frequency_cipher(self) -> float | None:
        """Dev PER of the cipher of :meth:`cipher` read by phone frequency alone: each phone of the training
        segments mapped to the phone of the same frequency rank in the text the discriminator reads, runs of one
        phone joined as JOIN does, ``sil`` removed. What a generator gets from unigram statistics, with nothing
        of the phones' order; ``None`` without transcripts."""
        return self._read_dev(self.frequency_code())

    def _read_dev(self, code: Mapping[str, str]) -> float | None:
        """Dev PER of the true segments read through ``code`` (:func:`~speechssl.cipher.read_segments`)."""
        from .metrics import phone_error_rate

        refs = self.references(self.dev)
        return None if refs is None else phone_error_rate(refs, read_segments(self.dev, code)).rate

    def frequency_code(self) -> dict[str, str]:
        """Each phone of the training segments -> the phone of the same frequency rank in the text the
        discriminator reads (:func:`~speechssl.cipher.frequency_code`)."""
        return frequency_code((p for u in self.train for p, _, _ in u.alignment),
                              (p for s in self.sentences()["with_silence"] for p in s))

    def decipher(self) -> dict:
        """What the text's statistics alone tell about the cipher: :func:`~speechssl.cipher.decipher` of the
        training segments against the text the discriminator reads, from :meth:`frequency_code`. ``{"reading":
        {audio phone: text phone}, "swaps": int, "wrong": phones read wrong, "dev_per": float | None}``."""
        reading, swaps = decipher(([p for p, _, _ in u.alignment] for u in self.train),
                                  self.sentences()["with_silence"], self.frequency_code())
        return {"reading": reading, "swaps": swaps, "wrong": sum(a != b for a, b in reading.items()),
                "dev_per": self._read_dev(reading)}

    def discriminator_probe(self, steps: int = 1500, **gan) -> dict[str, float]:
        """What the discriminator of this plan (``gan``: settings over the plan's) can tell on the cipher of
        :meth:`cipher`: trained alone (:func:`~speechssl.gan.probe_discriminator`) against a generator frozen
        at the solution (``"solution"``) and against one frozen at the frequency-rank reading
        (``"frequency"``, :meth:`frequency_code`), both with a logit margin of 10, its cross-entropy per
        sequence on each; ln 2 is a discriminator that cannot tell their output from text."""
        from .gan import GanData, GanTrainConfig, probe_discriminator
        from .models.wav2vec_u import Wav2VecU

        x, lengths, code = cipher_features(self.train, self.plan.pca_dim, seed=0)
        data = GanData(x, lengths, *text_batches(self.sentences()["with_silence"]))
        cfg = GanTrainConfig(**{**self.plan.train, "seed": 0})
        by_rank = self.frequency_code()
        readings = {"solution": {p: p for p in by_rank}, "frequency": by_rank}
        out = {}
        for name, reading in readings.items():
            torch.manual_seed(0)
            model = Wav2VecU(self._gan_config(**gan))
            with torch.no_grad():
                model.generator.proj.weight.copy_(reading_weights(code, model.cfg.generator_kernel, 10.0, reading))
            out[name] = probe_discriminator(model, data, cfg, steps)
        return out
