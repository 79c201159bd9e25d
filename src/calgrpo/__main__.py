"""``python -m calgrpo``: the same as the ``calgrpo`` command."""

import sys

from calgrpo.cli import main

sys.exit(main())
