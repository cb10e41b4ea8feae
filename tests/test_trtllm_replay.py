"""Replay of the published TensorRT-LLM rows: launch flags, KV dtype of NVIDIA-built engines,
and the v0.14 rows whose lengths are dataset means (apex_fast/validation/published.py)."""

from __future__ import annotations

import pytest

from apex_fast.data import published_measurements
from apex_fast.engines.launch_line import read_launch_line
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.validation.published import (
    _base_model_id,
    _lengths,
    row_plan,
)


def trtllm_row_settings(flags: str) -> dict:
    """The launch settings a TensorRT-LLM launch line gives (the ones it sets)."""
    s = read_launch_line("trtllm", flags).settings
    return {k: v for k, v in vars(s).items() if v not in (None, False) and k != "engine"}


def test_trtllm_flags_become_launch_settings() -> None:
    flags = (
        "trtllm-serve --backend pytorch --tp_size 8 --ep_size 8 --max_num_tokens 11000 "
        "--kv_cache_free_gpu_memory_fraction 0.80; enable_overlap_scheduler"
    )
    got = trtllm_row_settings(flags)
    assert got == {"max_num_batched_tokens": 11000, "gpu_memory_utilization": 0.8}
    got = trtllm_row_settings("--max_seq_len=40960 --enable_chunked_prefill")
    assert got == {"max_model_len": 40960, "chunked_prefill": True}
    got = trtllm_row_settings("--max_batch_size 50 --max_num_tokens 31000")
    assert got == {"max_num_seqs": 50, "max_num_batched_tokens": 31000}
    # another engine's spelling of a setting is not TensorRT-LLM's: vLLM's flag is ignored
    assert (
        read_launch_line("vllm-v1", "--max_num_tokens 11000").settings.max_num_batched_tokens
        is None
    )
    assert trtllm_row_settings("") == {}


def _plan_of(row: dict):
    model = load_model(_base_model_id(row["model_hf_id"]))
    device = get_device(row["gpu"])
    built = row_plan(row, model, device)
    assert not isinstance(built, str), built
    return model, built


def test_row_flags_reach_the_engine_options() -> None:
    row = next(
        r
        for r in published_measurements("trtllm")
        if r["engine_version"] == "1.2.0rc1" and r["gpu"].startswith("A100") and r["input_len"]
    )
    assert "--enable_chunked_prefill" in row["engine_flags"]
    _, (_, _, opts) = _plan_of(row)
    assert opts.engine_chunked_prefill is True and opts.max_model_len == 40960
    _, (_, _, default) = _plan_of({**row, "engine_flags": None})
    assert default.engine_chunked_prefill is False and default.max_model_len is None


def test_nim_fp8_rows_run_an_fp8_kv_cache_that_holds_the_measured_concurrency() -> None:
    """The NIM sweep saturates at ~86 running requests (920 tokens/s x 93 ms per token) of
    5000 + 500 tokens: an FP8 KV cache holds them on 2x H100, a BF16 one does not."""
    nim = [r for r in published_measurements("trtllm") if "NIM" in r["engine_version"]]
    assert nim and all(not r["kv_dtype"] and r["weight_dtype"] == "fp8" for r in nim)
    row = nim[-1]
    running = row["output_tok_s"] * row["itl_mean_ms"] / 1e3
    assert 80 < running < 90
    need = running * (row["input_len"] + row["output_len"])
    model, (cluster, plan, opts) = _plan_of(row)
    assert plan.kv_dtype == "float8"
    budget = opts.max_num_batched_tokens
    assert opts.memory(model, plan, cluster, budget).kv_tokens >= need
    # the same engine with the KV cache in BF16 (what an unmarked row got before)
    _, (cl16, plan16, opts16) = _plan_of({**row, "kv_dtype": "bf16"})
    assert plan16.kv_dtype == "half"
    assert opts16.memory(model, plan16, cl16, budget).kv_tokens < 0.6 * need
    # a non-NVIDIA FP8 checkpoint served by another stack keeps the unstated KV in 16 bits
    other = {**row, "engine_version": "1.0", "model_hf_id": "meta-llama/Llama-3.3-70B-Instruct"}
    assert _plan_of(other)[1][1].kv_dtype == "half"


def test_v014_sharegpt_sized_rows_are_replayed_as_dataset_means() -> None:
    rows = [
        r
        for r in published_measurements("trtllm")
        if r["engine_version"] == "0.14.0" and r["lengths"] == "dataset"
    ]
    assert len(rows) == 24
    for r in rows:
        got = _lengths(r, int(r["num_prompts"]))
        assert not isinstance(got, str), got
        p, o, approx = got
        assert approx and set(p.tolist()) == {202} and set(o.tolist()) == {214}
        # the printed throughputs keep the mean lengths' ratio (input / output tokens)
        assert r["total_tok_s"] / r["output_tok_s"] - 1 == pytest.approx(202 / 214, abs=0.02)
