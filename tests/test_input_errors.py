"""Bad input to the public entries and the configurations is refused with a kfac_ref error
naming the problem; valid input that used to crash (a stationary point) gives the right answer.

Table-driven: each row is one case (a failure, or a weak case), with the error class expected
and a fragment of its message.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref.backend import get_backend
from kfac_ref.compare import approximate_fisher, compare_fisher
from kfac_ref.config import KFACConfig, SGDConfig
from kfac_ref.errors import (
    ConfigError,
    DataError,
    KFACError,
    NonFiniteError,
    ShapeError,
    TargetError,
)
from kfac_ref.experiments import RunConfig, checkpoint, run_experiment
from kfac_ref.experiments.sgd import SGDMomentum
from kfac_ref.fisher import exact_fisher, fisher_vector_product
from kfac_ref.mlp import MLP
from kfac_ref.natgrad import natgrad_step
from kfac_ref.optimizer import KFAC

BE = get_backend("numpy", "float64")


# ------------------------------------------------------------------------------ fixtures
class Net:
    """A tiny Bernoulli net and a tiny softmax net with valid inputs and targets."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.mlp = MLP([3, 4, 2], "tanh", "bernoulli")
        self.W = self.mlp.init_gaussian(0)
        self.X = rng.random((5, 3))
        self.Y = (rng.random((5, 2)) < 0.5).astype(float)
        self.soft = MLP([3, 4, 3], "tanh", "softmax")
        self.Ws = self.soft.init_gaussian(0)
        self.onehot = np.eye(3)[[0, 1, 2, 0, 1]]


NET = Net()


def with_nan(A: np.ndarray, where=(0, 0)) -> np.ndarray:
    A = A.copy()
    A[where] = np.nan
    return A


def nan_weights() -> list[np.ndarray]:
    return [with_nan(NET.W[0])] + NET.W[1:]


def kfac_step(Y: np.ndarray):
    opt = KFAC(NET.mlp, KFACConfig(), BE)
    return opt.step(NET.W, opt.init_state(NET.W), NET.X, Y, BE.rng(0))


def sgd_step(Y: np.ndarray):
    opt = SGDMomentum(NET.mlp, SGDConfig(), BE)
    return opt.step(NET.W, opt.init_state(NET.W), NET.X, Y)


# --------------------------------------------------------------- 3. public entries, table
ENTRY_CASES = [
    # (case, call, error class, message fragment)
    (
        "loss: NaN input",
        lambda: NET.mlp.loss(NET.W, with_nan(NET.X), NET.Y),
        NonFiniteError,
        "X contains NaN",
    ),
    (
        "loss: NaN target",
        lambda: NET.mlp.loss(NET.W, NET.X, with_nan(NET.Y)),
        NonFiniteError,
        "targets contain NaN",
    ),
    ("loss: empty batch", lambda: NET.mlp.loss(NET.W, NET.X[:0], NET.Y[:0]), ShapeError, "no rows"),
    (
        "loss: NaN weights",
        lambda: NET.mlp.loss(nan_weights(), NET.X, NET.Y),
        NonFiniteError,
        "W_1 contains NaN",
    ),
    (
        "loss: int targets",
        lambda: NET.mlp.loss(NET.W, NET.X, NET.Y.astype(np.int64)),
        ConfigError,
        "targets have dtype int64",
    ),
    (
        "loss: negative η",
        lambda: NET.mlp.loss(NET.W, NET.X, NET.Y, eta=-1.0),
        ConfigError,
        "η (eta",
    ),
    (
        "loss_and_grad: NaN input",
        lambda: NET.mlp.loss_and_grad(NET.W, with_nan(NET.X), NET.Y),
        NonFiniteError,
        "X contains NaN",
    ),
    (
        "loss_and_grad: Bernoulli target 2",
        lambda: NET.mlp.loss_and_grad(NET.W, NET.X, 2 * NET.Y + 0.5),
        TargetError,
        "[0, 1]",
    ),
    (
        "loss: Bernoulli targets 2.0",
        lambda: NET.mlp.loss(NET.W, NET.X, np.full_like(NET.Y, 2.0)),
        TargetError,
        "Bernoulli targets must lie in [0, 1]",
    ),
    (
        "loss: softmax rows of 0.7",
        lambda: NET.soft.loss(NET.Ws, NET.X, np.full((5, 3), 0.7)),
        TargetError,
        "sums to 2.1",
    ),
    (
        "loss: softmax −1 one-hot",
        lambda: NET.soft.loss(NET.Ws, NET.X, -NET.onehot),
        TargetError,
        "negative entry -1",
    ),
    (
        "exact_fisher: NaN weights",
        lambda: exact_fisher(NET.mlp, nan_weights(), NET.X),
        NonFiniteError,
        "W_1 contains NaN",
    ),
    (
        "exact_fisher: empty batch",
        lambda: exact_fisher(NET.mlp, NET.W, NET.X[:0]),
        ShapeError,
        "no rows",
    ),
    (
        "approximate_fisher: γ = −0.5",
        lambda: approximate_fisher(NET.mlp, NET.W, NET.X, "block_diagonal", gamma=-0.5),
        ConfigError,
        "γ (gamma",
    ),
    (
        "approximate_fisher: γ = NaN",
        lambda: approximate_fisher(NET.mlp, NET.W, NET.X, "full", gamma=float("nan")),
        ConfigError,
        "γ (gamma",
    ),
    (
        "approximate_fisher F̂: γ = −0.5 names γ, not Ā",
        lambda: approximate_fisher(NET.mlp, NET.W, NET.X, "block_tridiagonal", gamma=-0.5),
        ConfigError,
        "γ (gamma",
    ),
    (
        "approximate_fisher: NaN weights",
        lambda: approximate_fisher(NET.mlp, nan_weights(), NET.X),
        NonFiniteError,
        "W_1",
    ),
    (
        "compare_fisher: γ = −0.5",
        lambda: compare_fisher(NET.mlp, NET.W, NET.X, gamma=-0.5),
        ConfigError,
        "γ (gamma",
    ),
    (
        "compare_fisher: NaN input",
        lambda: compare_fisher(NET.mlp, NET.W, with_nan(NET.X)),
        NonFiniteError,
        "X contains NaN",
    ),
    (
        "fisher_vector_product: NaN direction",
        lambda: fisher_vector_product(NET.mlp, NET.W, NET.X, nan_weights()),
        NonFiniteError,
        "direction V_1",
    ),
    (
        "fisher_vector_product: NaN input",
        lambda: fisher_vector_product(NET.mlp, NET.W, with_nan(NET.X), NET.W),
        NonFiniteError,
        "X contains NaN",
    ),
    (
        "KFAC.step: Bernoulli targets 2.0",
        lambda: kfac_step(np.full_like(NET.Y, 2.0)),
        TargetError,
        "iteration 1: Bernoulli",
    ),
    (
        "KFAC.step: NaN targets",
        lambda: kfac_step(with_nan(NET.Y)),
        NonFiniteError,
        "iteration 1: targets",
    ),
    (
        "KFAC.step: empty batch",
        lambda: KFAC(NET.mlp, KFACConfig(), BE).step(
            NET.W,
            KFAC(NET.mlp, KFACConfig(), BE).init_state(NET.W),
            NET.X[:0],
            NET.Y[:0],
            BE.rng(0),
        ),
        ShapeError,
        "no rows",
    ),
    (
        "SGD step: Bernoulli targets 2.0",
        lambda: sgd_step(np.full_like(NET.Y, 2.0)),
        TargetError,
        "iteration 1: Bernoulli",
    ),
    (
        "SGD step: NaN input",
        lambda: SGDMomentum(NET.mlp, SGDConfig(), BE).step(
            NET.W, SGDMomentum(NET.mlp, SGDConfig(), BE).init_state(NET.W), with_nan(NET.X), NET.Y
        ),
        NonFiniteError,
        "X contains NaN",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "fragment"), [c[1:] for c in ENTRY_CASES], ids=[c[0] for c in ENTRY_CASES]
)
def test_public_entries_name_bad_input(call, error, fragment):
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)


def test_valid_soft_targets_are_accepted():
    soft = np.full((5, 3), 1.0 / 3.0)
    assert np.isfinite(float(NET.soft.loss(NET.Ws, NET.X, soft)))
    assert np.isfinite(float(NET.mlp.loss(NET.W, NET.X, np.full_like(NET.Y, 0.25))))


def test_a_singular_damped_matrix_is_blamed_on_gamma(monkeypatch):
    import kfac_ref.compare
    import kfac_ref.dense

    def singular(*args, **kwargs):
        raise NonFiniteError(
            "Ā_{0,0} is not positive definite even with jitter 1e-9; increase damping"
        )

    monkeypatch.setattr(kfac_ref.dense, "F_hat", singular)
    with pytest.raises(
        NonFiniteError,
        match=r"F̂ with γ = 0 needs invertible damped factors: Ā_\{0,0\}.*\(raise γ\)",
    ):
        approximate_fisher(NET.mlp, NET.W, NET.X, "block_tridiagonal", gamma=0.0)
    monkeypatch.undo()
    monkeypatch.setattr(kfac_ref.compare, "spd_inverse", singular)
    with pytest.raises(NonFiniteError, match=r"with γ = 0.001 cannot be inverted.*\(raise γ\)"):
        compare_fisher(NET.mlp, NET.W, NET.X, gamma=1e-3)


def test_unchecked_step_is_bit_identical_to_the_checked_one():
    opt = KFAC(NET.mlp, KFACConfig(T3=2, T2=4, T1=2, tau1=0.5), BE)
    a = b = (NET.W, opt.init_state(NET.W))
    for k in range(1, 6):
        Wa, sa, _ = opt.step(*a, NET.X, NET.Y, BE.rng(k))
        Wb, sb, _ = opt.step(*b, NET.X, NET.Y, BE.rng(k), validate=False)
        a, b = (Wa, sa), (Wb, sb)
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)


def test_training_loop_checks_the_data_once_not_every_step(
    tiny_config, tmp_path, tiny_data, monkeypatch
):
    seen = []
    real = KFAC.step

    def spy(self, *args, **kw):
        seen.append(kw.get("validate", True))
        return real(self, *args, **kw)

    monkeypatch.setattr(KFAC, "step", spy)
    run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    assert seen == [False] * 4
    bad = tiny_data[0].copy()
    bad[0, 0] = 1.5  # not a Bernoulli target: refused when loaded, before any step
    with pytest.raises(TargetError, match=r"\[0, 1\]"):
        run_experiment(tiny_config(), tmp_path / "b", data=(bad, None), progress=False)
    assert len(seen) == 4


# ------------------------------------------------------------- configuration values, table
CONFIG_CASES = [
    ("RunConfig n_train = −1", lambda: RunConfig(n_train=-1), "n_train must be an integer ≥ 1"),
    ("RunConfig n_train = 0", lambda: RunConfig(n_train=0), "n_train must be an integer ≥ 1"),
    ("RunConfig n_test = −5", lambda: RunConfig(n_test=-5), "n_test must be an integer ≥ 0"),
    ("RunConfig seed = −1", lambda: RunConfig(seed=-1), "seed must be an integer ≥ 0"),
    ("RunConfig sgd_lr = −1", lambda: RunConfig(sgd_lr=-1.0), "sgd_lr must be a number in (0"),
    ("RunConfig sgd_mu_max = 1", lambda: RunConfig(sgd_mu_max=1.0), "sgd_mu_max"),
    ("RunConfig average_decay = 2", lambda: RunConfig(average_decay=2.0), "average_decay"),
    ("RunConfig max_seconds = −1", lambda: RunConfig(max_seconds=-1.0), "max_seconds"),
    ("RunConfig iters = 1.5", lambda: RunConfig(iters=1.5), "iters must be an integer"),
    ("RunConfig dtype float16", lambda: RunConfig(dtype="float16"), "dtype must be one of"),
    ("RunConfig layers too short", lambda: RunConfig(layers=[784, 784]), "at least three"),
    (
        "RunConfig layers not an autoencoder",
        lambda: RunConfig(layers=[784, 10, 700]),
        "first and last widths",
    ),
    ("--kfac foo=1", lambda: RunConfig(kfac={"foo": 1}), "unknown K-FAC option 'foo'"),
    (
        "--kfac lamda0 suggests lam0",
        lambda: RunConfig(kfac={"lamda0": 100}),
        "did you mean 'lam0'?",
    ),
    (
        "--kfac structure with --method",
        lambda: RunConfig(method="kfac-tridiag", kfac={"structure": "block_diagonal"}),
        "conflicts with --method",
    ),
    (
        "--kfac constants with --constants",
        lambda: RunConfig(kfac={"constants": "paper"}),
        "conflicts with --constants",
    ),
    ("--kfac lam0 = −3", lambda: RunConfig(kfac={"lam0": -3}), "lam0 must be a finite number > 0"),
    ("--kfac gamma0 = 'x'", lambda: RunConfig(kfac={"gamma0": "x"}), "gamma0 must be a number"),
    ("--kfac T1 = 1.5", lambda: RunConfig(kfac={"T1": 1.5}), "T1 must be a positive integer"),
    (
        "--kfac use_momentum = 3",
        lambda: RunConfig(kfac={"use_momentum": 3}),
        "use_momentum must be true or false",
    ),
    (
        "KFACConfig lam_max = NaN",
        lambda: KFACConfig(lam_max=float("nan")),
        "lam_max must be a number",
    ),
    (
        "KFACConfig gamma0 = −1",
        lambda: KFACConfig(gamma0=-1.0),
        "gamma0 must be a finite number > 0",
    ),
    ("SGDConfig lr = NaN", lambda: SGDConfig(lr=float("nan")), "lr must be a number"),
    (
        "SGDConfig nesterov = 'yes'",
        lambda: SGDConfig(nesterov="yes"),
        "nesterov must be true or false",
    ),
]


@pytest.mark.parametrize(
    ("call", "fragment"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_configuration_numbers_in_range(call, fragment):
    with pytest.raises(ConfigError) as info:
        call()
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("n_train", 65, "--n-train 65 asks for more than the 64 training cases"),
        ("n_test", 33, "--n-test 33 asks for more than the 32 test cases"),
    ],
)
def test_more_cases_than_the_set_has(tiny_config, tmp_path, fake_curves, field, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        run_experiment(tiny_config(**{field: value}), tmp_path, progress=False)


def test_every_error_is_a_kfac_error():
    for cls in (ConfigError, DataError, NonFiniteError, ShapeError, TargetError):
        assert issubclass(cls, KFACError)
    assert issubclass(TargetError, ValueError)


# ---------------------------------------------------------- valid input that used to crash
def test_natgrad_step_at_a_stationary_point_is_a_zero_step():
    """∇h = 0 exactly (zero weights, a Gaussian output, targets 0, η = 0): Δ = 0, and the step
    is zero (α = 0, θ unchanged) instead of α = −0/0."""
    mlp = MLP([3, 4, 2], "tanh", "gaussian")
    W = [np.zeros(shape) for shape in mlp.shapes]
    X = np.random.default_rng(0).standard_normal((6, 3))
    _, grads, _ = mlp.loss_and_grad(W, X, np.zeros((6, 2)), 0.0)
    assert all(not g.any() for g in grads)  # the premise: a stationary point
    new, info = natgrad_step(mlp, W, X, np.zeros((6, 2)), gamma=0.1, eta=0.0)
    assert info["alpha"] == 0.0 and info["loss"] == 0.0
    for a, b in zip(new, W, strict=True):
        np.testing.assert_array_equal(a, b)


NATGRAD_CASES = [
    # (case, γ, error, fragment): γ is checked before anything is built from it
    ("γ = NaN", float("nan"), ConfigError, "γ (gamma"),
    ("γ = −1", -1.0, ConfigError, "γ (gamma"),
    ("γ = inf", float("inf"), ConfigError, "γ (gamma"),
    ("γ = '0.1'", "0.1", ConfigError, "γ (gamma"),
]


@pytest.mark.parametrize(
    ("gamma", "error", "fragment"),
    [c[1:] for c in NATGRAD_CASES],
    ids=[c[0] for c in NATGRAD_CASES],
)
def test_natgrad_step_names_a_bad_gamma(gamma, error, fragment):
    with pytest.raises(error) as info:
        natgrad_step(NET.mlp, NET.W, NET.X, NET.Y, gamma, 0.0)
    assert fragment in str(info.value) and "Ā" not in str(info.value)


F32 = get_backend("numpy", "float32")
W32 = NET.mlp.init_sparse(0, F32)

DTYPE_CASES = [
    # a float64 batch on float32 weights would run the step in float64 (NumPy's promotion)
    (
        "KFAC.step",
        lambda X, Y: KFAC(NET.mlp, KFACConfig(), F32).step(
            W32, KFAC(NET.mlp, KFACConfig(), F32).init_state(W32), X, Y, F32.rng(0)
        ),
    ),
    (
        "SGD step",
        lambda X, Y: SGDMomentum(NET.mlp, SGDConfig(), F32).step(
            W32, SGDMomentum(NET.mlp, SGDConfig(), F32).init_state(W32), X, Y
        ),
    ),
    ("natgrad_step", lambda X, Y: natgrad_step(NET.mlp, W32, X, Y, 0.1, 0.0)),
]


@pytest.mark.parametrize("step", [c[1] for c in DTYPE_CASES], ids=[c[0] for c in DTYPE_CASES])
def test_float64_data_on_float32_weights_is_refused_not_promoted(step):
    with pytest.raises(ConfigError, match="X has dtype float64 but the weights θ are float32"):
        step(NET.X, NET.Y.astype(np.float32))
    with pytest.raises(ConfigError, match="the targets Y has dtype float64"):
        step(NET.X.astype(np.float32), NET.Y)
    out = step(NET.X.astype(np.float32), NET.Y.astype(np.float32))  # the run's dtype: fine
    assert all(W.dtype == np.float32 for W in out[0])


def test_a_float32_run_given_float64_data_stays_float32(tmp_path, tiny_config, tiny_data):
    """run_experiment casts the data at its edge to the run's dtype."""
    assert tiny_data[0].dtype == np.float64
    run_experiment(tiny_config(dtype="float32"), tmp_path, data=tiny_data, progress=False)
    payload = checkpoint.load_checkpoint(tmp_path / checkpoint.CHECKPOINT_NAME)
    assert {W.dtype for W in payload["weights"]} == {np.dtype(np.float32)}
    stats = payload["opt_state"]["stats"]["A_diag"]
    assert {A.dtype for A in stats} == {np.dtype(np.float32)}
