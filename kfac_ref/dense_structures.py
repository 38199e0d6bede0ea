"""What the two dense structures share: a damped inverse held as one (P, P) matrix.

F̃⁻¹ itself (:mod:`kfac_ref.full`, §3) and the exact natural gradient's (F + D_γ)⁻¹
(:mod:`kfac_ref.exact`, §2.2) differ only in the matrix they invert (:meth:`from_factors`) and
what they hold while building it (:attr:`DenseInverse.COPIES`,
:attr:`DenseInverse.FLOAT64_COPIES`); applying, casting, saving and the size check are here.
Vectors are in the θ ordering of :mod:`kfac_ref.vec`. For small networks: the P×P matrix must
fit (:func:`kfac_ref.memory.check_dense_size`, else :class:`~kfac_ref.errors.TooLargeError`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy

from .backend import to_numpy
from .curvature import CurvatureInverse, Shapes
from .memory import check_dense_size
from .vec import theta_to_weights, weights_to_theta


def apply_dense_inverse(M_inv: Any, V: Sequence[Any]) -> list[Any]:
    """M⁻¹ v for a dense (P, P) M⁻¹ and v in list-of-matrices form (:mod:`kfac_ref.vec`)."""
    return theta_to_weights(M_inv @ weights_to_theta(V), [v.shape for v in V])


def n_params(sizes: Sequence[int]) -> int:
    """P = Σ_i d_i (d_{i-1} + 1)."""
    return sum(sizes[k + 1] * (sizes[k] + 1) for k in range(len(sizes) - 1))


@dataclass
class DenseInverse(CurvatureInverse):
    """A damped inverse as a dense (P, P) matrix ``M_inv``; subclasses say which (§3, §6.3)."""

    M_inv: Any

    factored: ClassVar[bool] = False
    #: P×P arrays a step holds at its peak in the training dtype and in float64 (each subclass
    #: states its own, measured with tracemalloc, tests/test_errors.py)
    COPIES: ClassVar[int]
    FLOAT64_COPIES: ClassVar[int]

    @classmethod
    def peak_bytes(cls, n_params: int, itemsize: int) -> int:
        """Bytes of the P×P arrays a step holds at its peak, the state's included."""
        return (cls.COPIES * itemsize + cls.FLOAT64_COPIES * 8) * n_params * n_params

    @classmethod
    def check_network(cls, mlp: Any, dtype: Any) -> None:
        check_dense_size(
            mlp.n_params,
            numpy.dtype(dtype).itemsize,
            None,
            copies=cls.COPIES,
            float64_copies=cls.FLOAT64_COPIES,
        )

    def apply(self, V: Sequence[Any]) -> list[Any]:
        return apply_dense_inverse(self.M_inv, V)

    def astype(self, dtype: Any) -> DenseInverse:
        return type(self)(self.M_inv if self.M_inv.dtype == dtype else self.M_inv.astype(dtype))

    def state_dict(self) -> dict[str, list[Any]]:
        return {"M_inv": [to_numpy(self.M_inv)]}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any], asarray: Callable[[Any], Any]) -> DenseInverse:
        return cls(asarray(d["M_inv"][0]))

    @classmethod
    def state_shapes(cls, sizes: Sequence[int]) -> Shapes:
        P = n_params(sizes)
        return {"M_inv": [(P, P)]}
