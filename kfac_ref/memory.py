"""Memory of the dense P×P matrices (the exact Fisher of §2.2, the dense F̃, F̆, F̂ of §3–§4) for
small networks: :func:`check_dense_size` refuses one that would not fit before anything is built.

Below both the Fisher of §2.2 (:mod:`kfac_ref.fisher`) and the dense approximations
(:mod:`kfac_ref.dense`, the dense structures), so that neither imports the other for it.
"""

from __future__ import annotations

from .errors import TooLargeError

DEFAULT_MAX_BYTES = 2 * 1024**3


def per_case_entries(sizes: list[int] | tuple[int, ...]) -> int:
    """Entries per case a dense Fisher holds at its peak (§2.2): the per-case gradients Dθ of
    one backward pass and their concatenation (2P), the layers' pieces and J's product
    operands (2P), the activations and backward quantities (3 Σ d_i) and the per-case output
    Fisher's square root (d_ℓ²). Measured: 3.4–3.7 P per case for ``exact_fisher``."""
    P = sum(sizes[k + 1] * (sizes[k] + 1) for k in range(len(sizes) - 1))
    return 4 * P + 3 * sum(sizes) + sizes[-1] ** 2


def check_dense_size(
    n_params: int,
    itemsize: int,
    max_bytes: int | None,
    copies: int = 3,
    n_cases: int = 0,
    per_case: int = 0,
    float64_copies: int = 0,
    advice: str | None = None,
) -> None:
    """Refuse (:class:`TooLargeError`) before building a dense P×P matrix that would not fit.

    Counts ``copies`` P×P arrays of ``itemsize`` bytes, ``float64_copies`` P×P float64 arrays
    (factorizations made in float64) and ``per_case`` entries for each of ``n_cases`` cases
    (the per-case gradients, :func:`per_case_entries`), all held at once. ``advice`` ends the
    message (default: a smaller network, fewer cases, a larger ``max_bytes``).
    """
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    P2 = n_params * n_params
    need = (copies * itemsize + float64_copies * 8) * P2 + n_cases * per_case * itemsize
    if need > limit:
        terms = [f"{copies} × {n_params}² × {itemsize}"] if copies else []
        terms += [f"{float64_copies} × {n_params}² × 8"] if float64_copies else []
        terms += [f"{n_cases:,} cases × {per_case:,} × {itemsize}"] if n_cases * per_case else []
        fewer = ", fewer cases" if n_cases * per_case else ""
        advice = advice or f"use a smaller network{fewer} or pass a larger max_bytes"
        raise TooLargeError(
            f"a dense Fisher for {n_params} parameters needs about {need / 2**20:.0f} MiB "
            f"({' + '.join(terms)} bytes), over the limit of {limit / 2**20:.0f} MiB; {advice}"
        )
