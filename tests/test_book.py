"""The book builds with warnings as errors, and its pages carry the chapters' content."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]


def test_book_builds_without_warnings(tmp_path):
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    proc = subprocess.run([jb, "build", str(ROOT), "--path-output", str(tmp_path), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").is_file()
    chapter = (html / "chapters" / "00_audio_and_units.html").read_text(encoding="utf-8")
    # stored outputs are rendered: the unit-quality table and figures are in the page
    assert "PNMI" in chapter and "<img" in chapter
    # result tables are rendered as tables, not as raw Markdown text
    assert chapter.count("<table") >= 3 and "|---|" not in chapter
    assert "한국어" in chapter and "中文" in chapter
    # every later chapter is in the book with its figures, result tables and the claims table
    for name, words in (("01_wav2vec", ("chance", "MFCC")), ("02_vq_wav2vec", ("perplexity", "PNMI")),
                        ("03_wav2vec2", ("perplexity", "UMAP")), ("04_finetune_ctc", ("PER", "tri-stage")),
                        ("05_hubert", ("PNMI", "MFCC")),
                        ("05a_hubert_iteration2", ("PNMI", "iteration 2")), ("05c_hubert_finetune", ("PER", "Table II")),
                        ("06_wav2vec_u", ("cipher", "weighted_lm_ppl")), ("06c_cipher", ("frequency rank", "pair"))):
        page = (html / "chapters" / f"{name}.html").read_text(encoding="utf-8")
        assert all(w in page for w in words) and "<img" in page, name
        assert page.count("<table") >= 4 and "holds here" in page, name
    # citations resolve to the bibliography
    assert "Hsu" in (html / "book" / "references.html").read_text(encoding="utf-8")
    for page in sorted(html.glob("chapters/*.html")) + sorted(html.glob("book/*.html")) + [html / "index.html"]:
        assert fold_problems(page.read_text(encoding="utf-8")) == [], page.name
    # the results page is in the book, and the introduction's box shows its verdicts (glued across pages)
    results = (html / "book" / "results.html").read_text(encoding="utf-8")
    assert "beats MFCC on both" in results and "holds at tiny" in results
    intro = (html / "book" / "intro.html").read_text(encoding="utf-8")
    assert re.search(r"\d+ of \d+ claims hold at the", intro) and "against MFCC" in intro
    # equations stand beside the library lines (MathJax typesets the flex box), and chapters link the glossary
    ch3 = (html / "chapters" / "03_wav2vec2.html").read_text(encoding="utf-8")
    assert "speechssl-equation" in ch3 and "mathjax_process" in ch3 and "lib/speechssl/models/wav2vec2.py" in ch3
    assert all(p.read_text(encoding="utf-8").count('class="reference internal" href="../book/glossary.html#term-') >= 5
               for p in html.glob("chapters/*.html"))
    # the book's style sheet is loaded: long code lines wrap instead of running under a scroll bar
    assert "speechssl.css" in chapter and "pre-wrap" in (html / "_static" / "speechssl.css").read_text(encoding="utf-8")


HAN_OR_HANGUL = re.compile(r"[\uac00-\ud7a3\u4e00-\u9fff]")


def fold_problems(page: str) -> list[str]:
    """Language folds that would not fold in the browser: a <details> whose translation ended up outside it
    (a heading inside the fold starts a new section and closes it), or a page contents list that names
    sections in Korean or Chinese (the translations' headings, listed a second and a third time)."""
    soup = BeautifulSoup(page, "html.parser")
    out = []
    for d in soup.find_all("details"):
        label = d.summary.get_text(strip=True) if d.summary else ""
        body = d.get_text(" ", strip=True)[len(label):].strip()
        if len(body) < 10:
            out.append(f"<details> {label!r} holds no content (closed before its translation)")
        if d.find("section") is not None or d.find(re.compile("^h[1-6]$")) is not None:
            out.append(f"<details> {label!r} holds a section or heading")
    for a in soup.select(".bd-toc a, nav.bd-links a, .toc-entry a"):
        if HAN_OR_HANGUL.search(a.get_text()) and a.get_text(strip=True) not in ("한국어", "中文"):
            out.append(f"contents entry in another language: {a.get_text(strip=True)!r}")
    return out


def test_fold_check_finds_a_fold_broken_by_a_heading():
    broken = ('<details><summary>한국어</summary></details><section id="x"><h2>준비</h2><p>한국어 설명</p></section>'
              '<nav class="bd-toc"><a href="#x">준비</a></nav>')
    assert len(fold_problems(broken)) == 2
    good = "<details><summary>한국어</summary><p><strong>준비</strong></p><p>한국어로 된 설명입니다.</p></details>"
    assert fold_problems(good) == []
