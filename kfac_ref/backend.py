"""Array backends: the one place that chooses NumPy or CuPy and the floating-point dtype.

Every math function takes arrays and gets their module with :func:`get_array_module`
(as CuPy recommends), so the same code runs on the host and on the GPU. Linear algebra whose
spelling differs between the two libraries (triangular solves, generalized eigenproblems) lives
in :mod:`kfac_ref.linalg`, the batched device→host transfers in :mod:`kfac_ref.host`. Host
conversion (:func:`to_numpy`) belongs at the edges: data in, numbers out.

The backend is chosen by name (``"numpy"`` or ``"cupy"``), or by the environment variable
``KFAC_REF_BACKEND`` when no name is given. float64 is the default dtype (for comparisons with
dense oracles); training scripts ask for float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from .errors import BackendError, ConfigError

BACKEND_ENV_VAR = "KFAC_REF_BACKEND"
KNOWN_BACKENDS = ("numpy", "cupy")
KNOWN_DTYPES = ("float32", "float64")


def _import_cupy() -> ModuleType:
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BackendError(
            "backend 'cupy' was requested but CuPy is not installed; "
            "install it with `pip install -e '.[gpu]'` (needs an NVIDIA GPU and CUDA 12)"
        ) from exc
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise BackendError(
            f"backend 'cupy' was requested but no CUDA GPU is usable: {exc}"
        ) from exc
    if n_devices < 1:  # pragma: no cover - depends on the machine
        raise BackendError("backend 'cupy' was requested but no CUDA GPU is present")
    try:
        import cupyx.scipy.linalg  # noqa: F401 - loads cuBLAS and cuSOLVER
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise BackendError(
            f"backend 'cupy' was requested but CuPy's CUDA libraries do not load ({exc}); "
            "install the toolkit-bundling variant: `pip install 'cupy-cuda12x[ctk]>=14,<15'`"
        ) from exc
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports, sees a GPU, loads cuBLAS/cuSOLVER and computes a tiny product
    correctly (used to skip GPU tests where any of these fails)."""
    try:
        cupy = _import_cupy()
        a = cupy.ones((2, 2), dtype=cupy.float32)
        return float((a @ a).sum()) == 8.0
    except Exception:  # BackendError, or a CUDA error from the first kernel
        return False


@dataclass(frozen=True)
class Backend:
    """An array module (``xp``) and a floating-point dtype.

    Attributes:
        name: ``"numpy"`` or ``"cupy"``.
        xp: the array module itself.
        dtype: the floating-point dtype used for parameters and data.
    """

    name: str
    xp: ModuleType
    dtype: Any

    def asarray(self, x: Any) -> Any:
        """``x`` as an array of this backend and dtype (copies from host if needed)."""
        return self.xp.asarray(x, dtype=self.dtype)

    def rng(self, seed: int | None) -> Any:
        """A random generator of this backend (``default_rng`` of NumPy or CuPy); a training run
        uses :class:`kfac_ref.rng.RunGenerator` instead, one generator per run on CuPy."""
        return self.xp.random.default_rng(seed)

    def synchronize(self) -> None:
        """Wait for queued GPU work (for timing); a no-op on NumPy."""
        if self.name == "cupy":
            self.xp.cuda.Device().synchronize()


def get_backend(name: str | None = None, dtype: str | Any = "float64") -> Backend:
    """The backend called ``name`` (default: ``$KFAC_REF_BACKEND`` or ``"numpy"``).

    Raises:
        BackendError: unknown name, or CuPy requested where it is unusable.
        ConfigError: a dtype other than float32/float64 (a ValueError).
    """
    if name is None:
        name = os.environ.get(BACKEND_ENV_VAR, "numpy") or "numpy"
    name = str(name).lower()
    if name not in KNOWN_BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(KNOWN_BACKENDS)}")
    xp = numpy if name == "numpy" else _import_cupy()
    dtype_name = numpy.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if dtype_name not in KNOWN_DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r}; choose one of {', '.join(KNOWN_DTYPES)}")
    return Backend(name=name, xp=xp, dtype=getattr(xp, dtype_name))


def get_array_module(*arrays: Any) -> ModuleType:
    """NumPy or CuPy, whichever owns ``arrays`` (NumPy for host arrays and scalars)."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return numpy


def to_numpy(x: Any) -> Any:
    """A host (NumPy) copy of ``x``; scalars become Python floats. Use only at the edges."""
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    if isinstance(x, numpy.ndarray):
        return x
    if numpy.isscalar(x):
        return float(x)
    return numpy.asarray(x)


def cast(arrays: Any, dtype: Any) -> list[Any]:
    """Each array in ``dtype``; an array already in it is returned as is (no copy)."""
    return [a if a.dtype == dtype else a.astype(dtype) for a in arrays]


def special_for(*arrays: Any) -> ModuleType:
    """``scipy.special`` or ``cupyx.scipy.special``, whichever matches ``arrays``."""
    if get_array_module(*arrays) is numpy:
        import scipy.special

        return scipy.special
    import cupyx.scipy.special

    return cupyx.scipy.special
