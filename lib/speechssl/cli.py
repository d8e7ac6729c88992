"""Command-line code shared by the training commands (``python -m speechssl.train``, ``... .finetune``).

Every command takes a model's recipe (:mod:`speechssl.recipes`) at a scale, applies the options the
user gave as recipe overrides, reads its corpus (the synthetic one of the scale, generated when
missing, or LibriSpeech), and runs inside :func:`run_command`: one process, or one of many under
``torchrun``. A bad command line or configuration exits with status 2 and a one-line error, a failed
run with status 1; neither prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from . import paths
from .engine.config import PRECISIONS
from .engine.distributed import DistInfo, init_distributed, main_process_first
from .errors import ConfigError, CorpusNotFoundError, SpeechSSLError
from .frames import SAMPLE_RATE
from .progress import progress_disabled
from .recipes import Recipe

__all__ = ["add_data_options", "add_run_options", "check_run_data", "load_split", "parse_data_spec", "recipe_overrides",
           "run_command"]

#: Run options -> recipe settings (TrainConfig fields); values are taken as given.
_RUN_FIELDS = {"max_steps": "max_steps", "warmup_steps": "warmup_steps", "seed": "seed", "lr": "lr",
               "accum_steps": "accum_steps", "precision": "precision", "num_workers": "num_workers",
               "device": "device", "log_every": "log_every", "ckpt_every": "ckpt_every", "grad_clip": "grad_clip"}
#: Options in seconds of audio -> recipe settings in samples.
_SECOND_FIELDS = {"batch_seconds": "max_batch_samples", "crop_seconds": "crop_samples"}


def parse_data_spec(spec: str, option: str = "--data") -> tuple[str, Path | None]:
    """``"synth"`` -> ``("synth", None)``; ``"librispeech:PATH"`` -> ``("librispeech", PATH)``."""
    text = spec.strip() if isinstance(spec, str) else ""
    kind, sep, rest = text.partition(":")
    if text == "synth":
        return "synth", None
    if kind == "librispeech" and sep and rest.strip():
        return "librispeech", Path(rest.strip()).expanduser()
    if kind == "librispeech":
        raise ConfigError(f"{option}: expected 'librispeech:PATH' with the folder that contains LibriSpeech/, "
                          f"found {spec!r} (no path)")
    raise ConfigError(f"{option}: expected 'synth' or 'librispeech:PATH', found {spec!r}")


def add_data_options(p: argparse.ArgumentParser, *, split: str) -> None:
    """``--scale``, ``--data``, ``--subsets`` and ``--audio-ext``; ``split`` is the synthetic corpus' default."""
    p.add_argument("--scale", choices=paths.SCALES, default=None,
                   help="tiny (CPU, minutes), reduced (one GPU) or full (the paper's configuration); "
                        "default: $SPEECHSSL_SCALE or tiny")
    p.add_argument("--data", default="synth",
                   help="'synth' (the synthetic corpus of the scale, generated when missing) or 'librispeech:PATH' "
                        "(PATH contains LibriSpeech/)")
    p.add_argument("--subsets", nargs="+", default=None, metavar="SUBSET",
                   help=f"splits to read: for synth default '{split}'; for LibriSpeech required, e.g. train-clean-100 "
                        f"train-clean-360 train-other-500, or Libri-light's 1h/0/clean")
    p.add_argument("--audio-ext", default=".flac", help="extension of LibriSpeech-layout audio files (default .flac)")


def add_run_options(p: argparse.ArgumentParser, *, default_out: str) -> None:
    """The options of a training run: the run folder, resuming, and the recipe settings a user may change."""
    p.add_argument("--out", default=None, help=f"run folder (default: {default_out})")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="auto|CHECKPOINT",
                   help="continue the run in --out (--resume), only if there is one (--resume auto), or from a "
                        "given checkpoint file")
    p.add_argument("--overwrite", action="store_true", help="delete a run already in --out and start over")
    g = p.add_argument_group("recipe settings (default: the recipe of the model and scale)")
    g.add_argument("--max-steps", type=int, default=None,
                   help="number of updates; warm-up, freeze and temperature schedules keep their share of the run")
    g.add_argument("--warmup-steps", type=int, default=None, help="warm-up updates (default: the recipe's share)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate")
    g.add_argument("--batch-seconds", type=float, default=None, help="audio per batch and GPU, in seconds")
    g.add_argument("--crop-seconds", type=float, default=None, help="length of the random training crops, in seconds")
    g.add_argument("--accum-steps", type=int, default=None, help="micro-batches per update")
    g.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (0: no clipping)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--precision", choices=PRECISIONS, default=None)
    g.add_argument("--num-workers", type=int, default=None)
    g.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--log-every", type=int, default=None)
    g.add_argument("--ckpt-every", type=int, default=None)


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings given on the command line (``--out`` becomes ``out_dir``)."""
    out = {field: getattr(args, opt) for opt, field in _RUN_FIELDS.items() if getattr(args, opt, None) is not None}
    for opt, field in _SECOND_FIELDS.items():
        seconds = getattr(args, opt, None)
        if seconds is not None:
            if not seconds > 0:
                raise ConfigError(f"--{opt.replace('_', '-')}: expected a positive number of seconds, found {seconds}")
            out[field] = int(round(seconds * SAMPLE_RATE))
    if getattr(args, "out", None) is not None:
        out["out_dir"] = args.out
    return out


def load_split(r: Recipe, data: str, subsets: Sequence[str] | None, default: str, info: DistInfo, *,
               audio_ext: str = ".flac", option: str = "--data") -> tuple[list[tuple[str, list]], Path, str]:
    """``([(split, utterances), ...], corpus root, transcript unit)`` of a ``--data`` choice: the recipe's
    synthetic corpus (``phones``; generated by the main process when missing) or LibriSpeech (``letters``)."""
    kind, path = parse_data_spec(data, option)
    if kind == "synth":
        from .data.manifest import read_manifest
        from .data.synth import ensure_corpus

        root = Path(main_process_first(info, lambda: ensure_corpus(r.corpus_dir, r.corpus)))
        return [(s, read_manifest(root, s)) for s in (subsets or [default])], root, "phones"
    from .data.librispeech import find_librispeech, read_librispeech, subsets_found

    if not subsets:
        try:
            found = f" (found there: {', '.join(subsets_found(find_librispeech(path)))})"
        except CorpusNotFoundError:
            found = ""
        raise ConfigError(f"--subsets: name the LibriSpeech subsets to read from {path}{found}")
    show = info.is_main and not progress_disabled()
    return ([(s, read_librispeech(path, [s], audio_ext=audio_ext, progress=show)) for s in subsets], Path(path),
            "letters")


def check_run_data(folder: Path, data: str, subsets: Sequence[str] | None, resume: Any, overwrite: bool) -> None:
    """Record what a run is trained on (``<run>/data.json``) when it starts, and refuse to resume it on other
    data, naming both."""
    from .checkpoint import CheckpointManager

    record = folder / "data.json"
    current = {"data": data, "subsets": list(subsets) if subsets else None}
    holds_run = CheckpointManager(folder).latest() is not None
    if resume not in (False, None) and holds_run and record.is_file():
        saved = json.loads(record.read_text())
        if saved != current:
            raise ConfigError(f"--data/--subsets: the run in {folder} was trained on {saved['data']} "
                              f"(subsets {saved['subsets']}), this command gives {data} (subsets {current['subsets']}); "
                              f"resume it with the same data, or train into another --out")
    elif not holds_run or (resume in (False, None) and overwrite):
        folder.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(current) + "\n")


def run_command(prog: str, body: Callable[[DistInfo], int], *, scale: Callable[[], str] | None = None) -> int:
    """``body(info)`` inside a process group (one under torchrun); a :class:`~speechssl.errors.ConfigError`
    is exit status 2, another of the package's errors 1, each printed on one line after ``prog``. When
    ``scale()`` (the command's scale) is ``tiny``, the command runs the CPU kernels the chapters run
    (:func:`speechssl.kernels.pin`), so that its numbers are theirs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    created_group = not (dist.is_available() and dist.is_initialized())
    info = DistInfo()
    try:
        if scale is not None and scale() == "tiny":
            from . import kernels

            kernels.pin()
        info = init_distributed()
        return body(info)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SpeechSSLError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    finally:
        if info.distributed and created_group and dist.is_initialized():
            dist.destroy_process_group()
