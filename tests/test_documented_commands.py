"""Every training command the book, the README and the chapters print parses with the command's own
argument parser, and names the LibriSpeech subsets whenever it reads LibriSpeech (the commands
require them). A renamed option or a forgotten ``--subsets`` in a page fails here, not on a reader's GPU."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from speechssl import finetune, hubert, interop, train, wav2vec_u

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"-m (speechssl\.(?:train|finetune|hubert|wav2vec_u|interop))\b([^`\n#]*)")
PLACEHOLDERS = {"MODEL": "wav2vec2"}   # README: "python -m speechssl.train MODEL --scale tiny"
PARSERS = {"speechssl.train": train.build_arg_parser, "speechssl.finetune": finetune.build_arg_parser,
           "speechssl.hubert": hubert.build_arg_parser, "speechssl.wav2vec_u": wav2vec_u.build_arg_parser,
           "speechssl.interop": interop.build_arg_parser}


def documented_commands() -> list[tuple[str, str, str]]:
    """(where, module, arguments) of each command in the Markdown pages and notebook cells."""
    texts = [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8"))
             for p in [ROOT / "README.md", *sorted(ROOT.glob("book/*.md"))]]
    for p in sorted(ROOT.glob("chapters/*.ipynb")):
        cells = json.loads(p.read_text(encoding="utf-8"))["cells"]
        texts += [(f"{p.name} cell {i}", "".join(c["source"])) for i, c in enumerate(cells)]
    out = []
    for where, text in texts:
        text = re.sub(r"\\\n\s*", " ", text)                  # shell line continuations
        # a command with no arguments is a mention in prose ("`python -m speechssl.hubert` runs ..."), not a command
        out += [(where, m.group(1), m.group(2).strip()) for m in COMMAND.finditer(text) if m.group(2).strip()]
    return out


COMMANDS = documented_commands()


def test_the_pages_show_commands():
    modules = {m for _, m, _ in COMMANDS}
    assert modules == set(PARSERS) and len(COMMANDS) >= 15


@pytest.mark.parametrize("where, module, args", COMMANDS, ids=[f"{w}: {m} {a}"[:90] for w, m, a in COMMANDS])
def test_documented_command_parses(where, module, args):
    parser = PARSERS[module]()
    argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(args)]
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 0 and "--help" in argv:
            return
        pytest.fail(f"{where}: `python -m {module} {args}` does not parse (exit {e.code})")
    for data, subsets in ((getattr(ns, "data", None), getattr(ns, "subsets", None)), (getattr(ns, "eval_data", None), getattr(ns, "eval_subsets", None))):
        if data and data.startswith("librispeech:"):
            assert subsets, f"{where}: reads {data} without naming --subsets"
