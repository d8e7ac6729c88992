"""Checks that a note carries English, Korean and Chinese text.

A *note* is a Markdown notebook cell, or a section (text up to the next heading) of a book
page. A note with more than ``MIN_ENGLISH`` characters of English prose must contain a
``<details><summary>한국어</summary> … </details>`` block with Hangul in it and a
``<details><summary>中文</summary> … </details>`` block with Chinese characters in it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

MIN_ENGLISH = 120
HANGUL = re.compile(r"[\uac00-\ud7a3]")
CJK = re.compile(r"[\u4e00-\u9fff]")
DETAILS = re.compile(r"<details>\s*<summary>(.*?)</summary>(.*?)</details>", re.S)
FENCE = re.compile(r"(```|~~~|:::).*?\1", re.S)
MARKUP = re.compile(r"(\$\$.*?\$\$|\$[^$\n]*\$|<[^>]+>|\{[a-z:]+\}`[^`]*`|`[^`]*`|\[[^\]]*\]\([^)]*\)|^#+[^\n]*$|^\([^\n]*\)=$)", re.S | re.M)


def english_length(text: str) -> int:
    """Letters of prose outside code, math, links, headings and the language blocks."""
    body = DETAILS.sub("", FENCE.sub("", text))
    body = MARKUP.sub("", body)
    return len(re.findall(r"[A-Za-z]", body))


def check_note(text: str) -> list[str]:
    """Problems with one note (empty list: fine)."""
    if english_length(text) <= MIN_ENGLISH:
        return []
    blocks = {summary.strip(): content for summary, content in DETAILS.findall(text)}
    problems = []
    if not HANGUL.search(blocks.get("한국어", "")):
        problems.append("no <details><summary>한국어</summary> block with Korean text")
    if not CJK.search(blocks.get("中文", "")):
        problems.append("no <details><summary>中文</summary> block with Chinese text")
    return problems


def notes_of_markdown(text: str) -> list[str]:
    """Split a Markdown page into sections at headings (ignoring '#' inside code fences)."""
    sections, current, in_fence = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not in_fence and re.match(r"#{1,6} ", line) and current:
            sections.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        sections.append("\n".join(current))
    return sections


def notes_of_notebook(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def problems_in(path: Path) -> list[str]:
    notes = notes_of_notebook(path) if path.suffix == ".ipynb" else notes_of_markdown(path.read_text(encoding="utf-8"))
    out = []
    for i, note in enumerate(notes):
        for p in check_note(note):
            first = note.strip().splitlines()[0][:60] if note.strip() else ""
            out.append(f"{path.name}, note {i} ({first!r}): {p}")
    return out
