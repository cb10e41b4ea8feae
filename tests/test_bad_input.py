"""Bad input ends with exactly one line on stderr and exit code 2 (issue 8); internal errors with
one line, a --debug hint and exit code 1; identical inputs give byte-identical JSON."""

from __future__ import annotations

import pathlib
from pathlib import Path

import orjson
import pytest
from common import run, tiny_config

BASE = ["plan", "--num-gpus-per-node", "1", "--num-requests", "4", "--quiet"]


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def base(*args: str) -> list[str]:
    """BASE, without the request count when a trace gives the requests."""
    if "--trace-file" in args:
        return ["plan", "--num-gpus-per-node", "1", "--quiet"]
    return list(BASE)


def bad(capsys, *args: str) -> str:
    code, _, err = run(capsys, *base(*args), *args)
    assert_one_line(code, err)
    return err


def _trace(tmp_path: Path, lines: list[str], name: str = "t.jsonl") -> str:
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return str(p)


def _req(t: int, p: int, o: int) -> str:
    return orjson.dumps({"StartTimeOffset": t, "ContextTokens": p, "GeneratedTokens": o}).decode()


# ---------------------------------------------------------------------- models and configs
def test_unknown_model_suggests_close_names(capsys) -> None:
    err = bad(capsys, "--model", "llama3-7O")
    assert "unknown model 'llama3-7O'" in err and "did you mean llama3-70b" in err


def test_config_hidden_size_zero(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", tiny_config(tmp_path, hidden_size=0))
    assert "hidden_size = 0 is out of range" in err


def test_config_zero_heads(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", tiny_config(tmp_path, num_attention_heads=0))
    assert "num_attention_heads = 0" in err


def test_config_heads_do_not_divide_hidden(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", tiny_config(tmp_path, hidden_size=66))
    assert "hidden size 66 is not divisible by 4 heads" in err


def test_config_kv_heads_do_not_divide_heads(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", tiny_config(tmp_path, num_key_value_heads=3))
    assert "3 KV heads do not divide 4 attention heads" in err


def test_config_not_json(capsys, tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text('{"model_type": "llama",')
    assert "is not valid JSON" in bad(capsys, "--model", str(p))


def test_config_binary_garbage(capsys, tmp_path: Path) -> None:
    p = tmp_path / "garbage.json"
    p.write_bytes(b"\xff\xfe\x00\x81 not a config")
    assert "is not valid JSON" in bad(capsys, "--model", str(p))


def test_config_unreadable(capsys, tmp_path: Path, monkeypatch) -> None:
    path = Path(tiny_config(tmp_path))
    path.chmod(0)
    real = pathlib.Path.read_bytes

    def deny(self: Path) -> bytes:  # also when the tests run as root, who may read mode 000
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", deny)
    err = bad(capsys, "--model", str(path))
    path.chmod(0o644)
    assert "cannot read model config" in err and "Permission denied" in err


def test_config_file_missing(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", str(tmp_path / "nope" / "config.json"))
    assert "does not exist" in err


def test_config_directory_without_config_json(capsys, tmp_path: Path) -> None:
    assert "has no config.json" in bad(capsys, "--model", str(tmp_path))


# ---------------------------------------------------------------------- cluster and pins
def test_unknown_gpu_lists_known(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--gpu", "H900")
    assert "unknown device 'H900'" in err and "H100-SXM-80GB" in err and "A100-SXM-80GB" in err


def test_zero_gpus(capsys) -> None:
    assert "--num-gpus-per-node must be >= 1" in bad(
        capsys, "--model", "llama-7b", "--num-gpus", "0"
    )


def test_negative_gpus(capsys) -> None:
    assert "--num-gpus-per-node must be >= 1" in bad(
        capsys, "--model", "llama-7b", "--num-gpus", "-2"
    )


def test_zero_nodes(capsys) -> None:
    assert "--num-nodes must be >= 1" in bad(capsys, "--model", "llama-7b", "--num-nodes", "0")


def test_pinned_tp_does_not_divide_cluster(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--num-gpus", "4", "--tp", "3")
    assert "--tp 3 does not divide the cluster's 4 GPUs" in err


def test_pinned_tp_does_not_divide_model(capsys) -> None:
    err = bad(capsys, "--model", "gpt2", "--num-gpus", "8", "--tp", "8")
    assert "--tp 8" in err and "12 attention heads" in err


def test_pinned_pp_beyond_layers(capsys) -> None:
    err = bad(capsys, "--model", "gpt2", "--num-gpus", "16", "--pp", "16")
    assert "--pp 16 exceeds the model's 12 layers" in err


def test_pinned_dp_zero(capsys) -> None:
    assert "--dp must be >= 1" in bad(capsys, "--model", "llama-7b", "--dp", "0")


def test_pinned_ep_on_dense_model(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--num-gpus", "2", "--ep", "2")
    assert "--ep 2" in err and "dense" in err


def test_model_fits_no_plan_says_memory_and_smallest_cluster(capsys) -> None:
    err = bad(capsys, "--model", "llama3.1-405b", "--num-gpus", "8")
    assert "no plan of llama3.1-405b fits 8 x H100-SXM-80GB" in err
    assert "weights alone are 756.0 GiB" in err
    # weights + activations + runtime + KV cache of the longest request, and where it fits
    assert "activations, runtime and KV cache for the longest request of 2176 tokens" in err
    assert "the smallest H100-SXM-80GB cluster that holds it is 16 GPUs (2 nodes x 8" in err


def test_model_fits_no_plan_on_one_gpu(capsys) -> None:
    err = bad(capsys, "--model", "llama3.1-405b", "--num-gpus", "1")
    assert "no plan" in err and "smallest H100-SXM-80GB cluster" in err and "GiB" in err


# ---------------------------------------------------------------------- traces
def test_trace_missing(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", "gpt2", "--trace-file", str(tmp_path / "none.jsonl"))
    assert "does not exist" in err


def test_trace_is_a_directory(capsys, tmp_path: Path) -> None:
    assert "is a directory" in bad(capsys, "--model", "gpt2", "--trace-file", str(tmp_path))


def test_trace_empty(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, ["", "  "])
    assert "has no requests" in bad(capsys, "--model", "gpt2", "--trace-file", path)


def test_trace_not_json_on_line_n(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, [_req(0, 5, 5), _req(1, 5, 5), "{oops"])
    assert f"{path}:3: not valid JSON" in bad(capsys, "--model", "gpt2", "--trace-file", path)


def test_trace_missing_field_on_line_n(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, [_req(0, 5, 5), '{"StartTimeOffset": 1, "ContextTokens": 3}'])
    err = bad(capsys, "--model", "gpt2", "--trace-file", path)
    assert f"{path}:2: missing field 'GeneratedTokens'" in err


def test_trace_non_numeric_field_on_line_n(capsys, tmp_path: Path) -> None:
    line = '{"StartTimeOffset": 1, "ContextTokens": "12", "GeneratedTokens": 3}'
    path = _trace(tmp_path, [_req(0, 5, 5), line])
    err = bad(capsys, "--model", "gpt2", "--trace-file", path)
    assert f"{path}:2: field 'ContextTokens' must be a number" in err


def test_trace_negative_length(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, [_req(0, -7, 5)])
    err = bad(capsys, "--model", "gpt2", "--trace-file", path)
    assert f"{path}:1: ContextTokens must be at least 1, got -7" in err


def test_trace_zero_output_tokens_accepted_with_a_note(capsys, tmp_path: Path) -> None:
    """An empty completion (real logs have them) ends after its first token, and says so."""
    path = _trace(tmp_path, [_req(0, 5, 5), _req(1, 5, 0)])
    base = [a for a in BASE if a not in ("--num-requests", "4")]
    code, out, err = run(capsys, *base, "--model", "gpt2", "--trace-file", path)
    assert code == 0, err
    assert "1 requests with 0 output tokens are simulated as ending after their first token" in out


def test_trace_negative_output_tokens(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, [_req(0, 5, 5), _req(1, 5, -1)])
    err = bad(capsys, "--model", "gpt2", "--trace-file", path)
    assert f"{path}:2: GeneratedTokens must be at least 0, got -1" in err


def test_trace_negative_time(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, [_req(-5, 5, 5)])
    assert "StartTimeOffset is negative" in bad(capsys, "--model", "gpt2", "--trace-file", path)


def test_prompt_longer_than_every_plans_kv_capacity_names_requests(capsys, tmp_path: Path) -> None:
    lines = [_req(i * 10**8, 1_000_000 if i in (3, 7, 11) else 100, 5) for i in range(20)]
    path = _trace(tmp_path, lines)
    err = bad(capsys, "--model", "llama-7b", "--num-gpus", "2", "--trace-file", path)
    assert "3 request(s) (#3, 7, 11; numbered from 0 in arrival order)" in err
    assert "prompts up to 1000000 tokens, more than the KV cache of any plan here" in err
    assert "smallest H100-SXM-80GB cluster that holds it" in err


def test_prompt_longer_than_budget_without_chunked_prefill(capsys, tmp_path: Path) -> None:
    lines = [_req(i, 5000 if i == 2 else 100, 5) for i in range(4)]
    path = _trace(tmp_path, lines)
    err = bad(
        capsys,
        "--model",
        "llama-7b",
        "--trace-file",
        path,
        "--no-chunked-prefill",
        "--max-num-batched-tokens",
        "4096",
    )
    assert "1 request(s) (#2;" in err and "token budget of 4096" in err


def test_static_prompt_beyond_kv_capacity(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--prompt-len", "1000000")
    assert "4 request(s) (#0, 1, 2, 3;" in err and "KV cache of any plan" in err


# ---------------------------------------------------------------------- dtypes and engine
@pytest.mark.parametrize("flag", ["--kv-dtype", "--activation-dtype"])
def test_bad_dtype(capsys, flag: str) -> None:
    err = bad(capsys, "--model", "llama-7b", flag, "float7")
    assert f"{flag}: 'float7' is not one of 'float'" in err


def test_bad_weight_dtype(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--weight-dtype", "int3")
    assert "--weight-dtype: 'int3' is not one of" in err and "'int8', 'int4'" in err


@pytest.mark.parametrize("flag", ["--ttft-slo", "--tpot-slo"])
def test_negative_slo(capsys, flag: str) -> None:
    assert f"{flag} must be" in bad(capsys, "--model", "llama-7b", flag, "-1")


def test_nan_slo(capsys) -> None:
    assert "--tpot-slo must be" in bad(capsys, "--model", "llama-7b", "--tpot-slo", "nan")


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "nan"])
def test_memory_utilisation_outside_0_1(capsys, value: str) -> None:
    err = bad(capsys, "--model", "llama-7b", "--gpu-memory-utilization", value)
    assert "--gpu-memory-utilization must be" in err


def test_topk_above_experts(capsys) -> None:
    err = bad(capsys, "--model", "mixtral-8x7b", "--num-gpus", "2", "--topk", "20")
    assert "topk 20 exceeds the 8 experts of mixtral-8x7b" in err


def test_topk_above_overridden_experts(capsys) -> None:
    err = bad(capsys, "--model", "mixtral-8x7b", "--num-experts", "4", "--topk", "6")
    assert "topk 6 exceeds the 4 experts" in err


def test_topk_zero(capsys) -> None:
    assert "--topk must be >= 1" in bad(capsys, "--model", "mixtral-8x7b", "--topk", "0")


def test_topk_on_dense_model_is_not_ignored(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--topk", "4")
    assert "llama-7b is a dense model" in err


@pytest.mark.parametrize("value", ["0", "-1", "inf"])
def test_capacity_factor_not_positive(capsys, value: str) -> None:
    err = bad(capsys, "--model", "mixtral-8x7b", "--num-gpus", "2", "--capacity-factor", value)
    assert "--capacity-factor must be" in err


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--request-percentiles", "-5", "percentile -5 is outside [0, 100]"),
        ("--request-percentiles", "101", "percentile 101 is outside [0, 100]"),
        ("--token-percentiles", "100.5", "percentile 100.5 is outside [0, 100]"),
        ("--token-percentiles", "p99", "'p99' is not a number"),
    ],
)
def test_bad_percentiles(capsys, flag: str, value: str, needle: str) -> None:
    err = bad(capsys, "--model", "llama-7b", flag, "90", value)
    assert flag in err and needle in err


def test_frequency_not_a_clock(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--frequency", "123")
    assert "--frequency 123 MHz is not a clock of H100-SXM-80GB" in err and "1980" in err


def test_frequency_negative(capsys) -> None:
    assert "--frequency must be >= 0" in bad(capsys, "--model", "llama-7b", "--frequency", "-5")


def test_batched_tokens_below_max_num_seqs(capsys) -> None:
    err = bad(
        capsys,
        "--model",
        "llama-7b",
        "--max-num-seqs",
        "64",
        "--max-num-batched-tokens",
        "32",
    )
    assert "--max-num-batched-tokens (32) must be at least --max-num-seqs (64)" in err


def test_max_num_seqs_zero_is_not_the_default(capsys) -> None:
    assert "--max-num-seqs must be >= 1" in bad(
        capsys, "--model", "llama-7b", "--max-num-seqs", "0"
    )


def test_block_size_zero(capsys) -> None:
    assert "--block-size must be >= 1" in bad(capsys, "--model", "llama-7b", "--block-size", "0")


@pytest.mark.parametrize("flag", ["--prompt-len", "--output-len", "--num-requests"])
def test_zero_lengths_and_counts(capsys, flag: str) -> None:
    assert f"{flag} must be >= 1" in bad(capsys, "--model", "llama-7b", flag, "0")


def test_unknown_objective(capsys) -> None:
    assert "--objective: 'speed' is not one of 'latency'" in bad(
        capsys, "--model", "llama-7b", "--objective", "speed"
    )


def test_option_value_of_wrong_type(capsys) -> None:
    err = bad(capsys, "--model", "llama-7b", "--num-gpus", "eight")
    assert "--num-gpus-per-node" in err and "integer" in err


def test_unknown_option(capsys) -> None:
    assert "--frobnicate" in bad(capsys, "--model", "llama-7b", "--frobnicate", "1")


def test_missing_required_option(capsys) -> None:
    code, _, err = run(capsys, "plan", "--num-gpus", "1")
    assert_one_line(code, err, "--model")


def test_workers_zero(capsys) -> None:
    assert "--workers" in bad(capsys, "--model", "gpt2", "--workers", "0")


def test_json_path_is_a_directory(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", "gpt2", "--json", str(tmp_path))
    assert "--json" in err and "is a directory" in err


def test_json_path_in_missing_folder(capsys, tmp_path: Path) -> None:
    err = bad(capsys, "--model", "gpt2", "--json", str(tmp_path / "no" / "o.json"))
    assert "does not exist" in err


# ---------------------------------------------------------------------- internal errors
def test_internal_error_one_line_with_debug_hint(capsys, monkeypatch) -> None:
    import apex_fast.planner

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(apex_fast.planner, "run_plan", boom)
    code, _, err = run(capsys, *BASE, "--model", "gpt2")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error: RuntimeError: boom" in err and "--debug" in err
    code, _, err = run(capsys, *BASE, "--model", "gpt2", "--debug")
    assert code == 1 and "Traceback" in err


# ---------------------------------------------------------------------- determinism
def _trace_for_determinism(tmp_path: Path) -> str:
    lines = [_req(i * 37_000_000, 16 + (i * 53) % 700, 1 + (i * 29) % 90) for i in range(60)]
    return _trace(tmp_path, lines, "det.jsonl")


def _plan_json(capsys, trace: str, path: Path, workers: str) -> bytes:
    """The JSON report of every plan of llama-7b on 4 GPUs for `trace`."""
    code, _, err = run(
        capsys,
        "plan",
        "--model",
        "llama-7b",
        "--num-gpus",
        "4",
        "--trace-file",
        trace,
        "--all",
        "--json",
        str(path),
        "--quiet",
        "--workers",
        workers,
    )
    assert code == 0, err
    return path.read_bytes()


def test_json_identical_run_to_run_with_trace_and_several_plans(capsys, tmp_path: Path) -> None:
    trace = _trace_for_determinism(tmp_path)
    outs = [_plan_json(capsys, trace, tmp_path / name, "1") for name in ("a.json", "b.json")]
    assert outs[0] == outs[1]
    assert len(orjson.loads(outs[0])["plans"]) >= 3


def test_json_identical_whatever_the_number_of_workers(capsys, tmp_path: Path) -> None:
    trace = _trace_for_determinism(tmp_path)
    outs = [_plan_json(capsys, trace, tmp_path / f"w{w}.json", w) for w in ("1", "2")]
    assert outs[0] == outs[1]
