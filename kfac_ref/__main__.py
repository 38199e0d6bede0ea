"""``python -m kfac_ref``: see :mod:`kfac_ref.cli`."""

import sys

from .cli import main

sys.exit(main())
