"""python3 -m koji_rekor: the koji-rekor command."""

import sys

from .cli import main

sys.exit(main())
