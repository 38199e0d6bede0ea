"""Damping (§6): factored Tikhonov damping of the Kronecker factors (§6.3).

The damped diagonal block is (Ā_{i-1,i-1} + π_i γ I) ⊗ (G_{i,i} + (γ/π_i) I), with the
trace-norm choice π_i = √[(tr(Ā_{i-1,i-1}) / (d_{i-1}+1)) / (tr(G_{i,i}) / d_i)].
"""

from __future__ import annotations

from typing import Any

from .backend import get_array_module


def pi_trace_norm(A_ii: Any, G_ii: Any) -> Any:
    """π_i = √[(tr(Ā)/dim Ā) / (tr(G)/dim G)] (§6.3, trace-norm choice); a 0-d array.

    Guarded so an all-zero G (e.g. saturated units) gives a large finite π, not inf/NaN.
    """
    xp = get_array_module(A_ii, G_ii)
    tiny = xp.finfo(A_ii.dtype).tiny
    num = xp.trace(A_ii) / A_ii.shape[0]
    den = xp.trace(G_ii) / G_ii.shape[0]
    return xp.sqrt(xp.maximum(num, tiny) / xp.maximum(den, tiny))


def add_diag(M: Any, c: Any) -> Any:
    """M + c I (a new array)."""
    xp = get_array_module(M)
    return M + c * xp.eye(M.shape[0], dtype=M.dtype)


def damped_factors(A_ii: Any, G_ii: Any, gamma: float, pi: Any = None) -> tuple[Any, Any]:
    """(Ā + π γ I, G + (γ/π) I), the factored Tikhonov damping of one layer (§6.3).

    ``pi`` defaults to :func:`pi_trace_norm`; γ = 0 returns the undamped factors.
    """
    if not gamma:
        return A_ii, G_ii
    if pi is None:
        pi = pi_trace_norm(A_ii, G_ii)
    return add_diag(A_ii, pi * gamma), add_diag(G_ii, gamma / pi)
