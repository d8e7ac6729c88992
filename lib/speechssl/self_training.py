"""One round of wav2vec-U's self-training: the selected generator transcribes the unlabelled audio, and the
pre-trained model is fine-tuned with CTC on those transcripts.

The paper (Sec. 4.1; fairseq ``examples/wav2vec/unsupervised/kaldi_self_train``) pseudo-labels the training
audio with the GAN, trains Kaldi HMMs on the pseudo phone labels over the wav2vec 2.0 features, relabels the
audio with the HMM, and then fine-tunes the pre-trained wav2vec 2.0 with CTC on those transcripts
(``config/finetuning/w2v_finetune.yaml``). This book leaves the HMM out: its round is the last step alone, CTC
fine-tuning of the pre-trained model directly on the generator's transcripts, with the fine-tuning recipe of
chapter 4. It is a substitute for the paper's round, not its recipe.

The transcripts are what fairseq's ``w2vu_generate.py`` writes with ``viterbi`` decoding and
``post_process: silence``: JOIN with averaged runs, the argmax of every run, ``<SIL>`` removed
(:func:`speechssl.gan.decode`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .data.manifest import Utterance
from .data.phones import PHONES
from .errors import ConfigError

__all__ = ["pseudo_labels", "relabelled"]


def pseudo_labels(stages, point: dict) -> list[list[str]]:
    """The phone transcripts that the generator of evaluation ``point`` (of ``stages.gan``) gives the
    training utterances of ``stages``, in their order, silence removed. Reads no transcript."""
    from .gan import decode
    from .wav2vec_u import pad_sequences, phones_without_silence

    x, n = pad_sequences(stages.segments()["train"])
    return [phones_without_silence(ids, PHONES) for ids in decode(stages.model(point), x, n)]


def relabelled(utterances: Sequence[Utterance], transcripts: Sequence[Sequence[str]]
               ) -> tuple[list[Utterance], list[str]]:
    """Copies of ``utterances`` whose phone transcripts are ``transcripts`` (the same order), for CTC
    fine-tuning; their words, text and alignment are emptied, so nothing of the true labels travels with
    them. An utterance given an empty transcript is left out (CTC needs a symbol). Returns the copies and
    the ids left out."""
    if len(utterances) != len(transcripts):
        raise ConfigError(f"pseudo-labels: expected one transcript per utterance ({len(utterances)}), "
                          f"found {len(transcripts)}")
    kept = [dataclasses.replace(u, phones=list(t), words=[], text="", alignment=[])
            for u, t in zip(utterances, transcripts) if t]
    return kept, [u.id for u, t in zip(utterances, transcripts) if not t]
