"""Linear algebra that differs by backend, checked SPD inverses, condition estimates and trust,
and SciPy's LAPACK threads.

The factorizations the inverses need (Cholesky, SPD inverse, the generalized symmetric
eigenproblem of §4.3 / Appendix B) are spelled differently by NumPy/SciPy and CuPy/cupyx; one
:class:`Linalg` per array module hides the difference (reached through :func:`linalg_for`).
Each factorization reports whether it succeeded without a host synchronization and can add a
cheap power-iteration estimate of the condition number. On top of it: :func:`spd_inverses`,
the checked Cholesky inverses of the damped factors (§4.2, §4.3; NaN refused, jitter where not
numerically positive definite, one synchronization for all), :class:`Precision` and
:data:`TRUST` (``KFACConfig.linalg = "auto"``), :func:`chain3`. :func:`lapack_threads` keeps
SciPy's own OpenBLAS pool off NumPy's cores during refreshes (NumPy only).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy

from .backend import get_array_module
from .errors import NonFiniteError
from .host import HostBatch


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
    """κ̂ = λ̂_max(M) · λ̂_max(M⁻¹) by block power iteration (:func:`_top_eigenvalue`): a lower
    bound of
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


_LINALG: dict[ModuleType, Linalg] = {}


def linalg_for(*arrays: Any) -> Linalg:
    """The :class:`Linalg` of whichever module owns ``arrays`` (one per module object)."""
    xp = get_array_module(*arrays)
    if xp not in _LINALG:
        _LINALG[xp] = Linalg(xp)
    return _LINALG[xp]


# ---------------------------------------- SPD inverses, jitter, trust (§4.2, §4.3, App. B)
def symmetrize(M: Any) -> Any:
    """(M + Mᵀ)/2: removes round-off asymmetry before a symmetric factorization."""
    return 0.5 * (M + M.T)


def nonfinite_message(name: str) -> str:
    """The message of :class:`NonFiniteError` for a matrix ``name`` with NaN or inf entries."""
    return f"{name} contains NaN or infinite entries"


def with_jitter(factorize: Callable[[Any], tuple[Any, Any]], M: Any, name: str) -> Any:
    """``factorize(M + jitter·I)`` for jitter = 1e-10·tr(M)/dim, then ×100 (4 tries), with a
    warning, after ``factorize(M)`` failed because M is not numerically positive definite.

    ``M`` must already be symmetric and finite. Raises :class:`NonFiniteError` naming ``name``
    when even the largest jitter fails. (A failure path: it synchronizes once per try.)
    """
    xp = get_array_module(M)
    scale = float(xp.trace(M)) / M.shape[0] or 1.0
    jitter = 1e-10 * scale
    for _ in range(4):
        out, ok = factorize(M + jitter * xp.eye(M.shape[0], dtype=M.dtype))
        if bool(ok):
            # outside any try: a warning turned into an error must reach the caller
            warnings.warn(
                f"{name} was not positive definite; added jitter {jitter:.3g}",
                RuntimeWarning,
                stacklevel=2,
            )
            return out
        jitter *= 100.0
    raise NonFiniteError(
        f"{name} is not positive definite even with jitter {jitter / 100:.3g}; increase damping"
    )


#: A factorization in the training dtype is trusted when κ̂·ε ≤ TRUST (κ̂ a lower bound of the
#: condition number, ε the dtype's machine epsilon): about two correct digits in the worst
#: direction of the inverse and many more in the others (``KFACConfig.linalg = "auto"``).
TRUST = 1e-2


@dataclass
class Precision:
    """``KFACConfig.linalg = "auto"``: Cholesky inverses in ``dtype`` (float64); each Appendix-B
    block in the training dtype, redone in ``dtype`` where it cannot be trusted (it failed, or
    κ̂·ε > :data:`TRUST` · min(1 − s₁s₂); see the config's docstring). ``redone`` collects the
    names of the blocks redone, for the log."""

    dtype: Any
    redone: list[str] = field(default_factory=list)

    def applies_to(self, M: Any) -> bool:
        """Whether M is in a lower precision than the fallback (else nothing is redone)."""
        return get_array_module(M).finfo(M.dtype).eps > get_array_module(M).finfo(self.dtype).eps


def trusted(ok: Any, kappa: Any, dtype: Any, xp: Any, slack: Any = 1.0) -> Any:
    """ok and κ̂·ε ≤ TRUST·slack (0-d, no synchronization)."""
    return ok & (kappa * float(xp.finfo(dtype).eps) <= TRUST * slack)


def _factorize_all(
    factorize: Callable[..., tuple[Any, ...]],
    Ms: Sequence[Any],
    names: Sequence[str],
    precision: Precision | None = None,
) -> list[Any]:
    """``factorize(symmetrize(M))`` for every M, checked with one device→host transfer.

    Every M must be finite (else :class:`NonFiniteError` naming the first bad one) and is
    factorized; where a factorization fails (not numerically positive definite) it is retried
    with jitter (:func:`with_jitter`), which warns. With a ``precision`` (``linalg="auto"``)
    the matrices are factorized in ``precision.dtype`` and the results cast back: a Cholesky
    inverse costs about one matrix product, so float64 is cheap here, while float32 would need
    a condition estimate costing a fair part of that (Appendix B is where float32 pays).
    """
    if precision is not None and Ms and precision.applies_to(Ms[0]):
        dtype = Ms[0].dtype
        done = _factorize_all(factorize, [M.astype(precision.dtype) for M in Ms], names)
        return [out.astype(dtype) for out in done]
    batch = HostBatch()
    for M, name in zip(Ms, names, strict=True):
        batch.require_finite([M], nonfinite_message(name))
    sym = [symmetrize(M) for M in Ms]
    outs = []
    for i, S in enumerate(sym):
        out, ok = factorize(S)
        outs.append(out)
        batch.value(f"ok{i}", ok)
    host = batch.fetch()
    return [
        out if host[f"ok{i}"] else with_jitter(factorize, S, name)
        for i, (out, S, name) in enumerate(zip(outs, sym, names, strict=True))
    ]


def spd_inverses(
    Ms: Sequence[Any], names: Sequence[str], precision: Precision | None = None
) -> list[Any]:
    """[M⁻¹] for symmetric positive-definite matrices (one Cholesky each, one sync for all).

    A matrix that is not numerically positive definite is retried with a small jitter
    (1e-10·tr(M)/dim, then ×100 up to 3 times) and a warning; one with NaN/inf entries raises
    :class:`NonFiniteError` naming it. ``precision``: see :func:`_factorize_all`.
    """
    if not Ms:
        return []
    return _factorize_all(linalg_for(*Ms).spd_inverse, Ms, names, precision)


def spd_inverse(M: Any, name: str = "matrix") -> Any:
    """M⁻¹ for symmetric positive-definite M (one Cholesky factorization; jitter as above)."""
    return spd_inverses([M], [name])[0]


def chain3(A: Any, B: Any, C: Any) -> Any:
    """A B C, multiplied in the order with fewer flops ((AB)C or A(BC)): the layer widths of
    Ψ^G V Ψ^Āᵀ differ, down to 30 at an autoencoder's code layer."""
    (a0, a1), b1, c1 = A.shape, B.shape[1], C.shape[1]
    if a0 * a1 * b1 + a0 * b1 * c1 <= a1 * b1 * c1 + a0 * a1 * c1:
        return (A @ B) @ C
    return A @ (B @ C)


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
