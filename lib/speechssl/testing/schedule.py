"""pytest plugin: run the test command on two pytest-xdist workers without changing a bit of any output.

Load it with ``-p speechssl.testing.schedule`` beside ``-n 2 --dist loadscope`` (``scripts/test.sh`` does).
Its scheduler gives xdist one scope per group of tests, and one worker runs a whole scope, in collection
order:

- each unit-test module is one group, so its module-scoped fixtures are built once;
- the chapter notebooks form two :data:`CHAINS`. A chapter that reuses an earlier chapter's run
  (``reuse=True``) must find it finished, or it would train the same run itself, beside the chapter that
  writes it. So a writer and its readers share a chain, and the chain runs them in the book's order.
  Two reads cross the chains, and each comes long after its writer has finished: chapter 5 reads
  chapter 3's wav2vec 2.0 after its own two trainings, and page 5c, the last of its chain, reads chapter
  5's HuBERT. A read that came before its writer had finished would train the same run a second time,
  side by side with the writer; the order of the chains, not a lock, keeps that from happening.

xdist hands out the largest scopes first, so the two chains start at once, one on each worker, and the
unit tests and the results page fill in behind them. (A scheduler, because xdist's own ``xdist_group``
marks left the node ids unmarked under pytest 9.2 with xdist 3.8, and every test went its own way.)

Two notebooks at once keep their outputs bit for bit: each kernel still uses 2 threads
(:func:`speechssl.chapter.setup`), and the number of threads, not the number of free cores, decides how
a reduction is split. What would cost time is OpenMP's default of spinning while it waits at a barrier:
with two processes of 2 threads on 2 cores, the spinning threads take the cores from the working ones.
``scripts/common.sh`` therefore sets ``OMP_WAIT_POLICY=PASSIVE`` (``bench/bench_parallel.py`` measures
the three ways).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

#: The chapter notebooks in two chains of about equal cost (minutes of ``tiny`` runs on 2 idle cores).
CHAINS: dict[str, tuple[str, ...]] = {
    # chapter 3's wav2vec 2.0, the ablations and CTC runs that reuse it, chapter 4's runs that 4b, 4c
    # and 5c reuse (about 39 min)
    "wav2vec2": ("03_wav2vec2", "03b_ablation_diversity", "03c_ablation_targets", "04_finetune_ctc",
                 "04b_label_efficiency", "04c_ablation_encoder", "05c_hubert_finetune"),
    # chapters 0 to 2 and their ablations, then HuBERT and wav2vec-U, which reuse chapter 5's runs
    # (about 37 min)
    "units": ("00_audio_and_units", "01_wav2vec", "01b_ablation_infonce", "02_vq_wav2vec", "02b_ablation_groups",
              "05_hubert", "05b_ablation_alpha", "06_wav2vec_u", "06b_ablation_auxiliary"),
}

#: The reads across the chains: reader -> the chapter whose run it reuses (see the module's notes).
CROSS_READS = {"05_hubert": "03_wav2vec2", "05c_hubert_finetune": "05_hubert"}

CHAIN_OF = {name: chain for chain, names in CHAINS.items() for name in names}


def group(path: Path) -> str:
    """The xdist group of an item collected from ``path``: its chain for a chapter, else its file."""
    if path.suffix == ".ipynb" and path.parent.name == "chapters":
        if path.stem not in CHAIN_OF:
            raise pytest.UsageError(f"{path}: this chapter is in no chain of speechssl.testing.schedule.CHAINS; "
                                    "add it after the chapters whose runs it reuses")
        return f"chapters-{CHAIN_OF[path.stem]}"
    return path.name


class ChainScheduling(LoadScopeScheduling):
    """xdist's ``loadscope`` scheduling with :func:`group` as the scope of each test."""

    def _split_scope(self, nodeid: str) -> str:
        return group(Path(nodeid.split("::", 1)[0]))


def pytest_xdist_make_scheduler(config: pytest.Config, log) -> ChainScheduling:
    return ChainScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:    # a chapter in no chain is refused here, before anything runs
        group(Path(item.path))
