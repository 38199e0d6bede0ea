"""Figures 2 and 3 of the paper: the exact Fisher F beside its Kronecker-factored approximation F̃
(§3), and F̃ beside its inverse and the mean |entry| of each block of that inverse, for the middle
four layers of a partially trained 256-20-20-20-20-20-10 tanh classifier on 16×16 MNIST digits.

Run (on the build machines, where only the MNIST test split is on disk)::

    python paper_figures/fisher_blocks.py --data-dir ../shared/data/mnist-t10k
    python paper_figures/fisher_blocks.py --data-dir ../shared/data/mnist-t10k --quick

Writes to ``--out`` (default ``figures_out/``): ``fig2_fisher_vs_ftilde.{png,pdf}``,
``fig3_ftilde_inverse.{png,pdf}``, ``fisher_blocks.json`` (every number plotted or quoted, the
data used, the training history), ``fisher_blocks_weights.npz`` (weights and cases, for
``inverse_quality.py --weights``) and ``fisher_blocks_further_weights.npz`` (the network trained
further). Without any MNIST file a labelled stand-in is used (see
``_networks.py``).

What the paper shows (arXiv:1503.05671, §3). Checked: "F̃ captures the coarse
structure of F" and "the inverse of F̃ is approximately block-tridiagonal whereas F̃ is not"
(§3, §4.3); the network is 256-20-20-20-20-20-10 with tanh units, partially trained on 16×16
down-scaled MNIST, and only its middle 4 layers are shown. Recalled from the figure
captions, which the search tools could not retrieve: trained by K-FAC in batch mode for 7
iterations (5 % error; 0 % after 22); Figure 2 has F left, F̃ middle, the difference right,
dashed lines delimiting the layer blocks, and plots **absolute values** with the white level
linear in the value up to a maximum that is the same in the three images; Figure 3 has F̃ left,
its inverse middle and the 4×4 matrix of the mean absolute entry of each block of the inverse
right; the inverse was taken with the factored Tikhonov damping of §6.3 at the γ K-FAC used at
that iteration, and the white levels of F̃ and of its inverse differ (their scales differ).

What this script matches: the network, the middle-four-layer restriction, the panels and their
order, |entries| on a linear grey scale (black = 0, white = the ``--vmax-quantile`` quantile of
the reference matrix and above: one level for the three panels of Figure 2, separate levels for
F̃ and F̃⁻¹), dashed block lines, training by K-FAC in batch mode, and the inverse damped with
the γ K-FAC reached (after its γ search at iteration 20 with the default ``--iters 20``). Added:
a colour bar on every panel, the data and training in a footer line, relative Frobenius errors
in the titles, and a second row in Figure 3 with the block means of F̃⁻¹ at the smallest damping
that keeps F̃ invertible and for the network trained ``--further-iters`` more iterations.
Figure 3's title says what is seen (from the ratios of the block means), not what the paper
says should be seen. Differences, stated: the data are the 10,000-digit MNIST test split where
only it is on disk (the JSON and footer say which data were used); 20 iterations instead of 7
(our K-FAC reaches the paper's 5 % error between iterations 10 and 20, and the γ search, which
the paper's γ came from, first runs at iteration 20).

Matrices: the 1680 parameters of W_2..W_5 (how, and why that equals slicing the full network's
matrices: ``_matrices.py``). F and F̃ come from the same ``--cases`` training cases
(``kfac_ref.fisher.exact_fisher`` and the exact Kronecker factors), so their difference is the
Kronecker approximation alone, not sampling noise.

§3.1 (``figure2.section_3_1`` in the JSON, second footer line of Figure 2): the total error
Σ_{p,q} |F − F̃|_pq over all ordered pairs of the 1680 weights and the "basic upper bound", the
same sum of the absolute cumulant terms of the paper's eqn. (3)
(``kfac_ref.cumulants.kronecker_cumulants``), F and F̃ being means over the cases. The paper:
2894.4 and 4134.6. Ours with the defaults on the four MNIST files (seed 0, 20 iterations, 3.3 %
training error, 2000 cases): 2546.1 and 3661.6, a bound/error ratio of 1.44 against the paper's
1.43; with seeds 1 and 2 (other initial weights; 5.7 % and 4.5 % error) 2854.6 and 4003.7, 2795.4
and 3978.2. The paper's numbers are of this size only for F a mean over cases (a sum over 2000
cases would be about 5·10⁶) and for ordered pairs (over p ≤ q the seed-0 sums are 1275.0 and
1834.0), and they lie within our seed-to-seed spread. Along training
(``approximation_diagnostics.py``) the seed-0 total rises from 1163 after one iteration to
2420–2640 from iteration 8 to 20 (2344 at the paper's 7 iterations, where our error is 12.7 %),
the ratio staying between 1.40 and 1.49, and falls once the softmax saturates (F scales with
p(1 − p)): 89.7 and 130.3 after 100 iterations. On 500 cases instead of 2000 the sums are 6–11 %
larger (estimation noise adds to a sum of absolute values), so which and how many cases the
paper used, unstated, matters at that level too.

Figure 3 with the exact F (middle row; ``figure3.band_ratios_F_inverse`` and
``figure3.is_F_tilde_the_reason``): |F| and (F + D_γ)⁻¹, where D_γ = F̃(γ) − F̃(0) is the same
block-diagonal factored Tikhonov term F̃(γ) has, so the two inverses are equally damped (the
paper's caption says the plots for F look similar). With the defaults the first off-diagonal
blocks of F(γ)⁻¹ are 1.23× the farther ones on average, against 1.85× for F̃(γ)⁻¹ (the paper's
figure: close to block-tridiagonal): F's own inverse is no closer to block-tridiagonal than F̃'s
here, so the Kronecker factorization is not why our Figure 3 lacks the paper's band.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import _matrices as matrices
import _networks as networks
import _options as options
import _output as output
import numpy as np

from kfac_ref.backend import to_numpy
from kfac_ref.compare import block_mean_abs, block_relative_errors, relative_error
from kfac_ref.cumulants import kronecker_cumulants
from kfac_ref.errors import ConfigError
from kfac_ref.experiments import checks
from kfac_ref.experiments.exit_status import run_script
from kfac_ref.linalg import spd_inverse

FIG2, FIG3 = "fig2_fisher_vs_ftilde", "fig3_ftilde_inverse"
JSON_NAME, WEIGHTS_NAME = "fisher_blocks.json", "fisher_blocks_weights.npz"
FURTHER_WEIGHTS_NAME = "fisher_blocks_further_weights.npz"
# F̃(γ) counts as invertible when positive definite with condition number at most this: its
# inverse is then accurate to about COND_MAX · 2.2e-16 ≈ 2e-6 (relative), ample for block means.
COND_MAX = 1e10
GAMMA_GRID = (0.0, *(10.0**e for e in range(-8, 1)))  # γ tried for "the smallest damping"
TRIDIAGONAL_MIN_RATIO = 5.0  # first off-diagonal ÷ farther blocks: "close to block-tridiagonal"
BLOCK_DIAGONAL_MIN_RATIO = 8.0  # diagonal ÷ first off-diagonal blocks: "close to block-diagonal"
# §3.1 of the paper, for this network's middle four layers: Σ_{p,q} |F − F̃|_pq and the sum of
# the absolute cumulant terms of its eqn. (3) (the "basic upper bound")
PAPER_SECTION_3_1 = {"total_error": 2894.4, "bound": 4134.6}


def add_options(p: argparse.ArgumentParser) -> list[str]:
    """Options of this script only."""
    p.add_argument(
        "--further-iters",
        type=checks.int_arg(0),
        default=None,
        help="after the figures' network, train this many more iterations and report "
        "Figure 3's block means for that network too (default 80, quick 20; 0: skip)",
    )
    return ["further_iters"]


def figure2_numbers(M: matrices.MiddleMatrices, quantile: float) -> dict[str, Any]:
    """‖F̃ − F‖/‖F‖ overall and per block, the white level, and the block means of |F|, |F̃|."""
    F, Ft = M.undamped["F"], M.undamped["F_tilde"]
    return {
        "relative_error_F_tilde_vs_F": relative_error(Ft, F),
        "block_relative_errors_F_tilde_vs_F": block_relative_errors(Ft, F, M.shapes),
        "block_mean_abs_F": block_mean_abs(F, M.shapes),
        "block_mean_abs_F_tilde": block_mean_abs(Ft, M.shapes),
        "white_level": output.white_level(F, quantile),
    }


def section_3_1_numbers(net: networks.TrainedNet) -> dict[str, Any]:
    """§3.1: Σ_{p,q} |F − F̃|_pq over the ordered pairs of the middle layers' weights and the
    cumulant bound, F a mean over the cases (:func:`kfac_ref.cumulants.kronecker_cumulants`)."""
    layers = range(options.MIDDLE_FIRST, options.MIDDLE_FIRST + options.MIDDLE_COUNT)
    res = kronecker_cumulants(net.mlp, net.weights, net.X_cases, layers)
    return {
        **res.summary(),
        "paper": PAPER_SECTION_3_1,
        "iterations": net.iterations,
        "convention": "F and F̃ are means over the cases (not sums); the sums run over all "
        "ordered pairs (p, q) of the middle layers' weights (the *_unordered_pairs keys: p ≤ q)",
    }


def section_3_1_line(c: dict[str, Any]) -> str:
    """One footer line with the §3.1 total error and bound beside the paper's."""
    return (
        f"§3.1: Σ|F − F̃| = {c['total_error']:.1f}, cumulant bound {c['bound']:.1f} "
        f"(paper: {PAPER_SECTION_3_1['total_error']} and {PAPER_SECTION_3_1['bound']}); F a mean "
        f"over the {int(c['n_cases']):,} cases, summed over all ordered pairs of the "
        f"{int(c['n_params']):,} weights."
    )


def condition_number(M: np.ndarray) -> float:
    """λ_max / λ_min of a symmetric matrix (inf unless positive definite)."""
    w = np.linalg.eigvalsh(M)
    return float(w[-1] / w[0]) if w[0] > 0 else math.inf


def smallest_invertible_gamma(M: matrices.MiddleMatrices) -> tuple[float, float]:
    """The first γ of :data:`GAMMA_GRID` (0 first) for which F̃(γ) has condition ≤ COND_MAX."""
    for g in GAMMA_GRID:
        cond = condition_number(M.F_tilde_at(g))
        if cond <= COND_MAX:
            return g, cond
    raise ConfigError(f"F̃ is not invertible (condition > {COND_MAX:g}) for any γ ≤ 1")


def what_is_seen(r: dict[str, float]) -> tuple[str, bool]:
    """A phrase describing a 4×4 block-mean matrix of an inverse, and whether it is the paper's
    "close to block-tridiagonal" (first off-diagonal blocks ≥ TRIDIAGONAL_MIN_RATIO × farther)."""
    first, diag = r["first_off_over_farther"], r["diagonal_over_first_off"]
    if first >= TRIDIAGONAL_MIN_RATIO:
        return (
            f"is close to block-tridiagonal (first off-diagonal blocks {first:.1f}× the farther "
            "ones)",
            True,
        )
    if diag >= BLOCK_DIAGONAL_MIN_RATIO:
        return (
            f"is close to block-diagonal (diagonal blocks {diag:.0f}× the first off-diagonal ones, "
            f"which are only {first:.1f}× the farther ones)"
        ), False
    if first >= 2.0:
        return (
            f"has a weak block-tridiagonal band (first off-diagonal blocks {first:.1f}× the "
            "farther "
            f"ones, diagonal blocks {diag:.1f}× the first off-diagonal)"
        ), False
    return (
        f"has no block-tridiagonal band (first off-diagonal blocks {first:.1f}× the farther ones)",
        False,
    )


def inverse_setting(
    name: str,
    net: networks.TrainedNet,
    M: matrices.MiddleMatrices,
    gamma: float,
    cond: float | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
    """Block means of |F̃(γ)⁻¹| and |F(γ)⁻¹| of one network at one damping, F̃(γ)⁻¹ itself and
    F(γ)⁻¹ (None when F(γ) is not invertible: condition number above :data:`COND_MAX`).

    F(γ) is the exact F plus the same block-diagonal factored Tikhonov term as F̃(γ) (§6.3)."""
    Ft = M.damped["F_tilde"] if gamma == M.gamma else M.F_tilde_at(gamma)
    cond = condition_number(Ft) if cond is None else cond
    inv = to_numpy(spd_inverse(Ft, "F̃(γ)"))
    F = M.damped["F"] if gamma == M.gamma else M.F_at(gamma)
    cond_F = condition_number(F)
    means = block_mean_abs(inv, M.shapes)
    ratios = matrices.band_ratios(means)
    seen, reproduces = what_is_seen(ratios)
    entry: dict[str, Any] = {
        "setting": name,
        "iterations": net.iterations,
        "train_error": net.train_error(),
        "gamma": gamma,
        "condition_F_tilde": cond,
        "block_mean_abs_F_tilde_inverse": means,
        "band_ratios_F_tilde_inverse": ratios,
        "seen": seen,
        "close_to_block_tridiagonal": reproduces,
        "condition_F": cond_F,
    }
    F_inv = None
    if cond_F <= COND_MAX:
        F_inv = to_numpy(spd_inverse(F, "F(γ)"))
        F_means = block_mean_abs(F_inv, M.shapes)
        F_ratios = matrices.band_ratios(F_means)
        F_seen, F_close = what_is_seen(F_ratios)
        entry.update(
            block_mean_abs_F_inverse=F_means,
            band_ratios_F_inverse=F_ratios,
            F_inverse_seen=F_seen,
            F_inverse_close_to_block_tridiagonal=F_close,
        )
    return entry, inv, F_inv


def is_F_tilde_the_reason(entry: dict[str, Any]) -> str:
    """Whether the exact F(γ)⁻¹ is close to block-tridiagonal where F̃(γ)⁻¹ is or is not: says
    whether the Kronecker factorization explains how Figure 3 looks."""
    if "band_ratios_F_inverse" not in entry:
        return f"F(γ) is not invertible at γ = {entry['gamma']:.3g}; no comparison"
    rt = entry["band_ratios_F_tilde_inverse"]["first_off_over_farther"]
    rf = entry["band_ratios_F_inverse"]["first_off_over_farther"]
    ratios = f"first off-diagonal / farther block means: F̃⁻¹ {rt:.2f}, F⁻¹ {rf:.2f}"
    tilde, exact = (
        entry["close_to_block_tridiagonal"],
        entry["F_inverse_close_to_block_tridiagonal"],
    )
    if tilde and exact:
        return f"both F̃⁻¹ and F⁻¹ are close to block-tridiagonal ({ratios})"
    if exact:
        return (
            f"F⁻¹ is close to block-tridiagonal but F̃⁻¹ is not ({ratios}): the Kronecker "
            "factorization F̃ is what removes the band"
        )
    if tilde:
        return f"F̃⁻¹ is close to block-tridiagonal but F⁻¹ is not ({ratios})"
    return (
        f"neither F̃⁻¹ nor F⁻¹ is close to block-tridiagonal ({ratios}): the missing band is a "
        "property of this network's Fisher, not of the Kronecker factorization F̃"
    )


def figure3_numbers(
    net: networks.TrainedNet,
    M: matrices.MiddleMatrices,
    quantile: float,
    further: networks.TrainedNet | None,
    M_further: matrices.MiddleMatrices | None,
    stages: output.Stages,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
    """Figure 3's numbers (the paper's setting, γ of K-FAC, and the other settings tried), and
    F̃(γ)⁻¹ and F(γ)⁻¹ of the paper's setting."""
    stages(
        f"inverses: F̃(γ)⁻¹ and F(γ)⁻¹ at γ = {M.gamma:.3g} and at the smallest damping keeping "
        "F̃ invertible"
    )
    main, inv, F_inv = inverse_setting(
        f"K-FAC's γ after {net.iterations} iterations", net, M, M.gamma
    )
    settings = [main]
    g0, cond0 = smallest_invertible_gamma(M)
    settings.append(
        inverse_setting(
            f"smallest damping keeping F̃ invertible, {net.iterations} iterations", net, M, g0, cond0
        )[0]
    )
    if further is not None and M_further is not None:
        settings.append(
            inverse_setting(
                f"K-FAC's γ after {further.iterations} iterations",
                further,
                M_further,
                M_further.gamma,
            )[0]
        )
        g1, cond1 = smallest_invertible_gamma(M_further)
        settings.append(
            inverse_setting(
                f"smallest damping keeping F̃ invertible, {further.iterations} iterations",
                further,
                M_further,
                g1,
                cond1,
            )[0]
        )
    F_tilde_means = block_mean_abs(M.undamped["F_tilde"], M.shapes)
    F_means = block_mean_abs(M.undamped["F"], M.shapes)
    nums = {
        "gamma": M.gamma,
        "block_mean_abs_F_tilde": F_tilde_means,
        "band_ratios_F_tilde": matrices.band_ratios(F_tilde_means),
        "block_mean_abs_F_tilde_inverse": main["block_mean_abs_F_tilde_inverse"],
        "band_ratios_F_tilde_inverse": main["band_ratios_F_tilde_inverse"],
        "block_mean_abs_F": F_means,
        "band_ratios_F": matrices.band_ratios(F_means),
        "block_mean_abs_F_inverse": main.get("block_mean_abs_F_inverse"),
        "band_ratios_F_inverse": main.get("band_ratios_F_inverse"),
        "F_inverse_seen": main.get("F_inverse_seen"),
        "F_inverse_close_to_block_tridiagonal": main.get("F_inverse_close_to_block_tridiagonal"),
        "is_F_tilde_the_reason": is_F_tilde_the_reason(main),
        "seen": main["seen"],
        "close_to_block_tridiagonal": main["close_to_block_tridiagonal"],
        "settings": settings,
        "white_level_F_tilde": output.white_level(M.undamped["F_tilde"], quantile),
        "white_level_F_tilde_inverse": output.white_level(inv, quantile),
        "white_level_F": output.white_level(M.undamped["F"], quantile),
        "white_level_F_inverse": None if F_inv is None else output.white_level(F_inv, quantile),
        "thresholds": {
            "close_to_block_tridiagonal": f"first_off_over_farther ≥ {TRIDIAGONAL_MIN_RATIO:g}",
            "close_to_block_diagonal": f"diagonal_over_first_off ≥ {BLOCK_DIAGONAL_MIN_RATIO:g}",
            "invertible": f"condition number ≤ {COND_MAX:g}",
        },
    }
    return nums, inv, F_inv


def draw_figure2(
    M: matrices.MiddleMatrices, nums: dict[str, Any], s: options.Settings, net: networks.TrainedNet
) -> Any:
    """|F|, |F̃|, |F − F̃| side by side at one white level, a colour bar each."""
    import matplotlib.pyplot as plt

    F, Ft, v = M.undamped["F"], M.undamped["F_tilde"], nums["white_level"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.9), layout="constrained")
    panels = [
        (F, "|F| (exact Fisher)"),
        (Ft, "|F̃| (Kronecker-factored, §3)"),
        (F - Ft, f"|F − F̃|   (‖F − F̃‖/‖F‖ = {nums['relative_error_F_tilde_vs_F']:.3f})"),
    ]
    for ax, (mat, title) in zip(axes, panels, strict=True):
        output.show_abs(ax, mat, v, M.boundaries, title, s.scale, s.decades)
    fig.suptitle(
        "Figure 2: exact Fisher F vs its Kronecker-factored approximation F̃, middle 4 layers "
        "(W_2..W_5) of the 256-20-20-20-20-20-10 tanh net; |entries|, one white level",
        fontsize=10,
    )
    footer = output.footer(net)
    if "section_3_1" in nums:
        footer += "\n" + section_3_1_line(nums["section_3_1"])
    fig.supxlabel(footer, fontsize=8)
    return fig


def draw_block_means(ax: Any, means: np.ndarray, title: str) -> None:
    """A 4×4 matrix of block means in grey (black = 0, white = its maximum), values printed."""
    im = ax.imshow(means, cmap="gray", vmin=0.0, vmax=float(means.max()), interpolation="nearest")
    L = means.shape[0]
    for k in range(L):
        for l in range(L):
            dark = means[k, l] < 0.5 * means.max()
            ax.text(
                l,
                k,
                f"{means[k, l]:.3g}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    labels = [f"W_{options.MIDDLE_FIRST + 1 + k}" for k in range(L)]
    ax.set_xticks(range(L), labels, fontsize=8)
    ax.set_yticks(range(L), labels, fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="mean |entry| of the block")


def setting_title(entry: dict[str, Any]) -> str:
    r = entry["band_ratios_F_tilde_inverse"]
    rf = entry.get("band_ratios_F_inverse")
    exact = (
        f"\nF(γ)⁻¹: first off-diag / farther = {rf['first_off_over_farther']:.2f}"
        if rf
        else "\nF(γ) not invertible at this γ"
    )
    return (
        f"{entry['setting']}\n(γ = {entry['gamma']:.3g}, training error "
        f"{entry['train_error']:.1%})\n"
        f"first off-diag / farther = {r['first_off_over_farther']:.2f}, "
        f"diag / first off-diag = {r['diagonal_over_first_off']:.1f}{exact}"
    )


def draw_figure3(
    M: matrices.MiddleMatrices,
    inv: np.ndarray,
    nums: dict[str, Any],
    s: options.Settings,
    net: networks.TrainedNet,
    F_inv: np.ndarray | None = None,
) -> Any:
    """Top: |F̃|, |F̃⁻¹| (K-FAC's γ) and the block means of |F̃⁻¹| (the paper's three panels).
    Middle: the same for the exact F and F(γ)⁻¹ (equally damped). Bottom: the block means of
    |F̃⁻¹| in the other settings tried."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        3,
        3,
        figsize=(14, 14.5),
        layout="constrained",
        gridspec_kw={"height_ratios": [1.15, 1.15, 1]},
    )
    output.show_abs(
        axes[0, 0],
        M.undamped["F_tilde"],
        nums["white_level_F_tilde"],
        M.boundaries,
        f"|F̃| (first off-diag / farther block means = "
        f"{nums['band_ratios_F_tilde']['first_off_over_farther']:.2f})",
        s.scale,
        s.decades,
    )
    output.show_abs(
        axes[0, 1],
        inv,
        nums["white_level_F_tilde_inverse"],
        M.boundaries,
        f"|F̃⁻¹|  (factored Tikhonov damping γ = {M.gamma:.3g}, K-FAC's)",
        s.scale,
        s.decades,
    )
    main, others = nums["settings"][0], nums["settings"][1:]
    draw_block_means(
        axes[0, 2],
        main["block_mean_abs_F_tilde_inverse"],
        "block means of |F̃⁻¹|, " + setting_title(main),
    )
    draw_exact_row(axes[1], M, F_inv, nums, s)
    for ax, entry in zip(axes[2], others, strict=False):
        draw_block_means(ax, entry["block_mean_abs_F_tilde_inverse"], setting_title(entry))
    for ax in axes[2, len(others) :]:
        ax.axis("off")
    verdict = (
        "as the paper says"
        if nums["close_to_block_tridiagonal"]
        else "the paper: close to block-tridiagonal"
    )
    fig.suptitle(
        f"Figure 3: F̃ and its inverse, middle 4 layers. Seen: F̃⁻¹ {nums['seen']}\n"
        f"({verdict}). Middle row: the exact F and its equally damped inverse:\n"
        f"{textwrap.fill(nums['is_F_tilde_the_reason'] + '.', 130)}\n"
        "Bottom row: block means of |F̃⁻¹| in the other settings tried.",
        fontsize=10,
    )
    fig.supxlabel(output.footer(net), fontsize=8)
    return fig


def draw_exact_row(
    axes: Any, M: matrices.MiddleMatrices, F_inv: np.ndarray | None, nums: dict[str, Any], s: Any
) -> None:
    """|F|, |F(γ)⁻¹| and the block means of |F(γ)⁻¹| (F(γ): F plus F̃'s damping term, §6.3)."""
    output.show_abs(
        axes[0],
        M.undamped["F"],
        nums["white_level_F"],
        M.boundaries,
        f"|F| (exact; first off-diag / farther block means = "
        f"{nums['band_ratios_F']['first_off_over_farther']:.2f})",
        s.scale,
        s.decades,
    )
    if F_inv is None:
        for ax in axes[1:]:
            ax.axis("off")
        axes[1].set_title(f"F(γ) is not invertible at γ = {M.gamma:.3g}", fontsize=9)
        return
    output.show_abs(
        axes[1],
        F_inv,
        nums["white_level_F_inverse"],
        M.boundaries,
        f"|F(γ)⁻¹|  (F plus the same damping as F̃, γ = {M.gamma:.3g})",
        s.scale,
        s.decades,
    )
    r = nums["band_ratios_F_inverse"]
    draw_block_means(
        axes[2],
        nums["block_mean_abs_F_inverse"],
        f"block means of |F(γ)⁻¹|\nfirst off-diag / farther = {r['first_off_over_farther']:.2f}, "
        f"diag / first off-diag = {r['diagonal_over_first_off']:.1f}",
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train (or load) the network, compute F, F̃, F̃⁻¹, draw Figures 2–3, write JSON and NPZ."""
    figure_files = [f"{stem}.{ext}" for stem in (FIG2, FIG3) for ext in ("png", "pdf")]
    s, net, gamma, stages = networks.prepare(
        __doc__,
        argv,
        "fisher_blocks",
        [*figure_files, JSON_NAME, WEIGHTS_NAME, FURTHER_WEIGHTS_NAME],
        add_options,
    )
    further_iters = s.extra["further_iters"]
    further_iters = (20 if s.quick else 80) if further_iters is None else int(further_iters)
    if further_iters < 0:
        raise ConfigError(f"--further-iters must be ≥ 0, got {further_iters}")
    M = matrices.middle_matrices(net, gamma, names=("F_tilde",), stages=stages)
    further = M_further = None
    if further_iters and net.resume is not None:
        stages(
            f"training further: {further_iters} more iterations (Figure 3's 'trained further' "
            "setting)"
        )
        further = net.resume(further_iters)
        g_further = s.gamma if s.gamma is not None else further.gamma
        M_further = matrices.middle_matrices(further, g_further, names=("F_tilde",), stages=stages)
    elif further_iters:
        stages("training further: skipped (loaded weights carry no optimizer state)")
    nums2 = figure2_numbers(M, s.vmax_quantile)
    stages("§3.1: F − F̃ in cumulants over every pair of the middle layers' weights")
    nums2["section_3_1"] = section_3_1_numbers(net)
    nums3, inv, F_inv = figure3_numbers(net, M, s.vmax_quantile, further, M_further, stages)
    stages(f"figures: drawing Figures 2 and 3 ({', '.join(s.formats)}) into {s.out}/")
    files = output.save_figure(draw_figure2(M, nums2, s, net), s.out, FIG2, s.dpi, s.formats)
    files += output.save_figure(
        draw_figure3(M, inv, nums3, s, net, F_inv), s.out, FIG3, s.dpi, s.formats
    )
    files.append(output.save_network(s.out / WEIGHTS_NAME, net))
    if further is not None:
        files.append(output.save_network(s.out / FURTHER_WEIGHTS_NAME, further))
    result = {
        **output.run_summary(s, net, gamma),
        "figure2": nums2,
        "figure3": nums3,
        "further_training": None
        if further is None
        else {
            "iterations": further.iterations,
            "train_error": further.train_error(),
            "gamma": further.gamma,
            "history": further.history[net.iterations :],
            "section_3_1": section_3_1_numbers(further),
        },
        "files": [f.name for f in files],
        "seconds": stages.elapsed,
    }
    output.save_json(s.out / JSON_NAME, result)
    stages(
        f"done: ‖F̃−F‖/‖F‖ = {nums2['relative_error_F_tilde_vs_F']:.4f}; F̃⁻¹ (γ = {gamma:.3g}) "
        f"{nums3['seen']}; training error {result['train_error']:.2%} after {net.iterations} "
        f"iterations → {s.out}/"
    )
    print(f"  {section_3_1_line(nums2['section_3_1'])}")
    for entry in nums3["settings"]:
        r, rf = entry["band_ratios_F_tilde_inverse"], entry.get("band_ratios_F_inverse")
        exact = f", F⁻¹: {rf['first_off_over_farther']:.2f}" if rf else ", F not invertible"
        print(
            f"  {entry['setting']}: γ = {entry['gamma']:.3g}, first off-diag / farther "
            f"{r['first_off_over_farther']:.2f}, diag / first off-diag "
            f"{r['diagonal_over_first_off']:.2f}{exact}"
        )
    print(f"  Figure 3: {nums3['is_F_tilde_the_reason']}")
    return result


if __name__ == "__main__":
    sys.exit(run_script(main))
