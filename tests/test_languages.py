"""Every note of the book carries English, 한국어 and 中文."""

from pathlib import Path

import pytest

from trilingual import check_note, notes_of_markdown, problems_in

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(ROOT.glob("chapters/*.ipynb")) + sorted(ROOT.glob("book/*.ipynb")) + sorted(ROOT.glob("book/*.md"))

KO = "<details><summary>한국어</summary>\n\n이 문단은 한국어로 된 설명입니다.\n\n</details>"
ZH = "<details><summary>中文</summary>\n\n这一段是中文说明。\n\n</details>"
PROSE = "This paragraph explains an idea at length, so that it is long enough to count as a note of the book. " * 2


def test_there_are_pages():
    assert any(p.suffix == ".ipynb" for p in PAGES) and any(p.suffix == ".md" for p in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_note_is_trilingual(page):
    assert problems_in(page) == []


def test_checker_accepts_a_trilingual_note():
    assert check_note(f"{PROSE}\n\n{KO}\n\n{ZH}") == []


def test_checker_rejects_missing_or_empty_languages():
    assert len(check_note(PROSE)) == 2
    assert check_note(f"{PROSE}\n\n{KO}") == ["no <details><summary>中文</summary> block with Chinese text"]
    empty_ko = "<details><summary>한국어</summary>\n\nTODO\n\n</details>"
    assert check_note(f"{PROSE}\n\n{empty_ko}\n\n{ZH}") == ["no <details><summary>한국어</summary> block with Korean text"]


def test_checker_ignores_short_notes_and_code():
    assert check_note("## 1. Waveforms") == []
    assert check_note("```python\n" + "x = 1  # a long comment in English " * 20 + "\n```") == []


def test_markdown_sections_split_at_headings_outside_code():
    text = "# A\ntext\n```\n# not a heading\n```\n## B\nmore"
    assert len(notes_of_markdown(text)) == 2


def test_checker_counts_prose_after_a_heading():
    assert len(check_note(f"## A heading\n\n{PROSE}")) == 2


# ---- glossary terms and emphasis (tests/terms.py) ----

from terms import emphasis_problems, glossary, notes_of, term_problems  # noqa: E402

TERMS = glossary(ROOT / "book" / "glossary.md")


def test_glossary_is_parsed():
    assert len(TERMS) >= 45
    assert TERMS["cluster purity"] == (["군집 순도"], ["簇纯度"])
    assert "k-평균" in TERMS["k-means"][0] and "PNMI" in TERMS["PNMI"][1]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_notes_use_the_glossary_terms(page):
    problems = [f"note {i}: {p}" for i, note in enumerate(notes_of(page)) for p in term_problems(note, TERMS)]
    assert page.name == "glossary.md" or problems == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_emphasis_marks_close(page):
    assert [f"note {i}: {p}" for i, note in enumerate(notes_of(page)) for p in emphasis_problems(note)] == []


def test_term_check_finds_drift():
    en = "Cluster purity is the share of a cluster's frames that carry its phone, averaged over clusters."
    good = f"{en}\n\n<details><summary>한국어</summary>\n\n군집 순도는 군집의 프레임 중 ... 음소 ...\n\n</details>\n\n" \
           f"<details><summary>中文</summary>\n\n簇纯度是簇中 ... 帧 ... 音素 ...\n\n</details>"
    assert term_problems(good, TERMS) == []
    drift = good.replace("군집 순도", "클러스터 순도")
    assert len(term_problems(drift, TERMS)) == 2       # the glossary's word is missing, and a drifted word is used
    # each English stretch is checked against its own folds
    two = good + "\n\nThe k-means step comes next.\n\n" + KO + "\n\n" + ZH
    assert [p.split(":")[0] for p in term_problems(two, TERMS)] == ["'k-means'", "'k-means'"]


def test_emphasis_check_finds_literal_asterisks():
    assert emphasis_problems("**선형 프로브(linear probe)**입니다.") != []
    assert emphasis_problems("**선형 프로브**(linear probe)입니다.") == []
    assert emphasis_problems("**从零训练：**同样的结构") != [] and emphasis_problems("**从零训练**：同样的结构") == []
    assert emphasis_problems("$a * b * c$ and `x**2`") == []
