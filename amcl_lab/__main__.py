"""``python -m amcl_lab`` runs the ``amcl-lab`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
