"""An equation of a paper beside the library lines that implement it.

The lines are read from ``lib/`` when the chapter runs, between two marker comments::

    # [eq infonce]
    per_pos = torch.logsumexp(torch.cat([pos.unsqueeze(-1), neg], -1), -1) - pos
    # [/eq infonce]

so the page always shows the code as it stands; a marker that disappears is an error, and nbval's
check of the stored output fails when the marked lines change without the chapter being re-run.

    Equation(r"\\mathcal{L} = ...", "speechssl.nn.losses:infonce", note="Eq. 1")

renders, in the HTML book and in Jupyter, as two columns: the equation (typeset by MathJax) on
the left and the code on the right, with the file and function it comes from.
"""

from __future__ import annotations

import html
import importlib
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Equation", "marked_lines"]

_LIB = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Marked:
    path: str        # relative to lib/, e.g. "speechssl/nn/losses.py"
    function: str    # the enclosing def ("Class.method" in a class), or "" at module level
    code: str        # the marked lines, dedented


def marked_lines(ref: str) -> Marked:
    """The lines between ``# [eq NAME]`` and ``# [/eq NAME]`` in the module of ``"module:NAME"``."""
    module, _, name = ref.partition(":")
    if not name:
        raise ValueError(f"ref: expected 'module:marker', for example 'speechssl.nn.losses:infonce', found {ref!r}")
    path = Path(inspect.getsourcefile(importlib.import_module(module)))
    lines = path.read_text(encoding="utf-8").splitlines()
    opens = [i for i, line in enumerate(lines) if re.search(rf"#\s*\[eq {re.escape(name)}\]\s*$", line)]
    closes = [i for i, line in enumerate(lines) if re.search(rf"#\s*\[/eq {re.escape(name)}\]\s*$", line)]
    if len(opens) != 1 or len(closes) != 1 or closes[0] <= opens[0]:
        raise ValueError(f"{path}: expected one '# [eq {name}]' ... '# [/eq {name}]' pair, "
                         f"found {len(opens)} opening and {len(closes)} closing markers")
    start, end = opens[0], closes[0]
    indent = len(lines[start]) - len(lines[start].lstrip())
    function, level = "", indent
    for line in reversed(lines[:start]):               # the enclosing def, and its class if it has one
        m = re.match(r"(\s*)(def|class) (\w+)", line)
        if m and len(m.group(1)) < level and (m.group(2) == "class" or not function):
            function = f"{m.group(3)}.{function}" if function else m.group(3)
            level = len(m.group(1))
            if m.group(2) == "class" or level == 0:
                break
    code = textwrap.dedent("\n".join(lines[start + 1:end])).strip("\n")
    try:
        shown = path.resolve().relative_to(_LIB).as_posix()
    except ValueError:
        shown = path.name
    return Marked(shown, function, code)


def _highlight(code: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:  # pragma: no cover - pygments comes with Jupyter
        return html.escape(code)
    return highlight(code, PythonLexer(), HtmlFormatter(nowrap=True, noclasses=True, style="friendly"))


class Equation:
    """A display equation and the marked library lines that compute it (see the module docstring).

    Args:
        tex: the equation in LaTeX (without ``$$``); a list of strings gives one line each.
        refs: ``"module:marker"`` for each marked region shown, in order.
        note: a short source reference shown under the equation, e.g. ``"wav2vec, Eq. 1"``.
    """

    def __init__(self, tex: str | list[str], *refs: str, note: str = "") -> None:
        self.tex = [tex] if isinstance(tex, str) else list(tex)
        self.parts = [marked_lines(r) for r in refs]
        self.note = note

    def _caption(self, part: Marked) -> str:
        return f"lib/{part.path}" + (f", {part.function}()" if part.function else "")

    def __repr__(self) -> str:
        out = [*self.tex] + ([f"({self.note})"] if self.note else [])
        for part in self.parts:
            out += ["", f"# {self._caption(part)}", part.code]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        eqs = "".join(f"<div>\\[{html.escape(t)}\\]</div>" for t in self.tex)
        note = f'<div style="font-size:85%;color:#555">{html.escape(self.note)}</div>' if self.note else ""
        code = "".join(
            f'<div style="font-size:80%;color:#555;margin-top:.4em">{html.escape(self._caption(p))}</div>'
            f'<pre style="margin:.2em 0;padding:.5em;white-space:pre-wrap;font-size:85%;background:#f7f7f7;'
            f'border-left:3px solid #6a9fd4">{_highlight(p.code)}</pre>' for p in self.parts)
        return ('<div class="speechssl-equation" style="display:flex;flex-wrap:wrap;gap:1em 2em;align-items:center">'
                f'<div class="mathjax_process tex2jax_process" style="flex:1 1 16em;min-width:14em;overflow-x:auto">'
                f'{eqs}{note}</div><div style="flex:2 1 24em;min-width:0">{code}</div></div>')
