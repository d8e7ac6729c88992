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

:func:`fine_tune` is the round's training on any transcripts (the chapter also runs it on the true ones, as
the reference), cached in a JSON file beside its run folder under the fingerprint of the transcripts and the
pre-trained model; :func:`self_train` is the command's stage, :func:`fine_tune` on the generator's transcripts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from .data.manifest import Utterance
from .data.phones import PHONES
from .errors import ConfigError

__all__ = ["pseudo_labels", "relabelled", "fine_tune", "self_train"]


def pseudo_labels(stages, point: dict) -> list[list[str]]:
    """The phone transcripts that the generator of evaluation ``point`` (of ``stages.gan``) gives the
    training utterances of ``stages``, in their order, silence removed. Reads no transcript."""
    from .gan import decode
    from .unpaired import pad_sequences, phones_without_silence

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


def fine_tune(stages, transcripts: Sequence[Sequence[str]], pretrained: str | os.PathLike, folder: str | os.PathLike,
              *, scale: str, seed: int = 0) -> dict:
    """Fine-tune the pre-trained model at ``pretrained`` (a run folder or checkpoint) with chapter 4's CTC recipe
    (``wav2vec2_ctc_finetune`` of ``scale``; at full scale a LARGE model takes fairseq's ``vox_10m.yaml``,
    :func:`~speechssl.recipes.ctc_recipe`) on the training utterances of ``stages`` labelled with
    ``transcripts`` (:func:`relabelled`), in the run folder ``folder`` (made again). Returns the PER of
    ``transcripts`` against the truth and the test PER of the tuned model (``None`` without transcripts), the
    number of utterances left out and of updates.

    The result is kept in ``<folder>.json`` under the fingerprint of the transcripts, the scale, the seed and the
    pre-trained model (``stages.source``, which fingerprints the weights of the model at ``pretrained``); the
    same fine-tuning asked for again returns it without training."""
    from pathlib import Path

    from .units import fingerprint
    from .wav2vec_u import _read_json, _write_json

    key = fingerprint("fine-tune", scale, seed, [list(t) for t in transcripts], stages.source)
    path = Path(folder).with_suffix(".json")
    cached = _read_json(path, key)
    if cached is not None:
        return cached
    out = {"key": key, **_tune(stages, transcripts, pretrained, folder, scale=scale, seed=seed)}
    _write_json(path, out)
    return out


def _tune(stages, transcripts: Sequence[Sequence[str]], pretrained: str | os.PathLike, folder: str | os.PathLike,
          *, scale: str, seed: int) -> dict:
    """:func:`fine_tune`'s training and measurements, without its cache."""
    from .data.transcripts import collate_ctc
    from .engine import seed_everything
    from .finetune import PHONE_VOCAB, evaluate, transcribed
    from .metrics import phone_error_rate
    from .recipes import ctc_recipe
    from .run import start_run

    utts, left_out = relabelled(stages.train, transcripts)
    r = ctc_recipe("finetune", scale, pretrained, seed=seed, out_dir=str(folder))
    seed_everything(seed)
    model = r.build(vocab=PHONE_VOCAB, pretrained=pretrained)
    run = start_run(r, [], stages.root, model=model, dataset=transcribed(model, utts, stages.root, "phones"),
                    collate=collate_ctc)
    run.fit(overwrite=True)
    refs, test_refs = stages.references(stages.train), stages.references(stages.test) if stages.test else None
    return {"labels": phone_error_rate(refs, transcripts).rate if refs is not None else None,
            "left_out": len(left_out), "updates": run.trainer.step,
            "test": evaluate(model, transcribed(model, stages.test, stages.root, "phones"))["unit_error_rate"]
            if test_refs is not None else None}


def self_train(stages, point: dict, pretrained: str | os.PathLike, *, scale: str, seed: int = 0) -> dict:
    """The command's stage 6: :func:`fine_tune` on the transcripts of the generator of ``point`` in
    ``stages.folder / "self-training"`` (its result cached in ``self-training.json``), with the seed and update
    of ``point``."""
    out = fine_tune(stages, pseudo_labels(stages, point), pretrained, stages.folder / "self-training", scale=scale,
                    seed=seed)
    return {"seed": point["seed"], "update": point["update"], **out}
