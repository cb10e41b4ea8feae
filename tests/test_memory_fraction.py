"""The engine's memory-fraction knob decides the KV pool (plans.memory.kv_pool_bytes)."""

from __future__ import annotations

import pytest

from apex_fast.engines import ENGINES
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import enumerate_plans
from apex_fast.plans.memory import (
    GIB,
    PEAK_FREE_MEMORY,
    RUNTIME_RESERVE_BYTES,
    USABLE_FRACTION,
    kv_pool_bytes,
    memory_report,
    profiling_terms,
    weight_bytes_per_device,
)

CAP, W, ACT = 80.0 * GIB, 60.0 * GIB, 4.0 * GIB


def test_vllm_fraction_holds_weights_activations_and_kv() -> None:
    got = kv_pool_bytes(CAP, W, ACT, 0.9, "gpu_memory_utilization")
    assert got == pytest.approx(0.9 * CAP - W - ACT - RUNTIME_RESERVE_BYTES)


def test_sglang_static_fraction_leaves_activations_outside() -> None:
    # SGLang model_runner profile_max_num_token: free after load - total x (1 - fraction)
    got = kv_pool_bytes(CAP, W, ACT, 0.88, "mem_fraction_static")
    assert got == pytest.approx(0.88 * CAP - W - RUNTIME_RESERVE_BYTES)
    assert got > kv_pool_bytes(CAP, W, ACT, 0.88, "gpu_memory_utilization")


def test_trtllm_fraction_of_free_memory() -> None:
    got = kv_pool_bytes(CAP, W, ACT, 0.9, "kv_cache_free_gpu_mem_fraction")
    assert got == pytest.approx(0.9 * (CAP - W - ACT - RUNTIME_RESERVE_BYTES))


def test_unknown_kind_refused() -> None:
    with pytest.raises(ValueError):
        kv_pool_bytes(CAP, W, ACT, 0.9, "whatever")


def test_every_engine_kind_is_understood() -> None:
    for profile in ENGINES.values():
        kv_pool_bytes(CAP, W, ACT, 0.9, profile.memory_fraction_kind)


def test_report_uses_the_kind() -> None:
    """Qwen3-32B bf16 on one 80 GB H100 with SGLang's 0.88: activations of an 8192-token step
    would take a large share of the pool if counted inside the fraction (as vLLM does)."""
    model = load_model("qwen3-32b")
    cluster = Cluster(device=get_device("H100-SXM-80GB"), num_nodes=1, gpus_per_node=1)
    plans, _ = enumerate_plans(model, cluster)
    plan = plans[0]
    args = (model, plan, 80.0, 0.88, 8192, 256, 1)
    sgl = memory_report(*args, fraction_kind="mem_fraction_static")
    vll = memory_report(*args, fraction_kind="gpu_memory_utilization")
    cap = 80.0 * GIB * USABLE_FRACTION
    w = weight_bytes_per_device(model, plan)
    # vLLM counts its profiling step's activations and non-PyTorch memory inside the fraction
    act, runtime = profiling_terms(model, plan, 8192, 256, PEAK_FREE_MEMORY)
    assert sgl.kv_available == pytest.approx(0.88 * cap - w - RUNTIME_RESERVE_BYTES)
    assert vll.kv_available == pytest.approx(0.88 * cap - w - act - runtime)
    assert sgl.kv_tokens > 1.2 * vll.kv_tokens
