"""The nbval plugin compares checked outputs within their stored tolerance, everything else exactly."""

import copy
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbclient import NotebookClient
from nbval.plugin import nocolors

import speechssl
from speechssl.report import CHECKED_MIME, Note, Table, measured
from speechssl.testing.nbval_tolerance import compare_checked

LIB = Path(speechssl.__file__).resolve().parents[1]
CHECK = {"tags": ["nbval-check-output"]}
CELLS = [
    ("import os\nfrom speechssl.report import Note, Table, measured, yes_no\n"
     "X = float(os.environ.get('NBTEST_X', '0.5'))\nY = int(os.environ.get('NBTEST_Y', '98'))\n"
     "T = float(os.environ.get('NBTEST_T', '0.4'))\nWORD = os.environ.get('NBTEST_WORD', 'alpha')", {}),
    ("Table(['K', 'PNMI', 'kept'], [(100, measured(X, abs=0.01), 'yes')], caption='Quality')", CHECK),
    ("Note('The model uses {units} units; PNMI above 0.4: {verdict}.', ko='모델은 {units}개 단위; PNMI 0.4 초과: {verdict}.',\n"
     "     zh='模型使用 {units} 个单元；PNMI 高于 0.4：{verdict}。', units=measured(Y, rel=0.1), verdict=yes_no(X > T))", CHECK),
    ("print('plain text:', WORD)\ndisplay(Table(['units'], [(measured(Y, rel=0.1),)]))", CHECK),
]


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """The tiny notebook, executed once with the default values (its stored reference outputs)."""
    folder = tmp_path_factory.mktemp("nb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src, metadata=md) for src, md in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    path = folder / "reference.ipynb"
    nbformat.write(nb, path)
    return path


def run_nbval(tmp_path: Path, notebooks: dict[str, dict], **env: str) -> dict[str, str | None]:
    """Run pytest + nbval + the plugin on ``notebooks``; failure text (None: passed) per 'name::Cell n'."""
    for name, nb in notebooks.items():
        (tmp_path / name).write_text(json.dumps(nb), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NBTEST_")}
    full_env.update({f"NBTEST_{k}": v for k, v in env.items()},
                    PYTHONPATH=os.pathsep.join([str(LIB), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", *notebooks, "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
           "-p", "speechssl.testing.nbval_tolerance", "--junitxml=junit.xml", "-q"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=120)
    assert (tmp_path / "junit.xml").exists(), proc.stdout + proc.stderr
    out = {}
    for case in ET.parse(tmp_path / "junit.xml").iter("testcase"):
        failure = case.find("failure")
        name = f"{Path(case.get('file') or case.get('classname')).stem}::{case.get('name')}"
        out[name] = None if failure is None else (failure.get("message", "") + "\n" + (failure.text or ""))
    return out


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_stored_outputs_carry_checked_payloads(stored):
    outputs = [c["outputs"] for c in read(stored)["cells"]]
    payload = outputs[1][0]["data"][CHECKED_MIME]
    assert payload["template"].endswith("| 100 | ⟨0⟩ | yes |") and payload["values"][0]["value"] == 0.5
    assert "PNMI above 0.4: yes." in outputs[2][0]["data"][CHECKED_MIME]["template"]
    assert "".join(outputs[3][0]["text"]) == "plain text: alpha\n" and CHECKED_MIME in outputs[3][1]["data"]


def test_unchanged_and_within_tolerance_pass(stored, tmp_path):
    nb = read(stored)
    result = run_nbval(tmp_path, {"same.ipynb": nb}) | run_nbval(tmp_path, {"moved.ipynb": nb}, X="0.505", Y="100")
    assert len(result) == 8 and all(v is None for v in result.values()), result


def test_beyond_tolerance_changed_words_and_text_fail(stored, tmp_path):
    nb = read(stored)
    wide = copy.deepcopy(nb)  # the stored tolerance is the one applied
    wide["cells"][1]["outputs"][0]["data"][CHECKED_MIME]["values"][0]["abs"] = 0.2
    result = run_nbval(tmp_path, {"nb.ipynb": nb, "wide.ipynb": wide}, X="0.6", T="0.7", WORD="beta")
    assert result["nb::Cell 0"] is None and result["wide::Cell 0"] is None
    table = result["nb::Cell 1"]
    assert table and 'value ⟨0⟩ in column "PNMI" of table row "| 100 | ⟨0⟩ | yes |"' in table
    assert "stored 0.5, new 0.6" in table and "abs 0.01 + rel 0" in table
    assert result["wide::Cell 1"] is None
    verdict = result["nb::Cell 2"]
    assert verdict and "-The model uses ⟨0⟩ units; PNMI above 0.4: yes." in verdict
    assert "+The model uses ⟨0⟩ units; PNMI above 0.4: no." in verdict
    text = result["nb::Cell 3"]
    assert text and "alpha" in text and "beta" in text and "checked outputs differ" not in text


def test_stored_value_edited_beyond_tolerance_fails(stored, tmp_path):
    nb = read(stored)
    nb["cells"][3]["outputs"][1]["data"][CHECKED_MIME]["values"][0]["value"] = 120
    result = run_nbval(tmp_path, {"edited.ipynb": nb})
    assert "stored 120, new 98" in result["edited::Cell 3"] and 'column "units"' in result["edited::Cell 3"]
    assert [k for k, v in result.items() if v] == ["edited::Cell 3"]


# The wrapper's logic without a kernel: a fake nbval item and a recording stand-in for nbval's comparison.

def item() -> SimpleNamespace:
    return SimpleNamespace(colors=nocolors, comparison_traceback=[],
                           sanitize=lambda s: re.sub(r"0x[0-9a-f]+", "ADDR", s))


def output(obj, **extra) -> nbformat.NotebookNode:
    data = obj._repr_mimebundle_() if obj is not None else {}
    return nbformat.from_dict({"output_type": "display_data", "metadata": {}, "data": {**data, **extra}})


def recorder(calls):
    def original(self, test, ref, skip_compare=None):
        calls.append((test, ref))
        return True
    return original


def test_compare_checked_strips_only_what_it_compared():
    calls = []
    stream = nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": "hi\n"})
    ref = [stream, output(Table(["a"], [(measured(1.0, abs=0.1),)]), **{"text/html": "<b>x</b>"})]
    new = [stream, output(Table(["a"], [(measured(1.05, abs=0.1),)]), **{"text/html": "<b>x</b>"})]
    assert compare_checked(item(), new, ref, None, recorder(calls))
    (test, kept), = calls
    assert kept == test == [stream, {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<b>x</b>"}}]
    assert CHECKED_MIME in ref[1]["data"], "the stored outputs must not be modified"


def test_compare_checked_sanitizes_templates_and_counts_outputs():
    calls, it = [], item()
    ref = [output(Note("At 0x1f: {v}.", v=measured(1.0, abs=0.1)))]
    assert compare_checked(it, [output(Note("At 0x2e: {v}.", v=measured(1.0, abs=0.1)))], ref, None, recorder(calls))
    assert not compare_checked(it, [], ref, None, recorder(calls))
    assert "1 checked outputs stored, 0 in the new run" in it.comparison_traceback
    bad = output(None, **{CHECKED_MIME: {"version": 1, "template": "⟨0⟩", "values": [{"value": 1}]}})
    assert not compare_checked(it, [bad], [bad], None, recorder(calls))
    assert "malformed" in it.comparison_traceback[1]
    garbled = output(None, **{CHECKED_MIME: "{not json"})
    assert not compare_checked(it, [garbled], [garbled], None, recorder(calls))
    assert "malformed" in it.comparison_traceback[1]


def test_compare_checked_nan_and_version():
    calls, it = [], item()
    nan = [output(measured(float("nan")))]
    assert compare_checked(it, nan, nan, None, recorder(calls))
    assert not compare_checked(it, [output(measured(0.0, abs=1.0))], nan, None, recorder(calls))
    assert "stored nan, new 0.0" in it.comparison_traceback[1]
    future = output(None, **{CHECKED_MIME: {"version": 2, "template": "", "values": []}})
    assert not compare_checked(it, [future], [future], None, recorder(calls))
    assert "version 2" in it.comparison_traceback[1]


def test_compare_checked_reference_without_checked_outputs_is_exact():
    calls = []
    legacy = output(None, **{"text/plain": "a\n-\n1.000", "text/markdown": "| a |\n|---|\n| 1.000 |"})
    new = output(Table(["a"], [(measured(1.0, abs=0.1),)]))
    assert compare_checked(item(), [new], [legacy], None, recorder(calls))
    (test, ref), = calls
    assert ref == [legacy] and set(test[0]["data"]) == {"text/plain", "text/markdown"}
