"""vLLM V1 with prefix caching and prompts without hashes: every prompt is distinct, and a
preempted request finds its own freed prompt blocks when it is recomputed
(EngineProfile.hashless_prompts_keep_own_blocks; docs/scheduler.md "Prefix cache")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from apex_fast.engines import get_engine
from apex_fast.engines.options import LaunchSettings, engine_option_fields
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.sim.prefix import block_keys, distinct_block_keys, stream_keys
from apex_fast.workload import Workload


def _wl(prompts: list[int], output: int = 8, **kw) -> Workload:
    p = np.asarray(prompts, np.int64)
    return Workload(arrival=np.zeros(p.size), prompt=p, output=np.full(p.size, output), **kw)


def test_distinct_keys_cover_full_prompt_blocks_and_no_two_requests_share_one():
    wl = _wl([33, 16, 5, 100])
    keys, off = distinct_block_keys(wl, np.arange(4), 16)
    assert np.diff(off).tolist() == [2, 1, 0, 6]  # full 16-token blocks of each prompt
    assert np.unique(keys).size == keys.size == 9
    # a stream holding some of the requests gets the same keys for them as the whole workload
    sub_keys, sub_off = distinct_block_keys(wl, np.array([3, 1]), 16)
    assert sub_keys.tolist() == keys[off[3] : off[4]].tolist() + keys[off[1] : off[2]].tolist()
    assert np.diff(sub_off).tolist() == [6, 1]


def test_only_engines_that_keep_own_blocks_get_keys_for_hashless_prompts():
    wl = _wl([40, 70, 20])
    ids = np.arange(3)
    assert get_engine("vllm-v1").hashless_prompts_keep_own_blocks
    keys, off = stream_keys(wl, ids, 16, "vllm-v1")
    assert keys.size == 2 + 4 + 1 and off[-1] == keys.size
    for engine in ("vllm-0.6", "vllm-0.5", "sglang", "trtllm"):
        assert not get_engine(engine).hashless_prompts_keep_own_blocks
        keys, off = stream_keys(wl, ids, 16, engine)
        assert keys.size == 0 and off.tolist() == [0, 0, 0, 0]
    # a workload with hashes keeps its own keys (shared prefixes), for every engine
    hashed = _wl(
        [40, 70, 20], hash_ids=np.array([7, 7, 8, 7]), hash_offsets=np.array([0, 1, 3, 4]),
        hash_block=64,
    )  # fmt: skip
    want = block_keys(hashed, ids, 16)
    got = stream_keys(hashed, ids, 16, "vllm-v1")
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def _opts(engine: str, gpu: str, model, util: float) -> tuple[Cluster, object, EngineOptions]:
    device = get_device(gpu)
    cluster = Cluster(device, 1, 1)
    plans, _ = enumerate_plans(model, cluster, Pins(dp=1, pp=1, tp=1), "half", "half", "half")
    plan = next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)
    fields = engine_option_fields(
        LaunchSettings(engine=engine), device.name, device.hbm_gb * 1e9 / 2**30, 8192, 1
    )
    opts = dataclasses.replace(EngineOptions(**fields), gpu_memory_utilization=util)
    return cluster, plan, opts


@pytest.fixture(scope="module")
def tight():
    """Llama-3.1-8B on one A100 with room for about 13k KV tokens, 48 requests of 2000/400
    sent at once: V1 admits prompt chunks until the blocks run out, then preempts."""
    model = load_model("llama3.1-8b")
    wl = _wl([2000] * 48, output=400)
    return model, wl


def test_v1_recompute_after_preemption_reuses_its_own_blocks(tight):
    model, wl = tight
    cluster, plan, opts = _opts("vllm-v1", "A100-SXM-80GB", model, 0.30)
    assert opts.prefix_caching  # the V1 default
    on = simulate_plan(model, cluster, plan, wl, opts)
    off = simulate_plan(model, cluster, plan, wl, dataclasses.replace(opts, prefix_caching=False))
    assert on.feasible and off.feasible
    pre_on = sum(int(s.preemptions.sum()) for s in on.streams)
    pre_off = sum(int(s.preemptions.sum()) for s in off.streams)
    assert pre_off > 0 and pre_on > 0
    end_on = max(float(s.finish.max()) for s in on.streams)
    end_off = max(float(s.finish.max()) for s in off.streams)
    assert end_on < end_off  # recomputing only the lost blocks finishes sooner
    # distinct prompts never hit each other at their first admission
    assert all(int(s.cached.sum()) == 0 for s in on.streams)


def test_engines_without_the_rule_are_unchanged_by_prefix_caching(tight):
    model, wl = tight
    cluster, plan, opts = _opts("sglang", "A100-SXM-80GB", model, 0.30)
    assert opts.prefix_caching  # SGLang's radix cache is on by default too
    on = simulate_plan(model, cluster, plan, wl, opts)
    off = simulate_plan(model, cluster, plan, wl, dataclasses.replace(opts, prefix_caching=False))
    for a, b in zip(on.streams, off.streams, strict=True):
        assert np.array_equal(a.finish, b.finish) and np.array_equal(a.first_token, b.first_token)


def test_v1_without_preemption_is_the_same_with_or_without_prefix_caching():
    """Distinct prompts hit nothing unless a request is preempted: a run with room for every
    request gives the same times with prefix caching on as off (the keys go only to a rerun of
    a stream that preempted)."""
    model = load_model("llama3.1-8b")
    wl = _wl([2000] * 16, output=100)
    cluster, plan, opts = _opts("vllm-v1", "A100-SXM-80GB", model, 0.90)
    on = simulate_plan(model, cluster, plan, wl, opts)
    off = simulate_plan(model, cluster, plan, wl, dataclasses.replace(opts, prefix_caching=False))
    assert sum(int(s.preemptions.sum()) for s in on.streams) == 0
    for a, b in zip(on.streams, off.streams, strict=True):
        assert np.array_equal(a.finish, b.finish) and np.array_equal(a.first_token, b.first_token)
