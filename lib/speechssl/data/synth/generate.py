"""Corpus generation: the splits synthesised in parallel, in plan order, up to their target
durations, and the corpus folder written and moved into place."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import deque
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...progress import progress_disabled
from ...frames import SAMPLE_RATE
from ..manifest import Utterance, write_frame_labels, write_manifest
from ..phones import PHONE_TO_ID, PHONES
from ..sentences import load_sentences
from .config import CorpusConfig, get_preset
from .espeak import get_espeak
from .meta import _meta, corpus_is_current
from .plan import _Plan
from .workers import _Executor, _Job

#: Utterances per work unit. Part of the output's definition (each chunk is synthesised from
#: a fresh engine state), so changing it requires a new
#: :data:`~speechssl.data.synth.GENERATOR_VERSION`.
CHUNK_SIZE = 8
_TEXT_CHUNK_SIZE = 256


def _estimate_seconds(job: _Job) -> float:
    """Rough duration of a job (for scheduling only; never affects the output)."""
    return len(job.text.split()) * 60.0 / job.rate * 1.25 + (job.lead + job.trail) / SAMPLE_RATE


def _progress_enabled(progress: bool) -> bool:
    """Show a bar if asked to and ``$SPEECHSSL_PROGRESS`` allows it; when that variable is not
    set, only on a terminal outside CI (a bar in a log or a committed notebook is noise)."""
    if not progress or progress_disabled():
        return False
    return os.environ.get("SPEECHSSL_PROGRESS") is not None or sys.stderr.isatty()


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _generate_split(executor: _Executor, plan: _Plan, split: str, target: float, root: Path,
                    start: list[Utterance], workers: int, bar) -> list[Utterance]:
    """Generate utterances of ``split`` in plan order until their total reaches ``target``."""
    accepted = list(start)
    total = sum(u.seconds for u in accepted)
    credited = min(total, target)     # seconds already shown on the progress bar
    if total >= target:
        return accepted
    jobs = plan.jobs(split, len(accepted))
    pending: deque = deque()          # (estimated seconds, async result), in plan order
    rejected: list[Utterance] = []
    exhausted = False
    new = 0
    scale = 1.0                       # measured / estimated duration, for scheduling only
    est_done = act_done = 0.0
    while total < target:
        ahead = sum(e for e, _ in pending) * scale
        while not exhausted and len(pending) < 4 * workers and (
                len(pending) < 1 or ahead < (target - total) + 2.0):
            chunk = [j for _, j in zip(range(CHUNK_SIZE), jobs)]
            if len(chunk) < CHUNK_SIZE:
                exhausted = True
            if not chunk:
                break
            est = sum(_estimate_seconds(j) for j in chunk)
            pending.append((est, executor.submit(("audio", str(root), chunk))))
            ahead += est * scale
        if not pending:
            raise ConfigError(
                f"{split}_seconds: expected at most the audio that the sentence pool allows, found "
                f"{target:.0f} s but only {total:.0f} s could be made from the unused sentences; "
                f"lower the split size or unpaired_sentences / max_unpaired_fraction")
        est, result = pending.popleft()
        utts = result.get()
        est_done += est
        act_done += sum(u.seconds for u in utts)
        scale = act_done / est_done if est_done else 1.0
        for u in utts:
            if total >= target:
                rejected.append(u)
                continue
            accepted.append(u)
            new += 1
            total += u.seconds
            if bar is not None:           # at most the target, so the bar never overflows
                bar.update(min(total, target) - credited)
                credited = min(total, target)
    for _, result in pending:          # finish the lookahead, then discard it
        rejected.extend(result.get())
    for u in rejected:
        Path(root, u.path).unlink(missing_ok=True)
    plan.commit(new)
    return accepted


def _remove_stale_partials(out_dir: Path) -> None:
    """Delete temporary folders left by interrupted runs whose process is gone."""
    stale = list(out_dir.parent.glob(f".{out_dir.name}.partial-*"))
    stale += out_dir.parent.glob(f".{out_dir.name}.old-*")
    for p in stale:
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            continue                   # still being written by a live process
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            continue


def _may_replace(path: Path) -> bool:
    """A folder may be replaced if it does not exist, is empty or holds a corpus (a corpus is
    only ever moved into place complete, with its meta.json)."""
    if not path.exists():
        return True
    return path.is_dir() and (not any(path.iterdir()) or (path / "meta.json").is_file())


def generate_corpus(out_dir: str | os.PathLike, preset: str | CorpusConfig = "tiny", seed: int = 0,
                    workers: int | None = None, progress: bool = True) -> Path:
    """Generate a synthetic corpus into ``out_dir`` (replacing an existing corpus there).

    Args:
        out_dir: target folder. It must not exist, be empty, or hold a corpus (a folder with
            other content is refused rather than deleted).
        preset: ``"tiny"``, ``"reduced"`` or a :class:`~speechssl.data.synth.CorpusConfig`.
        seed: seed of every random choice; the same seed gives byte-identical manifests, frame
            labels and audio, whatever ``workers``.
        workers: worker processes (default: the CPUs available to this process).
        progress: show a tqdm bar; ``$SPEECHSSL_PROGRESS=0`` turns it off and ``=1`` on,
            otherwise it shows only on a terminal outside CI.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    config = get_preset(preset)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, found {seed!r}")
    if workers is None:
        workers = _default_workers()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers: expected a positive integer, found {workers!r}")
    out_dir = Path(out_dir).absolute()
    if not _may_replace(out_dir):
        raise ConfigError(f"out_dir: expected a new, empty or corpus folder, found {out_dir} "
                          "with other content; refusing to overwrite it")
    espeak = get_espeak()               # loads the library here, so a missing one fails early
    unknown = [v for v in config.variants if v not in espeak.variants]
    if unknown:
        raise ConfigError(f"CorpusConfig({config.name!r}).variants: expected variants from "
                          f"{Path(espeak.data_path, 'voices', '!v')}, found unknown {unknown}")
    # Start the workers first: their start-up overlaps with reading the sentence files.
    executor = _Executor(int(workers), espeak.library_path, espeak.data_path)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    bar = None
    try:
        try:
            sentences = load_sentences(config.sources, config.min_words, config.max_words)
            plan = _Plan(config, int(seed), sentences)
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(out_dir)
            shutil.rmtree(tmp, ignore_errors=True)
            targets = config.split_targets
            for split in targets:
                (tmp / "wav" / split).mkdir(parents=True, exist_ok=True)
            if _progress_enabled(progress):
                from tqdm import tqdm
                total = sum(targets.values()) - targets["finetune"] * ("finetune_1h" in targets)
                bar = tqdm(total=total, unit="s", unit_scale=True, desc="synthesising",
                           bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s audio "
                                      "[{elapsed}<{remaining}]")
            text_items = []
            for k, idx in enumerate(plan.unpaired):
                spk = plan.by_id[plan.roles["train"][k % len(plan.roles["train"])]]
                text_items.append((f"text{k:06d}", sentences[idx], spk.voice))
            text_results = [executor.submit(("text", text_items[i:i + _TEXT_CHUNK_SIZE]))
                            for i in range(0, len(text_items), _TEXT_CHUNK_SIZE)]
            manifests: dict[str, list[Utterance]] = {}
            for split, target in targets.items():
                if bar is not None:
                    bar.set_description(split)
                start = manifests.get("finetune", []) if split == "finetune_1h" else []
                if bar is not None and start:     # finetune ran over its target by a fraction
                    bar.total -= min(sum(u.seconds for u in start), target) - targets["finetune"]
                manifests[split] = _generate_split(executor, plan, split, target, tmp, start,
                                                   int(workers), bar)
            unpaired = [row for r in text_results for row in r.get()]
        finally:
            if bar is not None:
                bar.close()
            executor.close()
        for split, utts in manifests.items():
            write_manifest(tmp, split, utts)
            write_frame_labels(tmp, split, utts, PHONE_TO_ID)
        with open(tmp / "unpaired_text.jsonl", "w", encoding="utf-8") as f:
            for row in unpaired:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / "phones.txt").write_text("\n".join(PHONES) + "\n", encoding="utf-8")
        meta = _meta(config, int(seed), espeak, plan, manifests, unpaired, len(sentences))
        # meta.json last: a folder with it is complete.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def ensure_corpus(out_dir: str | os.PathLike, preset: str | CorpusConfig = "tiny", seed: int = 0,
                  *, workers: int | None = None, progress: bool = True) -> Path:
    """Return ``out_dir``, generating the corpus first unless an identical one is already there
    (same config, seed, generator version and eSpeak NG version, all files present)."""
    if corpus_is_current(out_dir, preset, seed):
        return Path(out_dir)
    return generate_corpus(out_dir, preset, seed=seed, workers=workers, progress=progress)
