"""A strict CuPy stand-in for running the GPU tests without a GPU (see ``_core``).

``installed()`` puts it in ``sys.modules`` as ``cupy`` / ``cupyx`` for a block; ``SYNCS`` logs
the device→host transfers made meanwhile. The names it offers come from ``cupy_api.json``,
written from the real package by ``scripts/dump_cupy_api.py``.
"""

from ._core import API, SYNCS, SyncLog, install, installed, is_stand_in, uninstall

__all__ = ["API", "SYNCS", "SyncLog", "install", "installed", "is_stand_in", "uninstall"]
