"""Random numbers of a run: one counter-based generator on the device (Philox-4×32-10).

K-FAC draws its τ1/τ2 subsets and the targets sampled from the model (§5) on the array backend.
On NumPy a run keeps the generator it always had: a fresh ``numpy.random.default_rng`` per
iteration, seeded from (run seed, k), so NumPy results stay as they were. On CuPy creating a
generator allocates and seeds a block of device states, so a run instead makes **one**
:class:`Philox` generator and reuses it. Philox-4×32-10 (Salmon et al., SC 2011) is counter-based:
the i-th block of four 32-bit words is a fixed function of (key, counter + i), computed with
elementwise integer array operations, so

* its whole state is a 64-bit key and a 64-bit counter (a JSON-ready dict of 32-bit words,
  :meth:`Philox.state_dict`), which a checkpoint stores so a resumed run repeats exactly, and
* NumPy and CuPy draw the same bits, so the same run on both backends can be compared.

The generator offers the two methods the optimizer uses: ``random`` (uniform in [0, 1)) and
``standard_normal``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy

from .errors import ConfigError

PHILOX_NAME = "philox4x32-10"
_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox-4×32 multipliers (Salmon et al. 2011)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, √3 − 1)
_ROUNDS = 10


def philox_blocks(xp: Any, counters: tuple[Any, Any, Any, Any], key: tuple[int, int]) -> list[Any]:
    """Philox-4×32-10 of the counter words (c0, c1, c2, c3) under the key (k0, k1).

    The counter words are uint64 arrays holding 32-bit values; returns the four output words,
    same shape and type. Each round multiplies two words by M0, M1 (64-bit products split into
    high and low halves), mixes in the key, and the key advances by the Weyl constants.
    """
    c0, c1, c2, c3 = counters
    k0, k1 = key
    for r in range(_ROUNDS):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        p0 = c0 * _M0
        p1 = c2 * _M1
        hi0, lo0 = p0 >> 32, p0 & _MASK32
        hi1, lo1 = p1 >> 32, p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


def _words32(x: int) -> list[int]:
    return [x & _MASK32, x >> 32]


def _from_words32(words: Any) -> int:
    lo, hi = (int(w) for w in words)
    return (lo & _MASK32) | ((hi & _MASK32) << 32)


class Philox:
    """A Philox-4×32-10 generator on the array module ``xp`` (NumPy or CuPy).

    The i-th draw block uses the counter value ``counter + i`` (low and high 32 bits in words 0
    and 1, words 2 and 3 zero); each call advances ``counter`` by the blocks it used.
    """

    def __init__(self, xp: Any, key: int, counter: int = 0) -> None:
        self.xp = xp
        self.key = int(key) & _MASK64
        self.counter = int(counter) & _MASK64

    @classmethod
    def from_seed(cls, xp: Any, seed: int | None) -> Philox:
        """The generator whose 64-bit key is derived from ``seed`` by NumPy's SeedSequence."""
        words = numpy.random.SeedSequence(seed).generate_state(2, dtype=numpy.uint32)
        return cls(xp, int(words[0]) | (int(words[1]) << 32))

    def state_dict(self) -> dict[str, Any]:
        """{"bit_generator": "philox4x32-10", "key": [lo, hi], "counter": [lo, hi]}: 32-bit words,
        so any JSON reader (or an int64 array) holds them exactly."""
        return {
            "bit_generator": PHILOX_NAME,
            "key": _words32(self.key),
            "counter": _words32(self.counter),
        }

    @classmethod
    def from_state(cls, xp: Any, state: dict[str, Any]) -> Philox:
        """The generator saved by :meth:`state_dict`."""
        if state.get("bit_generator") != PHILOX_NAME:
            raise ConfigError(f"not a {PHILOX_NAME} generator state: {state!r}")
        return cls(xp, _from_words32(state["key"]), _from_words32(state["counter"]))

    def _words(self, n: int) -> Any:
        """The next ``n`` 32-bit words (uint64 array), advancing the counter."""
        xp = self.xp
        blocks = -(-n // 4)
        i = xp.arange(blocks, dtype=xp.uint64) + xp.uint64(self.counter)  # wraps modulo 2**64
        zero = xp.zeros_like(i)
        key = (self.key & _MASK32, self.key >> 32)
        out = philox_blocks(xp, (i & _MASK32, i >> 32, zero, zero), key)
        self.counter = (self.counter + blocks) & _MASK64
        return xp.stack(out, axis=1).reshape(-1)[:n]

    def random(self, size: int | tuple[int, ...] | None = None, dtype: Any = numpy.float64) -> Any:
        """Uniform numbers in [0, 1): 24 random bits each for float32, 53 for float64."""
        xp = self.xp
        shape = () if size is None else (size,) if isinstance(size, int) else tuple(size)
        n = math.prod(shape)
        if numpy.dtype(dtype) == numpy.float32:
            u = (self._words(n) >> 8).astype(xp.float32) * xp.float32(2.0**-24)
        elif numpy.dtype(dtype) == numpy.float64:
            w = self._words(2 * n).reshape(n, 2)
            bits = ((w[:, 0] >> 5) << 26) | (w[:, 1] >> 6)  # 27 + 26 = 53 bits
            u = bits.astype(xp.float64) * (2.0**-53)
        else:
            raise ConfigError(
                f"random numbers of dtype {numpy.dtype(dtype).name}: use float32 or float64"
            )
        return u.reshape(shape)

    def standard_normal(
        self, size: int | tuple[int, ...] | None = None, dtype: Any = numpy.float64
    ) -> Any:
        """N(0, 1) numbers by the Box–Muller transform of pairs of uniforms (float64 inside)."""
        xp = self.xp
        shape = () if size is None else (size,) if isinstance(size, int) else tuple(size)
        n = math.prod(shape)
        u = self.random(2 * n).reshape(2, n)
        z = xp.sqrt(-2.0 * xp.log1p(-u[0])) * xp.cos(2.0 * math.pi * u[1])
        return z.astype(dtype).reshape(shape)


class RunGenerator:
    """The random source of one run: the generator to pass to ``step`` at each iteration k.

    NumPy: ``numpy.random.default_rng(seed_of(seed, k))``, a new host generator per iteration
    (cheap, and what every NumPy result so far was computed with). CuPy (and any other device
    module): one :class:`Philox` generator for the whole run, whose state :meth:`state_dict`
    returns for checkpoints.
    """

    def __init__(self, xp: Any, seed: int, seed_of: Callable[[int, int], int]) -> None:
        self.xp, self.seed, self.seed_of = xp, int(seed), seed_of
        self.device = None if xp is numpy else Philox.from_seed(xp, seed)

    def for_iteration(self, k: int) -> Any:
        """The generator of iteration k (call once per iteration, in order)."""
        if self.device is None:
            return numpy.random.default_rng(self.seed_of(self.seed, k))
        return self.device

    def state_dict(self) -> dict[str, Any]:
        """A small flat JSON-ready dict (strings and ints): ``{"kind": "numpy-per-iteration",
        "seed"}``, or ``{"kind": "philox4x32-10", "seed", "key": [lo, hi], "counter": [lo,
        hi]}``."""
        if self.device is None:
            return {"kind": "numpy-per-iteration", "seed": self.seed}
        state = self.device.state_dict()
        return {"kind": state.pop("bit_generator"), "seed": self.seed, **state}

    def load_state_dict(self, d: dict[str, Any] | None) -> None:
        """Continue from :meth:`state_dict`'s output (a NumPy run needs none: it reseeds per k)."""
        if self.device is None:
            return
        if d is None or d.get("kind") != PHILOX_NAME:
            raise ConfigError(
                "the checkpoint holds no device generator state (written by a NumPy run or an "
                "older "
                "version), so a CuPy run cannot resume it exactly; resume it on NumPy or start "
                "afresh"
            )
        self.device = Philox.from_state(
            self.xp, {"bit_generator": d["kind"], "key": d["key"], "counter": d["counter"]}
        )
