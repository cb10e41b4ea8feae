"""The gap histogram's bins as plain constants (no Numba here: sim/stream.py and the metrics
read them in a process that may never load Numba; kernels/gaps.py bins gaps with them)."""

import numpy as np

# Inter-token gap histogram: log-spaced bins from 1e-7 s to 1e4 s, 400 per decade (0.58% wide).
GAP_LOG_MIN = -7.0
GAP_BINS_PER_DECADE = 400
GAP_BINS = 11 * GAP_BINS_PER_DECADE


def gap_bin_edges() -> np.ndarray:
    """Edges (seconds) of the gap histogram bins; bin i holds gaps in [edges[i], edges[i+1])."""
    return 10.0 ** (GAP_LOG_MIN + np.arange(GAP_BINS + 1) / GAP_BINS_PER_DECADE)
