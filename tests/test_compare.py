"""kfac_ref.compare: dense F against F̃, F̆, F̂ and their inverses (Figs. 2, 3, 5, 6 of the paper).

The numbers returned are checked against direct computations (``numpy.linalg.norm`` of the
differences) and against what the paper says about the structure: F̆ has the diagonal blocks of
F̃ and zeros elsewhere, F̂ agrees with F̃ on the tridiagonal blocks, F̂⁻¹ is a better
approximation of F̃⁻¹ than F̆⁻¹ is (Fig. 6), and everything is exact for one linear layer with
a Gaussian output.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kfac_ref.compare import (
    APPROXIMATIONS,
    approximate_fisher,
    block_mean_abs,
    block_relative_errors,
    compare_fisher,
    relative_error,
)
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher
from kfac_ref.vec import layer_offsets


def test_relative_error():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert relative_error(X, Y) == pytest.approx(
        np.linalg.norm(X - Y) / np.linalg.norm(Y), rel=1e-15
    )
    assert relative_error(Y, Y) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.ones(3), np.zeros(3)) == float("inf")


def test_block_errors_and_block_means():
    shapes = [(2, 3), (1, 3), (2, 2)]  # block sizes 6, 3, 4
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((13, 13)), rng.standard_normal((13, 13))
    off = layer_offsets(shapes)
    E = block_relative_errors(X, Y, shapes)
    M = block_mean_abs(X, shapes)
    assert E.shape == M.shape == (3, 3)
    for k, l in itertools.product(range(3), repeat=2):
        sk, sl = slice(off[k], off[k + 1]), slice(off[l], off[l + 1])
        assert E[k, l] == pytest.approx(
            np.linalg.norm(X[sk, sl] - Y[sk, sl]) / np.linalg.norm(Y[sk, sl]), rel=1e-14
        )
        assert M[k, l] == pytest.approx(np.abs(X[sk, sl]).mean(), rel=1e-14)


@pytest.fixture(scope="module")
def tanh_comparison():
    from kfac_ref.mlp import MLP

    mlp = MLP((6, 5, 4, 3, 2), "tanh", "bernoulli")
    weights = mlp.init_gaussian(seed=0, scale=1.5)
    X = np.random.default_rng(1).standard_normal((200, 6))
    return (
        mlp,
        weights,
        X,
        compare_fisher(mlp, weights, X),
        compare_fisher(mlp, weights, X, gamma=1e-3),
    )


def test_compare_fisher_matrices_and_errors(tanh_comparison):
    mlp, W, X, cmp, _ = tanh_comparison
    F = exact_fisher(mlp, W, X)
    np.testing.assert_array_equal(cmp.matrices["F"], F)
    for name, structure in APPROXIMATIONS.items():
        np.testing.assert_array_equal(cmp.matrices[name], approximate_fisher(mlp, W, X, structure))
        assert cmp.errors[name] == pytest.approx(
            np.linalg.norm(cmp.matrices[name] - F) / np.linalg.norm(F), rel=1e-14
        )
        np.testing.assert_allclose(
            cmp.inverses[name] @ cmp.matrices[name], np.eye(mlp.n_params), atol=1e-6
        )
    L = mlp.n_layers
    Eb, Et, Eh = (cmp.block_errors[n] for n in ("F_breve", "F_tilde", "F_hat"))
    for k, l in itertools.product(range(L), repeat=2):
        if k == l:
            assert Eb[k, l] == Et[k, l]
        else:
            assert Eb[k, l] == pytest.approx(1.0, abs=1e-15)  # F̆ is zero off the diagonal
        if abs(k - l) <= 1:
            assert Eh[k, l] == pytest.approx(Et[k, l], rel=1e-6, abs=1e-9)
    # F̃ is only an approximation of F for a deep tanh net, but a good one on the whole
    assert 1e-3 < cmp.errors["F_tilde"] < 0.5
    assert cmp.errors["F_breve"] > cmp.errors["F_tilde"]


def test_compare_fisher_inverse_errors(tanh_comparison):
    _, _, _, cmp, cmp_damped = tanh_comparison
    for c in (cmp, cmp_damped):
        assert c.inverse_errors["F_tilde"]["vs_F_tilde"] == 0.0
        # Fig. 6: F̂⁻¹ approximates F̃⁻¹ markedly better than F̆⁻¹
        assert (
            c.inverse_errors["F_hat"]["vs_F_tilde"]
            < 0.5 * c.inverse_errors["F_breve"]["vs_F_tilde"]
        )
        for name in APPROXIMATIONS:
            assert c.inverse_errors[name]["vs_F"] == pytest.approx(
                relative_error(c.inverses[name], c.inverses["F"]), rel=1e-14
            )
            assert c.inverse_block_errors[name]["vs_F"].shape == (4, 4)
    table = cmp.table()
    assert table.splitlines()[0].split()[0] == "matrix"
    for name in APPROXIMATIONS:
        row = next(r for r in table.splitlines() if r.startswith(name))
        assert float(row.split()[1]) == pytest.approx(cmp.errors[name], rel=1e-3)


def test_compare_fisher_damped_inverse_of_F(tanh_comparison):
    """With γ > 0 the inverse of F is taken of F + (F̆(γ) − F̆(0)), damped like the others."""
    mlp, W, X, _, cmp = tanh_comparison
    assert cmp.gamma == 1e-3
    f = kronecker_factors(mlp, W, X)
    delta = approximate_fisher(mlp, W, X, "block_diagonal", 1e-3, f) - approximate_fisher(
        mlp, W, X, "block_diagonal", 0.0, f
    )
    assert np.abs(delta).max() > 0
    np.testing.assert_allclose(
        cmp.inverses["F"] @ (exact_fisher(mlp, W, X) + delta), np.eye(mlp.n_params), atol=1e-8
    )
    # the matrices are compared against the undamped F
    assert cmp.errors["F_tilde"] == pytest.approx(
        relative_error(cmp.matrices["F_tilde"], cmp.matrices["F"]), rel=1e-14
    )


def test_compare_fisher_is_exact_for_one_linear_gaussian_layer(make_net):
    net = make_net((4, 3), [], "gaussian", seed=3, n=20)
    cmp = compare_fisher(net.mlp, net.weights, net.X)
    for name in APPROXIMATIONS:
        assert cmp.errors[name] < 1e-12
        assert cmp.inverse_errors[name]["vs_F"] < 1e-10
