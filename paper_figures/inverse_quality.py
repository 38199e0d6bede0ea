"""Figures 5 and 6 of the paper: how well the block-diagonal F̆ (§4.2) and the
block-tridiagonal-inverse F̂ (§4.3) approximate F̃, and how well their inverses approximate F̃⁻¹.

Run ``python paper_figures/inverse_quality.py [--quick] [--out DIR] [--seed N] [--backend B]``.
Writes to ``DIR`` (default ``figures_out/``): ``fig5_approximations_of_ftilde.{png,pdf}``,
``fig6_approximate_inverses.{png,pdf}``, ``inverse_quality.json`` (every number plotted or
quoted, per block too) and ``inverse_quality_weights.npz`` (weights and cases used).
``--weights figures_out/fisher_blocks_weights.npz`` reuses the network of ``fisher_blocks.py``.

What the paper shows (arXiv:1503.05671, long version; spec §12: Fig. 4 is the graphical-model
diagram, Fig. 5 compares F̆ and F̂ with F̃, Fig. 6 compares F̆⁻¹ and F̂⁻¹ with F̃⁻¹). Checked with
the search tools through a third-party reading of the paper (p. 16): on the example network F̂
approximates even the off-tridiagonal blocks of F̃ very well; F̆⁻¹ is a reasonably good
approximation of F̃⁻¹ although F̆ is a rather poor approximation of F̃; and F̂⁻¹ is a markedly
better approximation of F̃⁻¹ than F̆⁻¹, even on the diagonal blocks. Recalled from the captions
(not retrievable with the tools): both figures use the Figure 2 network (middle 4 layers), two
rows (top F̆, bottom F̂) of three panels (left the reference F̃ or F̃⁻¹, middle the
approximation, right the absolute difference), absolute values with one white level for all
panels of a figure; the inverses of Figure 6 use factored Tikhonov damping at the γ K-FAC used
at that iteration; in Figure 5 the diagonal blocks of |F̃ − F̆| and the tridiagonal blocks of
|F̃ − F̂| are exactly zero by construction.

What this script draws: exactly that layout (grey colormap, black = 0, white = the
``--vmax-quantile`` quantile of |F̃| resp. |F̃⁻¹|, dashed lines at the layer boundaries), with the
relative Frobenius errors in the panel titles: vs F̃ (resp. F̃⁻¹) and, for the inverses, also vs
the exact F⁻¹ (of F + the same damping). The matrices are those of the 1680 parameters of W_2..W_5
computed on ``--cases`` training cases (see ``_common.py``; F̆, F̂ via
``kfac_ref.fisher.dense_F_tilde`` / ``dense_F_hat``, inverses via
``kfac_ref.inverse.spd_inverse``). Data and trainer as in ``fisher_blocks.py`` (the JSON says
which were used).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import _common as common
import numpy as np

from kfac_ref.backend import to_numpy
from kfac_ref.compare import block_relative_errors, relative_error
from kfac_ref.inverse import spd_inverse

FIG5, FIG6 = "fig5_approximations_of_ftilde", "fig6_approximate_inverses"
SYMBOL = {"F_breve": "F̆", "F_hat": "F̂", "F_tilde": "F̃", "F": "F"}


def comparison_numbers(mats: dict[str, np.ndarray], shapes: list, reference: str, exact: str) -> dict[str, Any]:
    """Relative errors of F̆ and F̂ (or their inverses) vs the reference and vs the exact matrix."""
    out: dict[str, Any] = {}
    for name in ("F_breve", "F_hat"):
        out[name] = {
            f"vs_{reference}": relative_error(mats[name], mats[reference]),
            f"vs_{exact}": relative_error(mats[name], mats[exact]),
            f"block_errors_vs_{reference}": block_relative_errors(mats[name], mats[reference], shapes),
        }
    out[reference] = {f"vs_{exact}": relative_error(mats[reference], mats[exact])}
    return out


def draw_comparison(mats: dict[str, np.ndarray], nums: dict[str, Any], boundaries: Sequence[int],
                    vmax: float, inverse: bool, title: str) -> Any:
    """Two rows (F̆, F̂) of |reference|, |approximation|, |approximation − reference|."""
    import matplotlib.pyplot as plt

    sup = "⁻¹" if inverse else ""
    ref_key = "F_tilde"
    fig, axes = plt.subplots(2, 3, figsize=(12.5, 8.6), layout="constrained")
    for row, name in enumerate(("F_breve", "F_hat")):
        s, r = SYMBOL[name] + sup, "F̃" + sup
        e = nums[name]
        extra = f", vs F{sup}: {e['vs_F']:.3f}" if inverse else ""
        common.show_abs(axes[row, 0], mats[ref_key], vmax, boundaries, f"|{r}|")
        common.show_abs(axes[row, 1], mats[name], vmax, boundaries, f"|{s}|")
        im = common.show_abs(axes[row, 2], mats[name] - mats[ref_key], vmax, boundaries,
                             f"|{s} − {r}|   (‖·‖/‖{r}‖ = {e['vs_F_tilde']:.3f}{extra})")
    fig.colorbar(im, ax=axes, shrink=0.6, label="absolute value (white at and above this level)")
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train (or load) the network, compute F, F̃, F̆, F̂ and inverses, draw Figures 5–6."""
    s, net, gamma, t0 = common.prepare(__doc__.splitlines()[0], argv)
    M = common.middle_matrices(net, gamma)
    inverses = {name: to_numpy(spd_inverse(mat, name)) for name, mat in M.damped.items()}
    nums5 = comparison_numbers(M.undamped, M.shapes, "F_tilde", "F")
    nums6 = comparison_numbers(inverses, M.shapes, "F_tilde", "F")
    v5 = common.white_level(M.undamped["F_tilde"], s.vmax_quantile)
    v6 = common.white_level(inverses["F_tilde"], s.vmax_quantile)
    fig5 = draw_comparison(M.undamped, nums5, M.boundaries, v5, False,
                           "Figure 5: F̃ vs its block-diagonal F̆ (top) and block-tridiagonal-inverse F̂ "
                           "(bottom) approximations, middle 4 layers")
    fig6 = draw_comparison(inverses, nums6, M.boundaries, v6, True,
                           f"Figure 6: F̃⁻¹ vs F̆⁻¹ (top) and F̂⁻¹ (bottom), factored Tikhonov damping "
                           f"γ = {gamma:.3g}, middle 4 layers")
    files = common.save_figure(fig5, s.out, FIG5) + common.save_figure(fig6, s.out, FIG6)
    files.append(common.save_network(s.out / "inverse_quality_weights.npz", net))
    result = {**common.run_summary(s, net, gamma),
              "figure5": {**nums5, "white_level": v5},
              "figure6": {**nums6, "white_level": v6},
              "files": [f.name for f in files], "seconds": time.perf_counter() - t0}
    common.save_json(s.out / "inverse_quality.json", result)
    print(f"inverse_quality: vs F̃: ‖F̆−F̃‖ {nums5['F_breve']['vs_F_tilde']:.4f}, ‖F̂−F̃‖ "
          f"{nums5['F_hat']['vs_F_tilde']:.4f}; vs F̃⁻¹: F̆⁻¹ {nums6['F_breve']['vs_F_tilde']:.4f}, "
          f"F̂⁻¹ {nums6['F_hat']['vs_F_tilde']:.4f}; vs F⁻¹: F̆⁻¹ {nums6['F_breve']['vs_F']:.4f}, "
          f"F̂⁻¹ {nums6['F_hat']['vs_F']:.4f}, F̃⁻¹ {nums6['F_tilde']['vs_F']:.4f} (relative Frobenius; "
          f"γ = {gamma:.3g}); {result['seconds']:.1f} s → {s.out}/")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
