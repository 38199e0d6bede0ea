"""Issue #11: every bad input and fault is named, no checkpoint runs code, no run is lost.

Table-driven: each row is one case of the issue (a failure, or a weak case), with the error
class expected and a fragment of its message. Cache damage is checked by rebuilding: the data
come back identical to a fresh build.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from test_mnist_data import TRAIN_IMAGES, files, flip_bit, mirror, pixels, truncate  # noqa: F401 (fixtures)

from kfac_ref.backend import get_backend
from kfac_ref.compare import compare_fisher
from kfac_ref.config import KFACConfig, SGDConfig
from kfac_ref.errors import (
    ConfigError,
    DataError,
    KFACError,
    NonFiniteError,
    ShapeError,
    TargetError,
)
from kfac_ref.experiments import RunConfig, data, io, run_experiment
from kfac_ref.experiments.cli import HelpFormatter, build_parser, run_script
from kfac_ref.experiments.cli import main as cli_main
from kfac_ref.experiments.sgd import SGDMomentum
from kfac_ref.fisher import approximate_fisher, exact_fisher, fisher_vector_product
from kfac_ref.mlp import MLP
from kfac_ref.optimizer import KFAC

BE = get_backend("numpy", "float64")
LAYERS = [16, 6, 3, 6, 16]


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


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    basis, codes = rng.random((3, 16)), rng.random((96, 3))
    X = 1.0 / (1.0 + np.exp(-4.0 * (codes @ basis - 0.75)))
    return X[:64], X[64:]


def tiny_config(**kw) -> RunConfig:
    base = dict(
        dataset="curves",
        method="kfac-blockdiag",
        iters=4,
        layers=LAYERS,
        m1=16,
        k_full=4,
        eval_every=2,
        checkpoint_every=2,
        dtype="float64",
        kfac={"T3": 2, "T2": 4},
    )
    return RunConfig(**{**base, **kw})


@pytest.fixture
def fake_curves(monkeypatch, tiny_data):
    """``load_dataset`` returns a small CURVES-like set (64 + 32 cases of 16 pixels) instead of
    generating the 30,000 images; every other line of the CLI runs as it does for real."""
    ds = data.Dataset("curves", tiny_data[0], tiny_data[1], origin="stand-in", label="tiny CURVES")
    monkeypatch.setattr(data, "load_dataset", lambda name, **kw: ds)
    return ds


class Evil:
    """A pickle whose loading creates a file: proof, if the file appears, that code ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


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


def test_training_loop_checks_the_data_once_not_every_step(tmp_path, tiny_data, monkeypatch):
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
def test_more_cases_than_the_set_has(tmp_path, fake_curves, field, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        run_experiment(tiny_config(**{field: value}), tmp_path, progress=False)


# ---------------------------------------------------------------------- 1. checkpoints
def test_crafted_pickle_checkpoint_runs_no_code(tmp_path, tiny_data):
    sentinel = tmp_path / "code_ran"
    (tmp_path / "checkpoint.pkl").write_bytes(pickle.dumps(Evil(sentinel)))
    with pytest.raises(ConfigError, match="has no checkpoint.npz"):
        run_experiment(tiny_config(), tmp_path, data=tiny_data, resume=True, progress=False)
    with pytest.raises(DataError, match="not an .npz archive"):
        io.load_checkpoint(tmp_path / "checkpoint.pkl")
    (tmp_path / "checkpoint.npz").write_bytes(pickle.dumps(Evil(sentinel)))  # a pickle in disguise
    with pytest.raises(DataError, match="not an .npz archive"):
        run_experiment(tiny_config(), tmp_path, data=tiny_data, resume=True, progress=False)
    assert not sentinel.exists()


def test_npz_with_a_pickled_member_runs_no_code(tmp_path):
    sentinel = tmp_path / "code_ran"
    meta = {
        "format": io.CHECKPOINT_FORMAT,
        "version": io.CHECKPOINT_VERSION,
        "arrays": {"a0": {"dtype": "|O", "shape": [1]}},
        "payload": {"x": {"__array__": "a0"}},
    }
    members = {
        io.META_MEMBER: np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "a0": np.array([Evil(sentinel)], dtype=object),
    }
    with open(tmp_path / "checkpoint.npz", "wb") as f:
        np.savez(f, **members)  # numpy pickles the object member
    with pytest.raises(DataError, match="Object arrays cannot be loaded when allow_pickle=False"):
        io.load_checkpoint(tmp_path / "checkpoint.npz")
    assert not sentinel.exists()


def _good_checkpoint(tmp_path: Path, tiny_data) -> Path:
    run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    return tmp_path / "checkpoint.npz"


def _rewrite(path: Path, change) -> None:
    """Rewrite the archive at ``path`` with ``change(members)`` applied (members by name)."""
    with np.load(path, allow_pickle=False) as z:
        members = {name: z[name] for name in z.files}
    change(members)
    with open(path, "wb") as f:
        np.savez(f, **members)


def _meta(members):
    return json.loads(members[io.META_MEMBER].tobytes())


def _set_meta(members, meta):
    members[io.META_MEMBER] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


def _shrink_first_array(m):
    m["a0"] = m["a0"][:1]


def _drop_meta(m):
    del m[io.META_MEMBER]


def _version_1(m):
    _set_meta(m, {**_meta(m), "version": 1})


def _transpose_weights(m):
    meta = _meta(m)
    name = meta["payload"]["weights"][0]["__array__"]
    m[name] = np.ascontiguousarray(m[name].T)
    meta["arrays"][name]["shape"] = list(m[name].shape)
    _set_meta(m, meta)


def _nan_weights(m):
    name = _meta(m)["payload"]["weights"][0]["__array__"]
    m[name] = np.full_like(m[name], np.nan)


def _other_k(m):
    meta = _meta(m)
    meta["payload"]["k"] = 3
    _set_meta(m, meta)


CHECKPOINT_CASES = [
    ("empty file", lambda p: p.write_bytes(b""), "not an .npz archive"),
    (
        "truncated",
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "corrupt or unreadable",
    ),
    ("member shape ≠ table", lambda p: _rewrite(p, _shrink_first_array), "its table says"),
    ("no __meta__", lambda p: _rewrite(p, _drop_meta), "no __meta__ member"),
    ("version 1", lambda p: _rewrite(p, _version_1), "has version 1"),
    ("weights of another network", lambda p: _rewrite(p, _transpose_weights), "weights[1]"),
    ("NaN weights", lambda p: _rewrite(p, _nan_weights), "NaN or infinite"),
    ("iteration and log disagree", lambda p: _rewrite(p, _other_k), "do not agree"),
]


@pytest.mark.parametrize(
    ("damage", "fragment"), [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES]
)
def test_damaged_checkpoint_is_refused_before_use(tmp_path, tiny_data, damage, fragment):
    path = _good_checkpoint(tmp_path, tiny_data)
    damage(path)
    with pytest.raises(DataError) as info:
        run_experiment(tiny_config(iters=6), tmp_path, data=tiny_data, resume=True, progress=False)
    assert fragment in str(info.value)


def test_resume_with_other_settings_names_the_fields(tmp_path, tiny_data):
    _good_checkpoint(tmp_path, tiny_data)
    with pytest.raises(ConfigError) as info:
        run_experiment(
            tiny_config(iters=6, seed=3, sgd_lr=0.1),
            tmp_path,
            data=tiny_data,
            resume=True,
            progress=False,
        )
    assert "seed: 0 → 3" in str(info.value) and "sgd_lr: 0.05 → 0.1" in str(info.value)
    # the fields that may change do not block a resume
    run_experiment(
        tiny_config(iters=6, eval_every=3, checkpoint_every=3, max_seconds=1e6),
        tmp_path,
        data=tiny_data,
        resume=True,
        progress=False,
    )


def test_checkpoint_meta_round_trips_json_state_exactly(tmp_path):
    rng_state = {
        "kind": "counter",
        "key": [2**63 - 1, 7],
        "counter": 12345678901234567890,
        "lanes": [[1, 2], [3]],
    }
    payload = {
        "rng": rng_state,
        "x": 0.1 + 0.2,
        "nan": float("nan"),
        "none": None,
        "flag": True,
        "arrays": [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(0)],
    }
    io.save_checkpoint(tmp_path / "c.npz", payload)
    back = io.load_checkpoint(tmp_path / "c.npz")
    assert back["rng"] == rng_state and back["x"] == 0.1 + 0.2 and np.isnan(back["nan"])
    assert back["none"] is None and back["flag"] is True
    np.testing.assert_array_equal(back["arrays"][0], payload["arrays"][0])
    assert back["arrays"][0].dtype == np.float32
    with pytest.raises(TypeError, match="neither an array nor JSON"):
        io.save_checkpoint(tmp_path / "d.npz", {"bad": object()})
    assert not (tmp_path / "d.npz").exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]


# ---------------------------------------------------------------------- 2. no run lost
RUN_DIR_CASES = [
    (
        "log and result, no checkpoint",
        ("log.jsonl", "result.json"),
        {},
        ConfigError,
        "already holds a run (log.jsonl, result.json)",
    ),
    ("config.json only", ("config.json",), {}, ConfigError, "already holds a run (config.json)"),
    ("--resume, nothing there", (), {"resume": True}, ConfigError, "has no checkpoint.npz"),
    (
        "--resume, log but no checkpoint",
        ("log.jsonl",),
        {"resume": True},
        ConfigError,
        "it holds log.jsonl but has no checkpoint.npz",
    ),
    (
        "--resume with a pickle only",
        ("checkpoint.pkl",),
        {"resume": True},
        ConfigError,
        "has no checkpoint.npz",
    ),
    (
        "--resume --overwrite",
        (),
        {"resume": True, "overwrite": True},
        ConfigError,
        "pass only one of them",
    ),
]


@pytest.mark.parametrize(
    ("files_", "kw", "error", "fragment"),
    [c[1:] for c in RUN_DIR_CASES],
    ids=[c[0] for c in RUN_DIR_CASES],
)
def test_earlier_run_is_never_overwritten(tmp_path, tiny_data, files_, kw, error, fragment):
    for name in files_:
        (tmp_path / name).write_text("earlier run\n")
    with pytest.raises(error) as info:
        run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False, **kw)
    assert fragment in str(info.value)
    for name in files_:
        assert (tmp_path / name).read_text() == "earlier run\n"


def test_overwrite_replaces_every_earlier_file(tmp_path, tiny_data):
    for name in ("log.jsonl", "result.json", "checkpoint.pkl"):
        (tmp_path / name).write_text("earlier run\n")
    run_experiment(tiny_config(), tmp_path, data=tiny_data, overwrite=True, progress=False)
    assert (tmp_path / "result.json").read_text() != "earlier run\n"
    assert (tmp_path / "checkpoint.pkl").read_text() == "earlier run\n"  # not a run file: kept
    assert io.read_jsonl(tmp_path / "log.jsonl")[-1]["iteration"] == 4


def test_uncreatable_or_read_only_run_dir_is_an_error_before_training(
    tmp_path, tiny_data, monkeypatch
):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot be written: Not a directory"):
        run_experiment(tiny_config(), tmp_path / "file" / "run", data=tiny_data, progress=False)

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)  # a read-only directory, even for root
    monkeypatch.setattr(
        KFAC, "step", lambda *a, **k: pytest.fail("trained into a read-only directory")
    )
    with pytest.raises(ConfigError, match="cannot be written: Permission denied"):
        run_experiment(tiny_config(), tmp_path / "ro", data=tiny_data, progress=False)


def test_write_failure_mid_run_is_a_data_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(DataError, match="cannot write .*No space left on device"):
        io.write_text_atomic(tmp_path / "log.jsonl", "x")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 4. the CLI, one line each
SMALL = [
    "train",
    "--layers",
    "16",
    "4",
    "16",
    "--n-train",
    "40",
    "--n-test",
    "8",
    "--m1",
    "20",
    "--k-full",
    "4",
    "--iters",
    "2",
    "--eval-every",
    "1",
    "--dtype",
    "float64",
    "--no-progress",
]

CLI_CASES = [
    ("--kfac foo=1", ["--kfac", "foo=1"], "unknown K-FAC option 'foo'"),
    ("--kfac lamda0=1 suggests lam0", ["--kfac", "lamda0=1"], "did you mean 'lam0'?"),
    ("--kfac without =", ["--kfac", "lam0"], "--kfac expects NAME=VALUE"),
    (
        "--kfac structure with --method",
        ["--kfac", "structure=block_diagonal"],
        "conflicts with --method",
    ),
    ("--n-train −1", ["--n-train", "-1"], "argument --n-train: expected an integer ≥ 1, got -1"),
    ("--n-train 0", ["--n-train", "0"], "argument --n-train: expected an integer ≥ 1, got 0"),
    ("--n-test −5", ["--n-test", "-5"], "argument --n-test: expected an integer ≥ 1"),
    ("--n-train over the set", ["--n-train", "65"], "asks for more than the 64 training cases"),
    ("--iters 0", ["--iters", "0"], "argument --iters"),
    (
        "--sgd-lr −1",
        ["--method", "sgd-momentum", "--sgd-lr", "-1"],
        "sgd_lr must be a number in (0",
    ),
    ("unknown option", ["--itres", "3"], "unrecognized arguments: --itres"),
    ("--resume without a checkpoint", ["--resume"], "has no checkpoint.npz"),
    ("--resume with --overwrite", ["--resume", "--overwrite"], "pass only one of them"),
]


def _cli(argv, capsys):
    try:
        status = cli_main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "fragment"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_mistakes_end_with_one_error_line(tmp_path, capsys, fake_curves, extra, fragment):
    status, err = _cli([*SMALL, *extra, "--out", str(tmp_path / "run")], capsys)
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err
    assert lines[-1].startswith("error: ") and fragment in lines[-1], err


def test_cli_compare_gamma_names_gamma(capsys):
    status, err = _cli(["compare", "--gamma", "-0.5"], capsys)
    assert status == 2 and err.strip() == (
        "error: γ (gamma, the factored Tikhonov damping of §6.3) must be a finite number ≥ 0, got -0.5"
    )


def test_cli_uncreatable_out_and_earlier_run(tmp_path, capsys, fake_curves):
    (tmp_path / "file").write_text("x")
    status, err = _cli([*SMALL, "--out", str(tmp_path / "file" / "run")], capsys)
    assert status == 2 and err.startswith("error: run directory") and "cannot be written" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("{}\n")
    status, err = _cli([*SMALL, "--out", str(run)], capsys)
    assert (
        status == 2
        and "already holds a run (log.jsonl)" in err
        and (run / "log.jsonl").read_text() == "{}\n"
    )
    assert _cli([*SMALL, "--out", str(run), "--overwrite"], capsys)[0] == 0
    status, err = _cli(
        [*SMALL, "--seed", "4", "--iters", "3", "--out", str(run), "--resume"], capsys
    )
    assert status == 2 and "seed: 0 → 4" in err


def test_cli_debug_shows_the_traceback(tmp_path, fake_curves):
    with pytest.raises(ConfigError, match="unknown K-FAC option"):
        cli_main([*SMALL, "--kfac", "foo=1", "--out", str(tmp_path / "run"), "--debug"])
    with pytest.raises(ConfigError):
        cli_main(["--debug", *SMALL, "--kfac", "foo=1", "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_option_states_its_default(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    formatter = HelpFormatter(command)
    for action in sub._actions:
        if action.dest == "help":
            continue
        text = formatter._get_help_string(action)
        assert text and "default" in text, (action.option_strings, text)


# ------------------------------------------------------------------- 4. the figure scripts
def _figure(name: str):
    folder = Path(__file__).resolve().parent.parent / "paper_figures"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(
            f"paper_figures_{name}_rel", folder / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


FIGURE_CASES = [
    ("fisher_blocks --cases 1", "fisher_blocks", ["--quick", "--cases", "1"], "need 2 ≤ --cases"),
    (
        "inverse_quality --weights missing",
        "inverse_quality",
        ["--weights", "{tmp}/nope.npz"],
        "file not found",
    ),
    ("inverse_quality --dpi 5", "inverse_quality", ["--dpi", "5"], "--dpi must be in"),
    (
        "inverse_quality --weights damaged",
        "inverse_quality",
        ["--weights", "{tmp}/file"],
        "not a readable .npz file",
    ),
    (
        "fisher_blocks unknown option",
        "fisher_blocks",
        ["--cases", "x"],
        "argument --cases: invalid int value",
    ),
    (
        "autoencoders --iters 0",
        "autoencoders",
        ["--quick", "--iters", "0"],
        "iters must be an integer ≥ 1",
    ),
    (
        "autoencoders --out under a file",
        "autoencoders",
        ["--out", "{tmp}/file/x"],
        "--out {tmp}/file/x cannot be written",
    ),
    (
        "fisher_blocks --out under a file",
        "fisher_blocks",
        ["--quick", "--out", "{tmp}/file/x"],
        "--out {tmp}/file/x cannot be written",
    ),
]


@pytest.mark.parametrize(
    ("script", "argv", "fragment"), [c[1:] for c in FIGURE_CASES], ids=[c[0] for c in FIGURE_CASES]
)
def test_figure_script_mistakes_end_with_one_error_line(tmp_path, capsys, script, argv, fragment):
    (tmp_path / "file").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    if script == "autoencoders":
        argv += ["--runs", str(tmp_path / "runs")]
    module = _figure(script)
    try:
        status = run_script(module.main, argv)
    except SystemExit as exc:
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert fragment.replace("{tmp}", str(tmp_path)) in err


@pytest.fixture
def fake_curves_784(monkeypatch):
    rng = np.random.default_rng(0)
    ds = data.Dataset(
        "curves",
        rng.random((64, 784)),
        rng.random((1000, 784)),
        origin="stand-in",
        label="tiny 784",
    )
    monkeypatch.setattr(data, "load_dataset", lambda name, **kw: ds)
    return ds


def test_figure_script_never_runs_or_replaces_a_foreign_run(tmp_path, capsys, fake_curves_784):
    fig = _figure("autoencoders")
    argv = [
        "--quick",
        "--iters",
        "2",
        "--n-train",
        "64",
        "--methods",
        "kfac-blockdiag",
        "--no-progress",
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "fig"),
    ]

    def iters(n: int) -> list[str]:
        return [*argv[:2], str(n), *argv[3:]]

    (cfg,) = fig.run_configs(fig.parse_args(argv), "curves", "kfac-blockdiag")
    run = fig.run_dir(fig.parse_args(argv), cfg)
    run.mkdir(parents=True)
    sentinel = tmp_path / "code_ran"
    (run / "checkpoint.pkl").write_bytes(pickle.dumps(Evil(sentinel)))
    (run / "log.jsonl").write_text(json.dumps({"iteration": 1, "data": "tiny 784"}) + "\n")
    assert run_script(fig.main, argv) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint.npz to continue from" in err and "--overwrite" in err
    assert not sentinel.exists() and (run / "checkpoint.pkl").exists()
    # --overwrite trains afresh in place, and says so
    assert run_script(fig.main, [*argv, "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"replacing {run}" in out and f"runs replaced: {run}" in out
    assert not sentinel.exists()
    # only --iters grew: resumed from the matching checkpoint
    assert run_script(fig.main, iters(3)) == 0
    assert f"runs resumed: {run}" in capsys.readouterr().out
    # a run of other settings is an error naming them, and is not replaced
    io.write_text_atomic(run / "config.json", json.dumps({**cfg.to_json(), "m1": 7}))
    (run / "result.json").unlink()
    assert run_script(fig.main, iters(4)) == 2
    assert "m1: 7 → 250" in capsys.readouterr().err
    # a finished matching run is reused, and listed
    assert run_script(fig.main, [*iters(4), "--overwrite"]) == 0
    capsys.readouterr()
    assert run_script(fig.main, iters(4)) == 0
    assert f"runs reused: {run}" in capsys.readouterr().out


# --------------------------------------------------------------------- 4. damaged caches
def _empty(blob: bytes) -> bytes:
    return b""


def _shapes(path: Path) -> None:
    data._save_npz_atomic(
        path, X_train=np.zeros((3, 784), np.float32), X_test=np.zeros((10, 784), np.float32)
    )


def _out_of_range(path: Path) -> None:
    d = data.build_curves(0, 30, 10)
    data._save_npz_atomic(
        path, X_train=2 + d.X_train.astype(np.float32), X_test=d.X_test.astype(np.float32)
    )


CACHE_CASES = [
    ("bit-flipped", lambda p: p.write_bytes(flip_bit(p.read_bytes())), "Bad CRC-32"),
    ("empty", lambda p: p.write_bytes(b""), "EOFError"),
    ("truncated", lambda p: p.write_bytes(truncate(p.read_bytes())), "unreadable"),
    ("wrong shapes", _shapes, "shapes (3, 784)"),
    ("pixels outside [0, 1]", _out_of_range, "outside [0, 1]"),
]


@pytest.mark.parametrize(
    ("damage", "fragment"), [c[1:] for c in CACHE_CASES], ids=[c[0] for c in CACHE_CASES]
)
def test_damaged_curves_cache_is_reported_and_rebuilt_identically(
    tmp_path, caplog, damage, fragment
):
    fresh = data.load_curves(tmp_path, n_train=30, n_test=10)
    cache = data._curves_cache_path(tmp_path, 0, 30, 10)
    damage(cache)
    with caplog.at_level(logging.WARNING, logger="kfac_ref.experiments.data"):
        again = data.load_curves(tmp_path, n_train=30, n_test=10)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "is damaged" in message and fragment in message and "rebuilding" in message
    np.testing.assert_array_equal(again.X_train, fresh.X_train)
    np.testing.assert_array_equal(again.X_test, fresh.X_test)
    np.testing.assert_array_equal(
        data.load_curves(tmp_path, n_train=30, n_test=10).X_train, fresh.X_train
    )


@pytest.mark.parametrize("damage", [flip_bit, truncate], ids=["bit-flip", "truncated"])
def test_damaged_mnist_file_is_reported_and_downloaded_again(
    damage,
    files,  # noqa: F811 (the fixture imported above)
    mirror,  # noqa: F811
    tmp_path,
    caplog,
):
    url, requests = mirror
    d = files.write(tmp_path / "d")
    (d / TRAIN_IMAGES).write_bytes(damage(files.gz[TRAIN_IMAGES]))
    with caplog.at_level(logging.WARNING, logger="kfac_ref.experiments.data"):
        ds = data.load_mnist(data_dir=d, mirrors=[url])
    assert requests == [TRAIN_IMAGES] and any("damaged" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(ds.X_train, pixels(files.arrays[TRAIN_IMAGES]))
    (d / TRAIN_IMAGES).write_bytes(damage(files.gz[TRAIN_IMAGES]))
    with pytest.raises(DataError, match="is damaged"):
        data.load_mnist(data_dir=d, download=False)


def test_every_error_is_a_kfac_error():
    for cls in (ConfigError, DataError, NonFiniteError, ShapeError, TargetError):
        assert issubclass(cls, KFACError)
    assert issubclass(TargetError, ValueError)
