"""Predictive distributions P(y | z) of the output layer and their matching losses (§2.1, §2.2).

For each distribution the natural parameter is s_ℓ (the output layer's pre-activation), so the
loss L(y, s_ℓ) = −log r(y | s_ℓ) has Ds_ℓ = prediction − y, and the Fisher of the output
distribution in its natural parameters, F_R = Cov(y), is known in closed form:

=========== ============= ============================ =====================================
name        output φ_ℓ    loss per case                F_R
=========== ============= ============================ =====================================
bernoulli   logistic      Σ −y log p − (1−y) log(1−p)  diag(p (1 − p))
gaussian    linear        ½ ‖y − s_ℓ‖²                  I
softmax     softmax       −Σ y log p                   diag(p) − p pᵀ
=========== ============= ============================ =====================================

F_R = C Cᵀ with the square root C given by :meth:`OutputDistribution.fisher_sqrt`, which lets
the exact Fisher be computed by d_ℓ backward passes (see :mod:`kfac_ref.fisher`).
All arrays are batch-major: s and y have shape (n, d_ℓ).
"""

from __future__ import annotations

from typing import Any

from .activations import _logistic
from .backend import get_array_module
from .errors import ConfigError, ShapeError, TargetError


class OutputDistribution:
    """Base class: one predictive distribution and its matching loss."""

    name = "base"

    def predict(self, s: Any) -> Any:
        """Mean prediction E[y | s] = φ_ℓ(s), shape (n, d_ℓ)."""
        raise NotImplementedError

    def loss(self, s: Any, y: Any) -> Any:
        """Per-case loss L(y, s) = −log r(y | s) (up to a constant), shape (n,)."""
        raise NotImplementedError

    def sample(self, s: Any, rng: Any) -> Any:
        """Targets y ~ P(y | s), one per case, shape (n, d_ℓ) (§5: for the G statistics)."""
        raise NotImplementedError

    def fisher_sqrt(self, s: Any) -> Any:
        """C with F_R = C Cᵀ per case, shape (n, d_ℓ, d_ℓ) (columns are backprop directions)."""
        raise NotImplementedError

    def fisher_vp(self, s: Any, v: Any) -> Any:
        """F_R v per case, shape (n, d_ℓ)."""
        raise NotImplementedError

    def check_targets(self, y: Any) -> None:
        """:class:`TargetError` unless every row of the finite targets ``y`` (n, d_ℓ) is a value
        the distribution can take (or, for soft targets, a mean of such values)."""

    def ds(self, s: Any, y: Any) -> Any:
        """Ds_ℓ = ∂L/∂s_ℓ = prediction − y, per case, shape (n, d_ℓ) (§2.1)."""
        _check_same_shape(s, y)
        return self.predict(s) - y


def _check_same_shape(s: Any, y: Any) -> None:
    if s.shape != y.shape:
        raise ShapeError(
            f"targets have shape {tuple(y.shape)} but outputs have shape {tuple(s.shape)}"
        )


def _softplus(s: Any) -> Any:
    """log(1 + eˢ) = max(s, 0) + log1p(e^{−|s|}), stable for large |s|."""
    xp = get_array_module(s)
    return xp.maximum(s, 0.0) + xp.log1p(xp.exp(-xp.abs(s)))


class Bernoulli(OutputDistribution):
    """Independent Bernoulli units on logistic outputs; cross-entropy loss (CURVES, MNIST)."""

    name = "bernoulli"

    def predict(self, s: Any) -> Any:
        return _logistic(s)

    def check_targets(self, y: Any) -> None:
        if bool(((y < 0) | (y > 1)).any()):
            raise TargetError(
                f"Bernoulli targets must lie in [0, 1] (the probability of a 1), got values from "
                f"{float(y.min()):g} to {float(y.max()):g}; scale the data to [0, 1]"
            )

    def loss(self, s: Any, y: Any) -> Any:
        _check_same_shape(s, y)
        # −y log σ(s) − (1−y) log σ(−s) = softplus(s) − y s, stable for large |s|
        return (_softplus(s) - y * s).sum(axis=1)

    def sample(self, s: Any, rng: Any) -> Any:
        p = self.predict(s)
        return (rng.random(p.shape, dtype=p.dtype) < p).astype(p.dtype)

    def fisher_sqrt(self, s: Any) -> Any:
        xp = get_array_module(s)
        p = self.predict(s)
        n, d = s.shape
        C = xp.zeros((n, d, d), dtype=s.dtype)
        idx = xp.arange(d)
        C[:, idx, idx] = xp.sqrt(p * (1.0 - p))
        return C

    def fisher_vp(self, s: Any, v: Any) -> Any:
        p = self.predict(s)
        return p * (1.0 - p) * v


class Gaussian(OutputDistribution):
    """Unit-variance Gaussian on linear outputs; loss ½‖y − s‖² (FACES)."""

    name = "gaussian"

    def predict(self, s: Any) -> Any:
        return s

    def loss(self, s: Any, y: Any) -> Any:
        _check_same_shape(s, y)
        return 0.5 * ((y - s) ** 2).sum(axis=1)

    def sample(self, s: Any, rng: Any) -> Any:
        return s + rng.standard_normal(s.shape, dtype=s.dtype)

    def fisher_sqrt(self, s: Any) -> Any:
        xp = get_array_module(s)
        n, d = s.shape
        return xp.broadcast_to(xp.eye(d, dtype=s.dtype), (n, d, d)).copy()

    def fisher_vp(self, s: Any, v: Any) -> Any:
        return v


class Softmax(OutputDistribution):
    """Categorical distribution on softmax outputs; cross-entropy loss (classification).

    Targets are one-hot rows of shape (n, d_ℓ) (or rows of probabilities summing to 1).
    """

    name = "softmax"

    def predict(self, s: Any) -> Any:
        xp = get_array_module(s)
        e = xp.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def check_targets(self, y: Any) -> None:
        xp = get_array_module(y)
        if bool((y < 0).any()):
            raise TargetError(
                "softmax targets must be probability vectors (one-hot rows, or rows ≥ 0 summing "
                "to 1), "
                f"got a negative entry {float(y.min()):g}"
            )
        tol = 1e3 * float(xp.finfo(y.dtype).eps) * max(1, y.shape[1])
        worst = xp.abs(y.sum(axis=1) - 1.0)
        if bool((worst > tol).any()):
            row = int(xp.argmax(worst))
            raise TargetError(
                "softmax targets must be probability vectors (one-hot rows, or rows ≥ 0 summing "
                "to 1); "
                f"row {row} sums to {float(y[row].sum()):g}"
            )

    def loss(self, s: Any, y: Any) -> Any:
        _check_same_shape(s, y)
        xp = get_array_module(s)
        m = s.max(axis=1, keepdims=True)
        log_z = m[:, 0] + xp.log(xp.exp(s - m).sum(axis=1))
        return log_z * y.sum(axis=1) - (y * s).sum(axis=1)

    def sample(self, s: Any, rng: Any) -> Any:
        xp = get_array_module(s)
        p = self.predict(s)
        u = rng.random((p.shape[0], 1), dtype=p.dtype)
        k = (xp.cumsum(p, axis=1) < u).sum(axis=1)
        k = xp.minimum(k, p.shape[1] - 1)
        y = xp.zeros_like(p)
        y[xp.arange(p.shape[0]), k] = 1.0
        return y

    def fisher_sqrt(self, s: Any) -> Any:
        # C = diag(√p) − p √pᵀ satisfies C Cᵀ = diag(p) − p pᵀ because Σ p = 1.
        xp = get_array_module(s)
        p = self.predict(s)
        r = xp.sqrt(p)
        d = s.shape[1]
        idx = xp.arange(d)
        C = -p[:, :, None] * r[:, None, :]
        C[:, idx, idx] += r
        return C

    def fisher_vp(self, s: Any, v: Any) -> Any:
        p = self.predict(s)
        return p * v - p * (p * v).sum(axis=1, keepdims=True)


OUTPUTS: dict[str, type[OutputDistribution]] = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "softmax": Softmax,
}


def get_output(name: str) -> OutputDistribution:
    """The output distribution called ``name``; a :class:`ConfigError` lists the choices."""
    try:
        return OUTPUTS[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown output {name!r}; choose one of {', '.join(OUTPUTS)}") from None
