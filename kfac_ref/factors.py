"""The Kronecker factors Ā_{i,j} = E[ā_i ā_jᵀ] and G_{i,j} = E[g_i g_jᵀ] (§3), and F̃ (§3).

K-FAC approximates each block of the Fisher, F_{i,j} = E[ā_{i-1}ā_{j-1}ᵀ ⊗ g_i g_jᵀ], by the
Kronecker product of expectations F̃_{i,j} = Ā_{i-1,j-1} ⊗ G_{i,j}. Indexing follows
:mod:`kfac_ref.vec` (the table in :mod:`kfac_ref.inverse`): symbols carry the paper's indices and
list entry k is layer i = k+1, so ``A_bar[k][l]`` = Ā_{k,l} = Ā_{i-1,j-1} and ``G[k][l]`` =
G_{k+1,l+1} = G_{i,j}, and the block (k, l) of F̃ (the paper's F̃_{i,j}) is
``kron(A_bar[k][l], G[k][l])``.

The g's in G are backpropagated from targets **sampled from the model** (§5), not the training
targets. :func:`kronecker_factors` computes G either by sampling or exactly: E_y[Ds_ℓ Ds_ℓᵀ] = F_R
(the output distribution's Fisher), so backpropagating the d_ℓ columns of a square root C of F_R
(F_R = C Cᵀ) and summing their outer products gives E_y[g_i g_jᵀ] with no sampling error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backend import get_array_module
from .errors import ConfigError
from .mlp import MLP, Forward


def A_bar_block(abar_i: Any, abar_j: Any) -> Any:
    """Ā_{i,j} = E[ā_i ā_jᵀ], the mean over the batch: ``abar_i.T @ abar_j / n`` (§3)."""
    return abar_i.T @ abar_j / abar_i.shape[0]


def G_block(g_i: Any, g_j: Any, n: int | None = None) -> Any:
    """G_{i,j} = E[g_i g_jᵀ]: ``g_i.T @ g_j / n`` (§3); n defaults to the number of rows."""
    return g_i.T @ g_j / (g_i.shape[0] if n is None else n)


@dataclass
class KroneckerFactors:
    """All factor blocks of a network: ``A_bar[k][l]`` = Ā_{k,l}, ``G[k][l]`` = G_{k+1,l+1}.

    Shapes: Ā_{k,l} is (d_k+1, d_l+1); G[k][l] is (d_{k+1}, d_{l+1}).
    """

    A_bar: list[list[Any]]
    G: list[list[Any]]

    @property
    def n_layers(self) -> int:
        return len(self.G)

    def diagonal(self) -> tuple[list[Any], list[Any]]:
        """(Ā_{i-1,i-1}, G_{i,i}) for i = 1..ℓ: the factors of F̆ (§4.2)."""
        return [self.A_bar[k][k] for k in range(self.n_layers)], [
            self.G[k][k] for k in range(self.n_layers)
        ]

    def off_diagonal(self) -> tuple[list[Any], list[Any]]:
        """(Ā_{i-1,i}, G_{i,i+1}) for i = 1..ℓ-1: the extra factors of F̂ (§4.3)."""
        r = range(self.n_layers - 1)
        return [self.A_bar[k][k + 1] for k in r], [self.G[k][k + 1] for k in r]


def all_A_bar(abar: Sequence[Any]) -> list[list[Any]]:
    """Every Ā_{k,l}, k, l = 0..ℓ-1, from the forward pass's ā's."""
    return [[A_bar_block(a_k, a_l) for a_l in abar] for a_k in abar]


def all_G(g_samples: Sequence[Sequence[Any]], n: int) -> list[list[Any]]:
    """Every G_{k+1,l+1} (``G[k][l]``) from one or more backward passes, averaged over cases:
    Σ_passes g[k]ᵀ g[l] / n.

    ``g_samples`` is a list of backward passes, each a list ``g[k]`` of (n, d_{k+1}) arrays.
    Dividing the sum over passes by ``n`` (not by n·passes) is right when the passes are the
    columns of C with F_R = C Cᵀ; for S Monte Carlo samples pass ``n`` = S·n.
    """
    L = len(g_samples[0])
    return [[sum(G_block(gs[k], gs[l], n) for gs in g_samples) for l in range(L)] for k in range(L)]


def exact_G_passes(mlp: MLP, weights: Sequence[Any], fwd: Forward) -> list[list[Any]]:
    """The d_ℓ backward passes of the columns of C (F_R = C Cᵀ): exact E_y over the model."""
    C = mlp.output.fisher_sqrt(fwd.output)
    return [mlp.backward(weights, fwd, C[:, :, j]) for j in range(C.shape[2])]


def sampled_G_passes(
    mlp: MLP, weights: Sequence[Any], fwd: Forward, rng: Any, n_samples: int = 1
) -> list[list[Any]]:
    """Backward passes from targets y ~ P(y | x, θ), ``n_samples`` per case (§5)."""
    out = fwd.output
    passes = []
    for _ in range(n_samples):
        y = mlp.output.sample(out, rng)
        passes.append(mlp.backward(weights, fwd, mlp.output.ds(out, y)))
    return passes


def kronecker_factors(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    method: str = "exact",
    rng: Any = None,
    n_samples: int = 1,
    Y: Any = None,
) -> KroneckerFactors:
    """Ā_{k,l} and G_{k+1,l+1} for all layer pairs on the inputs X (§3, §5).

    Args:
        method: ``"exact"`` (expectation over y ~ model computed exactly), ``"sample"``
            (``n_samples`` targets per case drawn from the model, generator ``rng``), or
            ``"empirical"`` (the training targets ``Y``: the empirical Fisher's factors, which
            the paper does *not* use; for comparison only).
    """
    mlp.check_weights(weights)
    mlp.check_inputs(X, Y if method == "empirical" else None)
    fwd = mlp.forward(weights, X)
    n = X.shape[0]
    if method == "exact":
        passes, denom = exact_G_passes(mlp, weights, fwd), n
    elif method == "sample":
        if rng is None:
            rng = get_array_module(X).random.default_rng(0)
        passes, denom = sampled_G_passes(mlp, weights, fwd, rng, n_samples), n * n_samples
    elif method == "empirical":
        if Y is None:
            raise ConfigError("method='empirical' needs the training targets Y")
        passes, denom = [mlp.backward(weights, fwd, mlp.output.ds(fwd.output, Y))], n
    else:
        raise ConfigError(
            f"unknown factor method {method!r}; choose 'exact', 'sample' or 'empirical'"
        )
    return KroneckerFactors(A_bar=all_A_bar(fwd.abar), G=all_G(passes, denom))
