"""Figures 2 and 3 of the paper: the exact Fisher F against its Kronecker-factored F̃ (§3), and
the near block-tridiagonal structure of F̃⁻¹ that motivates §4.3.

Run ``python paper_figures/fisher_blocks.py [--quick] [--out DIR] [--seed N] [--backend B]``.
Writes to ``DIR`` (default ``figures_out/``): ``fig2_fisher_vs_ftilde.{png,pdf}``,
``fig3_ftilde_inverse.{png,pdf}``, ``fisher_blocks.json`` (every number plotted or quoted) and
``fisher_blocks_weights.npz`` (the weights and the cases used, so the numbers can be recomputed).

What the paper shows (arXiv:1503.05671, §3.2 and §4.3; what we could check with the search tools,
and what we take from the paper's captions as we recall them — the captions themselves were not
retrievable there):

* Network (checked: spec §12 and a third-party reading of the paper, which quotes p. 8–9):
  256-20-20-20-20-20-10 with tanh units, partially trained to classify 16×16 down-scaled MNIST;
  the figures show only the **middle 4 layers**. Captions (recalled): trained by K-FAC in batch
  mode for 7 iterations, 5 % error.
* Figure 2 (checked: "F̃ captures the coarse structure of F", p. 8; the total approximation
  error over the middle 4 layers is quoted, p. 10): three panels, left F, middle F̃, right the
  difference F − F̃; dashed lines delimit the layer blocks. Recalled: **absolute values** of the
  entries are plotted, the white level linear in the value up to a maximum that is the same in
  the three images (black background, bright = large).
* Figure 3 (checked: "the inverse of F̃ is approximately block-tridiagonal whereas F̃ is not",
  p. 12): left F̃, middle F̃⁻¹, right the 4×4 matrix of the mean absolute entry of each block of
  the inverse. Recalled: the inverse was taken with the factored Tikhonov damping (§6.3) at the γ
  K-FAC used at that iteration; the maximum of the grey scale differs between F̃ and F̃⁻¹.

What this script draws. The same three panels per figure, |entries| in a grey colormap (black =
0, white = the ``--vmax-quantile`` quantile of the reference matrix's |entries| and above, the
same level for the three panels of Figure 2 and separate levels for F̃ and F̃⁻¹ in Figure 3),
dashed lines at the layer boundaries, and the relative Frobenius errors in the titles. All
matrices are those of the 1680 parameters of W_2..W_5 (how, and why that equals slicing the full
network's matrices: ``_common.py``). F and F̃ are computed on the same ``--cases`` training cases
(kfac_ref.fisher.exact_fisher and the exact Kronecker factors), so their difference is the
Kronecker approximation alone, not sampling noise. F̃⁻¹ is the inverse of F̃ with factored
Tikhonov damping γ (default: the trainer's γ, stated in the title and the JSON).

Differences from the paper, stated: MNIST cannot be downloaded on the build machines, so unless
the MNIST files are already on disk the images are CURVES down-scaled to 16×16 with labels from a
fixed random linear teacher (a notice is printed; the JSON ``data`` field says which). The
network is trained by ``kfac_ref.optimizer.KFAC`` when that module is importable, otherwise by
damped block-diagonal natural-gradient steps (``--trainer``; the JSON ``trainer`` field says
which), for ``--iters`` iterations in batch mode, from a scaled Gaussian initialization.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import _common as common
import numpy as np

from kfac_ref.backend import to_numpy
from kfac_ref.compare import block_mean_abs, block_relative_errors, relative_error
from kfac_ref.inverse import spd_inverse

FIG2, FIG3 = "fig2_fisher_vs_ftilde", "fig3_ftilde_inverse"


def figure2_numbers(M: common.MiddleMatrices, quantile: float) -> dict[str, Any]:
    """‖F̃ − F‖/‖F‖ overall and per block, the white level, and the block means of |F|, |F̃|."""
    F, Ft = M.undamped["F"], M.undamped["F_tilde"]
    return {
        "relative_error_F_tilde_vs_F": relative_error(Ft, F),
        "block_relative_errors_F_tilde_vs_F": block_relative_errors(Ft, F, M.shapes),
        "block_mean_abs_F": block_mean_abs(F, M.shapes),
        "block_mean_abs_F_tilde": block_mean_abs(Ft, M.shapes),
        "white_level": common.white_level(F, quantile),
    }


def figure3_numbers(M: common.MiddleMatrices, inverses: dict[str, np.ndarray], quantile: float) -> dict[str, Any]:
    """Block means of |F̃⁻¹| (the small panel), of |F̃| and |F⁻¹|, and off-tridiagonal ratios."""
    means = {
        "F_tilde": block_mean_abs(M.undamped["F_tilde"], M.shapes),
        "F_tilde_inverse": block_mean_abs(inverses["F_tilde"], M.shapes),
        "F_inverse": block_mean_abs(inverses["F"], M.shapes),
    }
    return {
        "gamma": M.gamma,
        **{f"block_mean_abs_{k}": v for k, v in means.items()},
        **{f"tridiagonal_ratio_{k}": common.tridiagonal_ratio(v) for k, v in means.items()},
        "relative_error_F_tilde_inverse_vs_F_inverse": relative_error(inverses["F_tilde"], inverses["F"]),
        "white_level_F_tilde": common.white_level(M.undamped["F_tilde"], quantile),
        "white_level_F_tilde_inverse": common.white_level(inverses["F_tilde"], quantile),
    }


def draw_figure2(M: common.MiddleMatrices, nums: dict[str, Any]) -> Any:
    """|F|, |F̃|, |F − F̃| side by side at one white level."""
    import matplotlib.pyplot as plt

    F, Ft, v = M.undamped["F"], M.undamped["F_tilde"], nums["white_level"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), layout="constrained")
    panels = [(F, "|F| (exact Fisher)"), (Ft, "|F̃| (Kronecker-factored, §3)"),
              (F - Ft, f"|F − F̃|   (‖F − F̃‖/‖F‖ = {nums['relative_error_F_tilde_vs_F']:.3f})")]
    for ax, (mat, title) in zip(axes, panels, strict=True):
        im = common.show_abs(ax, mat, v, M.boundaries, title)
    fig.colorbar(im, ax=axes, shrink=0.8, label="absolute value (white at and above this level)")
    fig.suptitle("Figure 2: exact Fisher vs Kronecker-factored approximation, middle 4 layers "
                 "(W_2..W_5) of the 256-20-20-20-20-20-10 tanh net", fontsize=10)
    return fig


def draw_figure3(M: common.MiddleMatrices, inverses: dict[str, np.ndarray], nums: dict[str, Any]) -> Any:
    """|F̃|, |F̃⁻¹| (damped, γ in the title) and the 4×4 block means of |F̃⁻¹|."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 0.8]})
    common.show_abs(axes[0], M.undamped["F_tilde"], nums["white_level_F_tilde"], M.boundaries, "|F̃|")
    common.show_abs(axes[1], inverses["F_tilde"], nums["white_level_F_tilde_inverse"], M.boundaries,
                    f"|F̃⁻¹|  (factored Tikhonov damping γ = {M.gamma:.3g})")
    means = nums["block_mean_abs_F_tilde_inverse"]
    axes[2].imshow(means, cmap="gray", vmin=0.0, vmax=float(means.max()), interpolation="nearest")
    L = means.shape[0]
    for k in range(L):
        for l in range(L):
            dark = means[k, l] < 0.5 * means.max()
            axes[2].text(l, k, f"{means[k, l]:.3g}", ha="center", va="center", fontsize=8,
                         color="white" if dark else "black")
    labels = [f"W_{common.MIDDLE_FIRST + 1 + k}" for k in range(L)]
    axes[2].set_xticks(range(L), labels)
    axes[2].set_yticks(range(L), labels)
    axes[2].set_title("mean |entry| per block of F̃⁻¹\n(off-tridiagonal / tridiagonal = "
                      f"{nums['tridiagonal_ratio_F_tilde_inverse']:.3f}; for F̃: "
                      f"{nums['tridiagonal_ratio_F_tilde']:.3f})", fontsize=9)
    fig.suptitle("Figure 3: F̃ and its inverse, middle 4 layers; the inverse is close to "
                 "block-tridiagonal, F̃ is not", fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train (or load) the network, compute F, F̃, F̃⁻¹, draw Figures 2–3, write JSON and NPZ."""
    s, net, gamma, t0 = common.prepare(__doc__.splitlines()[0], argv)
    M = common.middle_matrices(net, gamma, names=("F_tilde",))
    inverses = {name: to_numpy(spd_inverse(M.damped[name], name)) for name in ("F_tilde", "F")}
    nums2 = figure2_numbers(M, s.vmax_quantile)
    nums3 = figure3_numbers(M, inverses, s.vmax_quantile)
    files = common.save_figure(draw_figure2(M, nums2), s.out, FIG2)
    files += common.save_figure(draw_figure3(M, inverses, nums3), s.out, FIG3)
    files.append(common.save_network(s.out / "fisher_blocks_weights.npz", net))
    result = {**common.run_summary(s, net, gamma), "figure2": nums2, "figure3": nums3,
              "files": [f.name for f in files], "seconds": time.perf_counter() - t0}
    common.save_json(s.out / "fisher_blocks.json", result)
    print(f"fisher_blocks: ‖F̃−F‖/‖F‖ = {nums2['relative_error_F_tilde_vs_F']:.4f}; off-tridiagonal/"
          f"tridiagonal block means: F̃ {nums3['tridiagonal_ratio_F_tilde']:.3f}, F̃⁻¹ "
          f"{nums3['tridiagonal_ratio_F_tilde_inverse']:.3f} (γ = {gamma:.3g}); train error "
          f"{result['train_error']:.3f}; {result['seconds']:.1f} s → {s.out}/")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
