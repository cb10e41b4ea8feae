"""Replay of the measured vLLM runs (issue #4): errors stay within the published targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from apex_fast.validate import _launch_settings, load_runs, validate

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def test_launch_settings_parse() -> None:
    line = (
        "vllm/4DP2TP.sh; --gpu-memory-utilization 0.97; max_model_len 24272; custom all-reduce "
        "off (--disable-custom-all-reduce); chunked prefill OFF (max_model_len<=32K)"
    )
    assert _launch_settings(line) == (False, 24272, 24272, False, 0.97)
    line = (
        "vllm/8TP.sh; --gpu-memory-utilization 0.97; max_model_len 131072 (model default); "
        "custom all-reduce on; chunked prefill ON by default with max_num_batched_tokens=512"
    )
    assert _launch_settings(line) == (True, 512, 131072, True, 0.97)


@pytest.mark.skipif(not REF.exists(), reason="../shared/reference not present")
def test_reference_runs_load_with_engine_lengths() -> None:
    runs = load_runs(REF / "measured_llama.csv", REF)
    assert len(runs) == 45
    assert all(r.workload.num_requests > 100 for r in runs)


@pytest.mark.skipif(not REF.exists(), reason="../shared/reference not present")
def test_replay_errors_within_targets() -> None:
    rows, mae = validate(REF / "measured_llama.csv", REF)
    assert len(rows) == 45
    assert mae["itl"] <= 0.05
    assert mae["ttft"] <= 0.10
    assert mae["latency"] <= 0.10
    # KV capacity of the 2-GPU servers is close to the 24272 tokens vLLM allowed them
    tp2 = [r for r in rows if r["tp"] == 2]
    assert all(15000 < r["kv_tokens"] < 40000 for r in tp2)
