"""CTC fine-tuning of a pre-trained wav2vec 2.0 model (Baevski et al. 2020, Sec. 3.3 and 4.3).

``python -m speechssl.finetune`` trains one of the three rows of the fine-tuning chapter's table
(see :data:`~speechssl.models.CTC_MODES`) and reports the error rate on evaluation sets::

    # tiny: the synthetic corpus, phones, a run of `python -m speechssl.train wav2vec2 --scale tiny`
    python -m speechssl.finetune --scale tiny --pretrained runs/wav2vec2-tiny

    # full: LibriSpeech letters on Libri-light's 10-minute split, evaluated on dev-clean and dev-other
    torchrun --nproc_per_node=2 -m speechssl.finetune --scale full --pretrained runs/wav2vec2-full \\
        --data librispeech:/data/librispeech_finetuning --subsets 1h/0/clean 1h/0/other \\
        --eval-data librispeech:/data --eval-subsets dev-clean dev-other

The synthetic corpus is transcribed in phones (its ``finetune`` split, evaluated on ``test``);
LibriSpeech in letters with ``|`` between words (fairseq's ``.ltr`` labels), evaluated in letter
and word error rates. The results go to ``<run folder>/eval.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import paths
from .checkpoint import load_checkpoint, model_config_of
from .data.dataset import AudioDataset
from .data.phones import PHONES
from .errors import ConfigError
from .models import CTC_MODES, build_model, ctc_config, ctc_train_overrides
from .models.ctc import LETTERS, TranscribedAudio, Wav2Vec2CTC, collate_ctc, evaluate_per, word_error_rate
from .train import (_CLI_FIELDS, DistInfo, Trainer, TrainConfig, add_run_options, main_process_first, parse_data_spec,
                    run_distributed, seed_everything, synth_corpus)

__all__ = ["PHONE_VOCAB", "build_ctc_model", "evaluate", "main", "transcribed"]

log = logging.getLogger(__name__)

#: CTC outputs for the synthetic corpus: its phone inventory without silence.
PHONE_VOCAB: tuple[str, ...] = tuple(p for p in PHONES if p != "sil")


def build_ctc_model(scale: str, mode: str, vocab: Sequence[str], pretrained: str | Path | None = None
                    ) -> Wav2Vec2CTC:
    """A CTC model of a scale and mode (``finetune``, ``scratch`` or ``probe``).

    ``finetune`` and ``probe`` start from the ``wav2vec2`` checkpoint (or run folder) ``pretrained``,
    which must hold the scale's architecture; ``scratch`` starts from a random encoder.
    """
    encoder = build_model("wav2vec2", scale)
    cfg = ctc_config(scale, mode)
    if mode == "scratch":
        if pretrained is not None:
            raise ConfigError("--pretrained: a model trained from scratch takes no pre-trained checkpoint")
    else:
        if pretrained is None:
            raise ConfigError(f"--pretrained: mode {mode!r} needs a wav2vec2 checkpoint or run folder, found none")
        state = load_checkpoint(pretrained, model_name="wav2vec2", model_config=model_config_of(encoder))
        encoder.load_state_dict(state["model"])
    return Wav2Vec2CTC(encoder, vocab, cfg)


def _utterances(spec: str, subsets: Sequence[str], scale: str, default_split: str):
    kind, path = parse_data_spec(spec)
    if kind == "synth":
        from .data.manifest import read_manifest

        root = synth_corpus(scale)
        return [(s, read_manifest(root, s)) for s in (subsets or [default_split])], root, "phones"
    from .data.librispeech import read_librispeech

    if not subsets:
        raise ConfigError(f"{spec}: name the LibriSpeech subsets to use (--subsets / --eval-subsets)")
    return [(s, read_librispeech(path, [s])) for s in subsets], Path(path), "letters"


def transcribed(model: Wav2Vec2CTC, utterances, root: str | Path, unit: str) -> TranscribedAudio:
    """Whole utterances with their targets (no cropping: CTC needs the whole transcript)."""
    return TranscribedAudio(AudioDataset(utterances, root, max_samples=None, crop="none"), model, unit)


def evaluate(model: Wav2Vec2CTC, data: TranscribedAudio, *, batch_size: int = 8, beam_size: int | None = None
             ) -> dict[str, Any]:
    """Error rates of ``model`` on ``data``: ``unit_error_rate`` (PER for phones, letter error
    rate for letters), ``wer`` for letters, and the counts they come from."""
    batches = [collate_ctc([data[i] for i in range(s, min(s + batch_size, len(data)))])
               for s in range(0, len(data), batch_size)]
    rate, pairs = evaluate_per(model, batches, beam_size=beam_size)
    out: dict[str, Any] = {"unit_error_rate": rate.rate, "errors": rate.errors, "reference_length": rate.reference_length,
                           "utterances": len(data)}
    if "|" in model.vocab:
        w = word_error_rate(pairs)
        out.update(wer=w.rate, word_errors=w.errors, words=w.reference_length)
    return out


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m speechssl.finetune",
                                description="CTC fine-tuning of a pre-trained wav2vec2 model (torchrun for several GPUs).")
    p.add_argument("--pretrained", default=None, help="wav2vec2 checkpoint or run folder (finetune and probe modes)")
    p.add_argument("--mode", choices=CTC_MODES, default="finetune",
                   help="finetune (default), scratch (same architecture, random init) or probe (frozen encoder, linear CTC)")
    p.add_argument("--scale", choices=paths.SCALES, default=None, help="default: $SPEECHSSL_SCALE or tiny")
    p.add_argument("--data", default="synth", help="'synth' (phones) or 'librispeech:PATH' (letters)")
    p.add_argument("--subsets", nargs="+", default=None,
                   help="labeled subsets (default for synth: finetune; for LibriSpeech, e.g. Libri-light's 1h/0/clean 1h/0/other)")
    p.add_argument("--eval-data", default=None, help="like --data; default: --data")
    p.add_argument("--eval-subsets", nargs="+", default=None, help="default for synth: test")
    p.add_argument("--beam", type=int, default=0, help="also decode with a beam of this size (needs flashlight-text)")
    add_run_options(p, default_out="<runs_dir>/wav2vec2_ctc_<mode>-<scale>")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 2 for a bad command line or configuration, 1 for a failed run."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    def run(info: DistInfo) -> int:
        scale = args.scale or paths.scale()
        values: dict[str, Any] = {"model": f"wav2vec2_ctc_{args.mode}", "scale": scale,
                                  **ctc_train_overrides(scale, args.mode)}
        values.update({f: getattr(args, a) for a, f in _CLI_FIELDS.items() if getattr(args, a, None) is not None})
        values["out_dir"] = args.out or str(paths.runs_dir() / f"wav2vec2_ctc_{args.mode}-{scale}")
        config = TrainConfig.from_dict(values, source="fine-tuning configuration")
        (train_sets, root, unit), (eval_sets, eval_root, eval_unit) = main_process_first(info, lambda: (
            _utterances(args.data, args.subsets, scale, "finetune"),
            _utterances(args.eval_data or args.data, args.eval_subsets, scale, "test")))
        if eval_unit != unit:
            raise ConfigError(f"--eval-data {args.eval_data}: transcribed in {eval_unit}, the training data in {unit}")
        seed_everything(config.seed)
        model = build_ctc_model(scale, args.mode, PHONE_VOCAB if unit == "phones" else LETTERS, args.pretrained)
        train = transcribed(model, [u for _, us in train_sets for u in us], root, unit)
        trainer = Trainer(model, config, train, collate_ctc)
        trainer.fit(resume=args.resume, overwrite=args.overwrite)
        if info.is_main:
            results = {"mode": args.mode, "scale": scale, "updates": trainer.step, "unit": unit}
            for name, utts in eval_sets:
                data = transcribed(model, utts, eval_root, unit)
                results[name] = {"greedy": evaluate(model, data)}
                if args.beam:
                    results[name]["beam"] = evaluate(model, data, beam_size=args.beam)
                summary = ", ".join(f"{k} {v['unit_error_rate']:.3f}" + (f" (WER {v['wer']:.3f})" if "wer" in v else "")
                                    for k, v in results[name].items())
                print(f"{name}: {'PER' if unit == 'phones' else 'letter error rate'} {summary}")
            (trainer.out_dir / "eval.json").write_text(json.dumps(results, indent=1))
        return 0

    return run_distributed(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
