"""Appendix B on the small side: the low-rank form of Σ_{i|i+1}⁻¹.

Where the net narrows, C = Ā_{i-1,i} Ā_{i,i}⁻¹ Ā_{i-1,i}ᵀ (or D) has rank below its size and
:func:`kfac_ref.inverse.block_tridiagonal_inverse` solves Appendix B's eigenproblem on the small
side and stores Σ⁻¹ = A⁻¹ ⊗ B⁻¹ + (K̃₁ ⊗ K̃₂)(I − S₁ ⊗ S₂)⁻¹(K̃₁ ⊗ K̃₂)ᵀ.

Oracles: Σ = A ⊗ B − C ⊗ D built with ``numpy.kron`` from the factors and solved with
``numpy.linalg.solve`` (float64); the full (square-K) form of the paper, from
:func:`kron_sum_inverse`; and the dense F̂ of :mod:`kfac_ref.dense`.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import dense, linalg
from kfac_ref.appendix_b import (
    KronSumInverse,
    apply_kron_sum_inverse,
    kron_sum_inverse,
    sigma_sides_small,
)
from kfac_ref.compare import damped_diagonal
from kfac_ref.config import KFACConfig
from kfac_ref.errors import ConfigError
from kfac_ref.factors import kronecker_factors
from kfac_ref.inverse import (
    BlockTridiagonalInverse,
    apply_block_tridiagonal_inverse,
    block_tridiagonal_inverse,
)
from kfac_ref.linalg import Precision
from kfac_ref.optimizer import KFAC
from kfac_ref.state import STATE_FORMAT
from kfac_ref.vec import weights_to_theta

# narrowing on both sides, on one side only, widening, and the autoencoder shape
NETS = [(7, 5, 3, 2), (4, 5, 3, 3, 6), (3, 4, 6, 7), (8, 6, 4, 2, 4, 6, 8)]


def _rel(X, Y) -> float:
    return float(np.linalg.norm(X - Y) / np.linalg.norm(Y))


def test_which_sides_are_small():
    mnist = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
    assert sigma_sides_small(mnist) == [
        (False, True),  # Σ_{1|2}: Ā_{0,0} 785 < rank 1001 of C; G_{1,1} 1000 > rank 500 of D
        (True, True),
        (True, True),
        (True, False),
        (False, False),
        (False, False),
        (False, True),  # G_{7,7} 1000 > rank 784
    ]
    assert sigma_sides_small([5, 5, 5]) == [(False, False)]


def _factors(make_net, sizes, gamma, seed=0):
    net = make_net(sizes, "tanh", "bernoulli", seed=seed, n=3 * max(sizes))
    f = kronecker_factors(net.mlp, net.weights, net.X)
    A_diag, G_diag = damped_diagonal(f, gamma)
    return net, f, A_diag, G_diag, *f.off_diagonal()


@pytest.mark.parametrize("gamma", [1e-3, 0.3])
@pytest.mark.parametrize("sizes", NETS, ids=str)
def test_each_block_is_the_inverse_of_its_kronecker_sum(make_net, sizes, gamma):
    """Every Σ_{i|i+1}⁻¹, low-rank or full, applied to X, equals a dense solve with
    Σ = Ā_{i-1,i-1} ⊗ G_{i,i} − C ⊗ D (C, D by dense inverses) to 1e-9; the low-rank form is
    used exactly where :func:`sigma_sides_small` says, with rank(C), rank(D) columns."""
    net, f, A_diag, G_diag, A_off, G_off = _factors(make_net, sizes, gamma, seed=len(sizes))
    hat = block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off)
    small = sigma_sides_small(sizes)
    rng = np.random.default_rng(1)
    for k, blk in enumerate(hat.sigma_cond):
        C = A_off[k] @ np.linalg.inv(A_diag[k + 1]) @ A_off[k].T
        D = G_off[k] @ np.linalg.inv(G_diag[k + 1]) @ G_off[k].T
        Sigma = np.kron(A_diag[k], G_diag[k]) - np.kron(C, D)
        assert blk.low_rank == any(small[k])
        want_cols = (
            A_diag[k + 1].shape[0] if small[k][0] else A_diag[k].shape[0],
            G_diag[k + 1].shape[0] if small[k][1] else G_diag[k].shape[0],
        )
        assert (blk.K1.shape[1], blk.K2.shape[1]) == want_cols
        X = rng.standard_normal((G_diag[k].shape[0], A_diag[k].shape[0]))
        got = apply_kron_sum_inverse(blk, X).flatten(order="F")
        assert _rel(got, np.linalg.solve(Sigma, X.flatten(order="F"))) < 1e-9


@pytest.mark.parametrize("sizes", NETS, ids=str)
def test_low_rank_and_full_forms_agree_and_F_hat_inverse_is_exact(make_net, sizes):
    """The low-rank blocks equal the paper's full form (square K from eigh(C, A)) to 1e-10,
    and F̂⁻¹ v matches a dense solve with :func:`kfac_ref.dense.F_hat` to 1e-9."""
    gamma = 0.01
    net, f, A_diag, G_diag, A_off, G_off = _factors(make_net, sizes, gamma, seed=7)
    hat = block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off)
    rng = np.random.default_rng(2)
    for k, blk in enumerate(hat.sigma_cond):
        full = kron_sum_inverse(
            A_diag[k],
            G_diag[k],
            A_off[k] @ np.linalg.solve(A_diag[k + 1], A_off[k].T),
            G_off[k] @ np.linalg.solve(G_diag[k + 1], G_off[k].T),
        )
        assert not full.low_rank
        X = rng.standard_normal((G_diag[k].shape[0], A_diag[k].shape[0]))
        assert _rel(apply_kron_sum_inverse(blk, X), apply_kron_sum_inverse(full, X)) < 1e-10
    v = rng.standard_normal(net.mlp.n_params)
    got = weights_to_theta(apply_block_tridiagonal_inverse(hat, net.weights_of(v)))
    assert _rel(got, np.linalg.solve(dense.F_hat(f, gamma), v)) < 1e-9


def test_the_base_term_is_needed(make_net):
    """Dropping A⁻¹ ⊗ B⁻¹ (a plausible mistake) misses by far more than the tolerance above."""
    _, _, A_diag, G_diag, A_off, G_off = _factors(make_net, (7, 5, 3, 2), 0.01)
    blk = block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off).sigma_cond[0]
    assert blk.low_rank
    X = np.random.default_rng(0).standard_normal((5, 8))
    no_base = KronSumInverse(blk.K1, blk.K2, blk.denom)
    assert _rel(apply_kron_sum_inverse(no_base, X), apply_kron_sum_inverse(blk, X)) > 1e-2


def test_float64_redo_of_low_rank_blocks(make_net, monkeypatch):
    """With every float32 block distrusted (TRUST = 0) each Σ block is rebuilt from float64
    factors; the result matches the all-float64 inverse to float32 round-off (1e-5)."""
    _, _, A_diag, G_diag, A_off, G_off = _factors(make_net, (8, 6, 4, 2, 4, 6, 8), 0.05)
    exact = block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off)
    f32 = [[M.astype(np.float32) for M in Ms] for Ms in (A_diag, G_diag, A_off, G_off)]
    monkeypatch.setattr(linalg, "TRUST", 0.0)
    prec = Precision(np.float64)
    got = block_tridiagonal_inverse(*f32, prec)
    assert len(prec.redone) == len(got.sigma_cond) == 5
    X = np.random.default_rng(3)
    for g, e in zip(got.sigma_cond, exact.sigma_cond, strict=True):
        assert g.low_rank == e.low_rank and g.K1.dtype == np.float32
        V = X.standard_normal((e.K2.shape[0], e.K1.shape[0]))
        assert (
            _rel(apply_kron_sum_inverse(g, V.astype(np.float32)), apply_kron_sum_inverse(e, V))
            < 1e-5
        )


def _full_form(A_diag, G_diag, A_off, G_off) -> BlockTridiagonalInverse:
    """F̂⁻¹ with every Σ block in the paper's full form (square K; Appendix B as written)."""
    hat = block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off)
    hat.sigma_cond = [
        kron_sum_inverse(
            A_diag[k],
            G_diag[k],
            A_off[k] @ np.linalg.solve(A_diag[k + 1], A_off[k].T),
            G_off[k] @ np.linalg.solve(G_diag[k + 1], G_off[k].T),
        )
        for k in range(len(A_off))
    ]
    return hat


def test_state_round_trip_and_other_formats_refused(make_net):
    """A saved state of the current format loads back as low-rank blocks and gives the same
    F̂⁻¹ as the paper's full form of every Σ block; the earlier formats and unknown ones are
    refused with an error naming the format."""
    from kfac_ref import get_backend

    backend = get_backend("numpy", "float64")
    sizes = (7, 5, 3, 5, 7)
    net = make_net(sizes, "logistic", "bernoulli", seed=5, n=40)
    opt = KFAC(net.mlp, KFACConfig(structure="block_tridiagonal"), backend)
    Y = 1 / (1 + np.exp(-net.X))  # Bernoulli targets in (0, 1)
    _, st, _ = opt.step(net.weights, opt.init_state(net.weights), net.X, Y, backend.rng(0))
    saved = opt.state_dict(st)
    assert saved["format"] == STATE_FORMAT
    assert len(saved["inverse"]["A_inv_sigma"]) == 2  # Σ_{1|2}, Σ_{2|3}: the net narrows there
    loaded = opt.load_state_dict(saved).inverse
    assert [b.low_rank for b in loaded.sigma_cond] == [b.low_rank for b in st.inverse.sigma_cond]
    assert loaded.sigma_cond[0].low_rank
    v = net.weights_of(np.random.default_rng(0).standard_normal(net.mlp.n_params))
    a = weights_to_theta(apply_block_tridiagonal_inverse(loaded, v))
    np.testing.assert_array_equal(
        a, weights_to_theta(apply_block_tridiagonal_inverse(st.inverse, v))
    )
    # the same operator as the paper's full form, built from the damped factors
    factors = damped_diagonal(kronecker_factors(net.mlp, net.weights, net.X), st.gamma)
    full = _full_form(*factors, *kronecker_factors(net.mlp, net.weights, net.X).off_diagonal())
    low = block_tridiagonal_inverse(
        *factors, *kronecker_factors(net.mlp, net.weights, net.X).off_diagonal()
    )
    b = weights_to_theta(apply_block_tridiagonal_inverse(full, v))
    assert _rel(weights_to_theta(apply_block_tridiagonal_inverse(low, v)), b) < 1e-10
    for old in ("kfac_ref.KFACState/1", "kfac_ref.KFACState/2", "kfac_ref.KFACState/9"):
        with pytest.raises(ConfigError, match="format"):
            opt.load_state_dict(dict(saved, format=old))
    incomplete = dict(saved, inverse={k: v for k, v in saved["inverse"].items() if k != "K1"})
    with pytest.raises(Exception, match="K1"):
        opt.load_state_dict(incomplete)
