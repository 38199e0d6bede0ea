"""The Fisher F (§2.2), dense for small networks, and Fisher-vector products.

F = E_x E_{y ~ P(y|x,θ)}[Dθ Dθᵀ] with y drawn from the **model**; for the matching losses of
:mod:`kfac_ref.outputs` this equals the generalized Gauss–Newton matrix E_x[Jᵀ F_R J] with
J = ∂s_ℓ/∂θ. The empirical Fisher (training targets instead of model samples) is a different
matrix and is only offered under its own name, :func:`empirical_fisher`. The dense
approximations F̃, F̆, F̂ (§3, §4) built from the Kronecker factors are in :mod:`kfac_ref.compare`.

Dense matrices are in the θ ordering of :mod:`kfac_ref.vec` and are meant for small networks:
each function estimates its memory first and raises :class:`TooLargeError` before allocating.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import get_array_module
from .errors import ConfigError, NonFiniteError, ShapeError
from .memory import check_dense_size, per_case_entries
from .mlp import MLP
from .vec import per_case_vec_grad


def per_case_gradients(mlp: MLP, fwd: Any, g: Sequence[Any]) -> Any:
    """Per-case Dθ = [vec(g_1 ā_0ᵀ); …] for one backward pass, shape (n, P)."""
    xp = get_array_module(fwd.abar[0])
    return xp.concatenate(
        [per_case_vec_grad(a, g_k) for a, g_k in zip(fwd.abar, g, strict=True)], axis=1
    )


def _outer_mean(mlp: MLP, weights: Sequence[Any], X: Any, ds_list_fn, denom_per_case: int) -> Any:
    """(1/(n·denom)) Σ over cases and backward passes of Dθ Dθᵀ, accumulated pass by pass."""
    xp = get_array_module(X)
    fwd = mlp.forward(weights, X)
    F = xp.zeros((mlp.n_params, mlp.n_params), dtype=X.dtype)
    for ds in ds_list_fn(fwd):
        J = per_case_gradients(mlp, fwd, mlp.backward(weights, fwd, ds))
        F += J.T @ J
    return F / (X.shape[0] * denom_per_case)


def check_dense_inputs(
    mlp: MLP, weights: Sequence[Any], X: Any, max_bytes: int | None, Y: Any = None
) -> None:
    """Check the weights and X (and Y), then refuse a dense P×P matrix over ``max_bytes``."""
    mlp.check_finite_weights(weights)
    mlp.check_inputs(X, Y)
    check_dense_size(
        mlp.n_params,
        X.dtype.itemsize,
        max_bytes,
        n_cases=X.shape[0],
        per_case=per_case_entries(mlp.layer_sizes),
    )


def exact_fisher(mlp: MLP, weights: Sequence[Any], X: Any, max_bytes: int | None = None) -> Any:
    """Dense F = (1/n) Σ_x E_{y~model}[Dθ Dθᵀ] = (1/n) Σ_x Jᵀ F_R J, exactly (§2.2).

    The expectation over y is exact: with F_R = C Cᵀ, backpropagating each column of C gives
    per-case vectors whose outer products sum to Jᵀ F_R J (d_ℓ backward passes).
    X has shape (n_examples, d_0); the result is (P, P) in the θ order of :mod:`kfac_ref.vec`.
    """
    check_dense_inputs(mlp, weights, X, max_bytes)

    def columns(fwd):
        C = mlp.output.fisher_sqrt(fwd.output)
        return (C[:, :, j] for j in range(C.shape[2]))

    return _outer_mean(mlp, weights, X, columns, 1)


def monte_carlo_fisher(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    n_samples: int,
    rng: Any = None,
    max_bytes: int | None = None,
) -> Any:
    """Monte Carlo F: mean of Dθ Dθᵀ over ``n_samples`` targets y ~ P(y|x, θ) per case (§2.2,
    §5)."""
    check_dense_inputs(mlp, weights, X, max_bytes)
    if n_samples < 1:
        raise ConfigError(f"n_samples must be at least 1, got {n_samples}")
    rng = rng if rng is not None else get_array_module(X).random.default_rng(0)

    def samples(fwd):
        out = fwd.output
        return (mlp.output.ds(out, mlp.output.sample(out, rng)) for _ in range(n_samples))

    return _outer_mean(mlp, weights, X, samples, n_samples)


def empirical_fisher(
    mlp: MLP, weights: Sequence[Any], X: Any, Y: Any, max_bytes: int | None = None
) -> Any:
    """The *empirical* Fisher (1/n) Σ Dθ Dθᵀ with the training targets Y — not the Fisher of
    §2.2."""
    check_dense_inputs(mlp, weights, X, max_bytes, Y)
    return _outer_mean(mlp, weights, X, lambda fwd: [mlp.output.ds(fwd.output, Y)], 1)


# -------------------------------------------------------------- Fisher-vector products
def fisher_vector_product(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    V: Sequence[Any],
    fwd: Any = None,
    validate: bool = True,
) -> list[Any]:
    """F v = (1/n) Σ_x Jᵀ F_R J v on the batch X, without forming F (§2.2, §6 and §7).

    Forward-mode R-operator for J v (:meth:`MLP.jvp`: R s_i = V_i ā_{i-1} + W_i R ā_{i-1}), the
    output Fisher F_R, then the ordinary backward pass for Jᵀ. ``V`` has the shapes of
    ``weights``; so has the result. Pass ``fwd`` (the forward pass on X) to reuse it.
    ``validate`` checks weights, X (or ``fwd``'s inputs) and V (shapes, dtypes, finite values)
    first.
    """
    if len(V) != len(weights) or any(v.shape != W.shape for v, W in zip(V, weights, strict=True)):
        raise ShapeError("the direction V must have one matrix per layer, shaped like the weights")
    if validate:
        mlp.check_finite_weights(weights)
        mlp.check_inputs(X if fwd is None else fwd.abar[0][:, :-1])
        for i, v in enumerate(V, start=1):
            if not bool(get_array_module(v).isfinite(v).all()):
                raise NonFiniteError(f"the direction V_{i} contains NaN or infinite values")
    if fwd is None:
        fwd = mlp.forward(weights, X)
    u = mlp.output.fisher_vp(fwd.output, mlp.jvp(weights, fwd, V))
    return mlp.weight_gradients(fwd, mlp.backward(weights, fwd, u))
