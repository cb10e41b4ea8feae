"""The command line: reports, JSON shape, aliases and one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from common import run

from apex_fast.cli import _expand_nargs

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"

PLAN_KEYS = {
    "plan",
    "ttft_mean_s",
    "tpot_mean_s",
    "itl_mean_s",
    "tbt_p50_s",
    "tbt_p95_s",
    "latency_p50_s",
    "latency_p95_s",
    "throughput_tokens_per_s",
    "throughput_requests_per_s",
    "mfu",
    "mbu",
    "energy_kj",
    "param_gb_per_device",
    "slo_ttft_pct",
    "slo_tpot_pct",
}


def test_seed_example_all_plans(capsys) -> None:
    code, out, err = run(
        capsys,
        "plan",
        "--model",
        "llama3-70b",
        "--num-gpus-per-node",
        "2",
        "--prompt-len",
        "128",
        "--output-len",
        "256",
        "--num-requests",
        "64",
        "--all",
    )
    assert code == 0, err
    assert "Parallel schedule 0 for decoder" in out
    assert "# Stages: 2" in out and "AllReduce" in out
    for section in (
        "* Statistics:",
        "* Performance Metrics:",
        "* Time breakdown:",
        "Energy Consumption:",
        "* Latency SLO Metrics:",
    ):
        assert section in out
    assert "DP2 PP1 TP1" in out  # listed as infeasible with its reason
    assert "analytic" in out


def test_json_shape(capsys, tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    code, out, err = run(
        capsys,
        "plan",
        "--model",
        "llama-7b",
        "--num-gpus",
        "2",
        "--num-requests",
        "16",
        "--prompt-len",
        "64",
        "--output-len",
        "16",
        "--json",
        str(path),
        "--quiet",
    )
    assert code == 0, err
    data = orjson.loads(path.read_bytes())
    assert set(data) >= {"best", "plans"}
    assert data["best"] == data["plans"][0]
    for p in data["plans"]:
        assert PLAN_KEYS <= set(p)
        assert set(p["plan"]) >= {"dp", "pp", "tp", "ep", "cells"}


def test_json_is_deterministic(capsys, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        assert (
            run(
                capsys,
                "plan",
                "--model",
                "gpt2",
                "--num-gpus",
                "2",
                "--num-requests",
                "8",
                "--all",
                "--json",
                str(p),
                "--quiet",
            )[0]
            == 0
        )
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "llama3-7O"], "unknown model"),
        (["--model", "llama-7b", "--gpu", "H900"], "H100-SXM-80GB"),
        (["--model", "llama-7b", "--num-gpus", "0"], "--num-gpus-per-node must be >= 1"),
        (["--model", "llama-7b", "--num-gpus", "4", "--tp", "3"], "does not divide"),
        (["--model", "llama-7b", "--kv-dtype", "float7"], "'float', 'float32'"),
        (["--model", "llama-7b", "--ttft-slo", "-1"], "--ttft-slo"),
        (
            ["--model", "llama-7b", "--gpu-memory-utilization", "1.5"],
            "--gpu-memory-utilization must be",
        ),
        (["--model", "llama-7b", "--request-percentiles", "101"], "outside [0, 100]"),
        (["--model", "llama-7b", "--trace-file", "/nonexistent.jsonl"], "does not exist"),
        (["--model", "llama3.1-405b", "--num-gpus", "1"], "no plan"),
        (["--model", "llama-7b", "--output-len", "0"], "--output-len"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, args: list[str], needle: str) -> None:
    base = ["plan", "--num-gpus-per-node", "1", "--num-requests", "4", "--quiet"]
    code, out, err = run(capsys, *base, *args)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_seed_percentile_syntax_is_accepted() -> None:
    argv = ["plan", "--request-percentiles", "90", "99", "--all"]
    assert _expand_nargs(argv) == ["plan", "--request-percentiles", "90,99", "--all"]


def test_models_and_gpus_lists(capsys) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and "llama3-70b" in out and "mixtral-8x7b" in out
    code, out, _ = run(capsys, "gpus")
    assert code == 0 and "989.4" in out and "V100-PCIE-16GB" in out


@pytest.mark.skipif(not REF.exists(), reason="../shared/reference not present")
def test_reference_trace_on_eight_h100(capsys, tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    code, out, err = run(
        capsys,
        "plan",
        "--model",
        "llama3-70b",
        "--num-gpus-per-node",
        "8",
        "--trace-file",
        str(REF / "traces" / "llama" / "lmsys_05.jsonl"),
        "--json",
        str(path),
        "--quiet",
    )
    assert code == 0, err
    best = orjson.loads(path.read_bytes())["best"]
    assert 0.003 < best["tpot_mean_s"] < 0.1  # a few to tens of ms


def test_requests_beyond_the_context_window_are_flagged(capsys) -> None:
    code, out, _ = run(
        capsys, "plan", "--model", "gpt2", "--num-gpus", "1", "--num-requests", "4",
        "--prompt-len", "1000", "--output-len", "100", "--quiet",
    )  # fmt: skip
    assert code == 0
    assert "4 of 4 requests need more than gpt2's 1024-token context window" in out
    code, out, _ = run(capsys, "plan", "--model", "gpt2", "--num-gpus", "1", "--num-requests",
                       "4", "--prompt-len", "100", "--output-len", "100", "--quiet")  # fmt: skip
    assert "context window" not in out


def test_models_and_gpus_json(capsys) -> None:
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    models = {r["name"]: r for r in orjson.loads(out)}
    ds = models["deepseek-v3"]
    assert ds["attention"] == "mla" and ds["mla"]["kv_lora_rank"] == 512
    assert ds["moe"]["shared_experts"] == 1
    assert models["llama3.1-8b"]["params_total"] == 8_030_261_248
    assert "meta-llama/llama-3.1-8b" in models["llama3.1-8b"]["aliases"]
    assert models["gemma-3-27b"]["sliding_layers"] == 52
    code, out, _ = run(capsys, "gpus", "--json")
    assert code == 0
    gpus = {r["name"]: r for r in orjson.loads(out)}
    assert gpus["L40S"]["fabric"] == "pcie" and gpus["L40S"]["intra_node_gbps"] == 32.0
    assert gpus["GB200"]["fabric_gpus"] == 72
    assert "peak_tflops" in gpus["MI300X"]["sources"]


def test_inter_node_bandwidth_flag(capsys, tmp_path: Path) -> None:
    args = ["plan", "--model", "llama3-70b", "--num-nodes", "2", "--num-gpus-per-node", "8"]
    args += ["--prompt-len", "128", "--output-len", "4", "--num-requests", "2", "--quiet"]
    args += ["--tp", "16", "--workers", "1", "--json"]

    def tpot(tmp: Path, *extra: str) -> float:
        code, _, _ = run(capsys, *args, str(tmp), *extra)
        assert code == 0
        return orjson.loads(tmp.read_bytes())["best"]["tpot_mean_s"]

    slow = tpot(tmp_path / "slow.json", "--inter-node-bandwidth", "5")
    fast = tpot(tmp_path / "fast.json", "--inter-node-bandwidth", "400")
    assert slow > fast  # TP16 all-reduces cross the network between the two nodes
    code, _, err = run(capsys, *args[:-1], "--inter-node-bandwidth", "-1")
    assert code == 2 and err.startswith("error: --inter-node-bandwidth") and err.count("\n") == 1
