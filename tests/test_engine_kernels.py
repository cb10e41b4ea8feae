"""Per-engine attention kernels, eager launch counts and KV memory fraction."""

from __future__ import annotations

import pytest

from apex_fast.engines import ENGINE_NAMES, ENGINES, get_engine
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans import memory as mem
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.costs import XFORMERS_REL_EFFICIENCY, compile_costs
from apex_fast.sim.step_time import K_FP8_ACT_QUANT, launch_counts

GPUS = ("H100-SXM-80GB", "A100-SXM-80GB", "V100-PCIE-16GB")

# GPUs older than SM 8.0 (no FlashAttention-2)
_PRE_AMPERE = ("V100", "T4", "P100")


def v0_attention_backend(kv_dtype: str, device_name: str) -> str:
    """vLLM 0.6's choice restated independently of the engine profiles (vllm@0.6.0:
    vllm/attention/selector.py which_attn_to_use): FlashAttention unless the KV cache is FP8 or
    the GPU is older than SM 8.0, then xFormers for prefill and PagedAttention for decode."""
    if kv_dtype in ("float8", "int8") or device_name.upper().startswith(_PRE_AMPERE):
        return "xformers"
    return "flash-attn"


def _plan(model: str, gpu: str, tp: int, wdt: str, kvdt: str):
    m = load_model(model)
    cluster = Cluster(get_device(gpu), 1, tp)
    plans, _ = enumerate_plans(m, cluster, Pins(dp=1, pp=1, tp=tp), wdt, wdt, kvdt)
    return m, cluster, next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("kv", ["half", "float8", "int8"])
def test_vllm06_profile_reproduces_the_v0_selector(gpu, kv):
    """The profile's choice is the rule v0_attention_backend restates (vLLM 0.6.0
    attention/selector.py), so moving the choice to the engine changes nothing for vLLM 0.6."""
    for name in ("vllm-0.6", "vllm-0.5"):
        assert ENGINES[name].attention_kernel(kv, gpu) == v0_attention_backend(kv, gpu)


def test_engines_choose_their_own_attention_kernel():
    assert get_engine("trtllm").attention_kernel("float8", "H100-SXM-80GB") == "trtllm"
    assert get_engine("trtllm").attention_kernel("half", "A100-SXM-80GB") == "trtllm"
    v1 = get_engine("vllm-v1")
    assert v1.attention_kernel("float8", "H100-SXM-80GB") == "flash-attn"  # FA3 takes FP8 KV
    assert v1.attention_kernel("float8", "A100-SXM-80GB") == "xformers"  # V0 fallback
    assert v1.attention_kernel("half", "A100-SXM-80GB") == "flash-attn"
    sg = get_engine("sglang")
    assert sg.attention_kernel("half", "H100-SXM-80GB") == "flash-attn"  # fa3
    assert sg.attention_kernel("half", "A100-SXM-80GB") == "flashinfer"


def test_fp8_kv_prefill_attention_is_not_charged_xformers_under_trtllm():
    m, cluster, plan = _plan("llama3.1-8b", "H100-SXM-80GB", 1, "half", "float8")
    trt = compile_costs(m, cluster, plan, 512, 16, engine="trtllm")
    v06 = compile_costs(m, cluster, plan, 512, 16, engine="vllm-0.6")
    assert trt.attention_backend == "trtllm" and v06.attention_backend == "xformers"
    assert trt.costs.c_attn == pytest.approx(v06.costs.c_attn * XFORMERS_REL_EFFICIENCY)
    # the GPU tables do not depend on the engine
    assert (trt.costs.tok_table == v06.costs.tok_table).all()


def test_fp8_quantisation_launches_per_engine():
    m, _, bf16 = _plan("llama3.1-70b", "H100-SXM-80GB", 8, "half", "half")
    _, _, fp8 = _plan("llama3.1-70b", "H100-SXM-80GB", 8, "float8", "half")
    for engine, extra in (
        # four linears (QKV, output, gate+up, down), each quantising its input: 3 launches
        ("vllm-0.6", 4 * K_FP8_ACT_QUANT),
        # static scales (one launch) for QKV, gate+up and down; attention writes o_proj's
        # input in FP8 already
        ("trtllm", 3 * 1),
    ):
        a = launch_counts(m, bf16, "flash-attn", True, engine)
        b = launch_counts(m, fp8, "flash-attn", True, engine)
        assert b.per_layer - a.per_layer == extra, engine


def test_trtllm_fuses_rope_kv_write_and_all_reduce_copy():
    m, _, plan = _plan("llama3.1-70b", "H100-SXM-80GB", 8, "half", "half")
    n_ar = sum(1 for c in plan.collectives if c.group > 1)
    assert n_ar == 2
    v = launch_counts(m, plan, "flash-attn", True, "vllm-0.6")
    t = launch_counts(m, plan, "trtllm", True, "trtllm")
    # no separate rotary and KV-write launches; one launch per custom all-reduce instead of two
    assert v.per_layer - t.per_layer == 2 + n_ar * (2 - 1)
    # with NCCL both engines launch one call per all-reduce
    vn = launch_counts(m, plan, "flash-attn", False, "vllm-0.6")
    tn = launch_counts(m, plan, "trtllm", False, "trtllm")
    assert vn.per_layer - tn.per_layer == 2


def test_trtllm_kv_fraction_applies_to_memory_left_after_weights():
    m, _, plan = _plan("qwen3-32b", "A100-SXM-80GB", 1, "half", "half")
    hbm, budget, seqs, bs = 80.0, 8192, 2048, 32
    gpu = hbm * mem.GIB * mem.USABLE_FRACTION
    fixed = (
        mem.weight_bytes_per_device(m, plan)
        + mem.legacy_activation_bytes(m, plan, budget, seqs)
        + mem.RUNTIME_RESERVE_BYTES
    )
    kind = ENGINES["trtllm"].memory_fraction_kind
    rep = mem.memory_report(m, plan, hbm, 0.9, budget, seqs, bs, kind)
    # TensorRT-LLM: (total - peak) x free_gpu_memory_fraction
    assert rep.kv_available == pytest.approx(0.9 * (gpu - fixed))
    # vLLM's fraction is of the whole GPU, with its profiling step's own terms
    # (vLLM's default 256 sequences: its sampler over 2048 would fill the GPU)
    v = mem.memory_report(m, plan, hbm, 0.9, budget, 256, bs, "gpu_memory_utilization")
    act, runtime = mem.profiling_terms(m, plan, budget, 256, mem.PEAK_FREE_MEMORY)
    w = mem.weight_bytes_per_device(m, plan)
    assert v.kv_available == pytest.approx(0.9 * gpu - w - act - runtime)
    assert rep.kv_available > v.kv_available


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_engine_names_its_eager_kernels(name):
    k = ENGINES[name].eager_kernels
    assert k.fp8_quant_per_linear >= 1 and k.custom_all_reduce >= 1
    assert 0 <= k.fp8_prequantised_linears <= 2


def _closed_loop_row(conc: int, prompts: int | None) -> dict:
    from apex_fast.data import published_measurements

    nim = next(r for r in published_measurements("trtllm") if r["max_concurrency"])
    return {
        **nim,
        "model_hf_id": "meta-llama/Llama-3.1-8B-Instruct",
        "weight_dtype": "bf16",
        "kv_dtype": "bf16",
        "tp": 1.0,
        "input_len": 2000.0,
        "output_len": 64.0,
        "max_concurrency": float(conc),
        "num_prompts": None if prompts is None else float(prompts),
        "ttft_mean_ms": 1.0,
        "itl_mean_ms": 1.0,
        "output_tok_s": 1.0,
    }


def test_closed_loop_without_prompt_count_is_measured_in_steady_state():
    """A sweep that gives only the concurrency is a steady-state figure: the cold-start wave of
    `conc` prompts queued at t = 0 must not enter the replayed TTFT."""
    from apex_fast.validation.published import replay_row

    conc = 32
    steady = replay_row(_closed_loop_row(conc, None))  # 8 requests per client, steady state
    cold = replay_row(_closed_loop_row(conc, 8 * conc))  # the same requests, every one counted
    assert "skipped" not in steady and "skipped" not in cold
    # the first wave queues 32 prompts of 2000 tokens behind each other
    assert steady["ttft_mean_ms_pred"] < 0.8 * cold["ttft_mean_ms_pred"]
    # Little's law: 32 clients always in flight
    assert steady["output_tok_s_pred"] == pytest.approx(cold["output_tok_s_pred"], rel=0.15)
