"""Engine-specific block-FP8 and fused-MoE kernels (DeepSeek-V3/R1 checkpoints): the kernels'
compute rate relative to DeepGEMM, the Triton fused-MoE kernel's row tiles, and vLLM 0.8.x's
expert parallelism through an expert map (docs/device_model.md, "Engine kernels")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from common import bench_script

from apex_fast import cells as names
from apex_fast.engines import get_engine
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.profiles import analytic as an
from apex_fast.profiles.measured import cost_model
from apex_fast.sim.costs import cells, compile_costs
from apex_fast.sim.costs.context import CellContext

H200 = get_device("H200-SXM-141GB")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dm() -> an.DeviceModel:
    return an.device_model("H200-SXM-141GB")


def _deepseek_plan(ep: int):  # noqa: ANN202
    """DeepSeek-R1 in its block-scaled FP8 checkpoint dtype on 8 H200, TP8 with EP `ep`."""
    model = load_model("deepseek-r1")
    cl = Cluster(H200, 1, 8)
    pins = Pins(dp=1, pp=1, tp=8, ep=ep)
    plans, _ = enumerate_plans(model, cl, pins, weight="float8", act="float8")
    plan = next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)
    return model, cl, plan


def test_kernel_rate_closed_form(dm: an.DeviceModel) -> None:
    """A compute-bound block-FP8 GEMM at kernel rate r: the useful columns run at f r of the
    per-tensor rate, t(r) / t(1) = (n / (f r) + sat_mn) / (n / f + sat_mn)."""
    m, k, n = 4608, 7168, 8192
    f = k / (k + an.BLOCK_FP8_SAT_K)
    base = float(an.gemm_time(dm, m, k, n, 1.0, 2.0, "float8", block_scaled=True)) - dm.t_launch
    for r in (0.741, 0.564):
        t = float(an.gemm_time(dm, m, k, n, 1.0, 2.0, "float8", block_scaled=True, kernel_rate=r))
        want = (n / (f * r) + dm.sat_mn) / (n / f + dm.sat_mn)
        assert (t - dm.t_launch) / base == pytest.approx(want, rel=1e-9)


def test_kernel_rate_leaves_memory_bound_and_plain_gemms(dm: an.DeviceModel) -> None:
    one = an.gemm_time(dm, 7168, 2048, 1, 1.0, 2.0, "float8", block_scaled=True)
    slow = an.gemm_time(dm, 7168, 2048, 1, 1.0, 2.0, "float8", block_scaled=True, kernel_rate=0.5)
    assert float(slow) == pytest.approx(float(one), rel=1e-12)  # weights streamed: same time
    plain = an.gemm_time(dm, 7168, 2048, 4096, 1.0, 1.0, "float8")
    plain_r = an.gemm_time(dm, 7168, 2048, 4096, 1.0, 1.0, "float8", kernel_rate=0.5)
    assert float(plain_r) == float(plain)  # only block-scaled GEMMs have a kernel rate


def test_grouped_gemm_tile_rows_pad_each_expert(dm: an.DeviceModel) -> None:
    """Compute-bound experts with 65 tokens each: 64-row tiles pad them to 128 rows, 16-row
    tiles to 80; the compute time scales with the padded rows (n_pad / (n_pad + sat_mn))."""
    m, k, g = 4096, 7168, np.array([32.0])
    n = np.array([65.0])

    def compute(tile: float) -> float:
        t = an.grouped_gemm_time(dm, m, k, n, g, 1.0, 2.0, "float8", tile_rows=tile)
        return float(t[0]) - dm.t_launch

    pad16, pad64 = 80.0, 128.0
    want = (pad64 + dm.sat_mn) / (pad16 + dm.sat_mn)
    assert compute(64.0) / compute(16.0) == pytest.approx(want, rel=1e-9)


def test_fit_script_reproduces_shipped_rates() -> None:
    mod = bench_script("fit_block_fp8_kernels")
    for kernel, r in mod.fitted_rates().items():
        assert an.BLOCK_FP8_KERNEL_RATE[kernel] == pytest.approx(r, abs=5e-4)


def test_engine_kernel_choices() -> None:
    v1, sgl, trt = get_engine("vllm-v1"), get_engine("sglang"), get_engine("trtllm")
    assert (v1.block_fp8_dense_kernel, v1.fused_moe_kernel, v1.moe_ep_expert_map) == (
        "cutlass",
        "triton",
        True,
    )
    assert (sgl.block_fp8_dense_kernel, sgl.fused_moe_kernel) == ("deepgemm", "triton")
    assert not sgl.moe_ep_expert_map
    assert (trt.block_fp8_dense_kernel, trt.fused_moe_kernel) == ("deepgemm", "deepgemm")
    for p in (v1, sgl, trt):
        assert p.block_fp8_dense_kernel in an.BLOCK_FP8_KERNEL_RATE
        assert p.fused_moe_kernel in an.BLOCK_FP8_KERNEL_RATE


def test_triton_moe_tiles_follow_the_tuned_config() -> None:
    model, cl, plan = _deepseek_plan(1)
    cx = CellContext(model, cl, plan, cost_model(cl), 2048, 8, "flash-attn", moe_kernel="triton")
    tile = cells.moe_tile_rows(cx, cx.n)
    assert tile[512] == 16 and tile[768] == 16 and tile[769] == 64 and tile[2048] == 64
    cx_dg = CellContext(model, cl, plan, cost_model(cl), 2048, 8, "flash-attn")
    assert cells.moe_tile_rows(cx_dg, cx_dg.n) == an.WEIGHT_ONLY_TILE_N
    # experts spread over 8 devices: no tuned configuration, the default 64 rows at every batch
    model, cl, plan8 = _deepseek_plan(8)
    cx8 = CellContext(model, cl, plan8, cost_model(cl), 2048, 8, "flash-attn", moe_kernel="triton")
    assert cells.moe_tile_rows(cx8, cx8.n) == 64


def test_expert_map_adds_zero_writes_and_full_buffers() -> None:
    """vLLM 0.8.x EP through an expert map: per device and MoE layer, the top-k reduction reads
    all n k rows (not n k / EP), the other ranks' row blocks write zeros into both GEMM outputs
    (n k (1 - 1/EP) rows of 2 I + h values), and the activation kernel runs over all n k rows.
    Without EP the map changes nothing."""
    model, cl, plan = _deepseek_plan(8)
    cm = cost_model(cl)

    def moe_row(expert_map: bool) -> tuple[CellContext, np.ndarray]:
        cx = CellContext(model, cl, plan, cm, 4096, 8, "flash-attn", ep_expert_map=expert_map)
        return cx, cells.moe(cx)[0].time

    cx0, t0 = moe_row(False)
    cx1, t1 = moe_row(True)
    n, k, h, ep, ab = cx0.n, model.topk, model.hidden_size, plan.ep, cx0.ab
    width = model.moe_intermediate_size // plan.ffn_tp
    assert plan.ffn_tp == 1 and ep == 8
    mem = lambda b: cx0.mem(b).t  # noqa: E731  (the memory-pass cost the cell builder uses)
    rows0, rows1 = np.ceil(n * k / ep), n * k
    per_val = ab + 1.0 + 4.0 / cells.BLOCK_FP8_GROUP
    want = (
        mem((rows1 + n) * h * ab) - mem((rows0 + n) * h * ab)  # reduction reads every row
        + mem(n * k * (1 - 1 / ep) * (2 * width + h) * ab)  # zero writes (one more pass)
        + mem(rows1 * width * per_val) - mem(rows0 * width * per_val)  # FP8 group quant
    )  # fmt: skip
    assert np.allclose(t1 - t0, cx0.lx * want, rtol=1e-9, atol=1e-15)
    a0, a1 = cx0.ffn_activation_bytes(), cx1.ffn_activation_bytes()
    assert a1[4096] == pytest.approx(3 * 4096 * k * width * ab)
    assert a0[4096] == pytest.approx(3 * np.ceil(4096 * k / ep) * width * ab)

    model, cl, plan1 = _deepseek_plan(1)
    c0 = CellContext(model, cl, plan1, cm, 256, 8, "flash-attn")
    c1 = CellContext(model, cl, plan1, cm, 256, 8, "flash-attn", ep_expert_map=True)
    assert np.array_equal(cells.moe(c0)[0].time, cells.moe(c1)[0].time)


def test_engine_kernels_slow_deepseek_prefill_not_decode() -> None:
    """vLLM V1 runs DeepSeek-R1's dense linears on CUTLASS and its experts on the Triton fused
    MoE: a prefill-sized step costs more than with DeepGEMM-rate kernels (TensorRT-LLM's
    profile), a one-token decode step (weights streamed) about the same."""
    model, cl, plan = _deepseek_plan(1)
    kw = dict(max_tokens=8192, max_seqs=8)
    v1 = compile_costs(model, cl, plan, engine="vllm-v1", **kw)
    dg = compile_costs(model, cl, plan, engine="trtllm", **kw)
    moe_v1, moe_dg = v1.tok_ops[names.MOE], dg.tok_ops[names.MOE]
    assert moe_v1[8192] > 1.3 * moe_dg[8192]
    assert moe_v1[1] == pytest.approx(moe_dg[1], rel=0.05)
    assert v1.tok_ops[names.ATTENTION][8192] > dg.tok_ops[names.ATTENTION][8192]


def test_block_fp8_linear_quantises_its_input_per_group() -> None:
    """A block-FP8 linear = one 1x128-group quantisation pass over its input (n x k values,
    16-bit read, FP8 written, one FP32 scale per 128) + the GEMM at the dense kernel's rate."""
    model, cl, plan = _deepseek_plan(1)
    cx = CellContext(
        model, cl, plan, cost_model(cl), 4096, 8, "flash-attn", dense_fp8_kernel="cutlass"
    )
    m, k = 2112, 7168
    got = cells.block_fp8_gemm(cx, m, k, cx.n).t
    gemm = an.gemm_time(
        cx.dm, m, k, cx.n, cx.wb, cx.ab, cx.cdt, block_scaled=True, kernel_rate=0.741
    )
    quant = cx.mem(cx.n * k * (cx.ab + 1.0 + 4.0 / 128)).t
    want = np.where(cx.n > 0, gemm, 0.0) + quant
    assert np.allclose(got, want, rtol=1e-12, atol=0.0)
    assert got[0] == 0.0
