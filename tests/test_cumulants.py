"""§3.1: F − F̃ in joint cumulants (:mod:`kfac_ref.cumulants`) against brute force.

The oracle shares no code with the module: a 3-3-3-2 tanh network's forward and backward passes
are written here, every (case, y) pair is enumerated with its probability (softmax: the classes;
Bernoulli: the 2² binary vectors; unit-variance Gaussian: y = s + ε with ε ∈ {±1}², which has the
Gaussian's moments up to order three, enough for every term, each of which holds exactly two g's
— one g per moment of order ≤ 3 in ε), and every joint cumulant is computed from moments by the
general set-partition formula κ(X_1..X_k) = Σ_π (−1)^{|π|−1} (|π|−1)! Π_{B∈π} E[Π_{i∈B} X_i].

Tolerances: float64, entries of order 0.01–1; agreement to 1e-10 absolute.
"""

from __future__ import annotations

import numpy as np
import pytest
from brute_force import BruteForce

from kfac_ref.compare import approximate_fisher
from kfac_ref.cumulants import DenseSizeError, kronecker_cumulants
from kfac_ref.errors import ConfigError, TooLargeError
from kfac_ref.fisher import exact_fisher
from kfac_ref.mlp import MLP

TOL = 1e-10
SIZES = (3, 3, 3, 2)
N_CASES = 4


# ---------------------------------------------------------------------------------- fixtures
def make_problem(output: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    mlp = MLP(SIZES, "tanh", output)
    weights = [rng.standard_normal(shape) for shape in mlp.shapes]
    X = rng.standard_normal((N_CASES, SIZES[0]))
    return mlp, weights, X


OUTPUTS = ["softmax", "bernoulli", "gaussian"]


@pytest.fixture(scope="module", params=OUTPUTS)
def problem(request: pytest.FixtureRequest):
    mlp, weights, X = make_problem(request.param)
    return (
        mlp,
        weights,
        X,
        kronecker_cumulants(mlp, weights, X),
        BruteForce(weights, X, mlp.output.name),
    )


# ------------------------------------------------------------------------------------ tests
def test_every_matrix_matches_brute_force(problem) -> None:
    _, _, _, res, bf = problem
    a1, a2, g1, g2 = bf.a1, bf.a2, bf.g1, bf.g2
    np.testing.assert_allclose(res.F, bf.E(a1, a2, g1, g2), rtol=0, atol=TOL)
    np.testing.assert_allclose(res.F_tilde, bf.E(a1, a2) * bf.E(g1, g2), rtol=0, atol=TOL)
    np.testing.assert_allclose(res.kappa4, bf.k(a1, a2, g1, g2), rtol=0, atol=TOL)
    np.testing.assert_allclose(res.kappa3_term_1, bf.k(a1) * bf.k(a2, g1, g2), rtol=0, atol=TOL)
    np.testing.assert_allclose(res.kappa3_term_2, bf.k(a2) * bf.k(a1, g1, g2), rtol=0, atol=TOL)
    assert np.abs(res.F).max() > 1e-2  # the tolerance is far below the entries' size


def test_identity_of_eqn_3_holds_entrywise(problem) -> None:
    """F − F̃ = κ4 + κ(ā⁽¹⁾)κ3 + κ(ā⁽²⁾)κ3, for the module's matrices and for brute force
    (the latter checks the derivation: it uses E[g | x] = 0 through the enumeration only)."""
    _, _, _, res, bf = problem
    total = res.kappa4 + res.kappa3_term_1 + res.kappa3_term_2
    np.testing.assert_allclose(res.F - res.F_tilde, total, rtol=0, atol=TOL)
    a1, a2, g1, g2 = bf.a1, bf.a2, bf.g1, bf.g2
    lhs = bf.E(a1, a2, g1, g2) - bf.E(a1, a2) * bf.E(g1, g2)
    rhs = bf.k(a1, a2, g1, g2) + bf.k(a1) * bf.k(a2, g1, g2) + bf.k(a2) * bf.k(a1, g1, g2)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=TOL)


def test_cumulants_with_one_g_vanish(problem) -> None:
    """κ(g) = 0, κ(ā, g) = 0 and κ(ā, ā, g) = 0 when y is drawn from the model."""
    _, _, _, _, bf = problem
    for kappa in (bf.k(bf.g1), bf.k(bf.a1, bf.g2), bf.k(bf.a1, bf.a2, bf.g1)):
        np.testing.assert_allclose(kappa, 0.0, rtol=0, atol=TOL)


def test_bound_holds_and_error_is_not_zero(problem) -> None:
    _, _, _, res, _ = problem
    err = np.abs(res.F - res.F_tilde)
    bound = np.abs(res.kappa4) + np.abs(res.kappa3_term_1) + np.abs(res.kappa3_term_2)
    assert (err <= bound + 1e-14).all()
    assert err.max() > 1e-3
    assert res.bound() >= res.total_error() > 0.0
    s = res.summary()
    assert s["total_error"] == pytest.approx(err.sum(), rel=1e-12)
    assert s["bound"] == pytest.approx(bound.sum(), rel=1e-12)
    upper = np.triu(np.ones_like(err, dtype=bool))
    assert s["total_error_unordered_pairs"] == pytest.approx(err[upper].sum(), rel=1e-12)


def test_F_and_F_tilde_agree_with_the_dense_builders(problem) -> None:
    mlp, weights, X, res, _ = problem
    np.testing.assert_allclose(res.F, exact_fisher(mlp, weights, X), rtol=0, atol=TOL)
    F_tilde = approximate_fisher(mlp, weights, X, "full")
    np.testing.assert_allclose(res.F_tilde, F_tilde, rtol=0, atol=TOL)


def test_layer_restriction_and_chunks_give_the_same_entries() -> None:
    mlp, weights, X = make_problem("softmax", seed=1)
    full = kronecker_cumulants(mlp, weights, X)
    part = kronecker_cumulants(mlp, weights, X, layers=[1, 2], chunk=3)
    start = mlp.shapes[0][0] * mlp.shapes[0][1]
    for name in ("F", "F_tilde", "kappa4", "kappa3_term_1", "kappa3_term_2"):
        np.testing.assert_allclose(
            getattr(part, name), getattr(full, name)[start:, start:], rtol=0, atol=TOL
        )
    assert part.layers == (1, 2) and part.shapes == mlp.shapes[1:]


def test_exact_for_one_linear_layer_with_gaussian_output() -> None:
    """g = s − y = −ε does not depend on x: F̃ = F and every cumulant term is 0 (§3)."""
    rng = np.random.default_rng(2)
    mlp = MLP([3, 2], [], "gaussian")
    weights = [rng.standard_normal(mlp.shapes[0])]
    res = kronecker_cumulants(mlp, weights, rng.standard_normal((5, 3)))
    for M in (res.F - res.F_tilde, res.kappa4, res.kappa3_term_1, res.kappa3_term_2):
        np.testing.assert_allclose(M, 0.0, rtol=0, atol=TOL)


def test_refusals() -> None:
    mlp, weights, X = make_problem("softmax")
    with pytest.raises(ConfigError, match="layers"):
        kronecker_cumulants(mlp, weights, X, layers=[2, 1])
    with pytest.raises(ConfigError, match="0..2"):
        kronecker_cumulants(mlp, weights, X, layers=[3])
    with pytest.raises(DenseSizeError, match=r"32 parameters.*limit of 0 MiB") as exc:
        kronecker_cumulants(mlp, weights, X, max_bytes=1000)
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, TooLargeError)
