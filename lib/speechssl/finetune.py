"""``python -m speechssl.finetune``: CTC fine-tuning of a pre-trained wav2vec 2.0 or HuBERT model (Baevski et al.
2020, Sec. 3.3 and 4.3; HuBERT Sec. IV-D), one row of the fine-tuning chapter's table per ``--mode``::

    # tiny: the synthetic corpus, phones, a run of `python -m speechssl.train wav2vec2 --scale tiny`
    python -m speechssl.finetune --scale tiny --pretrained runs/wav2vec2-tiny
    # the same for chapter 5's second HuBERT iteration, into its own run folder
    python -m speechssl.finetune --scale tiny --pretrained runs/hubert-tiny/iter2/model --out runs/hubert_ctc_finetune_iter2-tiny

    # full: LibriSpeech letters on Libri-light's 10-minute split, evaluated on dev-clean and dev-other
    torchrun --nproc_per_node=2 -m speechssl.finetune --scale full --pretrained runs/wav2vec2-full \\
        --data librispeech:/data/librispeech_finetuning --subsets 1h/0/clean 1h/0/other \\
        --eval-data librispeech:/data --eval-subsets dev-clean dev-other
    # full, a LARGE model (released weights through speechssl.interop): fairseq's vox_10m.yaml on 4 GPUs
    torchrun --nproc_per_node=4 -m speechssl.finetune --scale full --pretrained runs/wav2vec2-large-lv60.pt \\
        --data librispeech:/data/librispeech_finetuning --subsets 1h/0/clean 1h/0/other \\
        --eval-data librispeech:/data --eval-subsets dev-clean dev-other

The synthetic corpus is transcribed in phones (its ``finetune`` split, evaluated on ``test``);
LibriSpeech in letters with ``|`` after every word (fairseq's ``.ltr`` labels), evaluated in letter
and word error rates. The results go to ``<run folder>/eval.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import paths
from .checkpoint import check_run_folder
from .cli import add_data_options, add_run_options, check_run_data, load_split, recipe_overrides, run_command
from .data.dataset import AudioDataset
from .data.phones import PHONES
from .data.transcripts import LETTERS, TranscribedAudio, collate_ctc
from .decoding import evaluate_per
from .engine import seed_everything
from .engine.distributed import DistInfo, main_process_first
from .errors import ConfigError
from .metrics import word_error_rate
from .recipes import CTC_MODES, ctc_recipe
from .run import start_run

__all__ = ["PHONE_VOCAB", "build_arg_parser", "evaluate", "main", "transcribed"]

#: CTC outputs for the synthetic corpus: its phone inventory without silence.
PHONE_VOCAB: tuple[str, ...] = tuple(p for p in PHONES if p != "sil")


def transcribed(model, utterances, root, unit: str) -> TranscribedAudio:
    """Whole utterances with their targets (no cropping: CTC needs the whole transcript), standardised when the
    model's pre-trained encoder reads standardised waveforms (its ``normalize_waveform``, see
    :func:`speechssl.recipes.ctc_recipe`)."""
    return TranscribedAudio(AudioDataset(utterances, root, max_samples=None, crop="none",
                                         normalize=getattr(model, "normalize_waveform", False)), model, unit)


def evaluate(model, data: TranscribedAudio, *, batch_size: int = 8, beam_size: int | None = None) -> dict[str, Any]:
    """Error rates of ``model`` on ``data``: ``unit_error_rate`` (PER for phones, letter error rate for
    letters), ``wer`` for letters, and the counts they come from."""
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
                                description="CTC fine-tuning of a pre-trained wav2vec2 or hubert model (torchrun for several GPUs).",
                                epilog=f"modes: {', '.join(CTC_MODES)}\nscales: {', '.join(paths.SCALES)}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", default=None, help="wav2vec2 or hubert checkpoint or run folder (finetune and probe modes)")
    p.add_argument("--mode", choices=CTC_MODES, default="finetune",
                   help="finetune (default), scratch (same architecture, random init) or probe (frozen encoder, linear CTC)")
    add_data_options(p, split="finetune")
    p.add_argument("--eval-data", default=None, help="like --data; default: --data")
    p.add_argument("--eval-subsets", nargs="+", default=None, help="default for synth: test")
    p.add_argument("--beam", type=int, default=0, help="also decode with a beam of this size (needs flashlight-text)")
    add_run_options(p, default_out="<runs_dir>/wav2vec2_ctc_<mode>-<scale>")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 2 for a bad command line or configuration, 1 for a failed run, 0 on success."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)

    def body(info: DistInfo) -> int:
        r = ctc_recipe(args.mode, args.scale or paths.scale(), args.pretrained, **recipe_overrides(args))
        folder = check_run_folder(r.train.resolved_out_dir())
        if info.is_main:
            check_run_data(folder, args.data, args.subsets, args.resume, args.overwrite)
        (train_sets, root, unit), (eval_sets, eval_root, eval_unit) = main_process_first(info, lambda: (
            load_split(r, args.data, args.subsets, "finetune", info, audio_ext=args.audio_ext),
            load_split(r, args.eval_data or args.data, args.eval_subsets, "test", info, audio_ext=args.audio_ext,
                       option="--eval-data")))
        if eval_unit != unit:
            raise ConfigError(f"--eval-data {args.eval_data}: transcribed in {eval_unit}, the training data in {unit}")
        vocab = PHONE_VOCAB if unit == "phones" else LETTERS
        seed_everything(r.train.seed)
        model = r.build(vocab=vocab, pretrained=args.pretrained)
        run = start_run(r, [], root, model=model, collate=collate_ctc,
                        dataset=transcribed(model, [u for _, utts in train_sets for u in utts], root, unit))
        run.fit(resume=args.resume, overwrite=args.overwrite)
        if info.is_main:
            results: dict[str, Any] = {"mode": args.mode, "scale": r.scale, "updates": run.trainer.step, "unit": unit}
            for name, utts in eval_sets:
                data = transcribed(model, utts, eval_root, unit)
                results[name] = {"greedy": evaluate(model, data)}
                if args.beam:
                    results[name]["beam"] = evaluate(model, data, beam_size=args.beam)
                summary = ", ".join(f"{k} {v['unit_error_rate']:.3f}" + (f" (WER {v['wer']:.3f})" if "wer" in v else "")
                                    for k, v in results[name].items())
                print(f"{name}: {'PER' if unit == 'phones' else 'letter error rate'} {summary}")
            (run.trainer.out_dir / "eval.json").write_text(json.dumps(results, indent=1))
        return 0

    return run_command(parser.prog, body, scale=lambda: args.scale or paths.scale())


if __name__ == "__main__":
    sys.exit(main())
