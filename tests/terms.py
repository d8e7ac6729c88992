"""Glossary-term consistency and emphasis that renders.

``book/glossary.md`` gives, for each term, the Korean and Chinese words the notes use for it
(``한국어 **…** · 中文 **…**``, alternatives separated by `` / ``). A note (a Markdown cell, or a
section of a book page) whose English text names a term must use one of the glossary's words for it
in its 한국어 and its 中文 block. ``AVOID`` lists words that drifted from the glossary before.

Bold and italic marks must close: CommonMark does not close ``**`` that follows punctuation and is
followed by a letter (for example ``**군집 순도(PNMI)**를``), so the reader sees the asterisks.
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

from trilingual import DETAILS, FENCE, MARKUP, notes_of_markdown, notes_of_notebook

GLOSSARY_BLOCK = re.compile(r"```\{glossary\}\n(.*?)```", re.S)
TRANSLATION = re.compile(r"한국어 \*\*(.+?)\*\* · 中文 \*\*(.+?)\*\*")
TERM_ROLE = re.compile(r"\{term\}`([^`<]*?)\s*(?:<[^>]*>)?`")    # a glossary link keeps its text
PAREN = re.compile(r"(.*?)\s*[（(](.*?)[)）]\s*$")

# Words that drifted from the glossary in earlier versions of the notes, and the glossary's word.
AVOID = {
    "클러스터 순도": "군집 순도", "聚类纯度": "簇纯度",
    "방해 표본": "방해 샘플", "干扰样本": "干扰项",
    "코퍼스": "말뭉치", "升温": "预热",
}


def forms(translation: str) -> list[str]:
    """Accepted spellings: each ' / ' alternative, with and without its parenthesis, and the parenthesis."""
    out = []
    for alt in translation.split(" / "):
        out.append(alt.strip())
        m = PAREN.match(alt.strip())
        if m:
            out += [m.group(1).strip(), m.group(2).strip()]
    return [f for f in out if f]


def glossary(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """English term (and each alias) -> (Korean forms, Chinese forms)."""
    terms: dict[str, tuple[list[str], list[str]]] = {}
    for block in GLOSSARY_BLOCK.findall(path.read_text(encoding="utf-8")):
        names: list[str] = []
        for line in block.splitlines():
            if line and not line[0].isspace():
                names.append(line.strip())
                continue
            m = TRANSLATION.search(line)
            if m and names:
                for name in names:
                    terms[name] = (forms(m.group(1)), forms(m.group(2)))
            if line.strip():
                names = []
    return terms


def english_pattern(term: str) -> re.Pattern:
    flags = 0 if any(c.isupper() for c in term) else re.I
    return re.compile(r"(?<![\w-])" + re.escape(term) + r"(?:s|es)?(?![\w+-])", flags)


def segments(note: str) -> list[tuple[str, dict[str, str]]]:
    """(English text, {language: its translation}) for each stretch of English and the folds after it."""
    out, english, blocks, pos = [], "", {}, 0
    for m in DETAILS.finditer(note):
        between = note[pos:m.start()]
        if between.strip() and blocks:              # new English text after a group of folds
            out.append((english, blocks))
            english, blocks = "", {}
        english += between
        blocks[m.group(1).strip()] = m.group(2)
        pos = m.end()
    if note[pos:].strip() and blocks:
        out.append((english, blocks))
        english, blocks = "", {}
    out.append((english + note[pos:], blocks))
    return [(MARKUP.sub(" ", FENCE.sub(" ", TERM_ROLE.sub(r"\1", e))), b) for e, b in out]


def term_problems(note: str, terms: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    return [p for english, blocks in segments(note) for p in _segment_problems(english, blocks, terms)]


def _segment_problems(english: str, blocks: dict[str, str], terms) -> list[str]:
    out = []
    for term in sorted(terms, key=len, reverse=True):    # longest first: "k-means++" before "k-means"
        pattern = english_pattern(term)
        if not pattern.search(english):
            continue
        english = pattern.sub(" ", english)
        for language, accepted in zip(("한국어", "中文"), terms[term]):
            text = blocks.get(language)
            text = None if text is None else " ".join(text.split()).lower()    # a line break may split a term
            if text is not None and not any(f.lower() in text for f in accepted):
                out.append(f"{term!r}: the {language} note uses none of {accepted}")
    for language in ("한국어", "中文"):
        for wrong, right in AVOID.items():
            if wrong in blocks.get(language, ""):
                out.append(f"the {language} note writes {wrong!r}; the glossary's word is {right!r}")
    return out


_MD = MarkdownIt("commonmark")


def emphasis_problems(note: str) -> list[str]:
    """Asterisks or underscores of emphasis that CommonMark leaves as literal characters."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", " ", note, flags=re.S)
    out = []
    for token in _MD.parse(text):
        for child in token.children or []:
            if child.type == "text" and re.search(r"\*\*|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])", child.content):
                out.append(f"literal emphasis mark in {child.content.strip()[:60]!r}")
    return out


def notes_of(path: Path) -> list[str]:
    return notes_of_notebook(path) if path.suffix == ".ipynb" else notes_of_markdown(path.read_text(encoding="utf-8"))
