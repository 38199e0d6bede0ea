"""Output of the matrix figures: progress lines, atomic PNG/PDF/JSON/NPZ files, the settings and
training facts each JSON starts with, the figure footer, and the plotting helpers.

Orchestration only: nothing here computes a number the figures report.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from _options import (
    MIDDLE_COUNT,
    MIDDLE_FIRST,
    Settings,
)

from kfac_ref.backend import to_numpy
from kfac_ref.experiments.io import atomic_path

if TYPE_CHECKING:
    from _networks import TrainedNet


# ---------------------------------------------------------------------------------- progress
class Stages:
    """One line per stage with the seconds since the start, flushed at once (stdout)."""

    def __init__(self, name: str, enabled_bars: bool = True) -> None:
        self.name, self.t0, self.bars = name, time.perf_counter(), enabled_bars

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, message: str) -> None:
        print(f"[{self.name} {self.elapsed:6.1f} s] {message}", flush=True)

    def bar(self, total: int, desc: str) -> Any:
        """A tqdm bar on stderr (hidden with ``--no-progress`` or when stderr is not a terminal)."""
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            desc=desc,
            disable=None if self.bars else True,
            leave=False,
            file=sys.stderr,
        )


# ------------------------------------------------------------------------------------ output
def save_figure(
    fig: Any, out: Path, stem: str, dpi: int = 200, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Save ``fig`` as ``out/stem.<format>`` for each format, atomically; close it."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in formats:
        path = out / f"{stem}.{ext}"
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


def save_json(path: Path, obj: dict[str, Any]) -> Path:
    """``obj`` as indented JSON (arrays as lists, NaN/inf as null), atomically."""
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n", encoding="utf-8")
    return path


def save_network(path: Path, net: TrainedNet) -> Path:
    """The weights W_1..W_ℓ, the widths, γ and the cases the matrices used, as ``.npz``."""
    arrays = {f"W_{i + 1}": to_numpy(W) for i, W in enumerate(net.weights)}
    arrays.update(
        layer_sizes=np.array(net.mlp.layer_sizes),
        gamma=np.array(net.gamma),
        X_cases=to_numpy(net.X_cases),
    )
    with atomic_path(path, suffix=path.suffix) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def run_summary(s: Settings, net: TrainedNet, gamma: float) -> dict[str, Any]:
    """Settings and training facts that every JSON output starts with."""
    return {
        "network": {
            "layer_sizes": list(net.mlp.layer_sizes),
            "hidden": "tanh",
            "output": "softmax",
            "layers_shown": [MIDDLE_FIRST + 1 + k for k in range(MIDDLE_COUNT)],
        },
        "data": {
            "label": net.data_label,
            "origin": net.data_origin,
            "source": net.data_source,
            "train_cases": int(net.X.shape[0]),
            "fisher_cases": int(net.X_cases.shape[0]),
        },
        "trainer": net.trainer,
        "train_iterations": net.iterations,
        "train_seconds": net.seconds,
        "train_error": net.train_error(),
        "history": net.history,
        "cases": int(net.X_cases.shape[0]),
        "train_cases": int(net.X.shape[0]),
        "gamma": gamma,
        "seed": s.seed,
        "init": s.init,
        "backend": s.backend,
        "quick": s.quick,
    }


def footer(net: TrainedNet) -> str:
    """One line for the bottom of every figure: data, number of cases, training."""
    trained = (
        f"{net.iterations} iterations of {net.trainer.split(' (')[0]}"
        if net.iterations
        else net.trainer
    )
    return (
        f"Data: {net.data_label}.  Network trained on {int(net.X.shape[0]):,} cases ({trained}; "
        f"training error {net.train_error():.1%}); matrices from the first "
        f"{int(net.X_cases.shape[0]):,} cases."
    )


# ---------------------------------------------------------------------------------- plotting
def use_agg() -> None:
    """Select the non-interactive Agg backend (scripts and tests draw to files only)."""
    import matplotlib

    matplotlib.use("Agg")


def grey_map() -> Any:
    """The grey colormap with zero / below-range entries black and above-range white."""
    import matplotlib

    return matplotlib.colormaps["gray"].with_extremes(bad="black", under="black", over="white")


def show_abs(
    ax: Any,
    M: np.ndarray,
    vmax: float,
    boundaries: Sequence[int],
    title: str,
    scale: str = "linear",
    decades: float = 4.0,
    colorbar: bool = True,
) -> Any:
    """|M| in grey levels with dashed block lines and (by default) a colour bar beside the panel.

    ``linear`` (the paper's): black = 0, white = ``vmax`` and above. ``log``: log10 |M| from
    ``vmax``·10^(−decades) (black, and everything smaller, exact zeros included) to ``vmax``.
    """
    from matplotlib.colors import LogNorm, Normalize

    A = np.abs(np.asarray(M))
    if scale == "log":
        norm = LogNorm(vmin=vmax * 10.0 ** (-decades), vmax=vmax, clip=False)
        A = np.ma.masked_less_equal(A, 0.0)
    else:
        norm = Normalize(vmin=0.0, vmax=vmax, clip=False)
    im = ax.imshow(A, cmap=grey_map(), norm=norm, interpolation="antialiased")
    for b in boundaries:
        ax.axhline(b - 0.5, color="tab:orange", linestyle="--", linewidth=0.6)
        ax.axvline(b - 0.5, color="tab:orange", linestyle="--", linewidth=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(
            im, ax=ax, fraction=0.046, pad=0.02, extend="max" if scale == "linear" else "both"
        )
    return im


def white_level(M: np.ndarray, quantile: float) -> float:
    """The value drawn white: a high quantile of |M| (positive even for an all-zero M)."""
    v = float(np.quantile(np.abs(M), quantile))
    return v if v > 0 else float(np.abs(M).max()) or 1.0
