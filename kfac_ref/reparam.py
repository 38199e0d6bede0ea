"""Affine re-parametrizations of the activities, for the invariance theorem of §10.

The theorem (§10): transform every layer's input and pre-activation by invertible matrices,

    ā†_k = Ω_k ā_k   (k = 0..ℓ-1),        s†_i = Φ_i s_i   (i = 1..ℓ-1; Φ_ℓ = I),

and re-map the weights so that the network computes the same function,

    W†_i = Φ_i W_i Ω_{i-1}⁻¹           (W_i = Φ_i⁻¹ W†_i Ω_{i-1}).

The transformed network has the units ā†_k = Ω_k φ̄_k(Φ_k⁻¹ s†_k). With γ = 0 and exact
statistics, the K-FAC update computed in the W† coordinates (block-diagonal or
block-tridiagonal) maps back to the update computed in the W coordinates, so the function after
the step is the same; gradient descent has no such property. Centering the activities
(ā ↦ ā − [E a; 0], :func:`centering_omegas`) is one such transformation.

Ω_k acts on the homogeneous ā_k = [a_k; 1] and must keep the 1: its last row is [0, …, 0, 1],
i.e. Ω_k = [[M_k, c_k], [0, 1]] maps a_k ↦ M_k a_k + c_k. Φ_ℓ is the identity, because s_ℓ is
the natural parameter the loss reads (:mod:`kfac_ref.outputs`). Lists are 0-based as in
:mod:`kfac_ref.vec`: ``omegas[k]`` = Ω_k, shape (d_k+1, d_k+1), k = 0..ℓ-1; ``phis[k]`` = Φ_{k+1},
shape (d_{k+1}, d_{k+1}), k = 0..ℓ-2 (``None``: all identities).

Under the map, per case g†_i = Φ_i⁻ᵀ g_i and DW†_i = Φ_i⁻ᵀ DW_i Ω_{i-1}ᵀ, so the Kronecker
factors become Ā†_{k,l} = Ω_k Ā_{k,l} Ω_lᵀ and G†_{k,l} = Φ_{k+1}⁻ᵀ G_{k,l} Φ_{l+1}⁻¹.
:class:`ReparametrizedMLP` is the transformed network itself: an :class:`~kfac_ref.mlp.MLP`
whose parameters are the W†, so every K-FAC function of the package (factors, Fisher,
gradients, Fisher-vector products) applies to it unchanged and yields these quantities
directly from its own forward and backward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import get_array_module
from .errors import ConfigError, ShapeError
from .factors import KroneckerFactors
from .linalg import linalg_for
from .mlp import MLP, Forward, _append_one


# ------------------------------------------------------------------ building Ω
def affine_omega(M: Any, c: Any) -> Any:
    """Ω = [[M, c], [0, 1]], the map ā = [a; 1] ↦ [M a + c; 1]; M: (d, d), c: (d,)."""
    xp = get_array_module(M, c)
    d = M.shape[0]
    Omega = xp.zeros((d + 1, d + 1), dtype=M.dtype)
    Omega[:d, :d] = M
    Omega[:d, d] = c
    Omega[d, d] = 1.0
    return Omega


def centering_omega(mean: Any) -> Any:
    """Ω = [[I, −mean], [0, 1]]: centering ā ↦ ā − [mean; 0] (§10)."""
    xp = get_array_module(mean)
    return affine_omega(xp.eye(mean.shape[0], dtype=mean.dtype), -mean)


def centering_omegas(mlp: MLP, weights: Sequence[Any], X: Any) -> list[Any]:
    """Ω_k centering each layer input a_k on its mean over the batch X, k = 0..ℓ-1."""
    fwd = mlp.forward(weights, X)
    return [centering_omega(abar_k[:, :-1].mean(axis=0)) for abar_k in fwd.abar]


# ------------------------------------------------------------------ checks
def _check_transforms(mlp: MLP, omegas: Sequence[Any], phis: Sequence[Any] | None) -> None:
    """Raise :class:`ShapeError` for wrong shapes, :class:`ConfigError` if an Ω drops the 1."""
    d = mlp.layer_sizes
    if len(omegas) != mlp.n_layers:
        raise ShapeError(
            f"expected {mlp.n_layers} matrices Ω_0..Ω_{mlp.n_layers - 1}, got {len(omegas)}"
        )
    for k, Omega in enumerate(omegas):
        if tuple(Omega.shape) != (d[k] + 1, d[k] + 1):
            raise ShapeError(
                f"Ω_{k} has shape {tuple(Omega.shape)}; expected {(d[k] + 1, d[k] + 1)}"
            )
        xp = get_array_module(Omega)
        last = xp.zeros(d[k] + 1, dtype=Omega.dtype)
        last[-1] = 1.0
        if not bool((Omega[-1] == last).all()):
            raise ConfigError(
                f"the last row of Ω_{k} must be [0, …, 0, 1] to keep the homogeneous 1"
            )
    if phis is None:
        return
    if len(phis) != mlp.n_layers - 1:
        raise ShapeError(
            f"expected {mlp.n_layers - 1} matrices Φ_1..Φ_{mlp.n_layers - 1}, got {len(phis)}"
        )
    for k, Phi in enumerate(phis):
        if tuple(Phi.shape) != (d[k + 1], d[k + 1]):
            raise ShapeError(
                f"Φ_{k + 1} has shape {tuple(Phi.shape)}; expected {(d[k + 1], d[k + 1])}"
            )


def _phi_list(omegas: Sequence[Any], phis: Sequence[Any] | None) -> list[Any]:
    """[Φ_1, …, Φ_ℓ] with Φ_ℓ = I (and all Φ = I when ``phis`` is None)."""
    xp = get_array_module(*omegas)
    d_out = [Omega.shape[0] - 1 for Omega in omegas[1:]]
    hidden = list(phis) if phis is not None else [xp.eye(d, dtype=omegas[0].dtype) for d in d_out]
    return hidden + [None]  # None stands for the identity Φ_ℓ


def _left(Phi: Any, M: Any) -> Any:
    """Φ M, with ``None`` standing for the identity."""
    return M if Phi is None else Phi @ M


def _right(M: Any, Phi: Any) -> Any:
    """M Φ, with ``None`` standing for the identity."""
    return M if Phi is None else M @ Phi


def _inv(Phi: Any) -> Any:
    """Φ⁻¹, with ``None`` standing for the identity."""
    return None if Phi is None else linalg_for(Phi).inv(Phi)


# ------------------------------------------------------------------ the maps
def transform_weights(
    weights: Sequence[Any], omegas: Sequence[Any], phis: Sequence[Any] | None = None
) -> list[Any]:
    """W†_i = Φ_i W_i Ω_{i-1}⁻¹ (§10): the transformed network's parameters for the same
    function."""
    out = []
    for W, Omega, Phi in zip(weights, omegas, _phi_list(omegas, phis), strict=True):
        la = linalg_for(W)
        W_over_Omega = la.solve(Omega.T, W.T).T  # W Ω⁻¹
        out.append(_left(Phi, W_over_Omega))
    return out


def untransform_weights(
    weights_dagger: Sequence[Any], omegas: Sequence[Any], phis: Sequence[Any] | None = None
) -> list[Any]:
    """W_i = Φ_i⁻¹ W†_i Ω_{i-1} (§10): back from the transformed parameters (inverse of the
    above)."""
    out = []
    for Wd, Omega, Phi in zip(weights_dagger, omegas, _phi_list(omegas, phis), strict=True):
        WO = Wd @ Omega
        out.append(WO if Phi is None else linalg_for(Phi).solve(Phi, WO))
    return out


def transform_gradients(
    grads: Sequence[Any], omegas: Sequence[Any], phis: Sequence[Any] | None = None
) -> list[Any]:
    """DW†_i = Φ_i⁻ᵀ DW_i Ω_{i-1}ᵀ (chain rule through W_i = Φ_i⁻¹ W†_i Ω_{i-1})."""
    out = []
    for dW, Omega, Phi in zip(grads, omegas, _phi_list(omegas, phis), strict=True):
        dWO = dW @ Omega.T
        out.append(dWO if Phi is None else linalg_for(Phi).solve(Phi.T, dWO))
    return out


def transform_factors(
    factors: KroneckerFactors, omegas: Sequence[Any], phis: Sequence[Any] | None = None
) -> KroneckerFactors:
    """Ā†_{k,l} = Ω_k Ā_{k,l} Ω_lᵀ and G†_{k,l} = Φ_{k+1}⁻ᵀ G_{k,l} Φ_{l+1}⁻¹ (§10)."""
    L = factors.n_layers
    Phi_inv = [_inv(P) for P in _phi_list(omegas, phis)]
    Phi_inv_T = [None if P is None else P.T for P in Phi_inv]
    A_bar = [[omegas[k] @ factors.A_bar[k][l] @ omegas[l].T for l in range(L)] for k in range(L)]
    G = [
        [_left(Phi_inv_T[k], _right(factors.G[k][l], Phi_inv[l])) for l in range(L)]
        for k in range(L)
    ]
    return KroneckerFactors(A_bar=A_bar, G=G)


# ------------------------------------------------------------------ the transformed network
class ReparametrizedMLP(MLP):
    """The transformed network of §10, parametrized by W†: ā†_k = Ω_k φ̄_k(Φ_k⁻¹ s†_k).

    It computes the same function of x as ``mlp`` at W = Φ⁻¹ W† Ω (see
    :func:`transform_weights`). Its :class:`~kfac_ref.mlp.Forward` holds the transformed
    quantities — ``abar[k]`` = ā†_k, ``s[k]`` = s†_{k+1} — and ``dphi[k]`` = φ'(s_{k+1}) of the
    original units; :meth:`backward` returns g† = Ds†. So
    :func:`~kfac_ref.factors.kronecker_factors`,
    :func:`~kfac_ref.fisher.exact_fisher`, :meth:`loss_and_grad` and
    :func:`~kfac_ref.fisher.fisher_vector_product` give the K-FAC quantities of the W†
    parametrization (the η ℓ2 term, if used, then penalizes ‖θ†‖², not ‖θ‖²).

    Args:
        mlp: the original network (layer sizes, activations, output).
        omegas: Ω_0..Ω_{ℓ-1}, each (d_k+1, d_k+1) with last row [0, …, 0, 1]; Ω_0 transforms x.
        phis: Φ_1..Φ_{ℓ-1}, each (d_k, d_k) invertible, or ``None`` for identities.
    """

    def __init__(self, mlp: MLP, omegas: Sequence[Any], phis: Sequence[Any] | None = None) -> None:
        super().__init__(mlp.layer_sizes, [a.name for a in mlp.activations], mlp.output.name)
        _check_transforms(self, omegas, phis)
        self.omegas = list(omegas)
        self.phis = None if phis is None else list(phis)
        # s_k = Φ_k⁻¹ s†_k in row form is s† Φ_k⁻ᵀ
        self._phi_inv_T = [] if phis is None else [linalg_for(P).inv(P).T for P in phis]

    def __repr__(self) -> str:
        return "Reparametrized" + super().__repr__()

    def _to_s(self, k: int, s_dagger: Any) -> Any:
        """s_{k+1} = Φ_{k+1}⁻¹ s†_{k+1} for the hidden layer k (batch rows)."""
        return s_dagger if self.phis is None else s_dagger @ self._phi_inv_T[k]

    def forward(self, weights: Sequence[Any], X: Any) -> Forward:
        """ā†_0 = Ω_0 ā_0, s†_i = W†_i ā†_{i-1}, ā†_i = Ω_i [φ_i(Φ_i⁻¹ s†_i); 1] (§10)."""
        self.check_weights(weights)
        self.check_input_shape(X)
        abar, s, dphi = [_append_one(X) @ self.omegas[0].T], [], []
        for k, W in enumerate(weights):
            s_k = abar[k] @ W.T
            s.append(s_k)
            if k < self.n_layers - 1:
                act = self.activations[k]
                s_orig = self._to_s(k, s_k)
                a_k = act.forward(s_orig)
                dphi.append(act.derivative(s_orig, a_k))
                abar.append(_append_one(a_k) @ self.omegas[k + 1].T)
        return Forward(abar=abar, s=s, dphi=dphi)

    def network_output(self, weights: Sequence[Any], X: Any) -> Any:
        """s†_ℓ from :meth:`forward` (the base class's memory-light pass is the untransformed
        network's)."""
        return self.forward(weights, X).output

    def backward(self, weights: Sequence[Any], fwd: Forward, ds_out: Any) -> list[Any]:
        """g†_i = Φ_i⁻ᵀ (Da_i ⊙ φ'(s_i)), Da_i = (Ω_iᵀ W†_{i+1}ᵀ g†_{i+1}) without the last
        entry."""
        g = [None] * self.n_layers
        g[-1] = ds_out
        for k in range(self.n_layers - 1, 0, -1):
            dabar = (g[k] @ weights[k]) @ self.omegas[k]  # D ā_k = Ω_kᵀ D ā†_k, batch rows
            ds = dabar[:, :-1] * fwd.dphi[k - 1]
            g[k - 1] = ds if self.phis is None else ds @ self._phi_inv_T[k - 1].T
        return g

    def jvps(self, weights: Sequence[Any], fwd: Forward, Vs: Sequence[Sequence[Any]]) -> list[Any]:
        """[:meth:`jvp` of each direction] (no batching: a test double)."""
        return [self.jvp(weights, fwd, V) for V in Vs]

    def jvp(self, weights: Sequence[Any], fwd: Forward, V: Sequence[Any]) -> Any:
        """R s†_ℓ: R s†_i = V_i ā†_{i-1} + W†_i Ω_{i-1} [φ' ⊙ Φ_{i-1}⁻¹ R s†_{i-1}; 0]."""
        Rs = fwd.abar[0] @ V[0].T
        for k in range(1, self.n_layers):
            Ra = fwd.dphi[k - 1] * self._to_s(k - 1, Rs)
            Rs = fwd.abar[k] @ V[k].T + Ra @ (weights[k] @ self.omegas[k])[:, :-1].T
        return Rs
