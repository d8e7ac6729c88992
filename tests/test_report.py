"""Tables and notes whose trained numbers carry a tolerance (speechssl.report)."""

import math

import numpy as np
import pytest
import torch

from speechssl import viz
from speechssl.report import (CHECKED_MIME, Measured, Note, Table, decode_value, encode_value, measured, within,
                              yes_no)

KO = "모델은 {units}개의 단위를 씁니다 (무작위 코드는 {chance}개)."
ZH = "模型使用 {units} 个单元（随机码为 {chance} 个）。"


def test_viz_table_is_report_table():
    assert viz.Table is Table


def test_measured_value_tolerance_and_format():
    m = measured(np.float32(0.25), abs=0.01, rel=0.1)
    assert isinstance(m, Measured) and type(m.value) is float and (m.abs, m.rel) == (0.01, 0.1)
    assert measured(np.int64(7)).value == 7 and type(measured(np.int64(7)).value) is int
    assert measured(torch.tensor(3)).value == 3
    assert f"{measured(0.25612)}" == "0.256" and f"{measured(0.25612):.1f}" == "0.3"
    assert f"{measured(0.25612, fmt='.2%')}" == "25.61%" and f"{measured(98)}" == "98"
    assert float(measured(2)) == 2.0
    assert repr(measured(0.5, abs=0.01)) == "measured(0.5, abs=0.01, rel=0)"
    assert m.to_json() == {"value": 0.25, "abs": 0.01, "rel": 0.1}
    assert within(0.25 + 0.01 + 0.025 - 1e-9, m.value, m.abs, m.rel) and not within(0.29, m.value, m.abs, m.rel)


def test_within():
    assert within(1.04, 1.0, abs=0.05) and within(0.96, 1.0, abs=0.05) and not within(1.06, 1.0, abs=0.05)
    assert within(110, 100, rel=0.1) and not within(111, 100, rel=0.1)
    assert within(0.9, 1.0, abs=0.05, rel=0.05) and not within(0.89, 1.0, abs=0.05, rel=0.05)
    assert within(7, 7) and not within(8, 7)
    assert within(math.nan, math.nan) and not within(0.0, math.nan) and not within(math.nan, 0.0, abs=1e9)
    assert within(math.inf, math.inf) and not within(-math.inf, math.inf) and not within(1e300, math.inf, rel=1)


def test_nonfinite_values_travel_as_strings():
    for v in (math.nan, math.inf, -math.inf):
        enc = encode_value(v)
        assert isinstance(enc, str) and within(decode_value(enc), v)
    assert encode_value(3) == 3 and decode_value(0.5) == 0.5
    assert measured(math.nan)._repr_mimebundle_()[CHECKED_MIME]["values"] == [{"value": "NaN", "abs": 0.0, "rel": 0.0}]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"value": "0.5"}, TypeError, "value must be an int or a float, found str '0.5'"),
    ({"value": True}, TypeError, "found bool True; use yes_no"),
    ({"value": np.zeros(3)}, TypeError, r"value must be a single number, found ndarray of shape \(3,\)"),
    ({"value": 1.0, "abs": -0.1}, ValueError, "abs must be a finite number >= 0, found -0.1"),
    ({"value": 1.0, "rel": math.inf}, ValueError, "rel must be a finite number >= 0, found inf"),
    ({"value": 1.0, "rel": None}, TypeError, "rel must be an int or a float, found NoneType"),
    ({"value": 1, "fmt": ".2q"}, ValueError, "fmt must be a format spec for 1 such as '.3f', found '.2q'"),
])
def test_measured_bad_arguments(kwargs, error, match):
    value = kwargs.pop("value")
    with pytest.raises(error, match=match):
        measured(value, **kwargs)


def test_yes_no():
    assert yes_no(True) == "yes" and yes_no(np.float64(0.2) > 0.5) == "no"
    assert yes_no(torch.tensor(True), yes="holds", no="does not hold") == "holds"
    with pytest.raises(TypeError, match="flag must be a bool, found int 1"):
        yes_no(1)


def test_table_unchanged_for_plain_cells():
    t = Table(["K", "PNMI"], [(100, 0.25612), (500, float("nan"))], caption="cap")
    assert repr(t).splitlines() == ["cap", "K    PNMI", "---  -----", "100  0.256", "500  –"]
    assert t._repr_markdown_() == "**cap**\n\n| K | PNMI |\n|---|---|\n| 100 | 0.256 |\n| 500 | – |"
    assert t.checked() == {"version": 1, "template": t._repr_markdown_(), "values": []}


def test_table_with_measured_cells():
    t = Table(["K", "PNMI", "units"], [(100, measured(0.25612, abs=0.02), measured(98, rel=0.5)),
                                       (500, measured(0.5, fmt=".1%"), 12)], floatfmt=".2f")
    bundle = t._repr_mimebundle_()
    assert set(bundle) == {"text/markdown", "text/plain", CHECKED_MIME}
    assert bundle["text/markdown"].splitlines()[2:] == ["| 100 | 0.26 | 98 |", "| 500 | 50.0% | 12 |"]
    assert bundle["text/plain"].splitlines()[2:] == ["100  0.26   98", "500  50.0%  12"]
    assert bundle[CHECKED_MIME] == {
        "version": 1,
        "template": "| K | PNMI | units |\n|---|---|---|\n| 100 | ⟨0⟩ | ⟨1⟩ |\n| 500 | ⟨2⟩ | 12 |",
        "values": [{"value": 0.25612, "abs": 0.02, "rel": 0.0}, {"value": 98, "abs": 0.0, "rel": 0.5},
                   {"value": 0.5, "abs": 0.0, "rel": 0.0}]}


def test_table_bad_arguments():
    with pytest.raises(ValueError, match=r"rows\[1\] \[3\] has 1 cells, expected 2"):
        Table(["a", "b"], [(1, 2), (3,)])
    with pytest.raises(ValueError, match="floatfmt must be a float format spec such as '.3f', found 'x'"):
        Table(["a"], [(1.0,)], floatfmt="x")


def test_note_renders_three_languages_with_shared_placeholders():
    n = Note("The trained model uses {units} units, against {chance} for random codes ({acc:.1f} %).",
             ko=KO + " {acc}", zh=ZH + " {acc:.2f}", units=measured(98, rel=0.5), chance=12,
             acc=measured(45.678, abs=1.0))
    md = n._repr_markdown_()
    assert md == ("The trained model uses 98 units, against 12 for random codes (45.7 %).\n\n"
                  "<details><summary>한국어</summary>\n\n모델은 98개의 단위를 씁니다 (무작위 코드는 12개). 45.678\n\n"
                  "</details>\n\n<details><summary>中文</summary>\n\n模型使用 98 个单元（随机码为 12 个）。 45.68\n\n</details>")
    checked = n.checked()
    assert checked["template"].startswith("The trained model uses ⟨0⟩ units, against 12 for random codes (⟨1⟩ %).")
    assert "(무작위 코드는 12개). ⟨1⟩" in checked["template"] and "模型使用 ⟨0⟩ 个单元" in checked["template"]
    assert checked["values"] == [{"value": 98, "abs": 0.0, "rel": 0.5}, {"value": 45.678, "abs": 1.0, "rel": 0.0}]
    assert repr(n).splitlines() == ["The trained model uses 98 units, against 12 for random codes (45.7 %).",
                                    "한국어: 모델은 98개의 단위를 씁니다 (무작위 코드는 12개). 45.678",
                                    "中文: 模型使用 98 个单元（随机码为 12 个）。 45.68"]


def test_note_english_only_and_literal_braces():
    n = Note("Set {{x}} = {v}; verdict: {ok}.", v=0.12345, ok=yes_no(False))
    assert n._repr_markdown_() == "Set {x} = 0.123; verdict: no." and n.checked()["values"] == []
    assert "<details>" not in n._repr_mimebundle_()["text/markdown"]


@pytest.mark.parametrize("args, kwargs, match", [
    (("Uses {units}.",), {}, r"en template field \{units\} must name one of the values \(none\)"),
    (("Uses {units!r}.",), {"units": 3}, r"\{units!r\} must name one of the values \(units\) without a conversion"),
    (("Uses {units}.",), {"units": 3, "chance": 1}, r"values \['chance'\] are not used by the en template"),
    (("Uses {units}.", "단위 없음"), {"units": 3},
     r"ko must quote the same values as en: en uses \['units'\], ko uses \[\]"),
    (("Uses {units}.", None, "## 标题 {units}"), {"units": 3}, "zh must not contain a Markdown heading"),
    (("Uses {units.",), {"units": 3}, "en is not a valid format template"),
    (("Uses {units}.", " "), {"units": 3}, r"ko must be a non-empty template \(or None"),
])
def test_note_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Note(*args, **kwargs)
    with pytest.raises(TypeError, match="ko must be a str template, found int"):
        Note("x", ko=3)


def test_note_bad_format_spec_is_caught_at_construction():
    with pytest.raises(ValueError, match=r"ko template field \{acc:\.2q\}: bad format spec for measured\(0\.5"):
        Note("Accuracy {acc}.", ko="정확도 {acc:.2q}.", acc=measured(0.5))


def test_table_escapes_a_pipe_inside_a_cell():
    md = Table(["how p(l | x) is computed", "value"], [("sum | paths", 0.5)])._repr_markdown_()
    assert md.splitlines()[0] == "| how p(l \\| x) is computed | value |"
    assert md.splitlines()[2] == "| sum \\| paths | 0.500 |"
