"""Inter-token gap histogram of the scheduler kernel: log-spaced bins (bin edges, the bin of a
gap, and the widest gap range that stays in one bin)."""

import numpy as np
from numba import njit

# Inter-token gap histogram: log-spaced bins from 1e-7 s to 1e4 s, 400 per decade (0.58% wide).
GAP_LOG_MIN = -7.0
GAP_BINS_PER_DECADE = 400
GAP_BINS = 11 * GAP_BINS_PER_DECADE


def gap_bin_edges() -> np.ndarray:
    """Edges (seconds) of the gap histogram bins; bin i holds gaps in [edges[i], edges[i+1])."""
    return 10.0 ** (GAP_LOG_MIN + np.arange(GAP_BINS + 1) / GAP_BINS_PER_DECADE)


@njit(cache=True, inline="always")
def gap_bin(g: float) -> int:
    if g <= 0.0:
        return 0
    b = int(np.floor((np.log10(g) - GAP_LOG_MIN) * GAP_BINS_PER_DECADE))
    if b < 0:
        return 0
    if b >= GAP_BINS:
        return GAP_BINS - 1
    return b


@njit(cache=True, inline="always")
def gap_bin_safe_hi(b: int) -> float:
    """A bound below the upper edge of bin b such that every gap g in [g_b, bound), where
    gap_bin(g_b) == b, also has gap_bin(g) == b (the margin of 1e-12 relative covers the
    rounding of log10 in gap_bin, ~1e-15 relative)."""
    if b >= GAP_BINS - 1:
        return np.inf
    return 10.0 ** (GAP_LOG_MIN + (b + 1) / GAP_BINS_PER_DECADE) * (1.0 - 1e-12)


__all__ = ["GAP_BINS", "gap_bin", "gap_bin_edges", "gap_bin_safe_hi"]
