"""``python -m speechssl.data.synth``: see :func:`speechssl.data.synth.cli.main`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
