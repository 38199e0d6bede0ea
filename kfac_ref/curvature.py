"""The interface every curvature structure implements (§4, §6.3): :class:`CurvatureInverse`.

A structure is one approximation of the Fisher F together with its damped inverse: the paper's
F̆ (§4.2) and F̂ (§4.3) in :mod:`kfac_ref.inverse`, and the dense comparisons F̃ (§3) and F
(§2.2) in :mod:`kfac_ref.full`, :mod:`kfac_ref.exact` (through
:mod:`kfac_ref.dense_structures`). The table of them is :mod:`kfac_ref.structures`; the
optimizer (§8) and the checkpoints (:mod:`kfac_ref.state`) see structures only through this
interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from .errors import ConfigError, NonFiniteError
from .linalg import Precision

#: the shape of each array a structure saves, by name (:meth:`CurvatureInverse.state_shapes`)
Shapes = dict[str, list[tuple[int, ...]]]


class CurvatureInverse:
    """A curvature structure: the damped inverse of one approximation of F (§4) and what it needs.

    A structure is one subclass plus one entry in :data:`kfac_ref.structures.STRUCTURES`. It
    says which statistics it is built from (:attr:`statistics`: fields of
    :class:`kfac_ref.statistics.FactorStats`), builds its damped inverse from them
    (:meth:`from_factors`, §6.3), applies it (:meth:`apply`), converts its dtype
    (:meth:`astype`), saves and loads itself (:meth:`state_dict`, :meth:`from_state_dict`,
    :meth:`state_shapes`) and gives its dense matrix for the comparison tools (:meth:`dense`).

    Damping options (``KFACConfig.pi``, ``KFACConfig.tikhonov``, §6.3): every structure damps
    with the trace-norm π_i and factored Tikhonov damping; :attr:`pi_choices` and
    :attr:`tikhonov_choices` list what else it implements, and only a choice other than those
    defaults is passed on to its :meth:`from_factors` (as ``pi=…``, ``tikhonov=…``).
    """

    name: ClassVar[str]  # the registry key, KFACConfig.structure
    method: ClassVar[str]  # the experiments' --method
    symbol: ClassVar[str]  # the paper's symbol
    label: ClassVar[str]  # for plots and tables
    matrix_name: ClassVar[
        str | None
    ]  # key of its dense matrix in comparisons (kfac_ref.compare); None: none from factors
    statistics: ClassVar[tuple[str, ...]]  # the FactorStats fields it is built from (§5)
    factored: ClassVar[bool] = True  # Kronecker-factored: scales to the paper's networks
    pi_choices: ClassVar[tuple[str, ...]] = ("trace",)  # π_i of the factored damping (§6.3)
    tikhonov_choices: ClassVar[tuple[str, ...]] = ("factored",)  # §6.3; "exact": eqn. 6

    @classmethod
    def check_damping(cls, pi: str = "trace", tikhonov: str = "factored") -> None:
        """:class:`ConfigError` unless this structure implements π_i = ``pi`` and Tikhonov
        damping ``tikhonov`` (§6.3), naming the structures that do."""
        from .structures import STRUCTURES  # the table imports this module

        for option, value, attr in (
            ("pi", pi, "pi_choices"),
            ("tikhonov", tikhonov, "tikhonov_choices"),
        ):
            if value not in getattr(cls, attr):
                able = [name for name, c in STRUCTURES.items() if value in getattr(c, attr)]
                raise ConfigError(
                    f"{option}={value!r} is not implemented for the {cls.label} structure "
                    f"({cls.name}); it is for: {', '.join(able) or 'none'}"
                )

    @classmethod
    def check_network(cls, mlp: Any, dtype: Any) -> None:
        """Refuse (:class:`~kfac_ref.errors.TooLargeError`) a network this structure cannot
        handle; the factored structures handle any."""

    @classmethod
    def from_stats(
        cls,
        stats: Any,
        gamma: float,
        linalg_dtype: Any = None,
        precision: Precision | None = None,
        pi: str = "trace",
        tikhonov: str = "factored",
    ) -> CurvatureInverse:
        """The damped inverse of the statistics with damping γ (§6.3), its factorizations in
        ``linalg_dtype`` (e.g. float64; None: the statistics' dtype), cast back to the
        statistics' dtype; ``precision``: redo untrustworthy ones in float64
        (:class:`Precision`, ``KFACConfig.linalg = "auto"``). ``pi``, ``tikhonov``: the damping
        options (:meth:`check_damping`; the defaults are the trace-norm π_i, factored damping)."""
        cls.check_damping(pi, tikhonov)
        missing = [name for name in cls.statistics if getattr(stats, name) is None]
        if missing:
            raise ConfigError(f"the {cls.label} inverse needs the statistics {', '.join(missing)}")
        options = {
            name: value
            for name, value, default in (("pi", pi, "trace"), ("tikhonov", tikhonov, "factored"))
            if value != default
        }
        dtype = stats.A_diag[0].dtype
        work = linalg_dtype or dtype
        inv = cls.from_factors(
            stats.astype(work) if work != dtype else stats, gamma, precision, **options
        )
        return inv.astype(dtype) if work != dtype else inv

    @classmethod
    def from_stats_gammas(
        cls,
        stats: Any,
        gammas: Sequence[float],
        linalg_dtype: Any = None,
        precision: Precision | None = None,
        pi: str = "trace",
        tikhonov: str = "factored",
    ) -> list[CurvatureInverse]:
        """:meth:`from_stats` for each γ (the candidates of §6.6), an error naming its γ; a
        structure may share work between them (F̆ with exact Tikhonov damping does)."""
        out = []
        for gamma in gammas:
            try:
                out.append(cls.from_stats(stats, gamma, linalg_dtype, precision, pi, tikhonov))
            except NonFiniteError as exc:
                raise NonFiniteError(f"γ = {gamma:.6g}: {exc}") from None
        return out

    @classmethod
    def from_factors(
        cls, stats: Any, gamma: float, precision: Precision | None = None
    ) -> CurvatureInverse:
        """The damped inverse of the statistics, in their dtype (§6.3); ``precision`` as in
        :meth:`from_stats` (structures that factorize nothing ignore it)."""
        raise NotImplementedError

    def apply(self, V: Sequence[Any]) -> list[Any]:
        """The inverse applied to v (list-of-matrices form, :mod:`kfac_ref.vec`)."""
        raise NotImplementedError

    def astype(self, dtype: Any) -> CurvatureInverse:
        raise NotImplementedError

    def state_dict(self) -> dict[str, list[Any]]:
        """Every array, on the host, by name (the checkpoint's ``inverse`` entry)."""
        raise NotImplementedError

    @classmethod
    def from_state_dict(cls, d: dict[str, Any], asarray: Callable[[Any], Any]) -> CurvatureInverse:
        """The inverse saved by :meth:`state_dict`, each array moved with ``asarray``."""
        raise NotImplementedError

    @classmethod
    def state_shapes(cls, sizes: Sequence[int]) -> Shapes:
        """The shape of each array of :meth:`state_dict` for layer widths d_0 … d_ℓ."""
        raise NotImplementedError

    @classmethod
    def dense(cls, factors: Any, gamma: float = 0.0) -> Any:
        """The dense (P, P) matrix this structure approximates F with (:mod:`kfac_ref.dense`)."""
        raise NotImplementedError
