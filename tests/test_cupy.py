"""The CuPy backend: the NumPy results on CuPy, end-to-end runs, failure detection, the sync budget.

Every test marked ``gpu`` runs twice through the ``cupy_kind`` fixture (``conftest.py``): on
real CuPy with a GPU (skipped cleanly without one) and on the strict CuPy stand-in of
``tests/fakecupy`` (always), which refuses host arrays, NumPy/SciPy calls on device arrays and
any name or keyword real CuPy lacks, and logs every device→host transfer.

Tolerances: float64 parity 1e-10 (relative); float32 end-to-end parity 1e-3 after a few
iterations (GPU BLAS sums in another order; on the stand-in the numbers are identical).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import warnings
from pathlib import Path

import fakecupy
import numpy as np
import pytest

from kfac_ref.appendix_b import kron_sum_inverse
from kfac_ref.backend import (
    BACKEND_ENV_VAR,
    cupy_available,
    get_array_module,
    get_backend,
    to_numpy,
)
from kfac_ref.compare import approximate_fisher, compare_fisher, damped_diagonal
from kfac_ref.config import KFACConfig, SGDConfig
from kfac_ref.errors import BackendError, ConfigError, NonFiniteError
from kfac_ref.experiments import RunConfig, run_experiment
from kfac_ref.experiments.sgd import SGDMomentum
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher, fisher_vector_product
from kfac_ref.host import HostBatch
from kfac_ref.inverse import (
    apply_block_diagonal_inverse,
    apply_block_tridiagonal_inverse,
    block_diagonal_inverse,
    block_tridiagonal_inverse,
)
from kfac_ref.linalg import linalg_for, spd_inverse
from kfac_ref.mlp import MLP
from kfac_ref.optimizer import KFAC
from kfac_ref.rng import Philox, RunGenerator, philox_blocks
from kfac_ref.structures import STRUCTURES
from kfac_ref.vec import weights_to_theta

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-10
RTOL32 = 1e-3


def _rel(X, Y) -> float:
    X, Y = to_numpy(X), to_numpy(Y)
    return float(np.linalg.norm(X - Y) / np.linalg.norm(Y))


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gpu(cupy_kind):
    return get_backend("cupy", dtype="float64")


@pytest.fixture(params=["bernoulli", "gaussian", "softmax"])
def pair(request, gpu):
    """The same network, weights and data on the host and on the device."""
    output = request.param
    mlp = MLP((6, 5, 4, 3), ["tanh", "logistic"], output)
    host = get_backend("numpy")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    Y = (
        (rng.random((40, 3)) < 0.5).astype(float)
        if output != "softmax"
        else np.eye(3)[rng.integers(0, 3, 40)]
    )
    if output == "gaussian":
        Y = rng.standard_normal((40, 3))
    cpu = (mlp.init_gaussian(seed=1, backend=host, scale=1.5), X, Y)
    dev = (mlp.init_gaussian(seed=1, backend=gpu, scale=1.5), gpu.asarray(X), gpu.asarray(Y))
    return mlp, cpu, dev


# ------------------------------------------------------------------ parity of the math (float64)
@pytest.mark.gpu
def test_forward_backward_on_cupy(pair):
    mlp, (W, X, Y), (Wd, Xd, Yd) = pair
    assert get_array_module(Wd[0]).__name__ == "cupy"
    h, grads, fwd = mlp.loss_and_grad(W, X, Y, eta=1e-3)
    hd, grads_d, fwd_d = mlp.loss_and_grad(Wd, Xd, Yd, eta=1e-3)
    assert get_array_module(hd).__name__ == "cupy"
    assert abs(float(hd) - float(h)) <= RTOL * abs(float(h))
    assert _rel(weights_to_theta(grads_d), weights_to_theta(grads)) < RTOL
    assert _rel(fwd_d.output, fwd.output) < RTOL


@pytest.mark.gpu
def test_exact_and_approximate_fisher_on_cupy(pair):
    mlp, (W, X, _), (Wd, Xd, _) = pair
    assert _rel(exact_fisher(mlp, Wd, Xd), exact_fisher(mlp, W, X)) < RTOL
    f, fd = kronecker_factors(mlp, W, X), kronecker_factors(mlp, Wd, Xd)
    for k in range(mlp.n_layers):
        for l in range(mlp.n_layers):
            assert _rel(fd.A_bar[k][l], f.A_bar[k][l]) < RTOL
            assert _rel(fd.G[k][l], f.G[k][l]) < RTOL
    for structure in ("full", "block_diagonal", "block_tridiagonal"):
        for gamma in (0.0, 1e-2) if mlp.output.name != "softmax" else (1e-2,):
            got = approximate_fisher(mlp, Wd, Xd, structure, gamma, fd)
            assert _rel(got, approximate_fisher(mlp, W, X, structure, gamma, f)) < RTOL


def _inverses_and_fvp(mlp, W, X, Y, gamma: float) -> list:
    """F̆⁻¹∇h, F̂⁻¹∇h (damped, §4, §6.3) and F∇h (§2.2) as θ-vectors, on whichever backend."""
    f = kronecker_factors(mlp, W, X)
    _, grads, _ = mlp.loss_and_grad(W, X, Y)
    A, G = damped_diagonal(f, gamma)
    A_off, G_off = f.off_diagonal()
    return [
        weights_to_theta(apply_block_diagonal_inverse(block_diagonal_inverse(A, G), grads)),
        weights_to_theta(
            apply_block_tridiagonal_inverse(block_tridiagonal_inverse(A, G, A_off, G_off), grads)
        ),
        weights_to_theta(fisher_vector_product(mlp, W, X, grads)),
    ]


@pytest.mark.gpu
def test_efficient_inverses_and_fvp_on_cupy(pair):
    mlp, (W, X, Y), (Wd, Xd, Yd) = pair
    host = _inverses_and_fvp(mlp, W, X, Y, gamma=1e-2)
    dev = _inverses_and_fvp(mlp, Wd, Xd, Yd, gamma=1e-2)
    for got, want in zip(dev, host, strict=True):
        assert get_array_module(got).__name__ == "cupy"
        assert _rel(got, want) < RTOL


@pytest.mark.gpu
def test_compare_fisher_on_cupy(pair):
    mlp, (W, X, _), (Wd, Xd, _) = pair
    host, dev = compare_fisher(mlp, W, X, gamma=1e-2), compare_fisher(mlp, Wd, Xd, gamma=1e-2)
    for name, M in host.matrices.items():
        assert isinstance(dev.matrices[name], np.ndarray)
        assert _rel(dev.matrices[name], M) < RTOL
        assert _rel(dev.inverses[name], host.inverses[name]) < 1e-8
    for name, e in host.errors.items():
        assert dev.errors[name] == pytest.approx(e, rel=1e-8)


# ----------------------------------------------------------------- end-to-end training (float32)
def _autoencoder_problem(backend, output: str):
    sizes = (12, 8, 3, 8, 12)
    mlp = MLP(sizes, ["logistic", "linear", "logistic"], output)
    rng = np.random.default_rng(5)
    X = rng.random((64, sizes[0]))
    Y = X if output != "softmax" else np.eye(sizes[-1])[rng.integers(0, sizes[-1], 64)]
    return mlp, mlp.init_sparse(0, backend), backend.asarray(X), backend.asarray(Y)


def _train_kfac(backend, structure: str, output: str, iters: int = 8):
    mlp, W, X, Y = _autoencoder_problem(backend, output)
    # short T1/T2/T3 so a few iterations see the λ rule, inverse refreshes and the γ search
    cfg = KFACConfig(
        structure=structure, eta=1e-5, T1=2, T2=4, T3=2, stats_method="sample", lam0=1.0
    )
    opt = KFAC(mlp, cfg, backend)
    state, infos = opt.init_state(W), []
    gen = Philox.from_seed(backend.xp, 11)  # the same bits on every backend
    for _ in range(iters):
        W, state, info = opt.step(W, state, X, Y, gen)
        infos.append(info)
    return W, state, infos


@pytest.mark.gpu
@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("output", ["bernoulli", "gaussian", "softmax"])
def test_kfac_float32_sampled_statistics_short_intervals(cupy_kind, structure, output):
    dev = get_backend("cupy", "float32")
    W, state, infos = _train_kfac(dev, structure, output)
    assert all(get_array_module(w).__name__ == "cupy" and w.dtype == np.float32 for w in W)
    assert all(type(v) in (int, float) for info in infos for v in info.values())
    assert sum(i["gamma_searched"] for i in infos) == 2 and sum(i["refreshed"] for i in infos) >= 5
    assert all(math.isfinite(i["rho"]) for i in infos[1::2])  # every T1 = 2 iterations
    assert infos[-1]["loss"] < infos[0]["loss"]
    W_host, state_host, infos_host = _train_kfac(get_backend("numpy", "float32"), structure, output)
    assert _rel(weights_to_theta(W), weights_to_theta(W_host)) < RTOL32
    assert [i["gamma"] for i in infos] == pytest.approx(
        [i["gamma"] for i in infos_host], rel=RTOL32
    )
    d = KFAC(
        MLP((12, 8, 3, 8, 12), ["logistic", "linear", "logistic"], output),
        KFACConfig(structure=structure),
        dev,
    )
    restored = d.load_state_dict(d.state_dict(state))
    assert _rel(weights_to_theta(restored.delta), weights_to_theta(state.delta)) == 0.0


@pytest.mark.gpu
def test_sgd_on_cupy(cupy_kind):
    runs = []
    for backend in (get_backend("cupy", "float32"), get_backend("numpy", "float32")):
        mlp, W, X, _ = _autoencoder_problem(backend, "bernoulli")
        opt = SGDMomentum(mlp, SGDConfig(lr=0.1, mu_max=0.9, eta=1e-5), backend)
        state = opt.init_state(W)
        for _ in range(5):
            W, state, info = opt.step(W, state, X, X)
        assert type(info["loss"]) is float
        runs.append(weights_to_theta(W))
    assert _rel(runs[0], runs[1]) < RTOL32


# -------------------------------------------------------- experiment runner, checkpoint, resume
def _tiny_run(**kw) -> RunConfig:
    base = dict(
        dataset="curves",
        method="kfac-tridiag",
        iters=10,
        layers=[16, 10, 3, 10, 16],
        m1=16,
        k_full=8,
        eval_every=4,
        checkpoint_every=5,
        dtype="float32",
        average_start=6,
        kfac={"T3": 2, "T2": 4, "T1": 2},
        backend="cupy",
    )
    base.update(kw)
    return RunConfig(**base)


def _tiny_data():
    rng = np.random.default_rng(0)
    X = 1.0 / (1.0 + np.exp(-4.0 * (rng.random((96, 3)) @ rng.random((3, 16)) - 0.75)))
    return X[:64], X[64:]


def _optimizer_records(records):
    """The log without timings and evaluations (a run that stops at k evaluates at k)."""
    from kfac_ref.experiments.io import jsonable

    return [
        {k: v for k, v in jsonable(r).items() if k != "time" and "error" not in k} for r in records
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["kfac-blockdiag", "kfac-tridiag", "sgd-momentum"])
def test_experiment_runner_checkpoint_and_resume_on_cupy(cupy_kind, tmp_path, method):
    from kfac_ref.experiments import checkpoint

    data = _tiny_data()
    whole = run_experiment(_tiny_run(method=method), tmp_path / "whole", data=data, progress=False)
    run_experiment(_tiny_run(method=method, iters=5), tmp_path / "split", data=data, progress=False)
    payload = checkpoint.load_checkpoint(tmp_path / "split" / checkpoint.CHECKPOINT_NAME)
    assert (
        payload["rng"]["kind"] == "philox4x32-10"
        and json.loads(json.dumps(payload["rng"])) == payload["rng"]
    )
    assert all(0 <= w < 2**32 for w in payload["rng"]["key"] + payload["rng"]["counter"])
    resumed = run_experiment(
        _tiny_run(method=method), tmp_path / "split", data=data, progress=False, resume=True
    )
    assert _optimizer_records(resumed) == _optimizer_records(whole)
    assert resumed[-1]["train_error"] == whole[-1]["train_error"]
    assert all(math.isfinite(r["train_error"]) for r in whole if "train_error" in r)


@pytest.mark.gpu
def test_resume_without_saved_generator_is_refused_on_cupy(cupy_kind, tmp_path):
    from kfac_ref.experiments import checkpoint

    data = _tiny_data()
    run_experiment(_tiny_run(iters=5), tmp_path, data=data, progress=False)
    payload = checkpoint.load_checkpoint(tmp_path / checkpoint.CHECKPOINT_NAME)
    del payload["rng"]
    checkpoint.save_checkpoint(
        tmp_path / checkpoint.CHECKPOINT_NAME, {k: v for k, v in payload.items() if k != "format"}
    )
    with pytest.raises(ConfigError, match="no device generator state"):
        run_experiment(_tiny_run(), tmp_path, data=data, progress=False, resume=True)


# ---------------------------------------------------------------------- a figure on the device
@pytest.mark.gpu
def test_figure_script_with_backend_cupy(cupy_kind, tmp_path):
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import fisher_blocks
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))
    args = [
        "--quick",
        "--train-cases",
        "200",
        "--cases",
        "60",
        "--iters",
        "4",
        "--hidden",
        "4",
        "--seed",
        "3",
        "--dpi",
        "30",
        "--no-progress",
        "--formats",
        "png",
        "--trainer",
        "kfac",
        "--backend",
        "cupy",
        "--out",
        str(tmp_path / "out"),
        "--data-dir",
        str(tmp_path / "empty"),
    ]
    result = fisher_blocks.main(args)
    summary = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert summary["backend"] == "cupy" and math.isfinite(summary["train_error"])
    assert result is None or isinstance(result, dict)
    assert list((tmp_path / "out").glob("*.png"))


# ------------------------------------------------------------- singular factors: warn and raise
def _outcome(fn):
    """(warning messages, error type and message) of calling ``fn``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
            error = None
        except NonFiniteError as exc:
            error = str(exc)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)], error


@pytest.mark.gpu
def test_singular_factors_warn_and_raise_as_on_numpy(cupy_kind):
    dev = get_backend("cupy", "float64")
    v = np.arange(1.0, 5.0)
    cases = {
        "rank-one factor": lambda be: spd_inverse(be.asarray(np.outer(v, v)), "Ā_{0,0}"),
        "negative definite": lambda be: spd_inverse(be.asarray(-np.eye(3)), "G"),
        "NaN entry": lambda be: spd_inverse(
            be.asarray(np.array([[1.0, np.nan], [np.nan, 1.0]])), "Ā_{0,0}"
        ),
        "dependent Kronecker sum": lambda be: kron_sum_inverse(
            *[be.asarray(M) for M in (np.eye(2), 2 * np.eye(3))] * 2
        ),
        "zero factor in a block": lambda be: block_diagonal_inverse(
            [be.asarray(np.eye(2)), be.asarray(np.zeros((2, 2)))],
            [be.asarray(np.eye(3)), be.asarray(np.eye(3))],
        ),
    }
    for name, case in cases.items():
        on_host, on_device = (
            _outcome(lambda c=case: c(get_backend("numpy"))),
            _outcome(lambda c=case: c(dev)),
        )
        assert on_device == on_host, name
        assert on_host[0] or on_host[1], name  # each case warns or raises


@pytest.mark.gpu
def test_failed_cholesky_is_detected_although_the_factor_is_finite(cupy_kind):
    import cupy
    import cupyx

    M = cupy.asarray(np.diag([1.0, -1e-3, 2.0]))
    if cupy_kind == "stand-in":  # CuPy's documented behaviour, which the stand-in imitates
        assert bool(cupy.isfinite(cupy.linalg.cholesky(M)).all())
    inv, ok = linalg_for(M).spd_inverse(M)
    assert not bool(ok)
    with cupyx.errstate(linalg="raise"):  # a user's errstate: the failure is caught, not leaked
        inv, ok = linalg_for(M).spd_inverse(M)
    assert inv is None and ok is False
    good = cupy.asarray(np.array([[4.0, 1.0], [1.0, 3.0]]))
    inv, ok = linalg_for(good).spd_inverse(good)
    assert bool(ok) and _rel(inv, np.linalg.inv(np.array([[4.0, 1.0], [1.0, 3.0]]))) < RTOL


# --------------------------------------------------------------------------- the generator
def test_philox_matches_the_random123_known_answers():
    kat = [  # Random123 tests/kat_vectors, "philox4x32 10": counter, key → result
        ([0, 0, 0, 0], (0, 0), [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        (
            [0xFFFFFFFF] * 4,
            (0xFFFFFFFF, 0xFFFFFFFF),
            [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD],
        ),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            (0xA4093822, 0x299F31D0),
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ]
    for ctr, key, want in kat:
        got = philox_blocks(np, tuple(np.array([c], dtype=np.uint64) for c in ctr), key)
        assert [int(w[0]) for w in got] == want


def test_philox_state_round_trip_and_distribution():
    g = Philox.from_seed(np, 3)
    g.random(10)
    state = json.loads(json.dumps(g.state_dict()))
    a, b = (
        g.random((4, 5), dtype=np.float32),
        Philox.from_state(np, state).random((4, 5), dtype=np.float32),
    )
    assert a.dtype == np.float32 and np.array_equal(a, b)
    u = Philox.from_seed(np, 0).random(20000)
    z = Philox.from_seed(np, 1).standard_normal(20000)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03
    with pytest.raises(ConfigError, match="not a philox4x32-10 generator state"):
        Philox.from_state(np, {"bit_generator": "xorwow"})


@pytest.mark.gpu
def test_device_generator_draws_the_host_bits_and_is_made_once(cupy_kind):
    import cupy

    dev, host = Philox.from_seed(cupy, 7), Philox.from_seed(np, 7)
    for dtype in (np.float32, np.float64):
        got = dev.random((3, 33), dtype=dtype)
        assert get_array_module(got) is cupy and np.array_equal(
            to_numpy(got), host.random((3, 33), dtype=dtype)
        )
    run = RunGenerator(cupy, 0, lambda seed, k: k)
    assert run.for_iteration(1) is run.for_iteration(2)
    run.for_iteration(3).random(5)
    again = RunGenerator(cupy, 0, lambda seed, k: k)
    again.load_state_dict(json.loads(json.dumps(run.state_dict())))
    assert np.array_equal(
        to_numpy(again.for_iteration(4).random(7)), to_numpy(run.for_iteration(4).random(7))
    )
    numpy_run = RunGenerator(np, 0, lambda seed, k: seed * 1_000_003 + k)
    assert numpy_run.for_iteration(2).random() == np.random.default_rng(2).random()


# ----------------------------------------------------------------------------- the sync budget
def test_sync_budget_per_iteration():
    """Few device→host transfers per K-FAC iteration (README, Backends): at most 4 in a plain
    iteration and 12 on an inverse refresh or γ search, both structures, the MNIST autoencoder's
    depth, the paper's settings; before this budget there were 113/302 (block-diagonal) and
    127/463 (block-tridiagonal)."""
    counter = _load_script("count_syncs")
    for structure in counter.STRUCTURES:
        widths = [78, 40, 20, 10, 3, 10, 20, 40, 78]  # the MNIST autoencoder's depth, small widths
        rows = counter.report(counter.count_syncs(structure, batch=64, widths=widths), top=3)
        for kind, row in rows.items():
            assert row["syncs"] <= row["budget"], (structure, kind, row)
        assert rows["plain"]["syncs"] <= 2


def test_verify_gpu_script_runs_on_the_stand_in(monkeypatch, capsys):
    """The GPU user's one command, its parity part on the stand-in with a small network."""
    from kfac_ref.experiments import autoencoder

    verify = _load_script("verify_gpu")
    monkeypatch.setattr(verify, "autoencoder", lambda name: autoencoder(name, [16, 8, 3, 8, 16]))
    assert verify.main(["--stand-in", "--quick", "--iters", "5", "--batch", "32"]) == 0
    out = capsys.readouterr().out
    assert "| curves | block_tridiagonal | float32 |" in out and "Verdict: all checks passed" in out


@pytest.mark.parametrize("option", ["--iters", "--batch"])
def test_verify_gpu_script_refuses_a_non_positive_count(option, capsys):
    """0 is not read as "the default": it is refused with one error line and status 2."""
    verify = _load_script("verify_gpu")
    with pytest.raises(SystemExit) as exc:
        verify.main(["--stand-in", option, "0"])
    assert exc.value.code == 2
    assert f"{option} must be a positive integer, got 0" in capsys.readouterr().err


def test_host_batch_fetches_once_and_raises_the_first_failure():
    with fakecupy.installed() as cupy:
        a, b = cupy.ones(3), cupy.asarray(np.array([1.0, np.inf]))
        batch = HostBatch()
        batch.require_finite([a], "a is not finite")
        batch.scalar("s", a.sum(), "the sum is not finite")
        batch.require_finite([b], "b is not finite")
        batch.value("v", a * 2)
        with (
            fakecupy.SYNCS.counting() as log,
            pytest.raises(NonFiniteError, match="^b is not finite$"),
        ):
            batch.fetch()
        assert log.count == 1
        batch = HostBatch()
        batch.value("v", cupy.arange(4.0).reshape(2, 2))
        batch.scalar("s", a.sum(), "s")
        assert batch.fetch()["s"] == 3.0 and batch.host["v"].tolist() == [[0.0, 1.0], [2.0, 3.0]]


# ----------------------------------------------------------------------- the stand-in is strict
def test_stand_in_refuses_what_cupy_refuses():
    import scipy.linalg

    with fakecupy.installed() as cupy:
        import cupyx.scipy.linalg

        a = cupy.asarray(np.eye(3))
        refused = {
            "numpy.asarray": lambda: np.asarray(a),
            "numpy ufunc": lambda: np.isfinite(a),
            "numpy function": lambda: np.linalg.norm(a),
            "SciPy": lambda: scipy.linalg.cholesky(a),
            "mixing with host (left)": lambda: a + np.ones(3),
            "mixing with host (right)": lambda: np.ones(3) * a,
            "host array argument": lambda: cupy.stack([a, np.ones(3)]),
            "host array assigned": lambda: a.__setitem__(0, np.ones(3)),
            "keyword CuPy lacks": lambda: cupy.linalg.eigh(a, driver="gvd"),
            "keyword cupyx lacks": lambda: cupyx.scipy.linalg.solve_triangular(
                a, a, lower=True, overwrite_a=True
            ),
        }
        for what, fn in refused.items():
            with pytest.raises(TypeError):
                fn()
                pytest.fail(what)
        with pytest.raises(AttributeError, match="not in CuPy"):
            cupy.busday_count  # noqa: B018 - NumPy has it, CuPy does not
        with pytest.raises(AttributeError, match="not in CuPy"):
            a.foo  # noqa: B018
        assert type(cupy.vdot(a, a)) is type(a) and cupy.vdot(a, a).shape == ()  # 0-d, not a scalar


def test_stand_in_logs_each_transfer_with_its_source():
    with fakecupy.installed() as cupy:
        a = cupy.arange(3.0)
        with fakecupy.SYNCS.counting() as log:
            float(a.sum())
            bool((a > 1).any())
            a.get()
            cupy.asnumpy(a)
            a.tolist()
            int(a[1])
            a[0].item()
        assert [kind for kind, _ in log.events] == [
            "float",
            "bool",
            "get",
            "get",
            "tolist",
            "int",
            "item",
        ]
        assert all(where.startswith("tests/test_cupy.py:") for _, where in log.events)


def test_stand_in_api_list_comes_from_the_real_package():
    api = fakecupy.API
    assert api["generated_by"] == "scripts/dump_cupy_api.py"
    major = int(api["cupy_version"].split(".")[0])
    pin = (ROOT / "setup.cfg").read_text()
    assert (
        f"cupy-cuda12x[ctk]>={major},<{major + 1}" in pin
    )  # regenerate the list when the pin moves
    for module, name in [
        ("cupy", "vdot"),
        ("cupy.linalg", "cholesky"),
        ("cupyx", "errstate"),
        ("cupyx.scipy.linalg", "solve_triangular"),
        ("cupy.random", "Philox4x3210"),
    ]:
        assert name in api["modules"][module]


# ----------------------------------------------------------- backend selection (no GPU needed)
def test_cupy_available_needs_the_cuda_libraries(monkeypatch):
    with fakecupy.installed():
        assert cupy_available()
        monkeypatch.setitem(sys.modules, "cupyx.scipy.linalg", None)  # cuBLAS/cuSOLVER do not load
        assert not cupy_available()
        with pytest.raises(BackendError, match=r"cupy-cuda12x\[ctk\]"):
            get_backend("cupy")


def test_cupy_unavailable_raises_backend_error():
    if cupy_available():
        pytest.skip("CuPy is available here")
    with pytest.raises(
        BackendError, match=r"backend 'cupy' was requested but (CuPy is not installed|no CUDA GPU)"
    ):
        get_backend("cupy")


def test_environment_variable_selects_backend(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "numpy")
    assert get_backend().name == "numpy"
    monkeypatch.setenv(BACKEND_ENV_VAR, "NumPy")
    assert get_backend().xp is np
    monkeypatch.setenv(BACKEND_ENV_VAR, "")
    assert get_backend().name == "numpy"
    monkeypatch.setenv(BACKEND_ENV_VAR, "bogus")
    with pytest.raises(BackendError, match=r"unknown backend 'bogus'; choose one of numpy, cupy"):
        get_backend()
    assert get_backend("numpy").name == "numpy"  # an explicit name wins over the variable
    monkeypatch.setenv(BACKEND_ENV_VAR, "cupy")
    if cupy_available():
        assert get_backend().name == "cupy"
    else:
        with pytest.raises(BackendError, match="backend 'cupy' was requested"):
            get_backend()
    monkeypatch.delenv(BACKEND_ENV_VAR)
    backend = get_backend(dtype="float32")
    assert backend.name == "numpy" and backend.dtype == np.float32
