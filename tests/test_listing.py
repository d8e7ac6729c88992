"""Equations beside the library lines that implement them (speechssl.listing)."""

import re
from pathlib import Path

import pytest

from speechssl.listing import Equation, marked_lines

LIB = Path(__file__).resolve().parents[1] / "lib"


def test_every_marker_in_lib_is_a_closed_pair():
    for path in LIB.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        opens = re.findall(r"#\s*\[eq ([\w.-]+)\]", text)
        closes = re.findall(r"#\s*\[/eq ([\w.-]+)\]", text)
        assert sorted(opens) == sorted(closes) and len(set(opens)) == len(opens), path


def test_marked_lines_are_dedented_with_their_function():
    m = marked_lines("speechssl.decoding:ctc-collapse")
    assert m.path == "speechssl/decoding.py" and m.function == "collapse"
    assert m.code.startswith("merged = ") and "[eq" not in m.code
    assert marked_lines("speechssl.nn.quantizers:gumbel").function == "GumbelQuantizer.forward"


def test_a_missing_marker_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected one '# \[eq no-such\]'"):
        marked_lines("speechssl.decoding:no-such")
    with pytest.raises(ValueError, match="module:marker"):
        marked_lines("speechssl.decoding")


def test_equation_renders_equation_and_code_side_by_side():
    e = Equation(r"B(\pi)", "speechssl.decoding:ctc-collapse", note="Graves et al. 2006")
    page = e._repr_html_()
    assert "display:flex" in page and "mathjax_process" in page and r"\[B(\pi)\]" in page
    assert "lib/speechssl/decoding.py, collapse()" in page and "merged" in page
    text = repr(e)
    assert text.splitlines()[0] == r"B(\pi)" and "# lib/speechssl/decoding.py, collapse()" in text
