"""The multilayer perceptron of §2.1 with hand-written forward and backward passes.

For layers i = 1..ℓ: ā_{i-1} = [a_{i-1}; 1], s_i = W_i ā_{i-1}, a_i = φ_i(s_i), a_0 = x.
Backward, per case: g_i = Ds_i = Da_i ⊙ φ_i'(s_i), DW_i = g_i ā_{i-1}ᵀ, Da_{i-1} = W_iᵀ g_i without
the bias row. Indexing and the vec convention are in :mod:`kfac_ref.vec`. The output layer's
nonlinearity is fixed by the predictive distribution (:mod:`kfac_ref.outputs`): logistic for
``bernoulli``, identity for ``gaussian``, softmax for ``softmax``; ``forward`` returns s_ℓ, the
distribution's natural parameter, and the loss is computed from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy

from .activations import Activation, get_activation
from .backend import Backend, get_array_module, get_backend
from .errors import ConfigError
from .inputs import InputChecks
from .outputs import OutputDistribution, get_output

#: :meth:`MLP.jvps` stacks its directions only while the stacked activities of the widest layer
#: take at most this many bytes; above it (the full batches of §13, e.g. FACES' 103,500 cases ×
#: 2000 units × 4 directions) it takes one direction at a time, which bounds an iteration's peak
#: memory as the paper's processing of large mini-batches "in chunks" does.
JVPS_STACK_BYTES = 2 * 2**30


@dataclass
class Forward:
    """What the forward pass keeps for the backward pass and the statistics.

    Attributes:
        abar: ``abar[k]`` = ā_k, shape (n, d_k + 1), k = 0..ℓ-1 (last column all ones).
        s: ``s[k]`` = s_{k+1}, shape (n, d_{k+1}), k = 0..ℓ-1; ``s[-1]`` is the network output.
        dphi: ``dphi[k]`` = φ'_{k+1}(s_{k+1}) for the hidden layers k = 0..ℓ-2.
    """

    abar: list[Any]
    s: list[Any]
    dphi: list[Any]

    @property
    def output(self) -> Any:
        """s_ℓ, the natural parameter of the predictive distribution, shape (n, d_ℓ)."""
        return self.s[-1]


def _append_one(a: Any) -> Any:
    """ā = [a; 1] for a batch (n, d) → (n, d + 1)."""
    xp = get_array_module(a)
    return xp.concatenate([a, xp.ones((a.shape[0], 1), dtype=a.dtype)], axis=1)


class MLP(InputChecks):
    """A fully connected network in the paper's notation.

    Args:
        layer_sizes: (d_0, d_1, …, d_ℓ).
        activations: φ_1..φ_{ℓ-1} of the hidden layers: one name for all, or a list of ℓ-1
            names from :data:`kfac_ref.activations.ACTIVATIONS`.
        output: ``"bernoulli"``, ``"gaussian"`` or ``"softmax"`` (sets φ_ℓ and the loss).

    Weights are a plain list ``[W_1, …, W_ℓ]`` of arrays, W_i of shape (d_i, d_{i-1}+1). The
    checks of weights, inputs and targets (``check_weights``, ``check_inputs``, ``validate``, …)
    are inherited from :class:`kfac_ref.inputs.InputChecks`.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activations: str | Sequence[str],
        output: str,
    ) -> None:
        sizes = [int(d) for d in layer_sizes]
        if len(sizes) < 2 or any(d < 1 for d in sizes):
            raise ConfigError(
                f"layer_sizes must list at least two positive widths, got {list(layer_sizes)}"
            )
        n_hidden = len(sizes) - 2
        if isinstance(activations, str):
            activations = [activations] * n_hidden
        activations = list(activations)
        if len(activations) != n_hidden:
            raise ConfigError(
                f"{len(sizes) - 1} layers need {n_hidden} hidden activations, got "
                f"{len(activations)}"
            )
        self.layer_sizes: tuple[int, ...] = tuple(sizes)
        self.activations: list[Activation] = [get_activation(a) for a in activations]
        self.output: OutputDistribution = get_output(output)

    # ------------------------------------------------------------------ shapes
    @property
    def n_layers(self) -> int:
        """ℓ, the number of weight matrices."""
        return len(self.layer_sizes) - 1

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """[(d_i, d_{i-1}+1) for i = 1..ℓ]."""
        d = self.layer_sizes
        return [(d[i + 1], d[i] + 1) for i in range(self.n_layers)]

    @property
    def n_params(self) -> int:
        """Length of θ."""
        return sum(r * c for r, c in self.shapes)

    def __repr__(self) -> str:
        acts = ",".join(a.name for a in self.activations)
        return f"MLP({list(self.layer_sizes)}, [{acts}], {self.output.name!r})"

    # ------------------------------------------------------------ initialization
    def init_sparse(
        self,
        seed: int | None = 0,
        backend: Backend | None = None,
        n_nonzero: int = 15,
        scale: float = 1.0,
        replace: bool = True,
    ) -> list[Any]:
        """Sparse initialization of Martens (2010), as in the paper's experiments (§13).

        Each unit draws ``n_nonzero`` (15 in the authors' code) input indices and sets each to an
        N(0, scale²) draw; the rest of its weights and its bias are zero. ``replace=True`` draws
        the indices uniformly **with replacement**, as the released code does ([code]), so a
        unit may get fewer distinct nonzero weights (on average about 11.4 of 25 inputs, 5.6 of
        6) and a repeated index keeps its last draw; ``replace=False`` draws ``min(n_nonzero,
        d_{i-1})`` distinct indices. Drawn on the host with ``seed`` so NumPy and CuPy start from
        identical weights.
        """
        backend = backend or get_backend()
        rng = numpy.random.default_rng(seed)
        weights = []
        for d_out, d_in1 in self.shapes:
            d_in = d_in1 - 1
            W = numpy.zeros((d_out, d_in1))
            k = n_nonzero if replace else min(n_nonzero, d_in)
            for r in range(d_out):
                cols = (
                    rng.integers(0, d_in, size=k)
                    if replace
                    else rng.choice(d_in, size=k, replace=False)
                )
                W[r, cols] = scale * rng.standard_normal(k)
            weights.append(backend.asarray(W))
        return weights

    def init_gaussian(
        self, seed: int | None = 0, backend: Backend | None = None, scale: float = 1.0
    ) -> list[Any]:
        """Dense initialization W_ij ~ N(0, scale² / fan_in), biases N(0, scale²/fan_in) too."""
        backend = backend or get_backend()
        rng = numpy.random.default_rng(seed)
        return [
            backend.asarray(rng.standard_normal((d_out, d_in1)) * scale / numpy.sqrt(d_in1 - 1))
            for d_out, d_in1 in self.shapes
        ]

    # ------------------------------------------------------------- forward/backward
    def forward(self, weights: Sequence[Any], X: Any) -> Forward:
        """Forward pass (§2.1): every ā_{i-1} and s_i for the batch X of shape (n, d_0)."""
        self.check_weights(weights)
        self.check_input_shape(X)
        abar, s, dphi = [_append_one(X)], [], []
        for k, W in enumerate(weights):
            s_k = abar[k] @ W.T
            s.append(s_k)
            if k < self.n_layers - 1:
                act = self.activations[k]
                a_k = act.forward(s_k)
                dphi.append(act.derivative(s_k, a_k))
                abar.append(_append_one(a_k))
        return Forward(abar=abar, s=s, dphi=dphi)

    def network_output(self, weights: Sequence[Any], X: Any) -> Any:
        """s_ℓ for the batch X, by the operations of :meth:`forward` (so the same numbers) but
        keeping one layer's activities at a time: for h(θ + δ) and evaluations, whose memory
        would otherwise hold a second forward cache beside the iteration's. A subclass that
        changes :meth:`forward` overrides this too (:class:`kfac_ref.reparam.ReparametrizedMLP`)."""
        self.check_weights(weights)
        self.check_input_shape(X)
        abar = _append_one(X)
        for k, W in enumerate(weights):
            s_k = abar @ W.T
            if k < self.n_layers - 1:
                abar = _append_one(self.activations[k].forward(s_k))
        return s_k

    def backward(self, weights: Sequence[Any], fwd: Forward, ds_out: Any) -> list[Any]:
        """Backward pass (§2.1): per-case g_i = Ds_i for every layer, given Ds_ℓ of shape (n, d_ℓ).

        Returns ``g`` with ``g[k]`` = g_{k+1} of shape (n, d_{k+1}); not divided by n.
        """
        g = [None] * self.n_layers
        g[-1] = ds_out
        for k in range(self.n_layers - 1, 0, -1):
            da = g[k] @ weights[k][:, :-1]  # Da_{k} = W_{k+1}ᵀ g_{k+1}, bias row dropped
            g[k - 1] = da * fwd.dphi[k - 1]
        return g

    def jvp(self, weights: Sequence[Any], fwd: Forward, V: Sequence[Any]) -> Any:
        """J v = R s_ℓ, the forward-mode R-operator (§2.2), per case, shape (n, d_ℓ).

        R s_i = V_i ā_{i-1} + W_i R ā_{i-1} with R ā_{i-1} = [φ'(s_{i-1}) ⊙ R s_{i-1}; 0]; ``V`` has
        the shapes of ``weights`` and ``fwd`` is the forward pass at ``weights``.
        """
        Rs = fwd.abar[0] @ V[0].T
        for k in range(1, self.n_layers):
            Ra = fwd.dphi[k - 1] * Rs  # R a_k = φ'(s_k) ⊙ R s_k; R of the bias coordinate is 0
            Rs = fwd.abar[k] @ V[k].T + Ra @ weights[k][:, :-1].T
        return Rs

    def jvps(self, weights: Sequence[Any], fwd: Forward, Vs: Sequence[Sequence[Any]]) -> list[Any]:
        """[J v for v in Vs] (:meth:`jvp`) in one forward-mode pass for all the directions.

        The directions travel together as an (m, n, d_i) array: R s_i = V_i ā_{i-1} is one
        batched product per layer, and W_i R ā_{i-1} one (m·n, d_{i-1}) × (d_{i-1}, d_i) product
        (the §7 re-scaling needs J Δ for each γ candidate and J δ₀). Returns m arrays
        of shape (n, d_ℓ), views of one buffer; where that stack would exceed
        :data:`JVPS_STACK_BYTES`, one :meth:`jvp` per direction instead.
        """
        m = len(Vs)
        n = fwd.abar[0].shape[0]
        stacked_bytes = m * n * max(W.shape[0] for W in weights) * fwd.abar[0].dtype.itemsize
        if m == 1 or stacked_bytes > JVPS_STACK_BYTES:  # one direction at a time
            return [self.jvp(weights, fwd, V) for V in Vs]
        xp = get_array_module(fwd.abar[0])

        def first_term(k: int) -> Any:  # (m, n, d_k): V_k ā_{k-1} for every direction
            return fwd.abar[k][None] @ xp.stack([V[k].T for V in Vs])

        Rs = first_term(0)
        for k in range(1, self.n_layers):
            Ra = fwd.dphi[k - 1] * Rs  # R a_k = φ'(s_k) ⊙ R s_k for every direction
            W_t = weights[k][:, :-1].T
            Rs = (Ra.reshape(m * n, W_t.shape[0]) @ W_t).reshape(m, n, W_t.shape[1])
            Rs += first_term(k)
        return [Rs[j] for j in range(m)]

    @staticmethod
    def weight_gradients(fwd: Forward, g: Sequence[Any]) -> list[Any]:
        """Mini-batch mean of DW_i = g_i ā_{i-1}ᵀ: ``g[k].T @ abar[k] / n`` (§2.1)."""
        n = fwd.abar[0].shape[0]
        return [g_k.T @ abar_k / n for g_k, abar_k in zip(g, fwd.abar, strict=True)]

    # ----------------------------------------------------------------- objective
    def loss(
        self, weights: Sequence[Any], X: Any, Y: Any, eta: float = 0.0, validate: bool = True
    ) -> Any:
        """h(θ) = mean over cases of L(y, z) + (η/2)‖θ‖² (§2.1), a 0-d array.

        ``validate`` checks the weights, X, Y and η first (:meth:`validate`); loops that checked
        their data once pass False (no pass over the data, no GPU synchronization).
        """
        if validate:
            self.validate(weights, X, Y, eta)
        out = self.network_output(weights, X)
        return self.objective_from_output(weights, out, Y, eta)

    def objective_from_output(self, weights: Sequence[Any], out: Any, Y: Any, eta: float) -> Any:
        """h from a computed output s_ℓ (avoids a second forward pass)."""
        h = self.output.loss(out, Y).mean()
        if eta:
            h = h + 0.5 * eta * sum((W * W).sum() for W in weights)
        return h

    def loss_and_grad(
        self, weights: Sequence[Any], X: Any, Y: Any, eta: float = 0.0, validate: bool = True
    ) -> tuple[Any, list[Any], Forward]:
        """h(θ), ∇h as a list of matrices shaped like ``weights``, and the forward cache
        (``validate`` as in :meth:`loss`)."""
        if validate:
            self.validate(weights, X, Y, eta)
        else:
            self.check_target_shape(X, Y)
        fwd = self.forward(weights, X)
        h = self.objective_from_output(weights, fwd.output, Y, eta)
        g = self.backward(weights, fwd, self.output.ds(fwd.output, Y))
        grads = self.weight_gradients(fwd, g)
        if eta:
            grads = [dW + eta * W for dW, W in zip(grads, weights, strict=True)]
        return h, grads, fwd
