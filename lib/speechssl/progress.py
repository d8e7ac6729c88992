"""Progress bars that stay quiet where their output would be noise (CI, nbval, pipes)."""

from __future__ import annotations

import os


def progress_disabled() -> bool:
    """True when progress bars should not print: under CI, or when ``SPEECHSSL_PROGRESS=0``.

    Notebook outputs are committed and compared by nbval, so a bar (whose text changes from
    run to run) must not end up in them; ``scripts/book.sh`` and ``scripts/test.sh`` set
    ``SPEECHSSL_PROGRESS=0``.
    """
    flag = os.environ.get("SPEECHSSL_PROGRESS")
    if flag is not None:
        return flag.strip().lower() in ("0", "false", "no", "off")
    return bool(os.environ.get("CI"))
