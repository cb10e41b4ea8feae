"""Plan enumeration, pins and the memory model."""

from __future__ import annotations

import pytest

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans, split_layers
from apex_fast.plans.memory import GIB, memory_report, weight_bytes_per_device
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import static_workload

H100 = get_device("H100-SXM-80GB")


def _labels(model: str, nodes: int, gpn: int) -> list[str]:
    plans, _ = enumerate_plans(load_model(model), Cluster(H100, nodes, gpn))
    return [p.label for p in plans]


def test_llama70b_two_gpus_has_tp2_and_pp2() -> None:
    labels = _labels("llama3-70b", 1, 2)
    assert "DP1 PP1 TP2" in labels
    assert "DP1 PP2 TP1" in labels
    assert "DP2 PP1 TP1" in labels  # enumerated; dropped later for memory


def test_every_plan_uses_the_whole_cluster() -> None:
    model = load_model("llama3-70b")
    cl = Cluster(H100, 2, 8)
    plans, _ = enumerate_plans(model, cl)
    assert plans
    for p in plans:
        assert p.num_gpus == 16
        assert sum(p.layers_per_stage) == model.num_layers


def test_split_layers_even_and_uneven() -> None:
    assert split_layers(80, 4) == (20, 20, 20, 20)
    assert split_layers(10, 4) == (3, 3, 2, 2)


def test_gqa_at_tp16_replicates_kv_heads_evenly() -> None:
    model = load_model("llama3-70b")  # 64 query heads, 8 KV heads
    plans, _ = enumerate_plans(model, Cluster(H100, 2, 8), Pins(tp=16))
    assert "DP1 PP1 TP16" in [p.label for p in plans]
    assert all(p.tp == 16 for p in plans)
    # 64 query heads over 16 devices: 4 each, and each device keeps one of the 8 KV heads
    from apex_fast.plans.memory import kv_heads_per_device

    assert model.num_heads // 16 == 4 and kv_heads_per_device(model, 16) == 1


def test_heads_that_do_not_split_are_skipped_with_reason() -> None:
    model = load_model("llama-30b")  # 52 heads
    plans, skipped = enumerate_plans(model, Cluster(H100, 1, 8))
    assert all(p.tp in (1, 2, 4) for p in plans)
    assert any("52 attention heads" in why for _, why in skipped)


@pytest.mark.parametrize(
    ("pins", "msg"),
    [
        (Pins(tp=3), "does not divide"),
        (Pins(tp=0), "at least 1"),
        (Pins(pp=4, tp=4), "does not divide"),
        (Pins(ep=2), "mixture-of-experts"),
    ],
)
def test_bad_pins(pins: Pins, msg: str) -> None:
    with pytest.raises(ApexError, match=msg):
        enumerate_plans(load_model("llama3-70b"), Cluster(H100, 1, 8), pins)


def test_memory_per_device_falls_with_parallelism() -> None:
    model = load_model("llama3-70b")
    cl = Cluster(H100, 1, 8)
    plans, _ = enumerate_plans(model, cl, Pins(dp=1, pp=1))
    megatron = [p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1]
    by_tp = {p.tp: weight_bytes_per_device(model, p) for p in megatron}
    tps = sorted(by_tp)
    for a, b in zip(tps, tps[1:], strict=False):
        assert by_tp[b] < by_tp[a]
    # TP8 holds about an eighth of the 141 GB of BF16 weights
    assert by_tp[8] / GIB == pytest.approx(70.55e9 * 2 / 8 / GIB, rel=0.03)


def test_dp2_on_two_gpus_does_not_fit() -> None:
    model = load_model("llama3-70b")
    cl = Cluster(H100, 1, 2)
    plans, _ = enumerate_plans(model, cl, Pins(dp=2))
    mem = memory_report(model, plans[0], H100.hbm_gb, 0.9, 2048, 256, 16)
    assert not mem.fits
    assert "weights need" in mem.reason


def test_kv_capacity_grows_with_memory_utilisation() -> None:
    model = load_model("llama3-70b")
    plans, _ = enumerate_plans(model, Cluster(H100, 1, 4), Pins(tp=4))
    low = memory_report(model, plans[0], H100.hbm_gb, 0.8, 2048, 256, 16)
    high = memory_report(model, plans[0], H100.hbm_gb, 0.95, 2048, 256, 16)
    assert high.kv_blocks_per_replica > low.kv_blocks_per_replica > 0


def test_more_gpus_never_increase_per_device_work() -> None:
    """Per-step GEMM and attention time of one device shrinks as TP grows."""
    from apex_fast.sim.costs import compile_costs

    model = load_model("llama3-70b")
    prev = None
    for tp in (1, 2, 4, 8):
        cl = Cluster(H100, 1, tp)
        plan = enumerate_plans(model, cl, Pins(tp=tp))[0][0]
        cc = compile_costs(model, cl, plan, 512, 16)
        work = cc.tok_ops["Attention"][256] + cc.tok_ops["SwiGLU"][256] + cc.costs.c_ctx
        if prev is not None:
            assert work < prev
        prev = work


def test_infeasible_plan_reports_reason_in_simulation() -> None:
    model = load_model("llama3-70b")
    cl = Cluster(H100, 1, 2)
    plan = enumerate_plans(model, cl, Pins(dp=2))[0][0]
    res = simulate_plan(model, cl, plan, static_workload(4, 16, 4), EngineOptions())
    assert not res.feasible and res.reason
