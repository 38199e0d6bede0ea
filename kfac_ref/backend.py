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

import functools
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

from .errors import BackendError, ConfigError, NonFiniteError

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


class Linalg:
    """Linear algebra that differs in spelling between NumPy/SciPy and CuPy/cupyx.

    The factorizations return ``(result, ok)``. On NumPy ``ok`` is a Python bool from LAPACK's
    ``info``. On CuPy it is a 0-d device boolean (no synchronization): cuSOLVER's failure status
    only reaches Python under ``cupyx.errstate(linalg="raise")``, at the price of one
    synchronization per call, and a failed factorization otherwise returns an unspecified,
    possibly finite, factor. So the factor itself is tested on the device: finite, a positive
    diagonal, and ‖L Lᵀ − M‖_F ≤ 4 (n+1) ε tr(M), a few times the backward-error bound of a
    successful Cholesky (Higham, *Accuracy and Stability*, Thm. 10.3, with ‖L‖_F² = tr(M)).
    """

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp
        if xp is numpy:
            import scipy.linalg as sla
        else:
            import cupyx.scipy.linalg as sla
        self._sla = sla

    def cholesky(self, A: Any) -> Any:
        """Lower Cholesky factor L with A = L Lᵀ (unchecked; see :meth:`checked_cholesky`)."""
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

    def factor_ok(self, L: Any, M: Any) -> Any:
        """0-d boolean: L is a Cholesky factor of M to working precision (see the class doc)."""
        xp = self.xp
        tol = 4.0 * (M.shape[0] + 1) * float(xp.finfo(M.dtype).eps) * xp.abs(xp.trace(M))
        residual = xp.linalg.norm(L @ L.T - M)
        return (xp.diagonal(L) > 0).all() & (residual <= tol)

    def checked_cholesky(self, M: Any) -> tuple[Any, Any]:
        """(L, ok): the lower Cholesky factor of symmetric M, and whether M was numerically PD."""
        xp = self.xp
        try:
            L = self.cholesky(M)
        except numpy.linalg.LinAlgError:  # NumPy; CuPy too under errstate(linalg="raise")
            return None, False
        return L, (True if xp is numpy else self.factor_ok(L, M))

    def spd_inverse(self, M: Any, condition: bool = False) -> tuple[Any, ...]:
        """(M⁻¹, ok) for symmetric positive-definite M; ok false where M is not numerically PD.

        NumPy: LAPACK potrf + potri (one factorization, no triangular solves); CuPy: Cholesky
        and a triangular solve. Only the lower triangle of M is read. ``condition=True`` adds a
        third entry, κ̂ = λ̂_max(M) λ̂_max(M⁻¹) by power iteration: a lower bound of the condition
        number κ(M) (0-d, on the device; inf where the factorization failed).
        """
        xp = self.xp
        if xp is numpy:
            potrf, potri = self._sla.lapack.get_lapack_funcs(("potrf", "potri"), (M,))
            # clean=True zeroes the upper triangle, which potri leaves alone: L⁻ᵀL⁻¹'s lower
            # triangle plus its transpose, with the diagonal counted once, is the inverse
            c, info = potrf(M, lower=True, clean=True, overwrite_a=False)
            if info != 0:
                return (None, False, math.inf) if condition else (None, False)
            inv, info = potri(c, lower=True, overwrite_c=True)
            if info != 0:
                return (None, False, math.inf) if condition else (None, False)
            out = inv + inv.T
            numpy.fill_diagonal(out, numpy.diagonal(inv))
            return (out, True, _cholesky_kappa(xp, M, out)) if condition else (out, True)
        L, ok = self.checked_cholesky(M)
        if L is None:
            return (None, False, math.inf) if condition else (None, False)
        L_inv = self.solve_triangular(L, xp.eye(M.shape[0], dtype=M.dtype), lower=True)
        out = L_inv.T @ L_inv
        return (out, ok, _cholesky_kappa(xp, M, out)) if condition else (out, ok)

    def generalized_eigh(
        self, C: Any, A: Any, condition: bool = False
    ) -> tuple[tuple[Any, Any] | None, Any] | tuple[tuple[Any, Any] | None, Any, Any]:
        """((s, K), ok) with C K = A K diag(s) and Kᵀ A K = I; ok false where A is not PD.

        NumPy: LAPACK's divide-and-conquer generalized solver (``eigh(C, A, driver="gvd")``);
        CuPy: A = L Lᵀ, eigh(L⁻¹ C L⁻ᵀ) = E diag(s) Eᵀ, K = L⁻ᵀ E. ``condition=True`` adds
        κ̂ = λ̂_max(A) λ̂_max(K Kᵀ) by power iteration (K Kᵀ = A⁻¹), a lower bound of κ(A); 0-d,
        on the device; inf where it failed.
        """
        xp = self.xp
        if xp is numpy:
            try:  # check_finite: a NaN fails here (reported by the caller), never reaches LAPACK
                sK = self._sla.eigh(C, A, driver="gvd", check_finite=True)
            except (numpy.linalg.LinAlgError, ValueError):
                return (None, False, math.inf) if condition else (None, False)
            return (sK, True, _eigh_kappa(xp, A, sK[1])) if condition else (sK, True)
        L, ok = self.checked_cholesky(A)
        if L is None:
            return (None, False, math.inf) if condition else (None, False)
        M = self.solve_triangular(L, self.solve_triangular(L, C, lower=True).T, lower=True)
        s, E = self.eigh(0.5 * (M + M.T))
        K = self.solve_triangular(L, E, lower=True, trans=1)
        ok = ok & xp.isfinite(s).all()
        return ((s, K), ok, _eigh_kappa(xp, A, K)) if condition else ((s, K), ok)


#: block power iterations of the condition estimates, and the block's width: each iteration
#: is one pass over the matrix (an n × n × 4 product), beside the factorization's O(n³)
KAPPA_ITERS, KAPPA_BLOCK = 3, 4


def _top_eigenvalue(xp: ModuleType, apply: Any, n: int, dtype: Any) -> Any:
    """A lower bound of λ_max of a symmetric positive semi-definite operator: the largest ‖A vⱼ‖
    over a block of unit vectors after :data:`KAPPA_ITERS` block power iterations from a fixed
    start (0-d float64, no synchronization)."""
    i = xp.arange(n, dtype=xp.float64)[:, None]
    j = xp.arange(KAPPA_BLOCK, dtype=xp.float64)[None, :]
    V = xp.cos(i * (2.3999632 + j) + j) + 1.5 * (j == 0)
    V = (V / xp.linalg.norm(V, axis=0)).astype(dtype)
    lam = None
    for _ in range(KAPPA_ITERS):
        W = apply(V)
        norms = xp.linalg.norm(W, axis=0)
        lam = norms.max()
        V = W / xp.maximum(norms, xp.finfo(W.dtype).tiny)
    return lam.astype(xp.float64)


def _cholesky_kappa(xp: ModuleType, M: Any, M_inv: Any) -> Any:
    """κ̂ = λ̂_max(M) · λ̂_max(M⁻¹) by block power iteration (:func:`_top_eigenvalue`): a lower bound of
    κ(M), usually within a small factor of it; 0-d, no synchronization."""
    n = M.shape[0]
    return _top_eigenvalue(xp, lambda v: M @ v, n, M.dtype) * _top_eigenvalue(
        xp, lambda v: M_inv @ v, n, M.dtype
    )


def _eigh_kappa(xp: ModuleType, A: Any, K: Any) -> Any:
    """κ̂ = λ̂_max(A) · λ̂_max(K Kᵀ) for Kᵀ A K = I (K Kᵀ = A⁻¹): a lower bound of κ(A)."""
    n = A.shape[0]
    return _top_eigenvalue(xp, lambda v: A @ v, n, A.dtype) * _top_eigenvalue(
        xp, lambda v: K @ (K.T @ v), n, A.dtype
    )


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
        """Queue a 0-d ``x`` that must be finite; :meth:`fetch` raises ``"<message> (<x>)"`` if not."""
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


def special_for(*arrays: Any) -> ModuleType:
    """``scipy.special`` or ``cupyx.scipy.special``, whichever matches ``arrays``."""
    if get_array_module(*arrays) is numpy:
        import scipy.special

        return scipy.special
    import cupyx.scipy.special

    return cupyx.scipy.special


_LINALG: dict[ModuleType, Linalg] = {}


def linalg_for(*arrays: Any) -> Linalg:
    """The :class:`Linalg` of whichever module owns ``arrays`` (one per module object)."""
    xp = get_array_module(*arrays)
    if xp not in _LINALG:
        _LINALG[xp] = Linalg(xp)
    return _LINALG[xp]


# ------------------------------------------------------------- thread pools (NumPy only)
@functools.lru_cache(maxsize=1)
def scipy_lapack_pool() -> Any:
    """threadpoolctl's controller of the BLAS library that SciPy's LAPACK runs on, where that is
    not NumPy's own (the PyPI wheels of NumPy and SciPy each bundle an OpenBLAS); else None.

    Two OpenBLAS thread pools on the same cores get in each other's way: after each call a
    pool's threads busy-wait for more work for a while, and the other library's next product
    waits for the cores (measured here: 8 ms for an n × 4 product that takes 0.2 ms alone).
    """
    import scipy
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    root = os.path.dirname(os.path.realpath(scipy.__file__))
    mine = [
        c
        for c in blas
        if os.path.realpath(c.filepath).startswith((root + os.sep, root + ".libs" + os.sep))
    ]
    return mine[0] if len(mine) == 1 and len(blas) > 1 else None


@contextmanager
def lapack_threads(n: int | None, xp: ModuleType) -> Iterator[None]:
    """Run the block with SciPy's LAPACK on ``n`` threads where it has a pool of its own
    (:func:`scipy_lapack_pool`), NumPy's products keeping theirs; the count is restored after.
    No effect for n None, for CuPy, or where SciPy and NumPy share one BLAS library."""
    pool = scipy_lapack_pool() if n is not None and xp is numpy else None
    if pool is None:
        yield
        return
    before = pool.get_num_threads()
    pool.set_num_threads(n)
    try:
        yield
    finally:
        pool.set_num_threads(before)
