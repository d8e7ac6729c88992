"""pytest plugin: nbval compares checked outputs (:mod:`speechssl.report`) within their tolerances.

Load it with ``-p speechssl.testing.nbval_tolerance``. It targets nbval 0.11, whose
``IPyNbCell.compare_outputs(self, test, ref, skip_compare=None)`` gets the re-executed outputs
(``test``) and the stored ones (``ref``) of a cell and compares them mime type by mime type.
The wrapper runs first:

- the outputs carrying ``application/vnd.speechssl.checked+json`` are paired in order; the
  templates must be equal (after nbval's sanitizers) and each new value within the stored
  value's tolerance, ``|new - ref| <= abs + rel * |ref|``;
- on success, the checked mime and its ``text/markdown`` and ``text/plain`` are removed from
  those outputs on both sides (an output left empty is dropped), and nbval compares the rest of
  the cell as before;
- on failure (including a different number of checked outputs) the cell fails with a message
  naming the value, both numbers, the tolerance and the text around the value;
- a cell whose stored outputs have no checked output at all (stored before this mechanism) is
  compared exactly, as before: the checked mime is dropped from the new outputs only.
"""

from __future__ import annotations

import difflib
import inspect
import json
from typing import Callable

import pytest
from nbformat import NotebookNode
from nbval.plugin import IPyNbCell

from speechssl.report import CHECKED_MIME, VERSION, decode_value, placeholder, within

_REPLACED = (CHECKED_MIME, "text/markdown", "text/plain")
_SIGNATURE = ["self", "test", "ref", "skip_compare"]


def _payload(output: dict) -> dict | None:
    """The checked payload of one output, or None."""
    data = output.get("data") if output.get("output_type") in ("display_data", "execute_result") else None
    payload = (data or {}).get(CHECKED_MIME)
    try:
        return json.loads(payload) if isinstance(payload, str) else payload
    except ValueError:
        return payload  # reported as malformed by _problems


def _without(output: dict, mimes: tuple[str, ...]) -> NotebookNode | None:
    """A copy of ``output`` without ``mimes`` in its data (None if no data is left)."""
    data = {k: v for k, v in output["data"].items() if k not in mimes}
    return NotebookNode({**output, "data": NotebookNode(data)}) if data else None


def _where(template: str, i: int) -> str:
    """The text around placeholder i: its table column and row, or the sentence around it."""
    mark = placeholder(i)
    at = template.find(mark)
    if at < 0:
        return "(its placeholder is missing from the template)"
    start, end = template.rfind("\n", 0, at) + 1, template.find("\n", at)
    line = template[start:end if end >= 0 else len(template)]
    if line.startswith("|"):
        header = next(h for h in template.splitlines() if h.startswith("|"))
        names = [h.strip() for h in header.strip().strip("|").split("|")]
        col = line[:at - start].count("|") - 1
        return f'column "{names[col] if 0 <= col < len(names) else "?"}" of table row "{line}"'
    lo, hi = max(0, at - start - 60), at - start + len(mark) + 60
    return f'"{"…" if lo else ""}{line[lo:hi]}{"…" if hi < len(line) else ""}"'


def _problems(item: IPyNbCell, n: int, ref: dict, new: dict) -> list[str]:
    """Why the n-th checked output of a cell does not match (empty: it matches)."""
    try:
        if ref.get("version") != VERSION or new.get("version") != VERSION:
            return [f"checked output {n}: version {ref.get('version')!r} stored, {new.get('version')!r} "
                    f"new; this plugin reads version {VERSION}"]
        ref_t, new_t = item.sanitize(ref["template"]), item.sanitize(new["template"])
        ref_v, new_v = ref["values"], new["values"]
        if ref_t != new_t:
            diff = difflib.unified_diff(ref_t.splitlines(), new_t.splitlines(), "stored", "new", lineterm="")
            return [f"checked output {n}: the text around the values differs (values are ⟨i⟩):", *diff]
        if len(ref_v) != len(new_v):
            return [f"checked output {n}: {len(ref_v)} values stored, {len(new_v)} new"]
        out = []
        for i, (r, v) in enumerate(zip(ref_v, new_v)):
            old, value, tol = decode_value(r["value"]), decode_value(v["value"]), (float(r["abs"]), float(r["rel"]))
            if not within(value, old, *tol):
                out.append(f"checked output {n}, value {placeholder(i)} in {_where(ref_t, i)}: stored {old!r}, "
                           f"new {value!r}, |difference| {abs(value - old):.6g} > abs {tol[0]:g} + rel {tol[1]:g} "
                           f"x |stored| = {tol[0] + tol[1] * abs(old):.6g}")
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return [f"checked output {n}: malformed {CHECKED_MIME} payload ({type(e).__name__}: {e})"]


def compare_checked(item: IPyNbCell, test: list, ref: list, skip_compare, original: Callable) -> bool:
    """Compare a cell's checked outputs within tolerance, then the rest with nbval's ``original``."""
    ref_at = [i for i, o in enumerate(ref) if _payload(o) is not None]
    test_at = [i for i, o in enumerate(test) if _payload(o) is not None]
    if not ref_at:  # stored before checked outputs existed: compare the Markdown and plain text exactly
        test = [_without(o, (CHECKED_MIME,)) if i in test_at else o for i, o in enumerate(test)]
        return original(item, [o for o in test if o is not None], ref, skip_compare)
    if len(ref_at) != len(test_at):
        problems = [f"{len(ref_at)} checked outputs stored, {len(test_at)} in the new run"]
    else:
        problems = [p for n, (i, j) in enumerate(zip(ref_at, test_at))
                    for p in _problems(item, n, _payload(ref[i]), _payload(test[j]))]
    if problems:
        cc = item.colors
        item.comparison_traceback = [cc.FAIL + "checked outputs differ (speechssl.testing.nbval_tolerance)" + cc.ENDC,
                                     *problems]
        return False
    ref = [_without(o, _REPLACED) if i in ref_at else o for i, o in enumerate(ref)]
    test = [_without(o, _REPLACED) if i in test_at else o for i, o in enumerate(test)]
    return original(item, [o for o in test if o is not None], [o for o in ref if o is not None], skip_compare)


def pytest_configure(config: pytest.Config) -> None:
    """Wrap nbval's comparison (once)."""
    original = IPyNbCell.compare_outputs
    if getattr(original, "_speechssl_tolerance", False):
        return
    params = list(inspect.signature(original).parameters)
    if params != _SIGNATURE:
        raise pytest.UsageError(f"speechssl.testing.nbval_tolerance expects nbval 0.11's compare_outputs"
                                f"{tuple(_SIGNATURE)}, found compare_outputs{tuple(params)}")

    def compare_outputs(self, test, ref, skip_compare=None):
        return compare_checked(self, test, ref, skip_compare, original)
    compare_outputs._speechssl_tolerance = True
    compare_outputs.__wrapped__ = original
    IPyNbCell.compare_outputs = compare_outputs


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore nbval's comparison."""
    if getattr(IPyNbCell.compare_outputs, "_speechssl_tolerance", False):
        IPyNbCell.compare_outputs = IPyNbCell.compare_outputs.__wrapped__
