"""Engine launch lines read into launch settings (apex_fast/engines/launch_line.py)."""

from __future__ import annotations

import pytest

from apex_fast.engines.launch_line import read_launch_line
from apex_fast.engines.options import engine_option_fields


def test_vllm_spellings_and_values() -> None:
    line = read_launch_line(
        "vllm-v1",
        "VLLM_USE_FLASHINFER_SAMPLER=1 --tensor-parallel-size 8 --max_model_len=4096 "
        "--max-num-seqs 128 --gpu-memory-utilization 0.95 --no-enable-prefix-caching",
    )
    s = line.settings
    assert (s.engine, s.max_model_len, s.max_num_seqs) == ("vllm-v1", 4096, 128)
    assert s.gpu_memory_utilization == 0.95 and s.prefix_caching is False
    # parallel sizes come from the row's own columns; environment variables are not modelled
    assert line.ignored == ("VLLM_USE_FLASHINFER_SAMPLER=1", "--tensor-parallel-size", "8")


def test_sglang_and_trtllm_spellings() -> None:
    s = read_launch_line("sglang", "--disable-radix-cache --tp 4 --mem-frac 0.88").settings
    assert s.gpu_memory_utilization == 0.88 and s.prefix_caching is False
    t = read_launch_line(
        "trtllm",
        "trtllm-serve --backend pytorch --kv_cache_free_gpu_memory_fraction .60 "
        "--max_batch_size 50 --max_seq_len 31000 --max_num_tokens 31000",
    ).settings
    assert (t.max_num_seqs, t.max_num_batched_tokens, t.max_model_len) == (50, 31000, 31000)
    assert t.gpu_memory_utilization == 0.6
    assert read_launch_line(
        "trtllm", "--max_seq_len=40960 --enable_chunked_prefill"
    ).settings.chunked_prefill


def test_vllm_v0_takes_the_engines_own_defaults() -> None:
    """vLLM 0.6 chunks by itself only above a 32k context, with 512 tokens per step; multi-step
    scheduling keeps it off. (The tool's planning default is chunked with 2048 tokens.)"""
    long = read_launch_line("vllm-0.6", "--max-model-len 91680").settings
    assert long.chunked_prefill is True and long.max_num_batched_tokens == 512
    short = read_launch_line("vllm-0.6", "--max-model-len 4096").settings
    assert short.chunked_prefill is False and short.max_num_batched_tokens is None
    # without --max-model-len the model's own context length decides
    assert read_launch_line("vllm-0.6", "", model_max_len=131072).settings.chunked_prefill
    assert not read_launch_line("vllm-0.6", "", model_max_len=8192).settings.chunked_prefill
    multi = read_launch_line("vllm-0.6", "--num-scheduler-steps 10", model_max_len=131072)
    assert multi.settings.chunked_prefill is False and multi.settings.num_scheduler_steps == 10
    fields = engine_option_fields(long, "H100-SXM-80GB", 79.6, 131072, 8)
    assert fields["chunked_prefill"] and fields["max_num_batched_tokens"] == 512


def test_a_flag_without_its_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="--max-num-seqs needs a value"):
        read_launch_line("vllm-0.6", "--max-num-seqs")


def test_offline_vllm_v0_benchmark_turns_chunking_off() -> None:
    """vLLM 0.6's benchmark_throughput.py passes enable_chunked_prefill=False unless asked, so
    a 91680-token context runs unchunked there (and profiles a 91680-token step), while the
    same launch line served online chunks by itself."""
    from apex_fast.validation.published import _effective_flags

    row = {
        "engine_profile": "vllm-0.6",
        "engine_flags": "--max-model-len 91680 --num-scheduler-steps 1",
        "source_detail": "saved result of benchmark_throughput.py: requests_per_second",
    }
    off = read_launch_line("vllm-0.6", _effective_flags(row)).settings
    assert off.chunked_prefill is False and off.max_num_batched_tokens is None
    online = read_launch_line("vllm-0.6", _effective_flags({**row, "source_detail": "serving"}))
    assert online.settings.chunked_prefill is True
    asked = {**row, "engine_flags": row["engine_flags"] + " --enable-chunked-prefill"}
    assert read_launch_line("vllm-0.6", _effective_flags(asked)).settings.chunked_prefill


def test_offline_benchmark_of_engine_args_builds_keeps_vllm_chunking() -> None:
    """From the nightlies after 0.6.3.post1 (vllm PR 9529) benchmark_throughput.py passes the
    engine's own defaults: a 91680-token context chunks as it does online (the memory model
    says the dstack Llama-3.1-405B-FP8 runs could not have profiled unchunked, docs/memory.md);
    a 0.6.3.post1 release row still runs unchunked."""
    from apex_fast.validation.published import _effective_flags

    row = {
        "engine_profile": "vllm-0.6",
        "engine_version": "0.6.3.post2.dev308+gb489fc3c",
        "engine_flags": "--max-model-len 91680 --num-scheduler-steps 1",
        "source_detail": "saved result of benchmark_throughput.py: requests_per_second",
    }
    assert read_launch_line("vllm-0.6", _effective_flags(row)).settings.chunked_prefill is True
    release = {**row, "engine_version": "0.6.3.post1"}
    assert read_launch_line("vllm-0.6", _effective_flags(release)).settings.chunked_prefill is False


def test_sglang_dp_attention_rows_run_attention_copies() -> None:
    """`--enable-dp-attention --dp-size 8` on 8 GPUs: eight attention copies at TP1, each with
    its own KV pool, and the MoE layers over all eight GPUs (TP8, no EP without --ep-size)."""
    from apex_fast.hardware.devices import get_device
    from apex_fast.models import load_model
    from apex_fast.validation.published import row_plan

    def attention_copies(row: dict) -> int:
        return read_launch_line(row["engine_profile"], row["engine_flags"]).attention_copies

    row = {
        "engine_profile": "sglang",
        "engine_flags": "--tp 8 --trust-remote-code --enable-dp-attention --dp-size 8",
        "source_detail": "",
        "tp": 8,
        "ep": None,
        "weight_dtype": "fp8",
        "kv_dtype": "bf16",
        "model_hf_id": "deepseek-ai/DeepSeek-R1",
    }
    assert attention_copies(row) == 8
    assert (
        attention_copies({**row, "engine_flags": "--tp 8 --dp-size=2 --enable-dp-attention"}) == 2
    )
    assert attention_copies({**row, "engine_flags": "--tp 8"}) == 1
    assert attention_copies({**row, "engine_profile": "vllm-v1"}) == 1
    built = row_plan(row, load_model("deepseek-r1"), get_device("H200-SXM-141GB"))
    assert not isinstance(built, str)
    _, plan, _ = built
    assert (plan.attn_replicas, plan.tp, plan.ep, plan.ffn_tp) == (8, 1, 1, 8)
