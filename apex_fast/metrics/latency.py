"""Per-request latency figures, defined once (vllm bench serve definitions, docs/metrics.md):
TTFT, TPOT, end-to-end latency and whether a request meets its SLOs. The plan report
(metrics/summary.py), the request table (metrics/requests.py), `capacity` and the
disaggregated evaluation all take them from here."""

from __future__ import annotations

import numpy as np


def request_latencies(
    entry: np.ndarray, first: np.ndarray, finish: np.ndarray, output: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(served, TTFT, TPOT, latency) in seconds per request from its entry time (the arrival,
    or later behind a concurrency limit), first-token and finish times (finish < 0: never
    served). TTFT and latency are NaN for a request never served; TPOT = (finish - first) /
    (output - 1) is NaN also for a one-token request, which has no second token."""
    served = finish >= 0
    ttft = np.where(served, first - entry, np.nan)
    latency = np.where(served, finish - entry, np.nan)
    tpot = np.where(served & (output > 1), (finish - first) / np.maximum(output - 1, 1), np.nan)
    return served, ttft, tpot, latency


def meets_slo(
    ttft: np.ndarray, tpot: np.ndarray, ttft_slo_ms: float, tpot_slo_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """(TTFT met, TPOT met) per request: a request never served meets neither; a one-token
    request (no TPOT) meets the TPOT SLO."""
    served = ~np.isnan(ttft)
    ttft_ok = served & (np.nan_to_num(ttft, nan=np.inf) <= ttft_slo_ms / 1e3)
    tpot_ok = served & (np.nan_to_num(tpot, nan=0.0) <= tpot_slo_ms / 1e3)
    return ttft_ok, tpot_ok
