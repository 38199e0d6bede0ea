"""``python -m kfac_ref``: see :mod:`kfac_ref.experiments.cli`."""

import sys

from .experiments.cli import main

sys.exit(main())
