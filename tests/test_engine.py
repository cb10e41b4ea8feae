"""End-to-end simulation of one plan: closed forms and invariants at the plan level."""

from __future__ import annotations

import numpy as np
import pytest

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.engine import EngineOptions, simulate_plan, stream_split
from apex_fast.workload import Workload, static_workload

H100 = get_device("H100-SXM-80GB")


def _one(model: str, gpus: int, wl: Workload, **kw):
    m = load_model(model)
    cl = Cluster(H100, 1, gpus)
    plan = enumerate_plans(m, cl, Pins(**kw))[0][0]
    res = simulate_plan(m, cl, plan, wl, EngineOptions())
    assert res.feasible, res.reason
    return m, cl, res


def test_single_request_one_gpu_closed_form() -> None:
    prompt, out = 300, 20
    m, cl, res = _one("llama-7b", 1, static_workload(1, prompt, out), tp=1)
    c = res.compiled.costs
    gpu = c.tok_table[prompt] + c.seq_table[1] + c.c_attn * prompt * (prompt + 1) / 2
    host = c.overhead + c.host_seq  # one scheduled sequence per step
    assert c.host_seq > 0 and c.eager_floor > 0
    ttft = host + max(gpu, c.eager_floor)  # a prefill step runs eagerly
    s = res.streams[0]
    assert s.first_token[0] == pytest.approx(ttft, rel=1e-12)
    steps = [host + c.tok_table[1] + c.seq_table[1] + c.c_ctx * (prompt + g) for g in range(1, out)]
    assert s.finish[0] == pytest.approx(ttft + sum(steps), rel=1e-12)
    met = compute_metrics(res, static_workload(1, prompt, out), cl)
    assert met.ttft_mean_s == pytest.approx(ttft, rel=1e-12)
    assert met.tpot_mean_s == pytest.approx(np.mean(steps), rel=1e-12)
    assert met.itl_mean_s == pytest.approx(np.mean(steps), rel=1e-12)
    # TBT percentiles come from a histogram with 0.58%-wide bins
    assert met.tbt_p50_s == pytest.approx(np.median(steps), rel=0.01)


def test_round_robin_split_covers_every_request_once() -> None:
    wl = static_workload(10, 8, 4)
    parts = stream_split(wl, 2, 2)
    allids = np.sort(np.concatenate(parts))
    assert list(allids) == list(range(10))
    assert list(parts[0]) == [0, 4, 8]


def test_metrics_invariants_on_a_poisson_trace() -> None:
    rng = np.random.default_rng(1)
    n = 300
    wl = Workload(
        arrival=np.cumsum(rng.exponential(0.2, n)) - 0.0,
        prompt=rng.integers(10, 3000, n),
        output=rng.integers(1, 600, n),
    )
    m, cl, res = _one("llama3-70b", 8, wl, tp=4, dp=2)
    met = compute_metrics(res, wl, cl)
    for s, ids in zip(res.streams, res.stream_index, strict=True):
        assert np.all(s.first_token > wl.arrival[ids])
        assert np.all(s.finish >= s.first_token)
        assert np.all(s.rec_blocks <= res.memory.kv_blocks_per_replica // res.plan.pp)
    assert 0 < met.mfu < 1 and 0 < met.mbu < 1
    assert met.ttft_p50_s <= met.ttft_p95_s
    assert met.latency_p50_s <= met.latency_p95_s
    assert met.energy_kj > 0
    assert met.throughput_tokens_per_s == pytest.approx(wl.output.sum() / met.makespan_s)
    total = next(b for b in met.breakdown if b[0] == "Total")[1]
    assert total == pytest.approx(met.makespan_s)
    busy = sum(b[1] for b in met.breakdown if b[0] not in ("Total", "Idle"))
    assert busy == pytest.approx(met.busy_s, rel=1e-9)


def test_more_load_means_more_latency() -> None:
    m, cl, light = _one("llama-7b", 1, static_workload(4, 512, 64), tp=1)
    _, _, heavy = _one("llama-7b", 1, static_workload(256, 512, 64), tp=1)
    lm = compute_metrics(light, static_workload(4, 512, 64), cl)
    hm = compute_metrics(heavy, static_workload(256, 512, 64), cl)
    assert hm.ttft_mean_s > lm.ttft_mean_s
    assert hm.throughput_tokens_per_s > lm.throughput_tokens_per_s


@pytest.mark.parametrize(
    "engine, eager", [("vllm-0.6", False), ("vllm-0.6", True), ("vllm-v1", False)]
)
def test_time_breakdown_adds_up_to_the_makespan(engine: str, eager: bool) -> None:
    """Every second of a stream's busy time is in one breakdown row, whichever graph rule
    (eager steps, piecewise graphs) stretched its steps."""
    m = load_model("llama-7b")
    cl = Cluster(H100, 1, 1)
    plan = enumerate_plans(m, cl, Pins(tp=1))[0][0]
    wl = static_workload(16, 300, 40)
    res = simulate_plan(m, cl, plan, wl, EngineOptions(engine=engine, enforce_eager=eager))
    met = compute_metrics(res, wl, cl)
    rows = {name: sec for name, sec, _, _ in met.breakdown}
    parts = sum(sec for name, sec in rows.items() if name != "Total")
    assert parts == pytest.approx(rows["Total"], rel=1e-6)
    if eager:
        assert rows["Eager-mode launch floor"] > 0.0
