"""The public repository is one setting (``_config.yml``'s ``repository.url``): every chapter's Colab link and
setup cell follow it (``python -m speechssl.notebooks --sync-repository``, run by ``scripts/book.sh``)."""

import json
import shutil
from pathlib import Path

from speechssl.notebooks import colab_link, main, repository

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(ROOT.glob("chapters/*.ipynb"))


def test_every_chapter_points_at_the_configured_repository():
    url, branch = repository(ROOT / "_config.yml")
    for nb in CHAPTERS:
        text = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        assert f"({colab_link(url, branch, nb.name)})" in text, nb.name
        assert f"git clone -q --depth 1 --branch {branch} {url} /content/" in text, nb.name
    assert url in (ROOT / "book" / "how_to_run.md").read_text()


def test_changing_the_one_setting_moves_every_link(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text((ROOT / "_config.yml").read_text().replace(repository(ROOT / "_config.yml")[0],
                                                                  "https://github.com/someone/fork"))
    copy = tmp_path / CHAPTERS[0].name
    shutil.copy(CHAPTERS[0], copy)
    assert main([str(copy), "--sync-repository", str(config)]) == 0
    text = copy.read_text()
    assert "colab.research.google.com/github/someone/fork/blob/main/chapters/" in text
    assert "git clone -q --depth 1 --branch main https://github.com/someone/fork /content/" in text
    before = copy.read_text()
    main([str(copy), "--sync-repository", str(config)])
    assert copy.read_text() == before                                     # idempotent
