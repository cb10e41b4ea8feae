"""The step-record schema: the one place that names the kernel's record columns and holds the
arithmetic of a run of identical steps.

The scheduler kernel (kernels/batching.py) writes one record per run of `count` consecutive
steps of the same shape into two arrays, `rec_f` (float64) and `rec_i` (int64), one column per
record (a field is a row). The field indices below are module-level integers: Numba reads them as compile-time
constants when the kernel imports them (note: Numba's cache does not see a change here; clear
`kernels/__pycache__` after renumbering).

Step j (0-based) of a record lasts d0 + dd*j: a decode run grows every sequence's context by one
token per step, so the context read by step j is ctx0 + n_decode*j and, at c_ctx seconds per
context token, dd = c_ctx * n_decode (0 when the run is held at a launch floor). Every reader of
records (sim/stream.py, metrics/records.py, disagg/pools.py) uses the functions below for the times
and sums of a run, so the closed forms live here only.
"""

from __future__ import annotations

import numpy as np

# ---- rec_f: float64 columns
F_START = 0  # s, start of the record's first step
F_D0 = 1  # s, duration of the first step
F_DD = 2  # s, growth of the step duration per step (c_ctx * n_decode, or 0 at a launch floor)
F_WORK = 3  # causal query-key pairs of the prefill chunks of each step
N_F = 4

# ---- rec_i: int64 columns
I_COUNT = 0  # steps in the record
I_PF_TOK = 1  # prefill tokens per step
I_DEC = 2  # decode sequences per step
I_SAMP = 3  # sequences that sample a token per step
I_CTX0 = 4  # context tokens read by the decodes of the first step
I_BLOCKS = 5  # KV blocks in use after the allocations of the last step (the record's peak)
I_SCHED = 6  # sequences scheduled per step
N_I = 7


def pairs(count: np.ndarray | float) -> np.ndarray | float:
    """sum_{j < count} j = count*(count-1)/2 (exact in float64 below 2^26 steps)."""
    return count * (count - 1) / 2.0


def run_duration(
    count: np.ndarray | float, d0: np.ndarray | float, dd: np.ndarray | float
) -> np.ndarray | float:
    """Seconds of a run of `count` steps lasting d0 + dd*j: count*d0 + dd*count*(count-1)/2."""
    return count * d0 + dd * pairs(count)


def run_end(
    start: np.ndarray | float,
    count: np.ndarray | float,
    d0: np.ndarray | float,
    dd: np.ndarray | float,
) -> np.ndarray | float:
    """End of a run's last step."""
    return start + run_duration(count, d0, dd)


def step_start(
    start: np.ndarray | float, d0: np.ndarray | float, dd: np.ndarray | float, j: np.ndarray | int
) -> np.ndarray | float:
    """Start of step j of a run: start + j*d0 + dd*j*(j-1)/2."""
    return start + j * d0 + dd * j * (j - 1) / 2


def step_duration(
    d0: np.ndarray | float, dd: np.ndarray | float, j: np.ndarray | int
) -> np.ndarray | float:
    """Duration of step j of a run."""
    return d0 + dd * j


def step_ctx(
    ctx0: np.ndarray | int, n_dec: np.ndarray | int, j: np.ndarray | int
) -> np.ndarray | int:
    """Context tokens read by the decodes of step j (each decode's context grows by one)."""
    return ctx0 + n_dec * j


def run_ctx(
    count: np.ndarray | float, ctx0: np.ndarray | float, n_dec: np.ndarray | float
) -> np.ndarray | float:
    """Context tokens read over a whole run: count*ctx0 + n_dec*count*(count-1)/2."""
    return count * ctx0 + n_dec * pairs(count)


def run_tokens(
    count: np.ndarray | float, pf_tok: np.ndarray | float, n_dec: np.ndarray | float
) -> np.ndarray | float:
    """Tokens computed over a run (prefill tokens + decodes, per step, times count)."""
    return count * (pf_tok + n_dec)
