"""The error of the Kronecker factorization F − F̃ in joint cumulants (§3.1), for all weight pairs.

For one pair of weights p, q with input activities ā⁽¹⁾ = ā_p, ā⁽²⁾ = ā_q and unit derivatives
g⁽¹⁾ = g_p, g⁽²⁾ = g_q, the Fisher entry is F_pq = E[ā⁽¹⁾ā⁽²⁾g⁽¹⁾g⁽²⁾] and F̃ (§3) puts
E[ā⁽¹⁾ā⁽²⁾] E[g⁽¹⁾g⁽²⁾] in its place. The paper's eqn. (3) writes the difference as

    F_pq − F̃_pq = κ(ā⁽¹⁾,ā⁽²⁾,g⁽¹⁾,g⁽²⁾) + κ(ā⁽¹⁾) κ(ā⁽²⁾,g⁽¹⁾,g⁽²⁾) + κ(ā⁽²⁾) κ(ā⁽¹⁾,g⁽¹⁾,g⁽²⁾)

(κ the joint cumulant, κ(a) = E[a]) and bounds Σ_{p,q} |F − F̃|_pq by the same sum of the three
terms in absolute value (eqn. 4, the "basic upper bound").

Derivation. Expand the fourth moment over the set partitions of {ā⁽¹⁾, ā⁽²⁾, g⁽¹⁾, g⁽²⁾}:
E[X₁X₂X₃X₄] = Σ_π Π_{B∈π} κ(X_B). With y drawn from the model, E[g | x] = 0 and ā depends on x
only, so every moment with exactly one g and any number of ā's is E_x[Π ā · E_y[g | x]] = 0;
a joint cumulant is a sum of products of moments of complementary sub-collections, one of which
holds that single g, so every cumulant with exactly one g vanishes (κ(g) = 0, κ(ā, g) = 0,
κ(ā, ā, g) = 0). The partitions that survive are the whole set (κ4), {ā⁽¹⁾}{ā⁽²⁾,g⁽¹⁾,g⁽²⁾},
{ā⁽²⁾}{ā⁽¹⁾,g⁽¹⁾,g⁽²⁾}, {ā⁽¹⁾,ā⁽²⁾}{g⁽¹⁾,g⁽²⁾} and {ā⁽¹⁾}{ā⁽²⁾}{g⁽¹⁾,g⁽²⁾}. The last two sum to
(κ(ā⁽¹⁾,ā⁽²⁾) + κ(ā⁽¹⁾)κ(ā⁽²⁾)) κ(g⁽¹⁾,g⁽²⁾) = E[ā⁽¹⁾ā⁽²⁾] E[g⁽¹⁾g⁽²⁾] = F̃_pq, which leaves
eqn. (3). Cumulants of order ≥ 2 do not change when a constant is added to an argument, so with
the centred ã = ā − E[ā] and zero-mean g's

    κ(ā⁽²⁾,g⁽¹⁾,g⁽²⁾) = E[ã⁽²⁾g⁽¹⁾g⁽²⁾],
    κ(ā⁽¹⁾,ā⁽²⁾,g⁽¹⁾,g⁽²⁾) = E[ã⁽¹⁾ã⁽²⁾g⁽¹⁾g⁽²⁾] − E[ã⁽¹⁾ã⁽²⁾] E[g⁽¹⁾g⁽²⁾]
                            − E[ã⁽¹⁾g⁽¹⁾] E[ã⁽²⁾g⁽²⁾] − E[ã⁽¹⁾g⁽²⁾] E[ã⁽²⁾g⁽¹⁾],

and the last two products are zero exactly (one g each). Every surviving term holds exactly two
g's, so only the conditional second moments S(x) = E_y[g gᵀ | x] = Σ_j (Jᵀc_j)(Jᵀc_j)ᵀ enter
(c_j the columns of C with F_R = C Cᵀ, :meth:`~kfac_ref.outputs.OutputDistribution.fisher_sqrt`):
the expectations over y are exact for all three output distributions (Bernoulli, softmax, and
the unit-variance Gaussian, whose third and fourth moments never appear).

Matrices. For parameters p = (k, c, r) (layer k's weight W[r, c], ā_p = ā_k[c], g_p = g_{k+1}[r],
θ order of :mod:`kfac_ref.vec`) every quantity is, block by block, a mean over cases of a
Kronecker product: F_{k,l} = E_x[ā_k ā_lᵀ ⊗ S_{k,l}(x)], the fourth centred moment
E_x[ã_k ã_lᵀ ⊗ S_{k,l}(x)], and E_x[ã_l[c'] S_{k,l}(x)] for κ3. :func:`kron_mean` contracts the
case axis of each as one (C_k C_l × n)·(n × R_k R_l) product, which is cheaper than n × P
per-case gradients when the output has many units (d_ℓ backward passes of the C columns are
summed into S first). Expectations are uniform means over the given cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import dense
from .backend import get_array_module
from .errors import ConfigError, TooLargeError
from .factors import KroneckerFactors
from .memory import DEFAULT_MAX_BYTES
from .mlp import MLP, Forward

#: cases per chunk of the contractions (bounds the per-case work arrays)
CHUNK = 256


class DenseSizeError(ConfigError, TooLargeError):
    """A dense diagnostic of this network would not fit the memory budget (a configuration
    mistake: a :class:`ConfigError`, and a :class:`TooLargeError` like the dense builders')."""


def check_layers(mlp: MLP, layers: Sequence[int] | None) -> tuple[int, ...]:
    """The 0-based layer indices (k: W_{k+1}) as an increasing tuple; all layers when None."""
    if layers is None:
        return tuple(range(mlp.n_layers))
    out = tuple(int(k) for k in layers)
    if not out or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ConfigError(f"layers must be a non-empty increasing list, got {list(layers)}")
    if out[0] < 0 or out[-1] >= mlp.n_layers:
        raise ConfigError(
            f"layers must lie in 0..{mlp.n_layers - 1} (0-based: k is W_(k+1)), got {list(layers)}"
        )
    return out


def n_params_of(mlp: MLP, layers: Sequence[int]) -> int:
    """How many entries of θ the layers hold (the side of the dense matrices)."""
    return sum(mlp.shapes[k][0] * mlp.shapes[k][1] for k in layers)


def work_bytes(
    mlp: MLP, layers: Sequence[int], n_cases: int, itemsize: int, copies: int, chunk: int = CHUNK
) -> int:
    """Bytes held at once: ``copies`` P×P matrices, the forward pass of all n cases, and per
    chunk of cases the d_ℓ backward passes, S(x) and the largest block contraction's operands."""
    P = n_params_of(mlp, layers)
    m = min(chunk, n_cases)
    d_out = mlp.layer_sizes[-1]
    D = sum(mlp.shapes[k][0] for k in layers)
    pair = max(
        mlp.shapes[k][1] * mlp.shapes[l][1] + mlp.shapes[k][0] * mlp.shapes[l][0]
        for k in layers
        for l in layers
    )
    forward = n_cases * sum(d + 1 for d in mlp.layer_sizes)
    per_chunk = m * (d_out * (d_out + sum(mlp.layer_sizes[1:])) + D * D + pair)
    return itemsize * (copies * P * P + forward + per_chunk)


def check_size(
    mlp: MLP,
    layers: Sequence[int],
    n_cases: int,
    itemsize: int,
    copies: int,
    max_bytes: int | None = None,
    what: str = "the §3.1 cumulant matrices",
) -> int:
    """:class:`DenseSizeError` (a :class:`ConfigError`) naming P and the limit when
    :func:`work_bytes` exceeds ``max_bytes`` (default :data:`kfac_ref.memory.DEFAULT_MAX_BYTES`);
    returns the estimate."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    need = work_bytes(mlp, layers, n_cases, itemsize, copies)
    if need > limit:
        P = n_params_of(mlp, layers)
        raise DenseSizeError(
            f"{what} of {P} parameters (layers {[k + 1 for k in layers]} of {mlp!r}) on "
            f"{n_cases} cases need about {need / 2**20:.0f} MiB ({copies} dense {P}×{P} matrices "
            f"and the per-case work), over the limit of {limit / 2**20:.0f} MiB; "
            "use a smaller network, restrict the layers, or raise max_bytes"
        )
    return need


def conditional_g_moments(
    mlp: MLP, weights: Sequence[Any], fwd: Forward, layers: Sequence[int]
) -> list[list[Any]]:
    """S_{k,l}(x) = E_y[g_{k+1} g_{l+1}ᵀ | x], shape (n, d_{k+1}, d_{l+1}), exactly (§2.2, §3).

    All d_ℓ columns c_j of C (F_R = C Cᵀ) are backpropagated in one pass over n·d_ℓ rows;
    S = Σ_j g⁽ʲ⁾ g⁽ʲ⁾ᵀ per case. Indexed by position in ``layers``.
    """
    xp = get_array_module(fwd.abar[0])
    C = mlp.output.fisher_sqrt(fwd.output)  # (n, d_ℓ, d_ℓ), columns c_j
    n, d = C.shape[0], C.shape[2]
    tiled = Forward(abar=[], s=[], dphi=[xp.repeat(v, d, axis=0) for v in fwd.dphi])
    g = mlp.backward(weights, tiled, C.transpose(0, 2, 1).reshape(n * d, d))
    gs = [g[k].reshape(n, d, -1) for k in layers]  # (n, j, units)
    return [[gk.transpose(0, 2, 1) @ gl for gl in gs] for gk in gs]


def kron_mean(u_k: Any, u_l: Any, S_kl: Any) -> Any:
    """Σ_x u_k(x) u_l(x)ᵀ ⊗ S_{k,l}(x) (a sum over cases), shape (C_k R_k, C_l R_l).

    u_k: (n, C_k), u_l: (n, C_l), S_kl: (n, R_k, R_l); the case axis is contracted in one
    matrix product, then the axes are put in kron order (entry [c R_k + r, c' R_l + r']).
    """
    n, ck = u_k.shape
    cl = u_l.shape[1]
    rk, rl = S_kl.shape[1:]
    Q = (u_k[:, :, None] * u_l[:, None, :]).reshape(n, ck * cl).T @ S_kl.reshape(n, rk * rl)
    return Q.reshape(ck, cl, rk, rl).transpose(0, 2, 1, 3).reshape(ck * rk, cl * rl)


@dataclass
class KroneckerCumulants:
    """F − F̃ and the three cumulant terms of eqn. (3) (§3.1), dense over the chosen layers.

    Entry (p, q) with p the row parameter (ā⁽¹⁾, g⁽¹⁾) and q the column one (ā⁽²⁾, g⁽²⁾):

    * ``F``: E[ā⁽¹⁾ā⁽²⁾g⁽¹⁾g⁽²⁾] (the exact Fisher's block, §2.2);
    * ``F_tilde``: E[ā⁽¹⁾ā⁽²⁾] E[g⁽¹⁾g⁽²⁾], blocks Ā_{k,l} ⊗ G_{k+1,l+1} (§3);
    * ``kappa4``: κ(ā⁽¹⁾,ā⁽²⁾,g⁽¹⁾,g⁽²⁾);
    * ``kappa3_term_1``: κ(ā⁽¹⁾) κ(ā⁽²⁾,g⁽¹⁾,g⁽²⁾);  ``kappa3_term_2``: κ(ā⁽²⁾) κ(ā⁽¹⁾,g⁽¹⁾,g⁽²⁾).

    ``factors`` holds the exact Ā and G of the layers (for F̃, F̆, F̂ at any damping);
    ``shapes`` the weight shapes of the layers, ``layers`` their 0-based indices.
    """

    layers: tuple[int, ...]
    shapes: list[tuple[int, int]]
    n_cases: int
    F: Any
    F_tilde: Any
    kappa4: Any
    kappa3_term_1: Any
    kappa3_term_2: Any
    factors: KroneckerFactors

    @property
    def error(self) -> Any:
        """F − F̃ (§3.1, left side of eqn. 3)."""
        return self.F - self.F_tilde

    def total_error(self) -> float:
        """Σ_{p,q} |F − F̃|_pq over all ordered weight pairs (the paper's total error)."""
        return float(get_array_module(self.F).abs(self.error).sum())

    def bound(self) -> float:
        """Σ_{p,q} (|κ4| + |κ(ā⁽¹⁾)κ3| + |κ(ā⁽²⁾)κ3|), the basic upper bound (eqn. 4)."""
        xp = get_array_module(self.F)
        return float(
            xp.abs(self.kappa4).sum()
            + xp.abs(self.kappa3_term_1).sum()
            + xp.abs(self.kappa3_term_2).sum()
        )

    def summary(self) -> dict[str, float]:
        """Host floats: the total error and bound, each term's Σ|·|, and the same total and bound
        over the unordered pairs p ≤ q (the upper triangle with the diagonal)."""
        xp = get_array_module(self.F)
        terms = [self.kappa4, self.kappa3_term_1, self.kappa3_term_2]
        upper = xp.triu(xp.ones(self.F.shape, dtype=bool))
        return {
            "total_error": self.total_error(),
            "bound": self.bound(),
            "kappa4_abs_sum": float(xp.abs(terms[0]).sum()),
            "kappa3_terms_abs_sum": float(xp.abs(terms[1]).sum() + xp.abs(terms[2]).sum()),
            "total_error_unordered_pairs": float(xp.abs(self.error)[upper].sum()),
            "bound_unordered_pairs": float(sum(xp.abs(t)[upper].sum() for t in terms)),
            "n_params": float(self.F.shape[0]),
            "n_cases": float(self.n_cases),
        }


def _blocks_to_dense(blocks: list[list[Any]]) -> Any:
    xp = get_array_module(blocks[0][0])
    return xp.concatenate([xp.concatenate(row, axis=1) for row in blocks], axis=0)


def kronecker_cumulants(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    layers: Sequence[int] | None = None,
    max_bytes: int | None = None,
    chunk: int = CHUNK,
) -> KroneckerCumulants:
    """F, F̃ and the cumulant terms of eqn. (3) for every pair of weights of ``layers`` (§3.1).

    ``layers``: 0-based indices (k is W_{k+1}; default all); the matrices are those of the
    parameters of these layers, the others held fixed. Expectations: uniform over the rows of X
    and, for each, exactly over y ~ P(y | x, θ) (module docstring). Refuses
    (:class:`DenseSizeError`) before computing when the dense matrices would not fit.
    """
    layers = check_layers(mlp, layers)
    mlp.check_finite_weights(weights)
    mlp.check_inputs(X)
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1, got {chunk}")
    check_size(mlp, layers, X.shape[0], X.dtype.itemsize, 8, max_bytes)
    xp = get_array_module(X)
    n, L = X.shape[0], len(layers)
    m = [ab.mean(axis=0) for ab in (mlp.forward(weights, X).abar[k] for k in layers)]  # κ(ā)

    def zeros(a: int, b: int) -> Any:
        return xp.zeros((a, b), dtype=X.dtype)

    sizes = [(mlp.shapes[k][1], mlp.shapes[k][0]) for k in layers]  # (C_k, R_k)
    acc = {
        name: [[zeros(ck * rk, cl * rl) for cl, rl in sizes] for ck, rk in sizes]
        for name in ("F", "M4")
    }
    B1 = [[zeros(rk, cl * rl) for cl, rl in sizes] for ck, rk in sizes]  # E[ã_l S_kl] (row k)
    B2 = [[zeros(ck * rk, rl) for cl, rl in sizes] for ck, rk in sizes]  # E[ã_k S_kl] (col l)
    A_bar = [[zeros(ck, cl) for cl, _ in sizes] for ck, _ in sizes]
    G = [[zeros(rk, rl) for _, rl in sizes] for _, rk in sizes]
    for start in range(0, n, chunk):
        fwd = mlp.forward(weights, X[start : start + chunk])
        S = conditional_g_moments(mlp, weights, fwd, layers)
        a = [fwd.abar[k] for k in layers]
        at = [a_i - m_i for a_i, m_i in zip(a, m, strict=True)]
        one = xp.ones((a[0].shape[0], 1), dtype=X.dtype)
        for i in range(L):
            for j in range(L):
                acc["F"][i][j] += kron_mean(a[i], a[j], S[i][j])
                acc["M4"][i][j] += kron_mean(at[i], at[j], S[i][j])
                B1[i][j] += kron_mean(one, at[j], S[i][j])
                B2[i][j] += kron_mean(at[i], one, S[i][j])
                A_bar[i][j] += a[i].T @ a[j]
                G[i][j] += S[i][j].sum(axis=0)
    factors = KroneckerFactors(
        A_bar=[[A / n for A in row] for row in A_bar], G=[[Gk / n for Gk in row] for row in G]
    )
    cov = [[factors.A_bar[i][j] - xp.outer(m[i], m[j]) for j in range(L)] for i in range(L)]
    kappa4 = [
        [acc["M4"][i][j] / n - xp.kron(cov[i][j], factors.G[i][j]) for j in range(L)]
        for i in range(L)
    ]
    term1 = [[xp.kron(m[i][:, None], B1[i][j] / n) for j in range(L)] for i in range(L)]
    term2 = [[xp.kron(m[j][None, :], B2[i][j] / n) for j in range(L)] for i in range(L)]
    return KroneckerCumulants(
        layers=layers,
        shapes=[mlp.shapes[k] for k in layers],
        n_cases=n,
        F=_blocks_to_dense([[acc["F"][i][j] / n for j in range(L)] for i in range(L)]),
        F_tilde=dense.F_tilde(factors),
        kappa4=_blocks_to_dense(kappa4),
        kappa3_term_1=_blocks_to_dense(term1),
        kappa3_term_2=_blocks_to_dense(term2),
        factors=factors,
    )
