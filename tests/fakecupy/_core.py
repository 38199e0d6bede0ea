"""The strict CuPy stand-in: device arrays backed by NumPy that behave like CuPy's refusals.

* ``ndarray`` holds a NumPy array but is not one: ``numpy.asarray``, ``__array__``, NumPy ufuncs
  and array functions, SciPy, and arithmetic with a host ``numpy.ndarray`` all raise TypeError,
  as CuPy does (CuPy itself would accept NumPy ufuncs through ``__array_ufunc__``; the stand-in
  refuses them too, since math code should call ``xp``).
* Every name of a stand-in module, and every array attribute, must be in ``cupy_api.json`` (the
  real package's names, from ``scripts/dump_cupy_api.py``); keyword arguments the real function
  does not take are refused. Reductions return 0-d device arrays, never host scalars.
* A failed ``cupy.linalg.cholesky`` returns a finite, wrong factor (CuPy reports failures only
  under ``cupyx.errstate(linalg="raise")``, which checks the device status: a sync).
* Every device→host transfer (``float``, ``int``, ``bool``, ``.item()``, ``.get()``,
  ``.tolist()``, ``cupy.asnumpy``, printing) is logged in :data:`SYNCS` with the file:line of
  the code outside the stand-in that caused it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import scipy.linalg
import scipy.special

HERE = Path(__file__).resolve().parent
API = json.loads((HERE / "cupy_api.json").read_text(encoding="utf-8"))
UFUNC_KEYWORDS = {"out", "dtype", "casting"}
REPO = HERE.parents[1]


# ------------------------------------------------------------------------- sync log
@dataclass
class SyncLog:
    """Device→host transfers: (kind, "file:line") in order, while :attr:`enabled`."""

    events: list[tuple[str, str]] = field(default_factory=list)
    enabled: bool = True

    def record(self, kind: str) -> None:
        if not self.enabled:
            return
        frame = sys._getframe(1)
        while frame is not None and _is_plumbing(frame.f_code.co_filename):
            frame = frame.f_back
        where = "?"
        if frame is not None:
            path = Path(frame.f_code.co_filename).resolve()
            try:
                path = path.relative_to(REPO)
            except ValueError:
                pass
            where = f"{path}:{frame.f_lineno}"
        self.events.append((kind, where))

    @property
    def count(self) -> int:
        return len(self.events)

    def clear(self) -> None:
        self.events.clear()

    def by_source(self) -> list[tuple[str, int]]:
        """("file:line (kind)", count), most frequent first."""
        return Counter(f"{w} ({k})" for k, w in self.events).most_common()

    @contextlib.contextmanager
    def counting(self) -> Iterator[SyncLog]:
        """Clear the log, count inside the block, leave the events for inspection."""
        self.clear()
        yield self


def _is_plumbing(filename: str) -> bool:
    """Frames skipped when naming a sync's cause: the stand-in itself and the backend's transfer
    helpers (``to_numpy``, ``HostBatch.fetch``), so the log names the code that asked."""
    path = Path(filename).resolve()
    return path.parent == HERE or path in {
        REPO / "kfac_ref" / "backend.py",
        REPO / "kfac_ref" / "host.py",
    }


SYNCS = SyncLog()
_LINALG_MODE = {"linalg": "ignore"}


# ------------------------------------------------------------------- host ↔ device
def _refuse_host(where: str, x: Any) -> None:
    raise TypeError(
        f"{where}: unsupported type numpy.ndarray (a host array where CuPy needs a device array; "
        "copy it with cupy.asarray, or bring the device array to the host with .get())"
    )


def to_host_args(where: str, x: Any) -> Any:
    """Arguments for the NumPy implementation: device arrays unwrapped, host arrays refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, numpy.ndarray):
        _refuse_host(where, x)
    if isinstance(x, (list, tuple)):
        return type(x)(to_host_args(where, v) for v in x)
    if isinstance(x, dict):
        return {k: to_host_args(where, v) for k, v in x.items()}
    return x


def to_device(x: Any) -> Any:
    """NumPy results as device arrays (scalars become 0-d arrays, as CuPy returns)."""
    if isinstance(x, numpy.ndarray):
        return ndarray(x)
    if isinstance(x, numpy.generic):
        return ndarray(numpy.asarray(x))
    if isinstance(x, tuple):
        return tuple(to_device(v) for v in x)
    if isinstance(x, list):
        return [to_device(v) for v in x]
    return x


def check_call(where: str, spec: dict[str, Any] | None, args: tuple, kwargs: dict) -> None:
    """Refuse what the real function would not accept: unknown keywords, too many positionals."""
    if spec is None:
        return
    if spec.get("kind") == "ufunc":
        bad = set(kwargs) - UFUNC_KEYWORDS
        if bad or len(args) > spec["nin"] + spec["nout"]:
            raise TypeError(
                f"{where}() got unexpected arguments {sorted(bad) or len(args)} (not in CuPy "
                f"{API['cupy_version']})"
            )
        return
    params = spec.get("params")
    if params is None:
        return
    if not spec.get("var_keyword"):
        bad = sorted(set(kwargs) - set(params))
        if bad:
            raise TypeError(
                f"{where}() got an unexpected keyword argument {bad[0]!r} (CuPy "
                f"{API['cupy_version']} takes {params})"
            )
    if not spec.get("var_positional") and len(args) > len(params):
        raise TypeError(
            f"{where}() takes {len(params)} positional arguments in CuPy but {len(args)} were given"
        )


def device_function(where: str, impl: Any, spec: dict[str, Any] | None) -> Any:
    """``impl`` (a NumPy/SciPy function) as a stand-in function on device arrays."""

    def call(*args: Any, **kwargs: Any) -> Any:
        check_call(where, spec, args, kwargs)
        with numpy.errstate(all="ignore"):  # CuPy kernels never warn about NaN or overflow
            return to_device(impl(*to_host_args(where, args), **to_host_args(where, kwargs)))

    call.__name__ = call.__qualname__ = where.rpartition(".")[2]
    call.__module__ = where.rpartition(".")[0]
    return call


# ------------------------------------------------------------------------ ndarray
def _operand(op: str, other: Any) -> Any:
    if isinstance(other, ndarray):
        return other._a
    if isinstance(other, numpy.ndarray):
        _refuse_host(f"cupy.ndarray {op}", other)
    if isinstance(other, (bool, int, float, complex, numpy.generic)):
        return other
    return NotImplemented


def _binary(name: str, reflected: bool = False) -> Any:
    np_op = getattr(numpy.ndarray, f"__r{name}__" if reflected else f"__{name}__")

    def op(self: ndarray, other: Any) -> Any:
        o = _operand(name, other)
        if o is NotImplemented:
            return NotImplemented
        with numpy.errstate(all="ignore"):
            return to_device(np_op(self._a, o))

    return op


def _inplace(name: str) -> Any:
    np_op = getattr(numpy.ndarray, f"__i{name}__")

    def op(self: ndarray, other: Any) -> Any:
        o = _operand(name, other)
        if o is NotImplemented:
            return NotImplemented
        with numpy.errstate(all="ignore"):
            np_op(self._a, o)
        return self

    return op


class ndarray:
    """A device array of the stand-in (NumPy storage, CuPy's rules)."""

    __array_ufunc__ = None  # NumPy ufuncs and binary operators defer to us, and we refuse
    __hash__ = None

    def __init__(self, a: numpy.ndarray) -> None:
        self._a = a

    # --- refusals
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed (CuPy stand-in). "
            "Use .get() or cupy.asnumpy() to copy the array to the host explicitly."
        )

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(
            f"numpy.{func.__name__} was called on a CuPy array; use the array module (xp) instead"
        )

    # --- device → host transfers (each one a synchronization)
    def get(
        self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True
    ) -> numpy.ndarray:
        SYNCS.record("get")
        return numpy.array(self._a, order=order)

    def item(self) -> Any:
        SYNCS.record("item")
        return self._a.item()

    def tolist(self) -> Any:
        SYNCS.record("tolist")
        return self._a.tolist()

    def __float__(self) -> float:
        SYNCS.record("float")
        return float(self._a)

    def __int__(self) -> int:
        SYNCS.record("int")
        return int(self._a)

    def __index__(self) -> int:
        SYNCS.record("index")
        return self._a.__index__()

    def __complex__(self) -> complex:
        SYNCS.record("complex")
        return complex(self._a)

    def __bool__(self) -> bool:
        SYNCS.record("bool")
        return bool(self._a)

    def __repr__(self) -> str:
        SYNCS.record("repr")
        return repr(self._a)

    def __str__(self) -> str:
        SYNCS.record("str")
        return str(self._a)

    def __format__(self, spec: str) -> str:
        SYNCS.record("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    # --- metadata (no transfer)
    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape

    @property
    def dtype(self) -> numpy.dtype:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def T(self) -> ndarray:
        return ndarray(self._a.T)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[ndarray]:
        for i in range(len(self._a)):
            yield ndarray(self._a[i])

    def __getitem__(self, key: Any) -> ndarray:
        return to_device(self._a[_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_index(key)] = to_host_args("cupy.ndarray.__setitem__", value)

    def __getattr__(self, name: str) -> Any:
        spec = API["classes"]["cupy.ndarray"].get(name)
        if spec is None or name.startswith("_"):
            raise AttributeError(
                f"'cupy.ndarray' object has no attribute {name!r} (not in CuPy "
                f"{API['cupy_version']})"
            )
        value = getattr(self._a, name)
        if callable(value):
            return device_function(f"cupy.ndarray.{name}", value, spec)
        return to_device(value)

    # --- arithmetic
    def __neg__(self) -> ndarray:
        return ndarray(-self._a)

    def __pos__(self) -> ndarray:
        return ndarray(+self._a)

    def __abs__(self) -> ndarray:
        return ndarray(abs(self._a))

    def __invert__(self) -> ndarray:
        return ndarray(~self._a)


def _index(key: Any) -> Any:
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(k._a if isinstance(k, ndarray) else k for k in key)
    return key


for _name in (
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "matmul",
    "and",
    "or",
    "xor",
    "lshift",
    "rshift",
):
    setattr(ndarray, f"__{_name}__", _binary(_name))
    setattr(ndarray, f"__r{_name}__", _binary(_name, reflected=True))
    if _name != "matmul":
        setattr(ndarray, f"__i{_name}__", _inplace(_name))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(_name))
ndarray.__module__ = "cupy"


# ------------------------------------------------------------------- special functions
def asarray(
    a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None, blocking: bool = False
) -> ndarray:
    """Host data (or a device array) as a device array: an explicit host→device copy."""
    if isinstance(a, ndarray):
        return ndarray(a._a.astype(dtype, copy=False) if dtype is not None else a._a)
    return ndarray(numpy.array(a, dtype=dtype, order=order or "K", copy=True))


def array(
    obj: Any,
    dtype: Any = None,
    copy: bool = True,
    order: str = "K",
    subok: bool = False,
    ndmin: int = 0,
    *,
    blocking: bool = False,
) -> ndarray:
    src = obj._a if isinstance(obj, ndarray) else obj
    return ndarray(numpy.array(src, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(
    a: Any, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True
) -> numpy.ndarray:
    if isinstance(a, ndarray):
        return a.get(order=order)
    return numpy.asarray(a, order=order)


def get_array_module(*args: Any) -> types.ModuleType:
    for a in args:
        if isinstance(a, ndarray):
            return sys.modules["cupy"]
    return numpy


def _linalg_failed(where: str) -> None:
    if _LINALG_MODE["linalg"] == "raise":
        raise numpy.linalg.LinAlgError(
            f"Error reported by {where} in cuSOLVER. devInfo = 1. Please refer to the cuSOLVER "
            "documentation."
        )


def _check_status() -> None:
    """Under errstate(linalg="raise") CuPy reads the solver's status from the device."""
    if _LINALG_MODE["linalg"] == "raise":
        SYNCS.record("linalg status")


def cholesky(a: ndarray) -> ndarray:
    """cuSOLVER potrf: without errstate(linalg="raise") a failure gives a finite, wrong factor."""
    check_call("cupy.linalg.cholesky", API["modules"]["cupy.linalg"]["cholesky"], (a,), {})
    A = to_host_args("cupy.linalg.cholesky", a)
    _check_status()
    try:
        return ndarray(numpy.linalg.cholesky(A))
    except numpy.linalg.LinAlgError:
        _linalg_failed("potrf")
        garbage = numpy.tril(numpy.nan_to_num(A, nan=1.0, posinf=1.0, neginf=-1.0))
        return ndarray(garbage + numpy.eye(A.shape[-1], dtype=A.dtype))


def _nan_on_failure(name: str, impl: Any) -> Any:
    spec = API["modules"]["cupy.linalg"][name]

    def call(*args: Any, **kwargs: Any) -> Any:
        check_call(f"cupy.linalg.{name}", spec, args, kwargs)
        host = to_host_args(f"cupy.linalg.{name}", args)
        _check_status()
        try:
            return to_device(impl(*host, **kwargs))
        except numpy.linalg.LinAlgError:
            _linalg_failed(name)
            shaped = impl(
                *(
                    numpy.eye(h.shape[-1], dtype=h.dtype)
                    if isinstance(h, numpy.ndarray) and h.ndim == 2
                    else h
                    for h in host
                ),
                **kwargs,
            )
            return to_device(_fill_nan(shaped))

    return call


def _fill_nan(x: Any) -> Any:
    if isinstance(x, tuple):
        return tuple(_fill_nan(v) for v in x)
    return numpy.full_like(x, numpy.nan)


def solve_triangular(
    a: Any,
    b: Any,
    trans: int = 0,
    lower: bool = False,
    unit_diagonal: bool = False,
    overwrite_b: bool = False,
    check_finite: bool = False,
) -> ndarray:
    A, B = to_host_args("cupyx.scipy.linalg.solve_triangular", (a, b))
    with numpy.errstate(all="ignore"):
        try:
            return ndarray(
                scipy.linalg.solve_triangular(
                    A, B, trans=trans, lower=lower, unit_diagonal=unit_diagonal, check_finite=False
                )
            )
        except numpy.linalg.LinAlgError:  # cuBLAS trsm does not check: a zero pivot gives inf/NaN
            return ndarray(
                numpy.full(
                    numpy.broadcast_shapes(B.shape), numpy.nan, dtype=numpy.result_type(A, B)
                )
            )


@contextlib.contextmanager
def errstate(
    *,
    divide: Any = None,
    over: Any = None,
    under: Any = None,
    invalid: Any = None,
    linalg: Any = None,
) -> Iterator[None]:
    old = dict(_LINALG_MODE)
    if linalg is not None:
        _LINALG_MODE["linalg"] = linalg
    try:
        with numpy.errstate(
            **{
                k: v
                for k, v in dict(divide=divide, over=over, under=under, invalid=invalid).items()
                if v
            }
        ):
            yield
    finally:
        _LINALG_MODE.update(old)


def geterr() -> dict[str, Any]:
    return {**numpy.geterr(), **_LINALG_MODE}


class Generator:
    """cupy.random.Generator: NumPy's generator producing device arrays."""

    def __init__(self, bit_generator: Any) -> None:
        self._g = numpy.random.Generator(bit_generator)

    def __getattr__(self, name: str) -> Any:
        spec = API["classes"]["cupy.random.Generator"].get(name)
        if spec is None or name.startswith("_"):
            raise AttributeError(f"'cupy.random.Generator' object has no attribute {name!r}")
        return device_function(f"cupy.random.Generator.{name}", getattr(self._g, name), spec)


Generator.__module__ = "cupy.random._generator_api"


def default_rng(seed: Any = None) -> Generator:
    return Generator(numpy.random.PCG64(seed))


class Device:
    def __init__(self, device: int | None = None) -> None:
        self.id = 0 if device is None else int(device)

    def synchronize(self) -> None:
        """Waits for the device; no data comes back, so it is not logged as a transfer."""

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


Device.__module__ = "cupy.cuda.device"


def getDeviceCount() -> int:
    return 1


# ------------------------------------------------------------------------- modules
class StandInModule(types.ModuleType):
    """A module that resolves only the names the real CuPy module has (``cupy_api.json``)."""

    def __init__(
        self, name: str, fallback: Any, specials: dict[str, Any], children: dict[str, Any]
    ) -> None:
        super().__init__(name, f"CuPy stand-in for {name} (tests/fakecupy)")
        self.__file__ = __file__
        self._names = API["modules"][name]
        self._fallback, self._specials = fallback, specials
        for child_name, child in children.items():
            setattr(self, child_name, child)

    def __dir__(self) -> list[str]:
        return sorted(self._names)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        spec = self._names.get(attr)
        if spec is None:
            raise AttributeError(
                f"module {self.__name__!r} has no attribute {attr!r} (not in CuPy "
                f"{API['cupy_version']})"
            )
        if attr in self._specials:
            value = self._specials[attr]
        else:
            impl = getattr(self._fallback, attr, None) if self._fallback is not None else None
            if impl is None:
                raise NotImplementedError(
                    f"{self.__name__}.{attr} exists in CuPy but the stand-in does not implement it"
                )
            kind = spec["kind"]
            value = (
                device_function(f"{self.__name__}.{attr}", impl, spec)
                if kind in ("function", "ufunc")
                else impl
            )
        setattr(self, attr, value)
        return value


def build_modules() -> dict[str, types.ModuleType]:
    """The stand-in's modules, by import name."""
    runtime = StandInModule("cupy.cuda.runtime", None, {"getDeviceCount": getDeviceCount}, {})
    cuda = StandInModule("cupy.cuda", None, {"Device": Device}, {"runtime": runtime})
    linalg_specials = {
        "cholesky": cholesky,
        **{n: _nan_on_failure(n, getattr(numpy.linalg, n)) for n in ("eigh", "inv", "solve")},
    }
    linalg = StandInModule("cupy.linalg", numpy.linalg, linalg_specials, {})
    random = StandInModule(
        "cupy.random", None, {"default_rng": default_rng, "Generator": Generator}, {}
    )
    cupy = StandInModule(
        "cupy",
        numpy,
        {
            "ndarray": ndarray,
            "asarray": asarray,
            "array": array,
            "asnumpy": asnumpy,
            "get_array_module": get_array_module,
        },
        {"cuda": cuda, "linalg": linalg, "random": random},
    )
    cupy.__version__ = API["cupy_version"]
    sla = StandInModule(
        "cupyx.scipy.linalg", scipy.linalg, {"solve_triangular": solve_triangular}, {}
    )
    special = StandInModule("cupyx.scipy.special", scipy.special, {}, {})
    cx_scipy = StandInModule("cupyx.scipy", None, {}, {"linalg": sla, "special": special})
    cupyx = StandInModule(
        "cupyx", None, {"errstate": errstate, "geterr": geterr}, {"scipy": cx_scipy}
    )
    mods = {
        "cupy": cupy,
        "cupy.cuda": cuda,
        "cupy.cuda.runtime": runtime,
        "cupy.linalg": linalg,
        "cupy.random": random,
        "cupyx": cupyx,
        "cupyx.scipy": cx_scipy,
        "cupyx.scipy.linalg": sla,
        "cupyx.scipy.special": special,
    }
    for m in mods.values():
        m.__path__ = []  # a package, so ``import cupyx.scipy.linalg`` resolves through sys.modules
    return mods


MODULES = build_modules()
_saved: list[dict[str, Any]] = []


def install() -> None:
    """Put the stand-in in ``sys.modules`` as cupy/cupyx (nestable; real CuPy is set aside)."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("cupy", "cupyx")}
    for k in saved:
        del sys.modules[k]
    sys.modules.update(MODULES)
    _saved.append(saved)


def uninstall() -> None:
    """Undo the last :func:`install`."""
    for k in MODULES:
        sys.modules.pop(k, None)
    sys.modules.update(_saved.pop())


@contextlib.contextmanager
def installed() -> Iterator[types.ModuleType]:
    install()
    try:
        yield MODULES["cupy"]
    finally:
        uninstall()


def is_stand_in(module: Any) -> bool:
    return isinstance(module, StandInModule)
