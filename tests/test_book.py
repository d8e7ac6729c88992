"""The book builds with warnings as errors, and its pages carry the chapters' content."""

import shutil
import subprocess
import sys
from pathlib import Path

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
                        ("03_wav2vec2", ("perplexity", "UMAP")), ("04_finetune_ctc", ("PER", "tri-stage"))):
        page = (html / "chapters" / f"{name}.html").read_text(encoding="utf-8")
        assert all(w in page for w in words) and "<img" in page, name
        assert page.count("<table") >= 4 and "holds here" in page, name
    # citations resolve to the bibliography
    assert "Hsu" in (html / "book" / "references.html").read_text(encoding="utf-8")
