"""One definition of TTFT, TPOT, latency and SLO attainment (metrics/latency.py)."""

from __future__ import annotations

import math

import numpy as np

from apex_fast.metrics.latency import meets_slo, request_latencies


def test_closed_form_latencies() -> None:
    entry = np.array([0.0, 1.0, 2.0, 3.0])
    first = np.array([0.5, 1.2, -1.0, 3.1])
    finish = np.array([2.5, 1.2, -1.0, 4.1])
    output = np.array([5, 1, 3, 11])
    served, ttft, tpot, lat = request_latencies(entry, first, finish, output)
    assert served.tolist() == [True, True, False, True]
    assert np.allclose(ttft[[0, 1, 3]], [0.5, 0.2, 0.1])
    assert np.allclose(lat[[0, 1, 3]], [2.5, 0.2, 1.1])
    # (finish - first) / (output - 1); a one-token request has no TPOT
    assert math.isclose(tpot[0], 2.0 / 4) and math.isclose(tpot[3], 1.0 / 10)
    assert np.isnan(tpot[1]) and np.isnan(tpot[2]) and np.isnan(ttft[2]) and np.isnan(lat[2])


def test_slo_attainment_rules() -> None:
    ttft = np.array([0.1, 0.3, np.nan, 0.1])
    tpot = np.array([0.05, 0.01, np.nan, np.nan])
    ttft_ok, tpot_ok = meets_slo(ttft, tpot, ttft_slo_ms=200.0, tpot_slo_ms=20.0)
    # never served: neither; one-token request (no TPOT): meets the TPOT SLO
    assert ttft_ok.tolist() == [True, False, False, True]
    assert tpot_ok.tolist() == [False, True, False, True]
    both = ttft_ok & tpot_ok
    assert both.tolist() == [False, False, False, True]
    # no SLO set: every served request meets it
    a, b = meets_slo(ttft, tpot, math.inf, math.inf)
    assert a.tolist() == b.tolist() == [True, True, False, True]
