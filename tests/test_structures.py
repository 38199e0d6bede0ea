"""The curvature-structure interface and its table (§4), the dense oracle module, and the named
steps of Algorithm 2 (§6.5, §6.6).

Oracles: :mod:`kfac_ref.dense` (dense blocks, Ψ by ``numpy.linalg.solve``, no Appendix B;
it imports nothing from the efficient path), ``numpy.linalg.inv`` of its matrices, and
``numpy.kron`` with π written out here. float64; tolerance 1e-9 relative for an efficient
inverse against a dense one (nets with cond < 1e7), 1e-12 for a few products.
"""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from kfac_ref import MLP, dense, get_backend
from kfac_ref.config import KFACConfig
from kfac_ref.curvature import CurvatureInverse
from kfac_ref.damping import (
    adjust_lambda,
    choose_gamma,
    gammas_to_try,
    reduction_ratio,
    update_lambda,
)
from kfac_ref.errors import ConfigError, NonFiniteError, TooLargeError
from kfac_ref.experiments import METHODS
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher
from kfac_ref.optimizer import KFAC
from kfac_ref.statistics import FactorStats, batch_statistics
from kfac_ref.structures import FACTORED, STRUCTURES, get_structure, methods, structure_of_method
from kfac_ref.vec import layer_offsets, weights_to_theta

ROOT = Path(__file__).resolve().parents[1]
INV_RTOL = 1e-9
NETS = [
    ((5, 4, 3), "tanh", "bernoulli"),
    ((4, 5, 3, 2), "logistic", "gaussian"),
    ((6, 4, 5, 3, 2), "relu", "softmax"),
]


def _rel(X, Y) -> float:
    return float(np.linalg.norm(X - Y) / np.linalg.norm(Y))


def _stats(f, F=None) -> FactorStats:
    """Every statistic from exact factors (and F, the exact Fisher, when given)."""
    L = f.n_layers
    pairs = [(k, l) for k in range(L) for l in range(k + 1, L)]
    return FactorStats(
        *f.diagonal(),
        *f.off_diagonal(),
        [f.A_bar[k][l] for k, l in pairs],
        [f.G[k][l] for k, l in pairs],
        None if F is None else [F],
    )


def _dense_of(name, f, F, gamma):
    """The matrix each structure inverts, from the oracle: kfac_ref.dense, or F + (F̆(γ) − F̆(0))."""
    if name == "exact":
        return F + dense.F_breve(f, gamma) - dense.F_breve(f, 0.0)
    return get_structure(name).dense(f, gamma)


# ----------------------------------------------------------------------------- the dense oracle
def test_dense_module_shares_no_code_with_the_efficient_path():
    tree = ast.parse((ROOT / "kfac_ref" / "dense.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "backend", "errors"}, imported


@pytest.mark.parametrize("gamma", [0.0, 0.05])
def test_dense_blocks_are_kronecker_products_with_pi(make_net, gamma):
    net = make_net((4, 3, 5, 2), "tanh", "softmax", seed=5, n=9)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    off = layer_offsets(net.mlp.shapes)
    sl = [slice(off[k], off[k + 1]) for k in range(3)]
    Ft, Fb = dense.F_tilde(f, gamma), dense.F_breve(f, gamma)
    for k, l in itertools.product(range(3), repeat=2):
        A, G = f.A_bar[k][l], f.G[k][l]
        if k == l:
            pi = math.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
            want = np.kron(A + pi * gamma * np.eye(A.shape[0]), G + gamma / pi * np.eye(G.shape[0]))
            np.testing.assert_allclose(Ft[sl[k], sl[l]], want, rtol=1e-13)
            np.testing.assert_array_equal(Fb[sl[k], sl[l]], Ft[sl[k], sl[l]])
        else:
            np.testing.assert_array_equal(Ft[sl[k], sl[l]], np.kron(A, G))
            assert not Fb[sl[k], sl[l]].any()


@pytest.mark.parametrize("gamma", [1e-3, 0.1])
def test_dense_F_hat_inverse_is_block_tridiagonal_and_F_hat_matches_F_tilde_there(make_net, gamma):
    net = make_net((5, 4, 4, 3, 3), "tanh", "softmax", seed=12, n=40, scale=1.5)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    F_hat, F_hat_inv, F_tilde = (
        dense.F_hat(f, gamma),
        dense.F_hat_inverse(f, gamma),
        dense.F_tilde(f, gamma),
    )
    assert _rel(F_hat_inv, np.linalg.inv(F_hat)) < 1e-9
    off = layer_offsets(net.mlp.shapes)
    sl = [slice(off[k], off[k + 1]) for k in range(4)]
    for k, l in itertools.product(range(4), repeat=2):
        if abs(k - l) <= 1:
            assert _rel(F_hat[sl[k], sl[l]], F_tilde[sl[k], sl[l]]) < 1e-9
        else:
            assert np.linalg.norm(F_hat_inv[sl[k], sl[l]]) < 1e-8 * np.linalg.norm(F_hat_inv)


def test_dense_psi_is_the_regression_of_one_layer_on_the_next(make_net):
    """Ψ_{i,i+1} = F̃_{i,i+1} F̃_{i+1,i+1}⁻¹ = (Ā_{i-1,i} Ā_{i,i}⁻¹) ⊗ (G_{i,i+1} G_{i+1,i+1}⁻¹)
    (§4.3)."""
    net = make_net((4, 5, 3, 2), "tanh", "gaussian", seed=3, n=30)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    for k in range(2):
        want = np.kron(
            f.A_bar[k][k + 1] @ np.linalg.inv(f.A_bar[k + 1][k + 1]),
            f.G[k][k + 1] @ np.linalg.inv(f.G[k + 1][k + 1]),
        )
        assert _rel(dense.psi(f, k), want) < 1e-9


# ------------------------------------------------------------------------------ the registry
def test_registry_names_classes_and_methods():
    assert list(STRUCTURES) == ["full", "block_diagonal", "block_tridiagonal", "exact"]
    assert list(FACTORED) == ["block_diagonal", "block_tridiagonal"]
    for name, cls in STRUCTURES.items():
        assert issubclass(cls, CurvatureInverse) and cls.name == name
        assert get_structure(name) is cls and structure_of_method(cls.method) is cls
        assert set(cls.statistics) <= set(FactorStats.names())
    assert get_structure("block_tridiagonal").statistics == ("A_diag", "G_diag", "A_off", "G_off")
    assert METHODS == (*methods(), "kfac-blockdiag-nomomentum", "sgd-momentum")
    assert structure_of_method("sgd-momentum") is None
    with pytest.raises(
        ConfigError,
        match=r"unknown structure 'kronecker'; choose one of full, block_diagonal, "
        r"block_tridiagonal, exact",
    ):
        get_structure("kronecker")


def test_nothing_outside_the_registry_tests_a_structure():
    """No ``isinstance(…, …Inverse)`` and no comparison with a structure's name outside
    kfac_ref/structures.py and the classes' own module."""
    # "exact" is also a value of stats_method and of kronecker_factors' method
    names = (set(STRUCTURES) | {cls.method for cls in STRUCTURES.values()}) - {"exact"}
    classes = {cls.__name__ for cls in STRUCTURES.values()}
    for folder in ("kfac_ref", "kfac_ref/experiments", "paper_figures", "benchmarks", "scripts"):
        for path in (ROOT / folder).glob("*.py"):
            if path.name in ("structures.py", "inverse.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                    assert not any(
                        isinstance(a, ast.Name) and a.id in classes for a in ast.walk(node.args[1])
                    ), path
                if isinstance(node, ast.Compare):
                    consts = [
                        c.value
                        for c in [node.left, *node.comparators]
                        if isinstance(c, ast.Constant)
                    ]
                    assert not names & set(consts), (path, node.lineno)


def _dense_apply(M_inv: np.ndarray, V: list[np.ndarray]) -> list[np.ndarray]:
    """M⁻¹ v for a dense M⁻¹ and v in list-of-matrices form, returned in that form, written here
    from the column-stacking vec (vec(X) = X.T.reshape(-1), :mod:`kfac_ref.vec`'s convention)."""
    u = M_inv @ np.concatenate([X.T.reshape(-1) for X in V])
    ends = np.cumsum([X.size for X in V])
    return [
        u[end - X.size : end].reshape(X.shape[1], X.shape[0]).T
        for X, end in zip(V, ends, strict=True)
    ]


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("sizes, act, output", NETS, ids=str)
def test_each_structure_applies_the_inverse_of_its_dense_matrix(
    make_net, oracle, name, sizes, act, output
):
    cls = get_structure(name)
    net = make_net(sizes, act, output, seed=len(sizes), n=30)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    F = oracle.gauss_newton(net)  # finite-difference J, closed-form F_R
    gamma = 0.05
    inv = cls.from_stats(_stats(f, F), gamma)
    M_inv = np.linalg.inv(_dense_of(name, f, F, gamma))
    V = net.weights_of(np.random.default_rng(0).standard_normal(net.mlp.n_params))
    assert _rel(weights_to_theta(inv.apply(V)), M_inv @ weights_to_theta(V)) < INV_RTOL
    assert _rel(weights_to_theta(inv.apply(V)), weights_to_theta(_dense_apply(M_inv, V))) < INV_RTOL


#: every structure with the default damping, and each other Tikhonov form it implements
SAVED_FORMS = [(name, "factored") for name in STRUCTURES] + [
    (name, form)
    for name, cls in STRUCTURES.items()
    for form in cls.tikhonov_choices
    if form != "factored"
]


@pytest.mark.parametrize("name, tikhonov", SAVED_FORMS)
def test_each_structure_saves_loads_casts_and_knows_its_shapes(make_net, name, tikhonov):
    """A state holds one form of the inverse; :meth:`state_shapes` lists every array any form
    may save (F̆: the factored A_inv, G_inv, or the exact-Tikhonov Q_A, Q_G, denom)."""
    cls = get_structure(name)
    net = make_net((4, 5, 3, 2), "tanh", "bernoulli", seed=2, n=20)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    stats = _stats(f, exact_fisher(net.mlp, net.weights, net.X))
    inv = cls.from_stats(stats, 0.1, tikhonov=tikhonov)
    d = inv.state_dict()
    shapes = cls.state_shapes(net.mlp.layer_sizes)
    assert list(d) == [k for k in shapes if k in d] and d
    assert {k: [a.shape for a in v] for k, v in d.items()} == {k: shapes[k] for k in d}
    back = cls.from_state_dict(d, np.asarray)
    assert type(back) is type(inv)
    V = net.weights_of(np.random.default_rng(1).standard_normal(net.mlp.n_params))
    for a, b in zip(inv.apply(V), back.apply(V), strict=True):
        np.testing.assert_array_equal(a, b)
    f32 = inv.astype(np.float32)
    assert all(a.dtype == np.float32 for v in f32.state_dict().values() for a in v)
    # float64 factorizations of float32 statistics come back in float32
    s32 = stats.astype(np.float32)
    assert all(
        a.dtype == np.float32
        for v in cls.from_stats(s32, 0.1, np.float64, tikhonov=tikhonov).state_dict().values()
        for a in v
    )


def test_a_structure_names_the_statistics_it_lacks(make_net):
    net = make_net((4, 5, 3, 2), "tanh", "bernoulli", seed=2, n=20)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    with pytest.raises(
        ConfigError, match=r"block-tridiagonal F̂ inverse needs the statistics A_off, G_off"
    ):
        get_structure("block_tridiagonal").from_stats(FactorStats(*f.diagonal()), 0.1)


# --------------------------------------------------------------- named steps of Algorithm 2
def test_choose_gamma_takes_the_lowest_finite_model_change_first_of_equals():
    assert choose_gamma((1.0, 2.0, 3.0), [-0.1, -0.3, -0.2]) == 1
    assert choose_gamma((1.0, 2.0, 3.0), [math.nan, -0.3, -0.3]) == 1
    assert choose_gamma((1.0, 2.0, 3.0), [-0.5, math.inf, math.nan]) == 0
    with pytest.raises(NonFiniteError, match=r"not finite for any γ in \(1.0, 2.0\)"):
        choose_gamma((1.0, 2.0), [math.nan, math.inf])


def test_gammas_to_try_and_adjust_lambda():
    assert gammas_to_try(2.0, False, 0.5) == (2.0,)
    assert gammas_to_try(2.0, True, 0.5, 1.5, 3.0) == (1.5, 2.0, 3.0)
    for h_new in (0.9, 0.75, 0.5, 1.2):
        lam, rho = adjust_lambda(10.0, h_new, 1.0, -0.5, 0.9)
        assert rho == reduction_ratio(h_new, 1.0, -0.5) and lam == update_lambda(10.0, rho, 0.9)
    assert adjust_lambda(10.0, 0.5, 1.0, -0.5, 0.9) == (9.0, 1.0)  # ρ = 1 > 3/4: λ ← ω1 λ
    assert adjust_lambda(10.0, 0.9, 1.0, -0.5, 0.9)[0] == pytest.approx(10.0 / 0.9)  # ρ = 0.2 < 1/4


# ---------------------------------------------------------------- the dense structures (§3, §2.2)
def test_the_exact_fisher_statistic_is_the_gauss_newton_matrix(make_net, oracle):
    net = make_net((4, 3, 3), "tanh", "softmax", seed=4, n=12)
    fwd = net.mlp.forward(net.weights, net.X)
    got = batch_statistics(net.mlp, net.weights, fwd, None, ("A_diag", "G_diag", "F"), "exact").F[0]
    assert _rel(got, oracle.gauss_newton(net)) < 1e-7  # finite differences


def test_dense_structures_refuse_large_nets():
    mlp = MLP((784, 1000, 784), "logistic", "bernoulli")
    for name in ("full", "exact"):
        with pytest.raises(TooLargeError, match="dense Fisher for 1569784 parameters"):
            KFAC(mlp, KFACConfig(structure=name), get_backend("numpy", "float32"))
    KFAC(
        mlp, KFACConfig(structure="block_tridiagonal"), get_backend("numpy", "float32")
    )  # factored: fine


def _trajectory(mlp, X, Y, structure, steps=6, **options):
    opt = KFAC(
        mlp,
        KFACConfig(
            structure=structure,
            T1=2,
            T2=4,
            T3=2,
            tau1=1.0,
            tau2=1.0,
            stats_method="exact",
            **options,
        ),
        get_backend("numpy", "float64"),
    )
    W = mlp.init_sparse(0, get_backend("numpy", "float64"))
    state, rng, out = opt.init_state(W), np.random.default_rng(0), []
    for _ in range(steps):
        W, state, info = opt.step(W, state, X, Y, rng)
        out.append(info)
    return W, state, out, opt


def test_with_one_layer_full_equals_block_diagonal_and_gaussian_exact_equals_full():
    """Known-exact cases: with one layer F̃ = F̆ (one block); with a linear Gaussian output
    F = Ā ⊗ I = F̃ (F_R = I does not depend on the input), so the three runs agree (§3, §4.2)."""
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((40, 5)), rng.standard_normal((40, 3))
    mlp = MLP((5, 3), [], "gaussian")
    runs = {name: _trajectory(mlp, X, Y, name) for name in ("block_diagonal", "full", "exact")}
    for name in ("full", "exact"):
        for a, b in zip(runs["block_diagonal"][2], runs[name][2], strict=True):
            for key in ("loss", "alpha", "mu", "model_change", "lam", "gamma"):
                assert a[key] == pytest.approx(b[key], rel=1e-8, abs=1e-12), (name, key)


@pytest.mark.parametrize("name", ["full", "exact"])
def test_dense_structures_train_and_resume_exactly(make_net, name):
    net = make_net((4, 5, 3, 4), "tanh", "bernoulli", seed=6, n=32)
    W, state, log, opt = _trajectory(net.mlp, net.X, net.Y, name, steps=8)
    assert log[-1]["loss"] < log[0]["loss"] and all(r["refreshed"] in (0, 1) for r in log)
    d = opt.state_dict(state)
    back = opt.load_state_dict(d)
    rng = np.random.default_rng(9)
    a = opt.step(W, state, net.X, net.Y, rng)
    b = opt.step(W, back, net.X, net.Y, np.random.default_rng(9))
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)


def test_structures_compare_script_runs_every_structure():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "structures_compare", ROOT / "benchmarks" / "structures_compare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.compare(iters=2)
    assert [r["structure"] for r in rows] == list(STRUCTURES)
    assert all(math.isfinite(e) for r in rows for e in r["errors"].values())
    assert "| F (`exact`) |" in module.table(rows)
