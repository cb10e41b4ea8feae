"""One stream's KV capacity and the rejection reasons (apex_fast/sim/rejection.py), the "no plan
fits" message built from them, and rate scaling of a workload (apex_fast/workload/scaling.py)."""

from __future__ import annotations

import numpy as np
import pytest

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import enumerate_plans
from apex_fast.plans.memory import copy_seq_blocks
from apex_fast.search import MetricOptions, no_plan_message, search
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.sim.engine_params import WATERMARK_FRACTION
from apex_fast.sim.rejection import numbered, stream_kv_bytes, stream_kv_capacity
from apex_fast.workload import Workload, static_workload
from apex_fast.workload.scaling import scaled

H100 = get_device("H100-SXM-80GB")
MODEL = load_model("llama3.1-8b")
ONE = Cluster(H100, 1, 1)
# a quarter of the memory: about 4 GB of KV cache next to 16 GB of weights, ~30k tokens
OPTS = EngineOptions(gpu_memory_utilization=0.25)


def _capacity(opts: EngineOptions, wl: Workload) -> tuple[object, int]:
    plan = enumerate_plans(MODEL, ONE)[0][0]
    mem = simulate_plan(MODEL, ONE, plan, wl, opts).memory
    return plan, stream_kv_capacity(mem, plan.pp, opts)


def test_the_capacity_named_is_the_one_the_kernel_enforces() -> None:
    """A prompt of exactly the capacity is served, one token more is rejected, and the reason
    names that capacity. A running request may also use the watermark's blocks (vLLM keeps them
    for admissions only): one whose KV outgrows all of them is rejected once it does."""
    plan, cap = _capacity(OPTS, static_workload(1, 16, 16))
    assert 1000 < cap < 100_000
    wl = Workload(np.zeros(2), np.array([cap, cap + 1], np.int64), np.ones(2, np.int64))
    res = simulate_plan(MODEL, ONE, plan, wl, OPTS)
    assert res.rejected.tolist() == [1] and not res.feasible
    assert f"have prompts up to {cap + 1} tokens, beyond the KV capacity" in res.reason
    assert f"({cap} KV tokens per stream" in res.reason
    out = cap // 50  # 2% of the blocks, the watermark is 1%
    wl = Workload(np.array([0.0, 1000.0]), np.array([1000, cap], np.int64), np.array([16, out]))
    res = simulate_plan(MODEL, ONE, plan, wl, OPTS)
    assert res.rejected.tolist() == [1]
    assert f"prompts plus outputs up to {cap + out} tokens" in res.reason


def test_kv_bytes_is_the_inverse_of_the_capacity() -> None:
    # whole blocks: pp streams each keep the watermark on top of the request's blocks
    o16 = EngineOptions(block_size=16)
    assert stream_kv_bytes(1600, 2, o16, 1000.0) == pytest.approx(
        2 * 1600 * 1000.0 / (1 - WATERMARK_FRACTION)
    )
    # a partial block costs a whole one
    assert stream_kv_bytes(1601, 1, o16, 1.0) == stream_kv_bytes(1616, 1, o16, 1.0)
    # engines whose admission keeps no watermark need the blocks alone
    v1 = EngineOptions(engine="vllm-v1", block_size=16)
    assert stream_kv_bytes(1600, 2, v1, 1000.0) == pytest.approx(2 * 1600 * 1000.0)


@pytest.mark.parametrize("engine", ["vllm-v1", "trtllm"])
def test_without_a_watermark_the_capacity_is_every_block(engine: str) -> None:
    """vLLM V1 and TensorRT-LLM admit against the free blocks alone: the capacity the screens
    name is the whole pool, a prompt of exactly that size is served, one token more is not
    (vLLM V0's rule keeps 1% back, so its capacity would be smaller on the same memory)."""
    opts = EngineOptions(engine=engine, gpu_memory_utilization=0.25, block_size=16)
    plan, cap = _capacity(opts, static_workload(1, 16, 16))
    mem = simulate_plan(MODEL, ONE, plan, static_workload(1, 16, 16), opts).memory
    assert cap == mem.kv_blocks_per_copy // plan.pp * 16 > 1000
    wl = Workload(np.zeros(2), np.array([cap - 1, cap + 1], np.int64), np.ones(2, np.int64))
    res = simulate_plan(MODEL, ONE, plan, wl, opts)
    assert res.rejected.tolist() == [1]
    assert f"({cap} KV tokens per stream" in res.reason
    assert copy_seq_blocks(mem, plan.pp, WATERMARK_FRACTION) * 16 < cap


def test_numbered_names_the_first_five() -> None:
    assert numbered(np.array([3, 9])) == "2 request(s) (#3, 9; numbered from 0 in arrival order)"
    assert numbered(np.arange(7)).startswith("7 request(s) (#0, 1, 2, 3, 4 ...;")


def test_no_plan_message_from_the_search_results_is_the_enumerated_one() -> None:
    """search() hands its simulated plans to the diagnosis instead of enumerating again; the
    message is the same either way."""
    wl = static_workload(2, 60_000, 16)
    with pytest.raises(ApexError) as e:
        search(MODEL, ONE, wl, OPTS, MetricOptions(), workers=1)
    msg = str(e.value)
    assert "more than the KV cache of any plan here" in msg
    assert "the smallest H100-SXM-80GB cluster that holds it is" in msg
    res = [simulate_plan(MODEL, ONE, p, wl, OPTS) for p in enumerate_plans(MODEL, ONE)[0]]
    infeasible = [(r.plan.label, r.reason) for r in res]
    kw = {"workload": wl, "options": OPTS, "dtypes": ("half", "half", "half")}
    assert no_plan_message(MODEL, ONE, infeasible, "half", **kw) == msg
    assert no_plan_message(MODEL, ONE, infeasible, "half", results=res, **kw) == msg


def _workload(n: int = 4) -> Workload:
    return Workload(
        arrival=np.arange(n, dtype=np.float64),
        prompt=np.arange(1, n + 1, dtype=np.int64) * 10,
        output=np.full(n, 5, np.int64),
        name="w",
        prefix=np.full(n, 7, np.int64),
        max_concurrency=2,
        notes=("a note",),
        hash_ids=np.arange(2 * n, dtype=np.int64),
        hash_offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64),
        hash_block=16,
    )


def test_scaled_keeps_every_field() -> None:
    w = _workload()
    s = scaled(w, 4.0)
    np.testing.assert_array_equal(s.arrival, w.arrival / 4.0)
    assert s.max_concurrency == 2 and s.notes == ("a note",) and s.hash_block == 16
    np.testing.assert_array_equal(s.prefix, w.prefix)
    np.testing.assert_array_equal(s.hash_ids, w.hash_ids)
    assert scaled(w, 4.0, open_loop=True).max_concurrency == 0


def test_scaled_repeats_every_per_request_field() -> None:
    w = _workload()
    s = scaled(w, 1.0, horizon_s=10.0)  # span 3 s + one mean gap: 3 copies cover 10 s
    assert s.num_requests == 12 and s.name == "w x1 (repeated 3x)"
    np.testing.assert_array_equal(s.arrival, np.arange(12, dtype=np.float64))
    np.testing.assert_array_equal(s.prefix, np.full(12, 7))
    np.testing.assert_array_equal(s.hash_offsets, np.arange(0, 25, 2))
    np.testing.assert_array_equal(s.hash_ids, np.tile(np.arange(8), 3))
