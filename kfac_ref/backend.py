"""Array backends: the one place that chooses NumPy or CuPy and the floating-point dtype.

Every math function takes arrays and gets their module with :func:`get_array_module`
(as CuPy recommends), so the same code runs on the host and on the GPU. Linear algebra whose
spelling differs between the two libraries (triangular solves, generalized eigenproblems) is
reached through :func:`linalg_for`. Host conversion (:func:`to_numpy`) belongs at the edges:
data in, numbers out.

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
        raise BackendError(f"backend 'cupy' was requested but no CUDA GPU is usable: {exc}") from exc
    if n_devices < 1:  # pragma: no cover - depends on the machine
        raise BackendError("backend 'cupy' was requested but no CUDA GPU is present")
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU (used to skip GPU tests)."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


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
        """A random generator of this backend (``default_rng`` of NumPy or CuPy)."""
        return self.xp.random.default_rng(seed)

    def synchronize(self) -> None:
        """Wait for queued GPU work (for timing); a no-op on NumPy."""
        if self.name == "cupy":  # pragma: no cover - needs a GPU
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


class Linalg:
    """Linear algebra that differs in spelling between NumPy/SciPy and CuPy/cupyx."""

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp
        if xp is numpy:
            import scipy.linalg as sla
        else:  # pragma: no cover - needs a GPU
            import cupyx.scipy.linalg as sla
        self._sla = sla

    def cholesky(self, A: Any) -> Any:
        """Lower Cholesky factor L with A = L Lᵀ."""
        return self.xp.linalg.cholesky(A)

    def solve_triangular(self, L: Any, B: Any, lower: bool = True, trans: int = 0) -> Any:
        """Solve L X = B (trans=0) or Lᵀ X = B (trans=1) for triangular L."""
        return self._sla.solve_triangular(L, B, lower=lower, trans=trans)

    def eigh(self, A: Any) -> tuple[Any, Any]:
        """Symmetric eigendecomposition (ascending eigenvalues, orthonormal eigenvectors)."""
        return self.xp.linalg.eigh(A)

    def solve(self, A: Any, B: Any) -> Any:
        """Solve A X = B for square A."""
        return self.xp.linalg.solve(A, B)

    def inv(self, A: Any) -> Any:
        """Dense inverse of A (dense oracles and small factors only)."""
        return self.xp.linalg.inv(A)

    def spd_inverse(self, M: Any) -> Any | None:
        """M⁻¹ for symmetric positive-definite M, or None where M is not numerically PD.

        NumPy: LAPACK potrf + potri (one factorization, no triangular solves); CuPy: Cholesky
        and a triangular solve. Only the lower triangle of M is read.
        """
        xp = self.xp
        if xp is numpy:
            potrf, potri = self._sla.lapack.get_lapack_funcs(("potrf", "potri"), (M,))
            c, info = potrf(M, lower=True, clean=False, overwrite_a=False)
            if info != 0:
                return None
            inv, info = potri(c, lower=True, overwrite_c=True)
            if info != 0:
                return None
            lower = numpy.tril(inv)
            return lower + numpy.tril(inv, -1).T
        L = self.cholesky(M)  # pragma: no cover - needs a GPU
        if not bool(xp.isfinite(L).all()):  # pragma: no cover
            return None
        L_inv = self.solve_triangular(L, xp.eye(M.shape[0], dtype=M.dtype), lower=True)  # pragma: no cover
        return L_inv.T @ L_inv  # pragma: no cover

    def generalized_eigh(self, C: Any, A: Any) -> tuple[Any, Any] | None:
        """(s, K) with C K = A K diag(s) and Kᵀ A K = I, or None where A is not numerically PD.

        NumPy: LAPACK's divide-and-conquer generalized solver (``eigh(C, A, driver="gvd")``);
        CuPy: A = L Lᵀ, eigh(L⁻¹ C L⁻ᵀ) = E diag(s) Eᵀ, K = L⁻ᵀ E.
        """
        xp = self.xp
        if xp is numpy:
            try:
                return self._sla.eigh(C, A, driver="gvd", check_finite=False)
            except numpy.linalg.LinAlgError:
                return None
        L = self.cholesky(A)  # pragma: no cover - needs a GPU
        if not bool(xp.isfinite(L).all()):  # pragma: no cover
            return None
        M = self.solve_triangular(L, self.solve_triangular(L, C, lower=True).T, lower=True)  # pragma: no cover
        s, E = self.eigh(0.5 * (M + M.T))  # pragma: no cover
        return s, self.solve_triangular(L, E, lower=True, trans=1)  # pragma: no cover


def special_for(*arrays: Any) -> ModuleType:
    """``scipy.special`` or ``cupyx.scipy.special``, whichever matches ``arrays``."""
    if get_array_module(*arrays) is numpy:
        import scipy.special

        return scipy.special
    import cupyx.scipy.special  # pragma: no cover - needs a GPU

    return cupyx.scipy.special  # pragma: no cover


_LINALG: dict[str, Linalg] = {}


def linalg_for(*arrays: Any) -> Linalg:
    """The :class:`Linalg` of whichever module owns ``arrays``."""
    xp = get_array_module(*arrays)
    key = xp.__name__
    if key not in _LINALG:
        _LINALG[key] = Linalg(xp)
    return _LINALG[key]
