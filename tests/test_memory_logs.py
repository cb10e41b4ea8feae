"""The KV-cache memory model against engines' own memory-profiling logs
(apex_fast/data/memory_logs.csv, apex_fast/validation/memory_logs.py, docs/memory.md)."""

from __future__ import annotations

import dataclasses

import pytest

from apex_fast.engines import ENGINES, get_engine
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.memory import (
    ACTIVATION_PEAK_FACTOR,
    GIB,
    NON_TORCH_BASE_BYTES,
    NON_TORCH_GROUP_BYTES,
    PEAK_ALLOCATED,
    PEAK_FREE_MEMORY,
    PEAK_RULES,
    RUNTIME_RESERVE_BYTES,
    SAMPLER_LIVE_COPIES,
    USABLE_FRACTION,
    forward_live_bytes,
    memory_report,
    non_torch_bytes,
    profiling_terms,
    weight_bytes_per_device,
)
from apex_fast.sim.engine import EngineOptions
from apex_fast.validation.memory_logs import (
    fit_constants,
    leave_one_source_out,
    load_rows,
    replay,
    row_plan,
)

# Rows whose sizing the model does not reproduce, and why (docs/memory.md, "Checked against
# logs"); every other row must replay within its rule's band.
NOT_MODELLED = {
    # vLLM 0.2.4 with TP4: the profiler of that release counted about 13 GiB per device outside
    # PyTorch (the PR's own before/after block counts differ by 10750 blocks), far beyond what
    # the free-memory rule's 1.5 GiB reserve covers; later releases do not show it.
    "vllm-pr2031-llama2-70b-tp4",
    # TensorRT-LLM 0.5 TensorRT engine: runtime buffers sized at build time for 25 sequences x
    # 4096 output tokens, which no launch setting of this tool describes.
    "trtllm-issue224-llama2-7b-a10",
}
# Agreement required per rule: |predicted - logged| KV bytes per device within the relative
# band or within the absolute one (small pools: a few hundred MiB are a large fraction of a
# 3 GiB pool), from bench/memory_logs.py's errors rounded up: in-sample (allocated-peak 15.3%
# / 0.96 GiB at most, the others 6.4% / 1.05 GiB) and leave-one-source-out (allocated-peak
# 1.44 GiB at most).
BAND = {
    PEAK_ALLOCATED: (0.16, 1.0 * GIB),
    PEAK_FREE_MEMORY: (0.05, 1.0 * GIB),
    "static-fraction": (0.08, 1.1 * GIB),
    "free-fraction": (0.05, 1.1 * GIB),
}
LOSO_ABS_BAND = 1.5 * GIB


def _within(x, rel: float, absolute: float) -> bool:
    return abs(x.error) <= rel or abs(x.predicted_kv - x.logged_kv) <= absolute


def test_data_rows_are_complete() -> None:
    rows = load_rows()
    assert len(rows) >= 10
    assert len({r.row_id for r in rows}) == len(rows)
    for r in rows:
        assert r.source_url.startswith("https://")
        assert r.peak_rule in (*PEAK_RULES, "static-fraction", "free-fraction")
        assert (
            r.logged_kv_gib is not None
            or r.logged_kv_tokens is not None
            or r.logged_gpu_blocks is not None
        )
    assert NOT_MODELLED <= {r.row_id for r in rows}


@pytest.mark.parametrize("row", load_rows(), ids=lambda r: r.row_id)
def test_logged_kv_capacity_replays_within_band(row) -> None:
    if row.row_id in NOT_MODELLED:
        pytest.skip("sizing outside the model (reason in NOT_MODELLED)")
    x = replay(row)
    assert _within(x, *BAND[row.peak_rule]), f"{row.row_id}: {x.error:+.1%}"


def test_out_of_source_errors_within_band() -> None:
    rows = load_rows()
    for row_id, x in leave_one_source_out(rows).items():
        if row_id not in NOT_MODELLED:
            rel = BAND[x.row.peak_rule][0]
            assert _within(x, rel, LOSO_ABS_BAND), f"{row_id}: {x.error:+.1%}"


def test_constants_are_the_fit_of_the_data() -> None:
    """plans/memory.py carries the constants bench/memory_logs.py fits on the data file."""
    fitted = fit_constants(load_rows())
    assert fitted.sampler_copies == pytest.approx(SAMPLER_LIVE_COPIES, abs=0.01)
    assert fitted.base == pytest.approx(NON_TORCH_BASE_BYTES, abs=0.01 * GIB)
    assert fitted.group_extra == pytest.approx(NON_TORCH_GROUP_BYTES, abs=0.01 * GIB)


def test_logged_breakdown_of_llama3_8b() -> None:
    """vllm PR 10511 printed weights 14.96 GiB and an activation peak of 1.26 GiB at TP1 and
    TP2 alike: the weights model matches, and the activation peak is the sampler's (it does
    not shrink with TP), the forward pass's tensors being smaller at both sizes."""
    rows = {r.row_id: r for r in load_rows()}
    for rid in ("vllm-pr10511-llama3-8b-tp1", "vllm-pr10511-llama3-8b-tp2"):
        row = rows[rid]
        x = replay(row)
        assert x.weights / GIB == pytest.approx(row.logged_weights_gib, abs=0.01)
        assert x.activation / GIB == pytest.approx(row.logged_activation_gib, abs=0.01)
        model = load_model(row.model)
        forward = forward_live_bytes(model, row_plan(model, row), 8192, with_qkv=False)
        assert forward < x.activation


def test_logged_forward_peak_of_llama31_8b() -> None:
    """vllm issue 10517 (RTX 3090, 256 sequences): peak_torch_memory - weights = 2.07 GiB at
    20000 tokens and 2.99 GiB at 29000, 108 KiB per token both times: the forward pass sets the
    peak, with the tensors alive at the FFN (3 hidden-size tensors, gate/up, activation)."""
    for row in load_rows():
        if row.row_id.startswith("vllm-issue10517"):
            x = replay(row)
            assert x.activation / GIB == pytest.approx(row.logged_activation_gib, abs=0.02)


def test_allocated_peak_fixes_the_v1_moe_row() -> None:
    """Regression: Qwen3-235B-A22B-FP8 TP4 on H100 under vLLM V1 logged an 8.11 GiB KV pool;
    the free-memory rule (1.9 x forward tensors + 1.5 GiB) predicted 74% more, because the
    1024-sequence sampler of V1's profiling step (about 6 GiB) was missing."""
    row = next(r for r in load_rows() if r.row_id == "vllm-issue21348-qwen3-235b-fp8-tp4")
    old = replay(dataclasses.replace(row, peak_rule=PEAK_FREE_MEMORY))
    assert old.error > 0.5
    new = replay(row)
    assert abs(new.error) < 0.1
    assert new.activation > 5 * GIB


def test_allocated_peak_is_max_of_forward_and_sampler() -> None:
    model = load_model("llama3.1-8b")
    row = next(r for r in load_rows() if r.row_id == "vllm-pr10511-llama3-8b-tp1")
    plan = row_plan(model, row)
    sampler = SAMPLER_LIVE_COPIES * 256 * model.vocab_size * 4.0
    act, _ = profiling_terms(model, plan, 8192, 256, PEAK_ALLOCATED)
    assert act == pytest.approx(sampler)
    # a long profiling step of few sequences: the forward pass sets the peak
    act_long, _ = profiling_terms(model, plan, 65536, 8, PEAK_ALLOCATED)
    assert act_long == pytest.approx(forward_live_bytes(model, plan, 65536, with_qkv=False))
    # 3 x 4096 hidden + 2 x 14336 gate/up + 14336 activation output, bf16
    assert act_long == pytest.approx(65536 * (3 * 4096 + 3 * 14336) * 2)


def test_non_torch_memory_grows_with_the_group() -> None:
    assert non_torch_bytes(1) == NON_TORCH_BASE_BYTES
    assert non_torch_bytes(2) == NON_TORCH_BASE_BYTES + NON_TORCH_GROUP_BYTES
    assert non_torch_bytes(8) == non_torch_bytes(2)  # ring/tree buffers: per neighbour


def test_peak_rule_per_engine_profile() -> None:
    assert get_engine("vllm-0.5").memory_peak_rule == PEAK_FREE_MEMORY
    assert get_engine("vllm-0.6").memory_peak_rule == PEAK_FREE_MEMORY
    assert get_engine("vllm-v1").memory_peak_rule == PEAK_ALLOCATED
    for p in ENGINES.values():
        assert p.memory_peak_rule in PEAK_RULES


def test_vllm_06_sizing_unchanged() -> None:
    """The calibrated rule, written out: KV = f x cap - w - 1.9 x (forward + FP32 logits of
    the vocabulary shard) - 1.5 GiB (Llama-3.1-70B TP2, the reference runs' settings)."""
    model = load_model("llama3.1-70b")
    row = next(r for r in load_rows() if r.row_id == "vllm-ref-llama31-70b-tp2")
    plan = row_plan(model, row)
    cluster = Cluster(device=get_device("H100-SXM-80GB"), num_nodes=1, gpus_per_node=2)
    opts = EngineOptions(engine="vllm-0.6", gpu_memory_utilization=0.97, max_num_seqs=256)
    rep = opts.memory(model, plan, cluster, 24272)
    cap = 80.0 * GIB * USABLE_FRACTION
    logits = 256 * model.vocab_size / plan.devices_per_stage * 4.0
    act = ACTIVATION_PEAK_FACTOR * (forward_live_bytes(model, plan, 24272) + logits)
    w = weight_bytes_per_device(model, plan)
    assert rep.kv_available == pytest.approx(0.97 * cap - w - act - RUNTIME_RESERVE_BYTES)
    assert rep.runtime == RUNTIME_RESERVE_BYTES


def test_engine_options_use_the_profile_rule() -> None:
    model = load_model("llama3.1-8b")
    row = next(r for r in load_rows() if r.row_id == "vllm-pr10511-llama3-8b-tp2")
    plan = row_plan(model, row)
    cluster = Cluster(device=get_device("H100-SXM-80GB"), num_nodes=1, gpus_per_node=2)
    v1 = EngineOptions(engine="vllm-v1", max_num_seqs=256).memory(model, plan, cluster, 8192)
    direct = memory_report(
        model, plan, 80.0, 0.9, 8192, 256, 16, "gpu_memory_utilization", PEAK_ALLOCATED
    )
    assert v1.kv_available == pytest.approx(direct.kv_available)
    assert v1.runtime == pytest.approx(NON_TORCH_BASE_BYTES + NON_TORCH_GROUP_BYTES)


def test_unknown_peak_rule_refused() -> None:
    model = load_model("llama3.1-8b")
    row = load_rows()[0]
    with pytest.raises(ValueError):
        profiling_terms(model, row_plan(model, row), 8192, 256, "whatever")
