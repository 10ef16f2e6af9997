"""``python -m latentae.cli``: the ``latentae`` command."""

import sys

from latentae.cli import main

if __name__ == "__main__":
    sys.exit(main())
