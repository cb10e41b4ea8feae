"""The engine front end's per-request time (EngineProfile.request_frontend_s): the engine loop
sees each request that much later, TTFT and latency count from the client's send."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from apex_fast.engines import ENGINES, get_engine
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.engine import EngineOptions, frontend_lag, simulate_plan
from apex_fast.workload import Workload, static_workload

H100 = get_device("H100-SXM-80GB")
V1_LAG = get_engine("vllm-v1").request_frontend_s


def _run(wl: Workload, lag: float | None, monkeypatch: pytest.MonkeyPatch):
    """Simulate llama-7b on one H100 under vLLM V1, its front-end time set to `lag` (None:
    the profile's own)."""
    if lag is not None:
        prof = dataclasses.replace(ENGINES["vllm-v1"], request_frontend_s=lag)
        monkeypatch.setitem(ENGINES, "vllm-v1", prof)
    m = load_model("llama-7b")
    cl = Cluster(H100, 1, 1)
    plan = enumerate_plans(m, cl, Pins(tp=1))[0][0]
    res = simulate_plan(m, cl, plan, wl, EngineOptions(engine="vllm-v1"))
    assert res.feasible, res.reason
    return res, compute_metrics(res, wl, cl)


def test_v1_profile_carries_the_sourced_front_end_time() -> None:
    # 13.2 ms: vLLM PR 21139's printed preprocessing times (engines/vllm_v1.py)
    assert V1_LAG == pytest.approx(13.2e-3)


@pytest.mark.parametrize("name", ["vllm-0.5", "vllm-0.6", "sglang", "trtllm"])
def test_other_engines_have_no_front_end_time(name: str) -> None:
    # the vLLM 0.6 reference fit and the other engines' replays are unchanged by the concept
    assert get_engine(name).request_frontend_s == 0.0
    assert frontend_lag(EngineOptions(engine=name)) == 0.0


def test_decode_pool_gets_no_front_end_time() -> None:
    opts = EngineOptions(engine="vllm-v1")
    assert frontend_lag(opts) == V1_LAG
    assert frontend_lag(dataclasses.replace(opts, decode_pool=True)) == 0.0


def test_single_request_ttft_and_latency_grow_by_exactly_the_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wl = static_workload(1, 300, 20)
    base, mb = _run(wl, 0.0, monkeypatch)
    lag = 0.025
    res, m = _run(wl, lag, monkeypatch)
    s0, s = base.streams[0], res.streams[0]
    assert s.arrival[0] == pytest.approx(0.0)  # entry = the client's send time
    assert s.first_token[0] == pytest.approx(s0.first_token[0] + lag, rel=1e-12)
    assert s.finish[0] == pytest.approx(s0.finish[0] + lag, rel=1e-12)
    assert m.ttft_mean_s == pytest.approx(mb.ttft_mean_s + lag, rel=1e-12)
    # inter-token times are engine steps: untouched
    assert m.tpot_mean_s == pytest.approx(mb.tpot_mean_s, rel=1e-12)


def test_open_loop_trace_is_shifted_not_reshaped(monkeypatch: pytest.MonkeyPatch) -> None:
    # a constant delay in front of the engine shifts the whole engine timeline: every request's
    # TTFT grows by exactly the lag, whatever the queueing in the engine
    rng = np.random.default_rng(3)
    n = 120
    wl = Workload(
        arrival=np.cumsum(rng.exponential(0.05, n)),
        prompt=rng.integers(50, 1500, n),
        output=rng.integers(2, 200, n),
        name="poisson",
    )
    lag = 0.04
    base, _ = _run(wl, 0.0, monkeypatch)
    res, _ = _run(wl, lag, monkeypatch)
    for s0, s in zip(base.streams, res.streams, strict=True):
        np.testing.assert_allclose(s.arrival, s0.arrival, rtol=0, atol=1e-12)
        np.testing.assert_allclose(s.first_token - s.arrival, s0.first_token - s0.arrival + lag)
        np.testing.assert_allclose(s.finish, s0.finish + lag)


def test_closed_loop_ttft_includes_the_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    wl = static_workload(16, 200, 30)
    wl = dataclasses.replace(wl, max_concurrency=1)
    base, mb = _run(wl, 0.0, monkeypatch)
    lag = 0.03
    res, m = _run(wl, lag, monkeypatch)
    # one client: each request waits for the previous one, then spends `lag` in the front end
    assert m.ttft_mean_s == pytest.approx(mb.ttft_mean_s + lag, rel=1e-9)
    s = res.streams[0]
    assert np.all(s.first_token - s.arrival >= lag)
