"""MoE and MLA costs of block-scaled FP8 checkpoints (DeepSeek-V3/R1): attention in 16 bits,
block-scaled GEMMs losing compute rate at short K (docs/device_model.md, "Block-scaled FP8")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from apex_fast import cells as names
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.profiles import analytic as an
from apex_fast.sim.costs import compile_costs

H200 = get_device("H200-SXM-141GB")


@pytest.fixture(scope="module")
def dm() -> an.DeviceModel:
    return an.device_model("H100-SXM-80GB")


def _compute_s(dm: an.DeviceModel, m: int, k: int, n: int, block: bool) -> float:
    """Compute-bound GEMM seconds without the launch."""
    return float(an.gemm_time(dm, m, k, n, 1.0, 1.0, "float8", block_scaled=block)) - dm.t_launch


def test_block_fp8_efficiency_closed_form() -> None:
    c = an.BLOCK_FP8_SAT_K
    assert an.block_fp8_k_efficiency(c) == pytest.approx(0.5)
    assert an.block_fp8_k_efficiency(3 * c) == pytest.approx(0.75)
    assert float(an.block_fp8_k_efficiency(1e9)) == pytest.approx(1.0, abs=1e-6)


def test_block_fp8_gemm_compute_bound_closed_form(dm: an.DeviceModel) -> None:
    """Many tokens: the useful columns run at f = k / (k + c) of the per-tensor rate, the tile
    remainder (sat_mn) as before: t_block / t_plain = (n / f + sat_mn) / (n + sat_mn)."""
    m, n = 7168, 4096
    for k in (1024, 2048, 7168):  # compute-bound shapes (K = 256 writes more than it computes)
        f = k / (k + an.BLOCK_FP8_SAT_K)
        want = (n / f + dm.sat_mn) / (n + dm.sat_mn)
        got = _compute_s(dm, m, k, n, True) / _compute_s(dm, m, k, n, False)
        assert got == pytest.approx(want, rel=1e-9)
    # the published shape the constant was fitted on: DeepGEMM's K = 512 row (590 TFLOPS)
    t = _compute_s(dm, 32768, 512, 4096, True) + dm.t_launch
    assert 2 * 32768 * 512 * 4096 / t / 1e12 == pytest.approx(590, rel=0.05)


def test_block_fp8_gemm_memory_bound_unchanged(dm: an.DeviceModel) -> None:
    """One token streams the weights: block scaling does not change a memory-bound GEMM."""
    plain = an.gemm_time(dm, 7168, 2048, 1, 1.0, 2.0, "float8")
    block = an.gemm_time(dm, 7168, 2048, 1, 1.0, 2.0, "float8", block_scaled=True)
    assert float(block) == pytest.approx(float(plain), rel=1e-12)


def test_block_fp8_grouped_gemm_closed_form(dm: an.DeviceModel) -> None:
    """The fused-MoE grouped GEMM follows the same rule per expert (tokens padded to 16)."""
    m, k, n, g = 512, 7168, np.array(256.0), np.array(256.0)
    plain = an.grouped_gemm_time(dm, m, k, n, g, 1.0, 1.0, "float8") - dm.t_launch
    block = an.grouped_gemm_time(dm, m, k, n, g, 1.0, 1.0, "float8", block_scaled=True)
    f = k / (k + an.BLOCK_FP8_SAT_K)
    want = (256 / f + dm.sat_mn) / (256 + dm.sat_mn)
    assert float((block - dm.t_launch) / plain) == pytest.approx(want, rel=1e-9)
    # the down projection of an 8-way split (K = 256) loses more than the up projection
    down = an.grouped_gemm_time(dm, 7168, 256, n, g, 1.0, 1.0, "float8", block_scaled=True)
    down0 = an.grouped_gemm_time(dm, 7168, 256, n, g, 1.0, 1.0, "float8")
    assert float(down / down0) > float(block / (plain + dm.t_launch))


def test_attention_compute_dtype() -> None:
    assert an.attention_compute_dtype("float8") == "half"
    assert an.attention_compute_dtype("half") == "half"
    assert an.attention_compute_dtype("float") == "float"


def _deepseek(weight: str, native: str | None = None):  # noqa: ANN202
    model = load_model("deepseek-r1")
    if native is not None:
        model = dataclasses.replace(model, native_weight_dtype=native)
    cl = Cluster(H200, 1, 8)
    plans, _ = enumerate_plans(model, cl, Pins(dp=1, pp=1, tp=8, ep=1), weight=weight, act=weight)
    plan = next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)
    return model, plan, compile_costs(model, cl, plan, 8192, 64)


def test_mla_attention_runs_in_16_bits() -> None:
    """DeepSeek-R1's FP8 weights do not make its attention FP8: the prefill cost per (query,
    key) pair is 2 x heads x (192 + 128) FLOPs per layer at the 16-bit peak, the same as for
    BF16 weights (it was charged at the FP8 peak, half the time)."""
    model, plan, fp8 = _deepseek("float8")
    _, _, bf16 = _deepseek("half")
    assert fp8.costs.c_attn == pytest.approx(bf16.costs.c_attn, rel=1e-12)
    dm = an.device_model(H200)
    heads = model.num_heads // plan.tp
    per_pair = 2.0 * heads * (192 + 128) / (dm.peak("half") * dm.eta_attn)
    assert fp8.costs.c_attn == pytest.approx(model.num_layers * per_pair, rel=1e-12)


def test_block_fp8_checkpoint_moe_is_slower_at_prefill_only() -> None:
    """The checkpoint's block-scaled FP8 experts (K = 256 per device for the down projection
    under TP8) cost more than per-tensor FP8 ones for a prefill chunk; a decode step of a few
    tokens streams the same weights and costs about the same."""
    _, _, blk = _deepseek("float8")
    _, _, tensor = _deepseek("float8", native="")
    moe_b, moe_t = blk.tok_ops[names.MOE], tensor.tok_ops[names.MOE]
    assert moe_b[8192] > 1.3 * moe_t[8192]
    # one token: the same weights streamed; the block-scaled form quantises each input in one
    # per-group pass where the per-tensor form runs three (max, quantise, scale fill), so it
    # saves a few small kernels per layer
    assert moe_t[1] > moe_b[1] > 0.85 * moe_t[1]
    attn_b, attn_t = blk.tok_ops[names.ATTENTION], tensor.tok_ops[names.ATTENTION]
    assert attn_b[8192] > attn_t[8192]  # MLA projections (K = 512 .. 7168) are block-scaled too


def test_moe_top_k_reduction_pass() -> None:
    """The fused MoE sums each token's k expert outputs in a memory pass: (n k / ep + n) x hidden
    activations read and written per device per MoE layer."""
    from apex_fast.profiles.measured import cost_model
    from apex_fast.sim.costs import cells
    from apex_fast.sim.costs.context import CellContext

    model = load_model("deepseek-r1")
    cl = Cluster(H200, 1, 8)
    for ep in (1, 8):
        plans, _ = enumerate_plans(model, cl, Pins(dp=1, pp=1, tp=8, ep=ep))
        plan = next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)
        cx = CellContext(model, cl, plan, cost_model(cl), 64, 8, "flash-attn")
        seen: list[np.ndarray] = []
        real = cx.mem

        def record(nbytes: np.ndarray, real=real, seen=seen):  # noqa: ANN202
            seen.append(np.asarray(nbytes, dtype=np.float64))
            return real(nbytes)

        cx.mem = record  # type: ignore[method-assign]
        cells.moe(cx)
        n, k, h = cx.n, model.topk, model.hidden_size
        want = (np.ceil(n * k / plan.ep) + n) * h * cx.ab
        assert any(s.shape == want.shape and np.allclose(s, want) for s in seen), ep
