"""KV cache per attention copy: plans that copy attention and split the batch keep one KV cache
per copy; a sequence must fit in the copy that serves it, and the report names both capacities."""

from __future__ import annotations

import numpy as np

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import enumerate_plans
from apex_fast.plans.memory import copy_seq_blocks, memory_report
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.sim.engine_params import WATERMARK_FRACTION
from apex_fast.workload import Workload, static_workload

H100 = get_device("H100-SXM-80GB")
MODEL = load_model("llama3-70b")
CLUSTER = Cluster(H100, 1, 8)


def _plan(label: str):
    plans, _ = enumerate_plans(MODEL, CLUSTER)
    return next(p for p in plans if p.label.startswith(label))


def _mem(plan, opts: EngineOptions, wl: Workload):
    return memory_report(
        MODEL,
        plan,
        H100.hbm_gb,
        opts.gpu_memory_utilization,
        opts.budget(wl),
        opts.max_num_seqs,
        opts.block_size,
    )


def test_replica_capacity_is_copies_times_one_copy() -> None:
    plan = _plan("DP1 PP1 ATTN-TP1x8")
    assert plan.attn_replicas == 8
    opts = EngineOptions()
    mem = _mem(plan, opts, static_workload(4, 2048, 16))
    assert mem.attn_copies == 8
    assert mem.kv_tokens_per_replica == 8 * mem.kv_tokens_per_copy
    assert mem.kv_blocks_per_copy * 8 == mem.kv_blocks_per_replica


def test_sequence_longer_than_one_copy_is_rejected() -> None:
    # the case: 200k-token prompts on ATTN-TP1x8 were served from the pooled KV of all
    # 8 copies (0 preemptions); one copy holds about 110k tokens
    plan = _plan("DP1 PP1 ATTN-TP1x8")
    wl = static_workload(4, 200_000, 16)
    opts = EngineOptions()
    mem = _mem(plan, opts, wl)
    copy_tokens = copy_seq_blocks(mem, plan.pp, WATERMARK_FRACTION) * opts.block_size
    assert copy_tokens < 200_016 < mem.kv_tokens_per_replica  # fits the pool, not one copy
    res = simulate_plan(MODEL, CLUSTER, plan, wl, opts)
    assert not res.feasible
    assert res.rejected is not None and res.rejected.tolist() == [0, 1, 2, 3]
    assert "one attention copy" in res.reason and f"{copy_tokens} KV tokens" in res.reason


def test_only_the_too_long_requests_are_rejected() -> None:
    plan = _plan("DP1 PP1 ATTN-TP1x8")
    opts = EngineOptions()
    prompt = np.array([1000, 200_000, 500, 1500], np.int64)
    wl = Workload(np.zeros(4), prompt, np.full(4, 16, np.int64), "mixed")
    res = simulate_plan(MODEL, CLUSTER, plan, wl, opts)
    assert res.rejected.tolist() == [1]
    served = np.concatenate(res.stream_index)
    assert sorted(served.tolist()) == [0, 2, 3]
    assert all((s.finish >= 0).all() for s in res.streams)


def test_sequence_within_one_copy_is_served() -> None:
    plan = _plan("DP1 PP1 ATTN-TP1x8")
    res = simulate_plan(MODEL, CLUSTER, plan, static_workload(4, 50_000, 16), EngineOptions())
    assert res.feasible, res.reason


def test_plan_without_copies_keeps_its_pool() -> None:
    plan = _plan("DP1 PP1 TP8")
    assert plan.attn_replicas == 1
    opts = EngineOptions()
    mem = _mem(plan, opts, static_workload(4, 2048, 16))
    assert mem.kv_tokens_per_replica == mem.kv_tokens_per_copy
    blocks = mem.kv_blocks_per_replica
    assert copy_seq_blocks(mem, 1, WATERMARK_FRACTION) == blocks - int(WATERMARK_FRACTION * blocks)


def test_cli_does_not_pick_a_plan_whose_copy_cannot_hold_the_request(capsys) -> None:
    from apex_fast.cli import main

    code = main(
        [
            "plan",
            "--model",
            "llama3-70b",
            "--num-gpus-per-node",
            "8",
            "--prompt-len",
            "200000",
            "--output-len",
            "16",
            "--num-requests",
            "4",
            "--quiet",
            "--all",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    ranked = out.split("* Infeasible plans:")[0]
    assert "ATTN-TP1x8" not in ranked.split("Ranked by latency.")[1]
    assert "one attention copy" in out


def test_each_copy_holds_only_its_own_sequences() -> None:
    # ATTN-TP1x8, requests dealt to the copies in turn: #0 and #8 land on copy 0, each growing
    # to 0.6 of one copy's KV; the others are small. The pooled blocks of all copies held
    # everything (no preemption); copy 0 alone cannot hold #0 and #8, so its last running
    # request, #8, is preempted
    plan = _plan("DP1 PP1 ATTN-TP1x8")
    opts = EngineOptions()
    mem = _mem(plan, opts, static_workload(16, 1000, 16))
    copy_tokens = copy_seq_blocks(mem, plan.pp, WATERMARK_FRACTION) * opts.block_size
    big = int(0.3 * copy_tokens)
    prompt = np.full(16, 1000, np.int64)
    output = np.full(16, 16, np.int64)
    prompt[[0, 8]] = big
    output[[0, 8]] = big
    wl = Workload(np.zeros(16), prompt, output, "two big on copy 0")
    assert int((prompt + output).sum()) < mem.kv_tokens_per_replica // 2  # pooled: ample
    res = simulate_plan(MODEL, CLUSTER, plan, wl, opts)
    assert res.feasible, res.reason
    assert res.scheduler is not None and res.scheduler.copies == 8
    (s,) = res.streams
    assert s.preemptions[8] >= 1
    assert s.preemptions[np.arange(16) != 8].sum() == 0
    assert int(s.rec_blocks.max()) <= res.scheduler.num_blocks


def test_prefix_cache_is_not_simulated_with_copies() -> None:
    plan = _plan("DP1 PP1 ATTN-TP1x8")
    opts = EngineOptions(prefix_caching=True)
    res = simulate_plan(MODEL, CLUSTER, plan, static_workload(8, 2000, 16), opts)
    assert not res.prefix_cache_on
    assert "8 attention copies" in res.prefix_cache_note
    one = _plan("DP1 PP1 TP8")
    assert simulate_plan(MODEL, CLUSTER, one, static_workload(8, 2000, 16), opts).prefix_cache_on
