"""Every note of the book carries English, 한국어 and 中文."""

from pathlib import Path

import pytest

from trilingual import check_note, notes_of_markdown, problems_in

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(ROOT.glob("chapters/*.ipynb")) + sorted(p for p in ROOT.glob("book/*.md"))

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
