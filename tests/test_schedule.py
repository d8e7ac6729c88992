"""The test command's two workers: every chapter runs in one chain, after the chapters whose runs it reuses."""

from pathlib import Path

import pytest

from speechssl.testing.schedule import CHAIN_OF, CHAINS, CROSS_READS, ChainScheduling, group

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("*.ipynb"))


def test_every_chapter_is_in_exactly_one_chain():
    listed = [name for names in CHAINS.values() for name in names]
    assert sorted(listed) == CHAPTERS                  # none missing, none unknown, none twice


def test_each_chain_runs_in_the_books_order():
    # a page reuses runs of earlier pages only, so the book's order puts writers before readers
    for names in CHAINS.values():
        assert list(names) == sorted(names)


def test_a_page_shares_the_chain_of_its_chapter_unless_its_read_crosses_by_design():
    # "05b_ablation_alpha" reuses "05_hubert"'s runs, "04b_..." chapter 4's, and so on
    for name in CHAPTERS:
        main = next(c for c in CHAPTERS if c.split("_")[0] == name.split("_")[0].rstrip("abc"))
        if name in CROSS_READS:
            assert CHAIN_OF[name] != CHAIN_OF[CROSS_READS[name]], name
            # a crossing read comes late in its chain, long after its writer has finished
            assert CHAINS[CHAIN_OF[name]].index(name) >= 4
        else:
            assert CHAIN_OF[name] == CHAIN_OF[main], name


def test_groups_of_items():
    assert group(ROOT / "chapters" / "05_hubert.ipynb") == "chapters-units"
    assert group(ROOT / "chapters" / "04b_label_efficiency.ipynb") == "chapters-wav2vec2"
    assert group(ROOT / "tests" / "test_schedule.py") == "test_schedule.py"
    assert group(ROOT / "book" / "results.ipynb") == "results.ipynb"
    with pytest.raises(pytest.UsageError, match="07_new.ipynb: this chapter is in no chain"):
        group(ROOT / "chapters" / "07_new.ipynb")


def test_the_scheduler_scopes_a_chain_as_one():
    scope = lambda nodeid: ChainScheduling._split_scope(None, nodeid)  # noqa: E731
    assert scope("chapters/05_hubert.ipynb::Cell 3") == scope("chapters/06b_ablation_auxiliary.ipynb::Cell 0")
    assert scope("chapters/05_hubert.ipynb::Cell 3") != scope("chapters/05c_hubert_finetune.ipynb::Cell 3")
    assert scope("tests/test_cluster.py::test_a[1-2]") == scope("tests/test_cluster.py::test_b") == "test_cluster.py"
