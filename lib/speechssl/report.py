"""Display objects for the chapters: tables and short notes whose trained numbers carry a tolerance.

A trained number differs in its last digits from one CPU to another, so a chapter wraps it in
:func:`measured` (the value and how far it may move). :class:`Table` and :class:`Note` render
as Markdown in Jupyter and in the book, as aligned text in ``text/plain``, and add a
``application/vnd.speechssl.checked+json`` output: the rendered Markdown with each measured
value replaced by a placeholder ``⟨i⟩``, and the values with their tolerances. The pytest plugin
:mod:`speechssl.testing.nbval_tolerance` compares that template exactly and the values within
the stored tolerances. Plain values (ints, strings, floats not wrapped) stay in the template, so
they are compared exactly; so is every verdict word (:func:`yes_no`).
"""

from __future__ import annotations

import builtins
import math
import numbers
import re
import string
from typing import Callable, Sequence

CHECKED_MIME = "application/vnd.speechssl.checked+json"
VERSION = 1
LANGUAGES = (("ko", "한국어"), ("zh", "中文"))
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)", re.M)


def placeholder(i: int) -> str:
    """The placeholder of the i-th measured value in a template."""
    return f"⟨{i}⟩"


def _number(value: object, name: str) -> int | float:
    """``value`` as a Python int or float (numpy/torch scalars accepted), or a TypeError."""
    if hasattr(value, "item") and not isinstance(value, numbers.Real):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            raise TypeError(f"{name} must be a single number, found {type(value).__name__} "
                            f"of shape {tuple(getattr(value, 'shape', ()))}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = "; use yes_no() for a verdict" if isinstance(value, bool) else ""
        raise TypeError(f"{name} must be an int or a float, found {type(value).__name__} {value!r}{hint}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def within(new: float, ref: float, abs: float = 0.0, rel: float = 0.0) -> bool:
    """``|new - ref| <= abs + rel * |ref|``; NaN equals NaN, an infinity only itself."""
    if math.isnan(new) or math.isnan(ref):
        return math.isnan(new) and math.isnan(ref)
    if math.isinf(new) or math.isinf(ref):
        return new == ref
    return builtins.abs(new - ref) <= abs + rel * builtins.abs(ref)


def encode_value(v: int | float) -> int | float | str:
    """A value for JSON (which has no NaN or infinities: those become strings)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def decode_value(v: object) -> int | float:
    """Inverse of :func:`encode_value`."""
    if isinstance(v, str) and v in _NONFINITE:
        return _NONFINITE[v]
    return _number(v, "checked value")


def _tolerance(tol: object, name: str) -> float:
    tol = float(_number(tol, name))
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, found {tol!r}")
    return tol


class Measured:
    """A trained number with the tolerance it may move by between machines (see :func:`measured`)."""

    __slots__ = ("value", "abs", "rel", "fmt")

    def __init__(self, value: object, *, abs: float = 0.0, rel: float = 0.0, fmt: str | None = None):
        self.value = _number(value, "value")
        self.abs, self.rel = (_tolerance(tol, name) for name, tol in (("abs", abs), ("rel", rel)))
        if fmt is not None:
            try:
                format(self.value, fmt)
            except (TypeError, ValueError) as e:
                raise ValueError(f"fmt must be a format spec for {self.value!r} such as '.3f', "
                                 f"found {fmt!r} ({e})") from None
        self.fmt = fmt

    def to_json(self) -> dict:
        return {"value": encode_value(self.value), "abs": self.abs, "rel": self.rel}

    def __float__(self) -> float:
        return float(self.value)

    def __format__(self, spec: str) -> str:
        return _fmt(self, spec or None)

    def __repr__(self) -> str:
        fmt = f", fmt={self.fmt!r}" if self.fmt else ""
        return f"measured({self.value!r}, abs={self.abs:g}, rel={self.rel:g}{fmt})"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        shown = _fmt(self)
        return {"text/markdown": shown, "text/plain": shown,
                CHECKED_MIME: {"version": VERSION, "template": placeholder(0), "values": [self.to_json()]}}


def measured(value: object, *, abs: float = 0.0, rel: float = 0.0, fmt: str | None = None) -> Measured:
    """A trained number that may move by ``abs + rel * |value|`` on another machine.

    ``fmt`` is its format spec (default: ints plain, floats as a table's ``floatfmt`` or ``.3f``).
    """
    return Measured(value, abs=abs, rel=rel, fmt=fmt)


def yes_no(flag: object, yes: str = "yes", no: str = "no") -> str:
    """A verdict word (compared exactly): ``yes`` for True, ``no`` for False."""
    try:
        value = flag.item() if hasattr(flag, "item") and not isinstance(flag, bool) else flag
    except (ValueError, RuntimeError):
        value = flag
    if not isinstance(value, bool):
        raise TypeError(f"flag must be a bool, found {type(flag).__name__} {flag!r}")
    return yes if value else no


def _fmt(v: object, spec: str | None = None, floatfmt: str = ".3f") -> str:
    """Shown text: an explicit spec wins, then a Measured's fmt; floats use floatfmt, NaN is '–'."""
    if isinstance(v, Measured):
        spec, v = spec or v.fmt, v.value
    if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
        return "–" if math.isnan(v) else format(float(v), spec or floatfmt)
    return format(v, spec) if spec else str(v)


Cell = Callable[[object, "str | None", "str | None"], str]  # (value, spec, key) -> text


class _Slots:
    """A Cell writing a placeholder for each Measured value (one per key) and collecting the values."""

    def __init__(self, show: Cell) -> None:
        self.show = show
        self.values: list[Measured] = []
        self._index: dict[str, int] = {}

    def __call__(self, v: object, spec: str | None, key: str | None) -> str:
        if not isinstance(v, Measured):
            return self.show(v, spec, key)
        if key is None or key not in self._index:
            self.values.append(v)
            self._index[key or ""] = len(self.values) - 1
        return placeholder(self._index[key or ""])


class _Checked:
    """Markdown, plain text and checked template of a display object; subclasses define
    ``_markdown(cell)`` (the Markdown, each value written by ``cell``) and ``_plain()``."""

    def _repr_markdown_(self) -> str:
        return self._markdown(self._show)

    def _show(self, v: object, spec: str | None, key: str | None = None) -> str:
        return _fmt(v, spec)

    def checked(self) -> dict:
        """The ``application/vnd.speechssl.checked+json`` payload."""
        slots = _Slots(self._show)
        template = self._markdown(slots)
        return {"version": VERSION, "template": template, "values": [m.to_json() for m in slots.values]}

    def __repr__(self) -> str:
        return self._plain()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/markdown": self._repr_markdown_(), "text/plain": self._plain(), CHECKED_MIME: self.checked()}


class Text:
    """A table cell of prose with computed numbers: ``text("PNMI {p} vs {q}", p=measured(...), q=0.1)``.

    Each :class:`Measured` value becomes its own checked value; everything else is compared exactly.
    """

    def __init__(self, template: str, **values: object) -> None:
        self.template, self.values = template, values
        try:
            self.fields = list(string.Formatter().parse(template))
        except ValueError as e:
            raise ValueError(f"text template {template!r} is not a valid format template: {e}") from None
        missing = sorted({name for _, name, _, _ in self.fields if name is not None} - set(values))
        if missing:
            raise ValueError(f"text template {template!r} names {missing}, which are not among the values "
                             f"({', '.join(sorted(values)) or 'none'})")

    def fill(self, cell: Cell) -> str:
        return "".join(literal + ("" if name is None else cell(self.values[name], spec or None, None))
                       for literal, name, spec, _ in self.fields)


def text(template: str, **values: object) -> Text:
    """A :class:`Text` cell."""
    return Text(template, **values)


def series(values: Sequence[float], *, sep: str = " → ", fmt: str | None = None, **tolerance: float) -> Text:
    """A :class:`Text` cell listing measured ``values`` (each with ``tolerance``), e.g. ``0.31 → 0.35 → 0.40``."""
    names = [f"v{i}" for i in range(len(values))]
    return Text(sep.join("{" + n + "}" for n in names),
                **{n: measured(v, fmt=fmt, **tolerance) for n, v in zip(names, values)})


def _escape_pipe(text: str) -> str:
    """A "|" inside a Markdown table cell would end the cell."""
    return text.replace("|", "\\|")


def _cell(v: object, cell: Cell) -> str:
    return v.fill(cell) if isinstance(v, Text) else cell(v, None, None)


class Table(_Checked):
    """A small table: Markdown in Jupyter and the book, aligned text in ``repr``; cells may be Measured."""

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[object]], floatfmt: str = ".3f",
                 caption: str | None = None):
        try:
            format(1.0, floatfmt)
        except (TypeError, ValueError):
            raise ValueError(f"floatfmt must be a float format spec such as '.3f', found {floatfmt!r}") from None
        self.headers = [str(h) for h in headers]
        self.rows = [list(row) for row in rows]
        self.floatfmt, self.caption = floatfmt, caption
        for i, row in enumerate(self.rows):
            if len(row) != len(self.headers):
                raise ValueError(f"rows[{i}] {row} has {len(row)} cells, expected {len(self.headers)} (one per header)")

    def _show(self, v: object, spec: str | None, key: str | None = None) -> str:
        return _fmt(v, spec, self.floatfmt)

    def _markdown(self, cell: Cell) -> str:
        lines = [f"**{self.caption}**", ""] if self.caption else []
        lines.append("| " + " | ".join(_escape_pipe(h) for h in self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(_escape_pipe(_cell(v, cell)) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def _plain(self) -> str:
        rows = [[_cell(v, self._show) for v in row] for row in self.rows]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(self.headers)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        out = ([self.caption] if self.caption else []) + [line(self.headers), line(["-" * w for w in widths])]
        return "\n".join(out + [line(r) for r in rows])


class Note(_Checked):
    """A short prose output from templates, its numbers filled in from computed values.

    ``en`` (and ``ko``, ``zh`` when given) are :meth:`str.format` templates over ``values``;
    ``{name:.1f}`` overrides a value's format. Translations fold into ``<details>`` blocks, and
    must quote the same values as the English sentence; a value may be given per language as a dict
    ``{"en": ..., "ko": ..., "zh": ...}`` (a verdict in words, say).
    """

    def __init__(self, en: str, ko: str | None = None, zh: str | None = None, **values: object):
        self.texts, self.values = {"en": en, "ko": ko, "zh": zh}, values
        used = {lang: self._check(lang) for lang, text in self.texts.items() if lang == "en" or text is not None}
        for lang, names in used.items():
            if names != used["en"]:
                raise ValueError(f"{lang} must quote the same values as en: en uses {sorted(used['en'])}, "
                                 f"{lang} uses {sorted(names)}")
        if set(values) - used["en"]:
            raise ValueError(f"values {sorted(set(values) - used['en'])} are not used by the en template")

    def _check(self, lang: str) -> set[str]:
        """The value names one template uses, or an error naming the template and the field."""
        text = self.texts[lang]
        if not isinstance(text, str):
            raise TypeError(f"{lang} must be a str template, found {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{lang} must be a non-empty template (or None to leave the language out)")
        if lang != "en" and _HEADING.search(text):
            raise ValueError(f"{lang} must not contain a Markdown heading (it goes inside <details>)")
        names = set()
        for _, name, spec, conversion in self._fields(lang):
            if name is None:
                continue
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            if conversion or name not in self.values:
                raise ValueError(f"{lang} template field {field} must name one of the values "
                                 f"({', '.join(sorted(self.values)) or 'none'}) without a conversion")
            try:
                if isinstance(self.values[name], dict) and lang not in self.values[name]:
                    raise ValueError(f"{lang} template field {field}: the per-language value has no {lang!r} entry")
                _fmt(self._value(name, lang), spec or None)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{lang} template field {field}: bad format spec for "
                                 f"{self.values[name]!r} ({e})") from None
            names.add(name)
        return names

    def _fields(self, lang: str) -> list[tuple]:
        try:
            return list(string.Formatter().parse(self.texts[lang]))
        except ValueError as e:
            raise ValueError(f"{lang} is not a valid format template: {e}") from None

    def _value(self, name: str, lang: str) -> object:
        """A value, or its ``lang`` entry when it is given per language (``{"en": ..., "ko": ..., "zh": ...}``)."""
        v = self.values[name]
        return v[lang] if isinstance(v, dict) else v

    def _fill(self, lang: str, cell: Cell) -> str:
        return "".join(literal + ("" if name is None else cell(self._value(name, lang), spec or None,
                                                             None if isinstance(self.values[name], dict) else name))
                       for literal, name, spec, _ in self._fields(lang))

    def _markdown(self, cell: Cell) -> str:
        parts = [self._fill("en", cell)]
        parts += [f"<details><summary>{label}</summary>\n\n{self._fill(lang, cell)}\n\n</details>"
                  for lang, label in self._translations()]
        return "\n\n".join(parts)

    def _plain(self) -> str:
        return "\n".join([self._fill("en", self._show)] + [f"{label}: {self._fill(lang, self._show)}"
                                                           for lang, label in self._translations()])

    def _translations(self) -> list[tuple[str, str]]:
        return [(lang, label) for lang, label in LANGUAGES if self.texts[lang] is not None]
