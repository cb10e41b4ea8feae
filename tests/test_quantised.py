"""Quantised GEMMs: weight-only int4/int8 stream fewer bytes than W8A8 FP8 and bf16, and small
batches stay near the memory floor of the quantised weights."""

from __future__ import annotations

import numpy as np
import pytest

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.profiles import analytic
from apex_fast.sim.costs import compile_costs


def _decode_gpu_s(weight: str, act: str, tp: int = 1) -> float:
    m = load_model("llama3-70b")
    cl = Cluster(get_device("H100-SXM-80GB"), 1, tp)
    plans, _ = enumerate_plans(m, cl, Pins(dp=1, pp=1, tp=tp), weight=weight, act=act, kv="half")
    plan = next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)
    cc = compile_costs(m, cl, plan, 64, 8)
    return float(cc.costs.tok_table[1] + cc.costs.seq_table[1])


def test_batch_one_decode_orders_by_weight_bytes() -> None:
    t = {w: _decode_gpu_s(w, "half") for w in ("half", "int8", "int4")}
    t["float8"] = _decode_gpu_s("float8", "float8")
    assert t["int4"] < t["int8"] < t["float8"] < t["half"]


def test_int4_decode_near_its_memory_floor() -> None:
    m = load_model("llama3-70b")
    floor = m.params_total() * 0.5 / (get_device("H100-SXM-80GB").hbm_tbps * 1e12)
    t = _decode_gpu_s("int4", "half")
    # ~10.5 ms of weights; launches, norms and attention add a few ms, never 3.5x
    assert floor < t < 1.6 * floor


def test_weight_only_gemm_is_memory_bound_for_small_batches() -> None:
    dm = analytic.device_model("H100-SXM-80GB")
    n = np.array([1.0, 8.0, 16.0])
    t4 = analytic.gemm_time(dm, 8192, 8192, n, 0.5, 2.0, "half")
    t16 = analytic.gemm_time(dm, 8192, 8192, n, 2.0, 2.0, "half")
    # weights dominate: 4-bit moves ~0.26x the bytes of 16-bit
    assert np.all(t4 < 0.5 * t16)
    mem = 8192 * 8192 * (0.5 + 2.0 / analytic.INT4_GROUP_SIZE) / (dm.mem_bw * dm.eta_mem)
    assert t4[0] == pytest.approx(mem + dm.t_launch, rel=0.01)
    # large batches are compute-bound like FP16
    big = analytic.gemm_time(dm, 8192, 8192, np.array([8192.0]), 0.5, 2.0, "half")
    big16 = analytic.gemm_time(dm, 8192, 8192, np.array([8192.0]), 2.0, 2.0, "half")
    assert 0.7 < big[0] / big16[0] <= 1.0
