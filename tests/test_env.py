"""Each checkout imports its own library: two clones that share the pinned environment do not see each
other's code (the environment holds no install of the library; scripts/activate.sh puts lib/ on the path)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def clone(dest: Path) -> Path:
    """A copy of what the environment scripts need: scripts/, lib/ and the lock file."""
    for name in ("scripts", "lib"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements-lock.txt", dest / "requirements-lock.txt")
    return dest


def imported_by(checkout: Path) -> str:
    cmd = 'source scripts/activate.sh && python -c "import speechssl; print(speechssl.__file__)"'
    out = subprocess.run(["bash", "-c", cmd], cwd=checkout, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_two_clones_import_their_own_library(tmp_path):
    if subprocess.run(["bash", str(ROOT / "scripts/env.sh"), "--check"], capture_output=True).returncode != 0:
        pytest.skip("the pinned environment is not built (scripts/test.sh builds it first)")
    a, b = clone(tmp_path / "a"), clone(tmp_path / "b")
    assert imported_by(a) == str(a / "lib/speechssl/__init__.py")
    assert imported_by(b) == str(b / "lib/speechssl/__init__.py")
    assert imported_by(a) == str(a / "lib/speechssl/__init__.py")     # the second clone changed nothing for the first
