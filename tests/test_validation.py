"""Replay of the measured vLLM 0.6 runs: bundled data, errors within targets in-sample and out of
sample (leave-one-family-out), and the step-time model's structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from apex_fast.engines import ENGINES
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.step_time import (
    K_FP8_ACT_QUANT,
    PARAM_RANGES,
    HostParams,
    host_params,
    launch_counts,
    launch_time,
)
from apex_fast.validation.bands import band_for
from apex_fast.validation.command import summary, validate_runs
from apex_fast.validation.runs import (
    REQUESTS_FILE,
    RUNS_FILE,
    build_from_reference,
    bundled_runs,
    launch_settings,
)

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def test_launch_settings_parse() -> None:
    line = (
        "vllm/4DP2TP.sh; --gpu-memory-utilization 0.97; max_model_len 24272; custom all-reduce "
        "off (--disable-custom-all-reduce); chunked prefill OFF (max_model_len<=32K); "
        "--disable-frontend-multiprocessing; vllm/vllm-openai:v0.6.0"
    )
    s = launch_settings(line)
    assert (s["chunked_prefill"], s["max_num_batched_tokens"], s["max_model_len"]) == (
        False,
        24272,
        24272,
    )
    assert s["custom_all_reduce"] is False and s["gpu_memory_utilization"] == 0.97
    assert s["frontend_in_process"] is True and s["engine_version"] == "0.6.0"
    s = launch_settings("chunked prefill ON by default with max_num_batched_tokens=512")
    assert (s["chunked_prefill"], s["max_num_batched_tokens"], s["custom_all_reduce"]) == (
        True,
        512,
        True,
    )
    assert s["frontend_in_process"] is False


def test_bundled_runs_load_without_reference() -> None:
    runs = bundled_runs()
    fams = {r.family for r in runs}
    assert fams == {"llama-bf16", "mistral-fp8"}
    assert sum(r.family == "llama-bf16" for r in runs) == 45
    assert sum(r.family == "mistral-fp8" for r in runs) == 21
    for r in runs:
        assert r.workload.num_requests > 100
        assert np.all(np.diff(r.workload.arrival) >= 0)
        assert r.ttft_s > 0 and r.itl_s > 0 and r.latency_s > r.ttft_s
    mistral = [r for r in runs if r.family == "mistral-fp8"]
    assert all(r.kv_dtype == "float8" and r.weight_dtype == "float8" for r in mistral)


@pytest.mark.skipif(not REF.exists(), reason="../shared/reference not present")
def test_bundled_data_is_what_the_script_writes() -> None:
    runs, reqs = build_from_reference(REF)
    assert runs.equals(pl.read_csv(RUNS_FILE).select(runs.columns).cast(runs.schema))
    assert reqs.equals(pl.read_parquet(REQUESTS_FILE))


@pytest.fixture(scope="module")
def replay() -> tuple[list[dict], dict]:
    rows = validate_runs(list(bundled_runs()))
    return rows, summary(rows)


def test_in_sample_errors_within_targets(replay) -> None:
    rows, s = replay
    ll, mi = s["llama-bf16"], s["mistral-fp8"]
    assert ll["itl"] <= 0.03 and ll["ttft"] <= 0.08 and ll["latency"] <= 0.04
    assert mi["itl"] <= 0.04 and mi["ttft"] <= 0.10 and mi["latency"] <= 0.04
    # KV capacity of the 2-GPU Llama servers is close to the 24272 tokens vLLM allowed them
    tp2 = [r for r in rows if r["tp"] == 2 and r["family"] == "llama-bf16"]
    assert tp2 and all(15000 < r["kv_tokens"] < 40000 for r in tp2)


def test_leave_one_family_out_within_targets(replay) -> None:
    _, s = replay
    for fam in ("llama-bf16", "mistral-fp8"):
        assert s[fam]["itl_lofo"] <= 0.08, fam
        assert s[fam]["ttft_lofo"] <= 0.15, fam


def test_fitted_parameters_inside_their_ranges() -> None:
    h = host_params("vllm-0.6")
    for k, (lo, hi) in PARAM_RANGES.items():
        assert lo <= getattr(h, k) <= hi, k


def _plan(model: str, tp: int, dtype: str):
    m = load_model(model)
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, tp)
    plans, _ = enumerate_plans(m, cluster, Pins(dp=1, pp=1, tp=tp), dtype, dtype, dtype)
    return m, next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)


def test_fp8_w8a8_adds_activation_quantisation_launches() -> None:
    m, bf16 = _plan("llama3.1-70b", 8, "half")
    _, fp8 = _plan("llama3.1-70b", 8, "float8")
    a = launch_counts(m, bf16, "flash-attn", True)
    b = launch_counts(m, fp8, "flash-attn", True)
    # four linears per layer (QKV, output, gate+up, down), each quantising its input
    assert b.per_layer - a.per_layer == 4 * K_FP8_ACT_QUANT
    assert a.layers == b.layers == 80
    h = HostParams(3e-3, 0.0, 20e-6)
    assert launch_time(b, h) > launch_time(a, h) > 0


def test_attention_backend_follows_kv_dtype_and_gpu() -> None:
    assert ENGINES["vllm-0.6"].attention_kernel("half", "H100-SXM-80GB") == "flash-attn"
    assert ENGINES["vllm-0.6"].attention_kernel("float8", "H100-SXM-80GB") == "xformers"
    assert ENGINES["vllm-0.6"].attention_kernel("half", "V100-PCIE-16GB") == "xformers"


def test_band_for_validated_and_unvalidated_configurations() -> None:
    b = band_for("vllm-0.6", "H100-SXM-80GB", "half", "decode-heavy")
    assert b.validated and 0 < b.itl < 0.5 and "measured runs" in b.basis
    u = band_for("vllm-0.6", "A100-SXM-80GB", "half", "mixed")
    assert not u.validated and "not validated" in u.basis


def test_published_measurements_replay_per_engine() -> None:
    from apex_fast.validation.published import per_engine_summary, replay

    rows = replay("trtllm")
    summ = per_engine_summary(rows)
    dense = summ["trtllm (dense)"]
    assert dense["replayed"] >= 70 and dense["tpot_itl_n"] >= 60
    assert 0.0 < dense["tpot_itl_mae"] < 1.0 and 0.0 < dense["ttft_mae"] < 1.0
    # rows the tool cannot reproduce are counted with their reason, never dropped silently
    assert sum(d["rows"] for d in summ.values()) == len(rows)
    skipped = [r for r in rows if "skipped" in r]
    assert all(r["skipped"] for r in skipped)


def test_engine_graph_rules_change_step_floors() -> None:
    from apex_fast.sim.costs import compile_costs

    m, plan = _plan("llama3.1-70b", 8, "half")
    cl = Cluster(get_device("H100-SXM-80GB"), 1, 8)
    v06 = compile_costs(m, cl, plan, 512, 256, engine="vllm-0.6").costs
    eager = compile_costs(m, cl, plan, 512, 256, engine="vllm-0.6", enforce_eager=True).costs
    v1 = compile_costs(m, cl, plan, 512, 256, engine="vllm-v1").costs
    assert v06.graph_max_seqs == 256 and eager.graph_max_seqs == 0
    assert v1.piecewise_tokens == 512 and 0 < v1.piecewise_floor < v1.eager_floor
    assert v06.piecewise_tokens == 0


def test_frontend_in_process_and_multi_step_change_host_time() -> None:
    from apex_fast.engines.options import LaunchSettings, engine_option_fields
    from apex_fast.sim.costs import compile_costs

    d = get_device("H100-SXM-80GB")
    gib = d.hbm_gb * 1e9 / 2**30
    base = engine_option_fields(LaunchSettings(engine="vllm-0.6"), d.name, gib)
    inproc = engine_option_fields(
        LaunchSettings(engine="vllm-0.6", disable_frontend_multiprocessing=True), d.name, gib
    )
    assert base["frontend_in_process"] is False and inproc["frontend_in_process"] is True
    m, plan = _plan("llama3.1-70b", 8, "half")
    cl = Cluster(d, 1, 8)
    h = host_params("vllm-0.6")
    sep = compile_costs(m, cl, plan, 512, 256).costs
    same = compile_costs(m, cl, plan, 512, 256, frontend_in_process=True).costs
    assert sep.host_seq == pytest.approx(h.host_engine_seq_s)
    assert same.host_seq == pytest.approx(h.host_engine_seq_s + h.host_frontend_seq_s)
    multi = compile_costs(m, cl, plan, 512, 256, num_scheduler_steps=8).costs
    assert multi.overhead == pytest.approx(sep.overhead / 8)
    # output processing (append, detokenise, stop checks) stays per token in a window
    assert multi.host_seq == pytest.approx(sep.host_seq)


def test_validate_refuses_an_unwritable_json_path_first(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "missing" / "out.json"
    r = subprocess.run(
        [sys.executable, "apex.py", "validate", "--json", str(bad)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    assert r.stdout == ""


def test_refit_path_reproduces_the_simulation_exactly() -> None:
    """predict() with the run's own host parameters re-runs the kernel on costs rebuilt by
    CompiledCosts.with_host: it must give the very numbers simulate_plan gave."""
    from apex_fast.validation.replay import predict, prepare

    for run in bundled_runs()[:3] + bundled_runs()[-2:]:
        prep = prepare(run)
        assert predict(prep, prep.compiled.host) == predict(prep, None)
