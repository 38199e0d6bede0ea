"""Schedules of §13 and the SGD-with-Nesterov-momentum baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kfac_ref import MLP, get_backend
from kfac_ref.config import SGDConfig
from kfac_ref.errors import ConfigError, NonFiniteError
from kfac_ref.experiments.schedules import (
    average_decay,
    iterate_average,
    minibatch_size,
    sutskever_momentum,
)
from kfac_ref.experiments.sgd import SGDMomentum

BE = get_backend("numpy", "float64")


# ------------------------------------------------------------------------ mini-batch size
@pytest.mark.parametrize("m1, n", [(1000, 60000), (1000, 20000), (1000, 103500), (250, 777)])
def test_minibatch_schedule_endpoints_and_monotone(m1, n):
    sizes = [minibatch_size(k, m1, n) for k in range(1, 601)]
    assert sizes[0] == m1 and sizes[499] == n and sizes[-1] == n
    assert all(a <= b for a, b in zip(sizes, sizes[1:], strict=False))
    assert max(sizes[:499]) < n  # reached exactly at k = 500


def test_minibatch_schedule_is_the_codes_exponential_floored():
    # [code]: div = (500 − 1)/log2(60000/1000); m_k = floor(2^((k−1)/div) · 1000)
    div = 499 / math.log2(60)
    for k in (2, 100, 250, 499):
        assert minibatch_size(k, 1000, 60000) == math.floor(2 ** ((k - 1) / div) * 1000)
    assert minibatch_size(250, 1000, 60000) == 7714  # ⌊1000 · 60^(249/499)⌋ = ⌊7714.4⌋
    assert minibatch_size(7, 5000, 3000) == 3000  # m1 ≥ |S|: the whole set
    assert minibatch_size(10, 16, 64, k_full=8) == 64
    with pytest.raises(ConfigError):
        minibatch_size(0, 1000, 60000)


# -------------------------------------------------------------------------- momentum
def test_sutskever_momentum_schedule():
    assert [sutskever_momentum(t, 0.999) for t in (0, 249, 250, 499, 500, 750)] == [
        0.5,
        0.5,
        0.75,
        0.75,
        pytest.approx(5 / 6),
        pytest.approx(0.875),
    ]
    assert sutskever_momentum(10**6, 0.99) == 0.99
    assert sutskever_momentum(2250, 0.999) == pytest.approx(1 - 1 / 20)  # ⌊t/250⌋ + 1 = 10


# ------------------------------------------------------------------- iterate averaging
def test_iterate_average_tracks_then_averages():
    W = [np.array([1.0, 2.0])]
    avg = [np.array([9.0, 9.0])]
    out = iterate_average(avg, W, k=10, start=200)
    np.testing.assert_array_equal(out[0], W[0])
    assert out[0] is not W[0]
    assert average_decay(200) == 0.0 and average_decay(201) == 0.5 and average_decay(10**5) == 0.99
    avg = [np.zeros(2)]
    for k, v in enumerate([2.0, 4.0, 6.0], start=200):  # plain mean from `start` on
        avg = iterate_average(avg, [np.full(2, v)], k, start=200)
    np.testing.assert_allclose(avg[0], [4.0, 4.0])


# ------------------------------------------------------------------------------- SGD
@pytest.fixture(scope="module")
def net():
    mlp = MLP([6, 4, 6], ["logistic"], "bernoulli")
    W = mlp.init_gaussian(seed=0)
    X = np.random.default_rng(0).random((10, 6))
    return mlp, W, X


def grad(mlp, W, X, eta):
    return mlp.loss_and_grad(W, X, X, eta)[1]


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_steps_match_the_momentum_formulas(net, nesterov):
    mlp, W0, X = net
    cfg = SGDConfig(lr=0.1, mu_max=0.99, eta=1e-3, nesterov=nesterov)
    opt = SGDMomentum(mlp, cfg, BE)
    st = opt.init_state(W0)
    W, v = W0, [np.zeros_like(w) for w in W0]
    for k in range(1, 4):
        mu = sutskever_momentum(k, 0.99)
        at = [w + mu * u for w, u in zip(W, v, strict=True)] if nesterov else W
        v = [mu * u - 0.1 * g for u, g in zip(v, grad(mlp, at, X, 1e-3), strict=True)]
        W_ref = [w + u for w, u in zip(W, v, strict=True)]
        W, st, info = opt.step(W, st, X, X, None)
        for a, b in zip(W, W_ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-14)
        assert (info["k"], info["mu"], info["lr"], info["batch_size"]) == (k, 0.5, 0.1, 10)


def test_sgd_constant_momentum_and_state_round_trip(net):
    mlp, W0, X = net
    opt = SGDMomentum(mlp, SGDConfig(lr=0.05, mu_max=0.9, momentum_schedule="constant"), BE)
    W, st = W0, opt.init_state(W0)
    for _ in range(3):
        W, st, info = opt.step(W, st, X, X)
    assert info["mu"] == 0.9
    W_a, st_a, _ = opt.step(W, st, X, X)
    fresh = SGDMomentum(mlp, opt.config, BE)
    W_b, st_b, _ = fresh.step(W, fresh.load_state_dict(opt.state_dict(st)), X, X)
    for a, b in zip(W_a + st_a.velocity, W_b + st_b.velocity, strict=True):
        np.testing.assert_array_equal(a, b)
    assert st_b.k == 4


def test_sgd_nan_raises_naming_the_iteration(net):
    mlp, W, X = net
    opt = SGDMomentum(mlp, SGDConfig(), BE)
    Y = X.copy()
    Y[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="iteration 1"):
        opt.step(W, opt.init_state(W), X, Y)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(lr=0.0), "lr"),
        (dict(mu_max=1.0), "mu_max"),
        (dict(momentum_schedule="x"), "momentum_schedule"),
    ],
)
def test_sgd_config_validation(kw, field):
    with pytest.raises(ConfigError, match=field):
        SGDConfig(**kw)
