"""Figures 5 and 6 of the paper: how well the block-diagonal F̆ (§4.2) and the
block-tridiagonal-inverse F̂ (§4.3) approximate F̃, and how well their inverses approximate F̃⁻¹,
on the middle four layers of the Figure 2 network (256-20-20-20-20-20-10 tanh, 16×16 MNIST).

Run (on the build machines, where only the MNIST test split is on disk)::

    python paper_figures/inverse_quality.py --data-dir ../shared/data/mnist-t10k
    python paper_figures/inverse_quality.py --data-dir ../shared/data/mnist-t10k \
        --weights figures_out/fisher_blocks_weights.npz --out figures_out/fig56

Writes to ``--out`` (default ``figures_out/``): ``fig5_approximations_of_ftilde.{png,pdf}``,
``fig6_approximate_inverses.{png,pdf}``, ``inverse_quality.json`` (every number plotted or
quoted, per block too, the data used and the training history) and
``inverse_quality_weights.npz``. ``--weights .../fisher_blocks_weights.npz`` reuses the network
(and cases) of ``fisher_blocks.py``; without it the same network is trained again (same seed and
options give the same weights).

What the paper shows (arXiv:1503.05671, long version: Fig. 4 is the graphical-model
diagram, Fig. 5 compares F̆ and F̂ with F̃, Fig. 6 compares F̆⁻¹ and F̂⁻¹ with F̃⁻¹). Checked through
a third-party reading of the paper: on the example network F̂ approximates even the
off-tridiagonal blocks of F̃ very well; F̆⁻¹ is a reasonably good approximation of F̃⁻¹ although
F̆ is a rather poor approximation of F̃; and F̂⁻¹ is a markedly better approximation of F̃⁻¹ than
F̆⁻¹, even on the diagonal blocks. Recalled from the captions (not retrievable with the search
tools): both figures use the Figure 2 network (middle 4 layers), two rows (top F̆, bottom F̂) of
three panels (left the reference F̃ or F̃⁻¹, middle the approximation, right the absolute
difference), |entries| on a grey scale linear up to one white level shared by all panels of a
figure; the inverses of Figure 6 use factored Tikhonov damping at the γ K-FAC used at that
iteration; in Figure 5 the diagonal blocks of |F̃ − F̆| and the tridiagonal blocks of |F̃ − F̂|
are exactly zero by construction, and F̂'s off-tridiagonal errors are non-zero but hard to see.

What this script matches: that layout, |entries|, dashed lines at the layer boundaries, one
white level per figure (the ``--vmax-quantile`` quantile of |F̃| resp. |F̃⁻¹|), the damping of
the inverses at K-FAC's γ. One deliberate difference: the grey scale is **logarithmic** by
default (``--scale log``: log10 |entry| over ``--decades`` powers of ten below the white level,
shared by the six panels of a figure, exact zeros black), because on the paper's linear scale
the difference panels are nearly black and the point of the figures shows only in the numbers;
``--scale linear`` gives the paper's scale. Added: a colour bar on every panel, the relative
Frobenius errors in the panel titles (vs F̃, resp. F̃⁻¹, and for the inverses also vs the exact
F⁻¹ of F + the same damping), and a footer line naming the data and the training. The matrices
are those of the 1680 parameters of W_2..W_5 on ``--cases`` training cases (see ``_matrices.py``;
F̆, F̂ via ``kfac_ref.compare.dense_F_tilde`` / ``dense_F_hat``, inverses via
``kfac_ref.linalg.spd_inverse``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _matrices as matrices
import _networks as networks
import _options as options
import _output as output
import numpy as np

from kfac_ref.backend import to_numpy
from kfac_ref.compare import block_relative_errors, relative_error
from kfac_ref.experiments.exit_status import run_script
from kfac_ref.linalg import spd_inverse

FIG5, FIG6 = "fig5_approximations_of_ftilde", "fig6_approximate_inverses"
JSON_NAME, WEIGHTS_NAME = "inverse_quality.json", "inverse_quality_weights.npz"
SYMBOL = {"F_breve": "F̆", "F_hat": "F̂", "F_tilde": "F̃", "F": "F"}


def comparison_numbers(
    mats: dict[str, np.ndarray], shapes: list, reference: str, exact: str
) -> dict[str, Any]:
    """Relative errors of F̆ and F̂ (or their inverses) vs the reference and vs the exact matrix."""
    out: dict[str, Any] = {}
    for name in ("F_breve", "F_hat"):
        out[name] = {
            f"vs_{reference}": relative_error(mats[name], mats[reference]),
            f"vs_{exact}": relative_error(mats[name], mats[exact]),
            f"block_errors_vs_{reference}": block_relative_errors(
                mats[name], mats[reference], shapes
            ),
        }
    out[reference] = {f"vs_{exact}": relative_error(mats[reference], mats[exact])}
    return out


def draw_comparison(
    mats: dict[str, np.ndarray],
    nums: dict[str, Any],
    boundaries: Sequence[int],
    vmax: float,
    inverse: bool,
    title: str,
    s: options.Settings,
    net: networks.TrainedNet,
) -> Any:
    """Two rows (F̆, F̂) of |reference|, |approximation|, |approximation − reference|, one grey
    scale (``s.scale``) shared by the six panels, a colour bar on each."""
    import matplotlib.pyplot as plt

    sup = "⁻¹" if inverse else ""
    ref_key = "F_tilde"
    fig, axes = plt.subplots(2, 3, figsize=(14, 9.4), layout="constrained")
    for row, name in enumerate(("F_breve", "F_hat")):
        a, r = SYMBOL[name] + sup, "F̃" + sup
        e = nums[name]
        extra = f"\n‖{a} − F{sup}‖/‖F{sup}‖ = {e['vs_F']:.3f}" if inverse else ""
        output.show_abs(axes[row, 0], mats[ref_key], vmax, boundaries, f"|{r}|", s.scale, s.decades)
        output.show_abs(axes[row, 1], mats[name], vmax, boundaries, f"|{a}|", s.scale, s.decades)
        output.show_abs(
            axes[row, 2],
            mats[name] - mats[ref_key],
            vmax,
            boundaries,
            f"|{a} − {r}|,  ‖{a} − {r}‖/‖{r}‖ = {e['vs_F_tilde']:.3f}{extra}",
            s.scale,
            s.decades,
        )
    how = (
        f"log10 |entry|, {s.decades:g} decades below a shared white level"
        if s.scale == "log"
        else "|entry|, linear up to a shared white level"
    )
    fig.suptitle(f"{title}\n({how})", fontsize=10)
    fig.supxlabel(output.footer(net), fontsize=8)
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train (or load) the network, compute F, F̃, F̆, F̂ and inverses, draw Figures 5–6."""
    figure_files = [f"{stem}.{ext}" for stem in (FIG5, FIG6) for ext in ("png", "pdf")]
    s, net, gamma, stages = networks.prepare(
        __doc__,
        argv,
        "inverse_quality",
        [*figure_files, JSON_NAME, WEIGHTS_NAME],
        default_scale="log",
    )
    M = matrices.middle_matrices(net, gamma, stages=stages)
    stages(f"inverses: F̃⁻¹, F̆⁻¹, F̂⁻¹ and F⁻¹ with factored Tikhonov damping γ = {gamma:.3g}")
    inverses = {name: to_numpy(spd_inverse(mat, name)) for name, mat in M.damped.items()}
    nums5 = comparison_numbers(M.undamped, M.shapes, "F_tilde", "F")
    nums6 = comparison_numbers(inverses, M.shapes, "F_tilde", "F")
    v5 = output.white_level(M.undamped["F_tilde"], s.vmax_quantile)
    v6 = output.white_level(inverses["F_tilde"], s.vmax_quantile)
    stages(f"figures: drawing Figures 5 and 6 ({', '.join(s.formats)}) into {s.out}/")
    fig5 = draw_comparison(
        M.undamped,
        nums5,
        M.boundaries,
        v5,
        False,
        "Figure 5: F̃ vs its block-diagonal F̆ (top) and block-tridiagonal-inverse F̂ "
        "(bottom) approximations, middle 4 layers (undamped)",
        s,
        net,
    )
    fig6 = draw_comparison(
        inverses,
        nums6,
        M.boundaries,
        v6,
        True,
        f"Figure 6: F̃⁻¹ vs F̆⁻¹ (top) and F̂⁻¹ (bottom), factored Tikhonov damping "
        f"γ = {gamma:.3g} (K-FAC's), middle 4 layers",
        s,
        net,
    )
    files = output.save_figure(fig5, s.out, FIG5, s.dpi, s.formats)
    files += output.save_figure(fig6, s.out, FIG6, s.dpi, s.formats)
    files.append(output.save_network(s.out / WEIGHTS_NAME, net))
    result = {
        **output.run_summary(s, net, gamma),
        "figure5": {**nums5, "white_level": v5, "scale": s.scale, "decades": s.decades},
        "figure6": {**nums6, "white_level": v6, "scale": s.scale, "decades": s.decades},
        "files": [f.name for f in files],
        "seconds": stages.elapsed,
    }
    output.save_json(s.out / JSON_NAME, result)
    stages(
        f"done: vs F̃: ‖F̆−F̃‖ {nums5['F_breve']['vs_F_tilde']:.4f}, ‖F̂−F̃‖ "
        f"{nums5['F_hat']['vs_F_tilde']:.4f}; vs F̃⁻¹: F̆⁻¹ {nums6['F_breve']['vs_F_tilde']:.4f}, "
        f"F̂⁻¹ {nums6['F_hat']['vs_F_tilde']:.4f}; vs F⁻¹: F̆⁻¹ {nums6['F_breve']['vs_F']:.4f}, "
        f"F̂⁻¹ {nums6['F_hat']['vs_F']:.4f}, F̃⁻¹ {nums6['F_tilde']['vs_F']:.4f} (relative "
        "Frobenius; "
        f"γ = {gamma:.3g}) → {s.out}/"
    )
    return result


if __name__ == "__main__":
    sys.exit(run_script(main))
