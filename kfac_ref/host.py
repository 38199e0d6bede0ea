"""Device→host transfers batched into one: the queue the optimizer fetches once per step.

Each device→host transfer stalls a GPU (docs/backends.md), so what the host needs (losses, the
entries of the §7 quadratic model, finiteness checks) is queued in a :class:`HostBatch` and
brought over together.
"""

from __future__ import annotations

import math
from typing import Any

import numpy

from .backend import get_array_module, to_numpy
from .errors import NonFiniteError


class HostBatch:
    """Values and checks brought from the device to the host together, in one transfer.

    Each device→host transfer stalls a GPU, so the optimizer queues what the host needs (a
    loss, the entries of the §7 quadratic model, finiteness flags) and fetches it at once.
    :meth:`fetch` moves everything queued as one float64 vector, then, in queue order, raises
    :class:`NonFiniteError` for the first failed check, so errors name the first bad quantity
    just as checking each at once would. Fetched values stay in :attr:`host` by key. Host values
    (NumPy) are checked as soon as they are queued, so on NumPy every check happens where it is
    written, as without batching.
    """

    def __init__(self) -> None:
        self._queue: list[tuple[str, str, Any, str | None]] = []
        self.host: dict[str, Any] = {}

    def value(self, key: str, x: Any) -> None:
        """Queue ``x`` (an array or scalar); after :meth:`fetch`, ``host[key]`` is a float64
        NumPy array of its shape (a Python float for a 0-d one)."""
        self._add(("value", key, x, None))

    def scalar(self, key: str, x: Any, message: str) -> None:
        """Queue a 0-d ``x`` that must be finite; :meth:`fetch` raises ``"<message> (<x>)"`` if
        not."""
        self._add(("scalar", key, x, message))

    def check(self, flag: Any, message: str) -> None:
        """Queue a 0-d boolean; :meth:`fetch` raises :class:`NonFiniteError` (message) if false."""
        self._add(("check", "", flag, message))

    def _add(self, item: tuple[str, str, Any, str | None]) -> None:
        # A host value with nothing queued before it is checked at once (NumPy: as if unbatched).
        if not self._queue and _host_value(item[2]) is not None:
            self._accept(item, item[2])
        else:
            self._queue.append(item)

    def _accept(self, item: tuple[str, str, Any, str | None], h: Any) -> None:
        kind, key, _, message = item
        if kind == "check":
            if not bool(h):
                raise NonFiniteError(message)
        elif kind == "scalar":
            v = float(h)
            if not math.isfinite(v):
                raise NonFiniteError(f"{message} ({v})")
            self.host[key] = v
        else:
            self.host[key] = (
                float(h) if numpy.ndim(h) == 0 else numpy.asarray(h, dtype=numpy.float64)
            )

    def require_finite(self, arrays: Any, message: str) -> None:
        """Queue one flag: every entry of every array in ``arrays`` is finite."""
        if not arrays:
            return
        xp = get_array_module(*arrays)
        flags = [xp.isfinite(a).all() for a in arrays]
        self.check(flags[0] if len(flags) == 1 else xp.stack(flags).all(), message)

    def fetch(self) -> dict[str, Any]:
        """Bring everything queued to the host (one transfer), check it, return :attr:`host`."""
        queue, self._queue = self._queue, []
        host = [_host_value(x) for _, _, x, _ in queue]
        on_device = [i for i, h in enumerate(host) if h is None]
        if on_device:
            xp = get_array_module(queue[on_device[0]][2])
            parts = [xp.ravel(queue[i][2]).astype(xp.float64) for i in on_device]
            flat = to_numpy(xp.concatenate(parts))  # the one synchronization
            start = 0
            for i in on_device:
                shape = queue[i][2].shape
                size = math.prod(shape)
                host[i] = flat[start : start + size].reshape(shape)
                start += size
        for item, h in zip(queue, host, strict=True):
            self._accept(item, h)
        return self.host


def _host_value(x: Any) -> Any:
    """``x`` itself where it already lives on the host (NumPy, Python), else None."""
    if isinstance(x, (bool, int, float, numpy.ndarray, numpy.generic)):
        return x
    return None


class IterationHost(HostBatch):
    """The :class:`HostBatch` of iteration k of Algorithm 2 (§8): what the step brings to the
    host, fetched together; a failed check names the iteration and the quantity
    (``"iteration k: the gradient ∇h is not finite"``)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def finite(self, arrays: Any, what: str) -> None:
        """Queue the check that every entry of ``arrays`` (``what``, e.g. "the gradient ∇h") is
        finite."""
        self.require_finite(arrays, f"iteration {self.k}: {what} is not finite")

    def finite_scalar(self, key: str, x: Any, what: str) -> None:
        """Queue the 0-d ``x`` (``what``, e.g. "the loss h(θ)"), which must be finite; after
        :meth:`fetch` it is ``host[key]``."""
        self.scalar(key, x, f"iteration {self.k}: {what} is not finite")
