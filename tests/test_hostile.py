"""Hostile inputs, as a new user (or a script gone wrong) would give them: every run ends with
exit 0 and a report, or exit 2 and exactly one line `error: ...` on stderr; never a traceback,
never exit 1 ("internal error") for a user's mistake. Limits enforced: docs/limits.md.

Cases: flags, model configs, traces, output paths, profile folders, the `trace` and `capacity`
commands and the small commands. Ctrl-C is covered in test_interrupt.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest
from common import DROP, tiny_config

from apex_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRACE = str(ROOT / "traces" / "lmsys_r2_n300.jsonl")
# a small, fast case: GPT-2 on one GPU, 4 requests
PLAN = ["plan", "--model", "gpt2", "--num-gpus-per-node", "1", "--quiet"]
STATIC = ["--num-requests", "4", "--prompt-len", "64", "--output-len", "8"]
OK, ERR = 0, 2


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def check(code: int, out: str, err: str, expect: int, needle: str = "") -> None:
    """The contract every case shares, then the case's own expectation."""
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "internal error" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("error: ") and err.endswith("\n"), err
        assert err.count("\n") == 1, err
        assert len(err.strip()) > len("error: "), err
    assert code == expect, (code, err[-300:])
    if code == 0:
        assert out.strip(), "exit 0 must come with a result"
    if needle:
        assert needle in (err if code else out), (needle, err if code else out[-500:])


# ------------------------------------------------------------------------------------- flags
BAD_FLAGS = [
    ("--num-gpus-per-node", "0", "--num-gpus-per-node must be >= 1"),
    ("--num-gpus-per-node", "-1", "--num-gpus-per-node must be"),
    ("--num-gpus-per-node", "abc", "--num-gpus-per-node"),
    ("--num-gpus-per-node", "1.5", "--num-gpus-per-node"),
    ("--num-gpus-per-node", "", "--num-gpus-per-node"),
    ("--num-gpus-per-node", "99999999999999999999", ""),
    ("--num-gpus-per-node", "1025", "GPUs per node"),
    ("--num-nodes", "0", "--num-nodes must be >= 1"),
    ("--num-nodes", "-3", "--num-nodes must be"),
    ("--num-nodes", "x", "--num-nodes"),
    ("--num-nodes", "100000", "65,536 GPUs"),
    ("--prompt-len", "0", "--prompt-len"),
    ("--prompt-len", "-1", "--prompt-len"),
    ("--prompt-len", "abc", "--prompt-len"),
    ("--prompt-len", "1000000000000", "bound on one request"),
    ("--prompt-len", "90000000", "no plan"),
    ("--output-len", "100000001", "bound on one request"),
    ("--output-len", "0", "--output-len"),
    ("--output-len", "-1", "--output-len"),
    ("--output-len", "2.5", "--output-len"),
    ("--num-requests", "0", "--num-requests"),
    ("--num-requests", "-1", "--num-requests"),
    ("--num-requests", "1e3", "--num-requests"),
    ("--num-requests", "1000000000000", "memory"),
    ("--block-size", "0", "--block-size"),
    ("--block-size", "-16", "--block-size"),
    ("--block-size", "z", "--block-size"),
    ("--max-num-seqs", "0", "--max-num-seqs"),
    ("--max-num-seqs", "-1", "--max-num-seqs"),
    ("--max-num-batched-tokens", "0", "--max-num-batched-tokens"),
    ("--max-num-batched-tokens", "-1", "--max-num-batched-tokens"),
    ("--max-num-batched-tokens", "10000000000", "1,048,576-token bound"),
    ("--max-batch-size", "-1", "--max-batch-size"),
    ("--gpu-memory-utilization", "0", "--gpu-memory-utilization must be"),
    ("--gpu-memory-utilization", "-0.5", "--gpu-memory-utilization must be"),
    ("--gpu-memory-utilization", "1.01", "--gpu-memory-utilization must be"),
    ("--gpu-memory-utilization", "nan", "--gpu-memory-utilization must be"),
    ("--gpu-memory-utilization", "inf", "--gpu-memory-utilization must be"),
    ("--gpu-memory-utilization", "abc", "--gpu-memory-utilization"),
    ("--frequency", "-1", "--frequency"),
    ("--frequency", "1", "not a clock"),
    ("--frequency", "123456789", "not a clock"),
    ("--tp", "0", "--tp"),
    ("--tp", "-1", "--tp"),
    ("--tp", "3", ""),
    ("--pp", "0", "--pp"),
    ("--pp", "1000", ""),
    ("--dp", "0", "--dp"),
    ("--dp", "3", ""),
    ("--ep", "2", ""),
    ("--workers", "0", "--workers"),
    ("--workers", "-1", "--workers"),
    ("--topk", "0", ""),
    ("--num-experts", "-1", ""),
    ("--ttft-slo", "-1", "--ttft-slo"),
    ("--ttft-slo", "nan", "--ttft-slo"),
    ("--ttft-slo", "inf", "--ttft-slo"),
    ("--ttft-slo", "1e12", "--ttft-slo must be"),
    ("--ttft-slo", "abc", "--ttft-slo"),
    ("--tpot-slo", "-0.1", "--tpot-slo"),
    ("--tpot-slo", "1e12", "--tpot-slo must be"),
    ("--gpu-hour-cost", "-1", "--gpu-hour-cost"),
    ("--gpu-hour-cost", "nan", "--gpu-hour-cost"),
    ("--gpu-hour-cost", "inf", "--gpu-hour-cost"),
    ("--objective", "bogus", "--objective: 'bogus' is not one of"),
    ("--objective", "", "--objective"),
    ("--kv-dtype", "int4", "--kv-dtype"),
    ("--kv-dtype", "bogus", "--kv-dtype"),
    ("--kv-dtype", "", "--kv-dtype"),
    ("--weight-dtype", "int3", "--weight-dtype"),
    ("--activation-dtype", "int8", "--activation-dtype"),
    ("--gpu", "H900", "H100-SXM-80GB"),
    ("--gpu", "", ""),
    ("--gpu", "../../etc/passwd", ""),
    ("--request-percentiles", "101", "outside [0, 100]"),
    ("--request-percentiles", "-1", "outside [0, 100]"),
    ("--request-percentiles", "abc", "not a number"),
    ("--token-percentiles", "100.5", "outside [0, 100]"),
    ("--token-percentiles", "x", "not a number"),
    ("--ray", "bogus-address", "--ray"),
]


@pytest.mark.parametrize(("flag", "value", "needle"), BAD_FLAGS)
def test_bad_flag_value(capsys, flag: str, value: str, needle: str) -> None:
    code, out, err = run(capsys, [*PLAN, *STATIC, flag, value])
    check(code, out, err, ERR, needle)


BAD_MODELS = [
    ("", "empty model name"),
    ("   ", "empty model name"),
    ("nonexistent-model", "unknown model"),
    ("/dev/null", ""),
    ("/etc", "no config.json"),
    ("missing.json", "does not exist"),
    ("/dev/zero", ""),
]


@pytest.mark.parametrize(("model", "needle"), BAD_MODELS)
def test_bad_model_name(capsys, model: str, needle: str) -> None:
    args = ["plan", "--model", model, "--num-gpus-per-node", "1", "--quiet", *STATIC]
    code, out, err = run(capsys, args)
    check(code, out, err, ERR, needle)


MOE_FLAGS = [
    ("--capacity-factor", "0", "positive"),
    ("--capacity-factor", "-1", "--capacity-factor must be"),
    ("--capacity-factor", "nan", "--capacity-factor must be"),
    ("--capacity-factor", "inf", "--capacity-factor must be a finite number"),
    ("--capacity-factor", "1e300", "experts / top-k"),
    ("--capacity-factor", "4.5", "experts / top-k"),
    ("--topk", "9", "exceeds"),
    ("--topk", "0", ""),
    ("--num-experts", "0", ""),
    ("--num-experts", "1", "exceeds"),
    ("--ep", "3", ""),
]


@pytest.mark.parametrize(("flag", "value", "needle"), MOE_FLAGS)
def test_bad_moe_flag(capsys, flag: str, value: str, needle: str) -> None:
    args = ["plan", "--model", "mixtral-8x7b", "--num-gpus-per-node", "2", "--quiet", *STATIC]
    code, out, err = run(capsys, [*args, flag, value])
    check(code, out, err, ERR, needle)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["plan"],
        ["plan", "--model"],
        ["plan", "--model", "gpt2"],
        [*PLAN, "--bogus"],
        [*PLAN, *STATIC, "extra-argument"],
        ["no-such-command"],
        ["plan", "--num-gpus-per-node", "1", "--model", "gpt2", "--model"],
    ],
)
def test_malformed_command_line(capsys, args: list[str]) -> None:
    code, out, err = run(capsys, args)
    if not args:  # no arguments: the help, as a result
        check(code, out, err, OK, "Usage")
        return
    check(code, out, err, ERR)


GOOD = [
    ([], "Optimal schedule"),
    (["--all"], "Parallel schedule 0"),
    (["--objective", "energy"], "Ranked by energy"),
    (["--objective", "throughput"], "Ranked by throughput"),
    (["--objective", "cost", "--gpu-hour-cost", "2.5"], "per million generated tokens"),
    (["--ttft-slo", "100", "--tpot-slo", "50"], "Both"),
    (["--ttft-slo", "0"], "TTFT"),
    (["--tpot-slo", "3600000"], "TPOT"),
    (["--kv-dtype", "float8"], "KV float8"),
    (["--weight-dtype", "int8"], "weights int8"),
    (["--no-chunked-prefill"], "chunked prefill off"),
    (["--max-num-seqs", "2"], "--max-num-seqs): 2"),
    (["--max-batch", "3"], "--max-num-seqs): 3"),
    (["--request-percentiles", "90", "99"], "99th percentile"),
    (["--token-percentiles", "99.9"], "P99.9"),
    (["--frequency", "1410"], "SM clock 1410 MHz"),
    (["--workers", "1"], "Optimal schedule"),
    (["--block-size", "1"], "block size 1,"),
    (["--gpu-memory-utilization", "1"], "gpu-memory-utilization 1"),
]


@pytest.mark.parametrize(("extra", "needle"), GOOD)
def test_ordinary_options_give_a_report(capsys, extra: list[str], needle: str) -> None:
    code, out, err = run(capsys, [*PLAN, *STATIC, *extra])
    check(code, out, err, OK, needle)


def test_no_slo_rows_unless_asked(capsys) -> None:
    code, out, err = run(capsys, [*PLAN, *STATIC])
    check(code, out, err, OK, "No SLO set")
    assert "SLOs Met" not in out and "0.000 %" not in out


def test_model_flag_valid_on_encoder(capsys) -> None:
    args = ["plan", "--model", "clip", "--num-gpus-per-node", "1", "--quiet", *STATIC]
    code, out, err = run(capsys, args)
    check(code, out, err, OK, "J per request")
    assert "KV cache" not in out and "generated per second" not in out


# ------------------------------------------------------------------------------------- configs
_MOE = {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2}

BAD_CONFIGS = [
    ({"hidden_size": 0}, "hidden_size"),
    ({"hidden_size": -64}, "hidden_size"),
    ({"hidden_size": "64"}, "hidden_size"),
    ({"hidden_size": True}, "hidden_size"),
    ({"hidden_size": 64.5}, "hidden_size"),
    ({"hidden_size": None}, "hidden_size"),
    ({"hidden_size": 10**30}, "out of range"),
    ({"hidden_size": 10_000_000}, "no plan"),  # loads; no cluster holds it
    ({"hidden_size": DROP}, "hidden_size"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"num_attention_heads": 3}, "not divisible"),
    ({"num_key_value_heads": 3}, "KV heads"),
    ({"num_key_value_heads": 8}, "KV heads"),
    ({"vocab_size": -1}, "vocab_size"),
    ({"intermediate_size": 0}, "intermediate_size"),
    ({"model_type": 7}, "model_type"),
    ({"model_type": "unknown-arch", "hidden_size": DROP}, "unknown model_type"),
    ({"max_position_embeddings": -5}, "max_position_embeddings"),
    ({"head_dim": 0}, "head_dim"),
    ({**_MOE, "num_local_experts": 0}, "at least one expert"),
    ({**_MOE, "num_experts_per_tok": 9}, "exceeds"),
    ({**_MOE, "num_experts_per_tok": DROP}, "num_experts_per_tok"),
    ({**_MOE, "num_experts_per_tok": 0}, "num_experts_per_tok"),
    ({**_MOE, "num_local_experts": -2}, "num_local_experts"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
]


@pytest.mark.parametrize(("over", "needle"), BAD_CONFIGS)
def test_bad_config(capsys, tmp_path: Path, over: dict, needle: str) -> None:
    path = tiny_config(tmp_path, **over)
    code, out, err = run(capsys, ["plan", "--model", path, "--num-gpus-per-node", "1", *STATIC])
    check(code, out, err, ERR, needle)


BAD_CONFIG_FILES = [
    (b"", "not valid JSON"),
    (b"   \n", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b"42", "expected a JSON object"),
    (b'"llama"', "expected a JSON object"),
    (b"null", "expected a JSON object"),
    (b"\x00\xff\xfe garbage", "not valid JSON"),
    (b"\xef\xbb\xbf{}", "BOM"),
    (b'{"model_type": "llama", "hidden_size": NaN}', "not valid JSON"),
    (b"{}", "no model_type"),
]


@pytest.mark.parametrize(("raw", "needle"), BAD_CONFIG_FILES)
def test_bad_config_file(capsys, tmp_path: Path, raw: bytes, needle: str) -> None:
    path = tiny_config(tmp_path, raw=raw)
    code, out, err = run(capsys, ["plan", "--model", path, "--num-gpus-per-node", "1", *STATIC])
    check(code, out, err, ERR, needle)


def test_config_folder_and_file_load(capsys, tmp_path: Path) -> None:
    tiny_config(tmp_path)
    code, out, err = run(capsys, ["plan", "--model", str(tmp_path), "--num-gpus", "1", *STATIC])
    check(code, out, err, OK, "Optimal schedule")


def test_moe_config_loads(capsys, tmp_path: Path) -> None:
    path = tiny_config(tmp_path, **_MOE)
    code, out, err = run(capsys, ["plan", "--model", path, "--num-gpus", "1", *STATIC])
    check(code, out, err, OK, "8 experts top-2")


# ------------------------------------------------------------------------------------- traces
def _trace(tmp_path: Path, body: bytes | str, name: str = "t.jsonl") -> str:
    p = tmp_path / name
    p.write_bytes(body.encode() if isinstance(body, str) else body)
    return str(p)


def _line(t: object, p: object, o: object) -> str:
    return orjson.dumps({"StartTimeOffset": t, "ContextTokens": p, "GeneratedTokens": o}).decode()


BAD_TRACES = [
    ("", "empty"),
    ("\n\n  \n", ""),
    ("not json\n", "not valid JSON"),
    ("[" + _line(0, 10, 5) + "]\n", "JSON object"),
    ("42\n", "JSON object"),
    (_line(0, 10, 5) + "\n{broken\n", ":2"),
    ('{"StartTimeOffset": 0, "ContextTokens": 10}\n', "GeneratedTokens"),
    (_line(0, -1, 5) + "\n", ""),
    (_line(0, 10.5, 5) + "\n", "whole number"),
    (_line(0, "ten", 5) + "\n", ""),
    (_line(0, 10**15, 5) + "\n", "plausible"),
    (_line(-5, 10, 5) + "\n", ""),
    (_line("soon", 10, 5) + "\n", ""),
    (_line(None, 10, 5) + "\n", ""),
    ('{"StartTimeOffset": NaN, "ContextTokens": 1, "GeneratedTokens": 1}\n', ""),
    ("x" * 2_000_000, ""),  # one 2 MB line without a newline
    (b"\x00\x01\x02\xff\xfe\n", ""),
    (b"\xef\xbb\xbf" + _line(0, 10, 5).encode() + b"\n", "byte order mark"),
    (b"\xff\xfe" + _line(0, 10, 5).encode("utf-16-le") + b"\n", "byte order mark"),
]


@pytest.mark.parametrize(("body", "needle"), BAD_TRACES)
def test_bad_trace(capsys, tmp_path: Path, body: bytes | str, needle: str) -> None:
    path = _trace(tmp_path, body)
    code, out, err = run(capsys, [*PLAN, "--trace-file", path])
    check(code, out, err, ERR, needle)


GOOD_TRACES = [
    "\n".join(_line(i * 10**8, 10 + i, 5) for i in range(4)) + "\n",
    "\n".join(_line(0, 10, 5) for _ in range(4)),  # no final newline, same arrival time
    "\n".join(_line(i * 10**8, 10, 5) for i in range(4)) + "\n\n\n",  # trailing blank lines
    _line(0, 1, 1) + "\n",  # one token in, one out
    _line(10**9, 10, 5) + "\n",  # first arrival not at zero
]


@pytest.mark.parametrize("body", GOOD_TRACES)
def test_good_trace(capsys, tmp_path: Path, body: str) -> None:
    path = _trace(tmp_path, body)
    code, out, err = run(capsys, [*PLAN, "--trace-file", path])
    check(code, out, err, OK, "Optimal schedule")


BAD_CSV = [
    ("", ""),
    ("a,b,c\n1,2,3\n", "header"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nnow,10,5\n", ""),
    (b"\xef\xbb\xbfStartTimeOffset,ContextTokens,GeneratedTokens\n0,10,5\n", "byte order mark"),
]


@pytest.mark.parametrize(("body", "needle"), BAD_CSV)
def test_bad_csv_trace(capsys, tmp_path: Path, body: bytes | str, needle: str) -> None:
    path = _trace(tmp_path, body, "t.csv")
    code, out, err = run(capsys, [*PLAN, "--trace-file", path])
    check(code, out, err, ERR, needle)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/nonexistent/trace.jsonl", "does not exist"),
        ("/tmp", ""),
        ("/dev/null", ""),
        ("x" * 5000 + ".jsonl", "--trace-file"),
        ("/tmp/" + "x" * 300 + ".jsonl", "File name too long"),
    ],
)
def test_trace_path_not_a_trace(capsys, path: str, needle: str) -> None:
    code, out, err = run(capsys, [*PLAN, "--trace-file", path])
    check(code, out, err, ERR, needle)


def test_trace_path_through_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, out, err = run(capsys, [*PLAN, "--trace-file", str(tmp_path / "afile" / "t.jsonl")])
    check(code, out, err, ERR, "Not a directory")


@pytest.mark.parametrize("flag", ["--prompt-len", "--output-len", "--num-requests"])
def test_trace_and_static_workload_conflict(capsys, flag: str) -> None:
    code, out, err = run(capsys, [*PLAN, "--trace-file", TRACE, flag, "100"])
    check(code, out, err, ERR, f"{flag} would be ignored")


def test_trace_with_default_static_options_is_fine(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, _line(0, 10, 5) + "\n")
    code, out, err = run(capsys, [*PLAN, "--trace-file", path, "--max-num-seqs", "4"])
    check(code, out, err, OK, "1 requests")


# --------------------------------------------------------------------------------- output paths
LONG_NAME = "a" * 300


def _bad_outputs(tmp_path: Path) -> list[tuple[str, str]]:
    (tmp_path / "adir").mkdir(exist_ok=True)
    return [
        (str(tmp_path / "adir"), "is a directory"),
        (str(tmp_path / "missing" / "r.out"), "does not exist"),
        (str(tmp_path / f"{LONG_NAME}.out"), "File name too long"),
        (str(tmp_path / "missing" / f"{LONG_NAME}.out"), "does not exist"),
        ("", "is a directory"),
    ]


@pytest.mark.parametrize("flag", ["--json", "--pareto"])
@pytest.mark.parametrize("which", range(5))
def test_bad_output_path(capsys, tmp_path: Path, flag: str, which: int) -> None:
    path, needle = _bad_outputs(tmp_path)[which]
    code, out, err = run(capsys, [*PLAN, *STATIC, flag, path])
    check(code, out, err, ERR, needle)
    assert out == ""  # refused before the search: no half-finished report


def test_plot_without_matplotlib_fails_before_the_search(capsys, tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("matplotlib is installed")
    code, out, err = run(capsys, [*PLAN, *STATIC, "--plot", str(tmp_path / "p.png")])
    check(code, out, err, ERR, "--plot needs matplotlib")
    assert out == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_json_to_a_full_device_is_an_error_and_the_device_survives(capsys) -> None:
    code, out, err = run(capsys, [*PLAN, *STATIC, "--json", "/dev/full"])
    check(code, out, err, ERR, "No space left")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # never replaced by a regular file


def test_json_and_pareto_written(capsys, tmp_path: Path) -> None:
    j, c = tmp_path / "r.json", tmp_path / "front.csv"
    code, out, err = run(capsys, [*PLAN, *STATIC, "--json", str(j), "--pareto", str(c)])
    check(code, out, err, OK, "Optimal schedule")
    data = orjson.loads(j.read_bytes())
    assert data["best"]["kv_tokens_per_copy"] > 0 and data["cluster"]["sm_clock_mhz"] > 0
    assert c.read_text().count("\n") >= 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_json_through_a_symlink_keeps_the_link(capsys, tmp_path: Path) -> None:
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    link.symlink_to(target)
    code, out, err = run(capsys, [*PLAN, *STATIC, "--json", str(link)])
    check(code, out, err, OK)
    assert link.is_symlink() and orjson.loads(target.read_bytes())["model"] == "gpt2"


# ------------------------------------------------------------------------------------ profiles
def test_profile_dir_missing(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, [*PLAN, *STATIC, "--profile-dir", str(tmp_path / "none")])
    check(code, out, err, ERR, "does not exist")


def test_profile_dir_is_a_file(capsys, tmp_path: Path) -> None:
    f = tmp_path / "f.csv"
    f.write_text("x")
    code, out, err = run(capsys, [*PLAN, *STATIC, "--profile-dir", str(f)])
    check(code, out, err, ERR, "is a file")


def test_profile_dir_empty_falls_back_to_the_analytic_model(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, [*PLAN, *STATIC, "--profile-dir", str(tmp_path)])
    check(code, out, err, OK, "analytic")


PROFILE_TABLES = [
    "garbage,,x\n",
    "",
    "gpu,dtype,m,k,n,time(us)\nH100,half,a,b,c,d\n",
    "gpu,dtype,m,k,n,time(us)\nH100,half,1,1,1,-5\n",
    "gpu,dtype,m,k,n,time(us)\nH100,half,1,1,1,nan\n",
    b"\x00\xff\x00\xff",
]


@pytest.mark.parametrize("body", PROFILE_TABLES)
def test_profile_table_garbage(capsys, tmp_path: Path, body: str | bytes) -> None:
    d = tmp_path / "comp" / "H100-SXM-80GB"
    d.mkdir(parents=True)
    (d / "gemm_0.csv").write_bytes(body.encode() if isinstance(body, str) else body)
    code, out, err = run(capsys, [*PLAN, *STATIC, "--profile-dir", str(tmp_path)])
    assert code in (0, 2)  # a usable table or one line saying why not
    check(code, out, err, code)


# ------------------------------------------------------------------------------ trace command
def _gen(tmp_path: Path, *extra: str, out: str | None = None) -> list[str]:
    base = {"--kind": "lmsys", "--rate": "2", "--num-requests": "5", "--out": None}
    base["--out"] = out if out is not None else str(tmp_path / "t.jsonl")
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        base[flag] = value
    return ["trace", *[x for kv in base.items() for x in kv]]


BAD_TRACE_COMMAND = [
    (("--rate", "0"), "--rate"),
    (("--rate", "-1"), "--rate"),
    (("--rate", "nan"), "--rate"),
    (("--rate", "1e-12"), "292 years"),
    (("--num-requests", "0"), "--num-requests"),
    (("--num-requests", "-1"), "--num-requests"),
    (("--num-requests", "1000000000000", "--rate", "1000000"), "memory"),
    (("--seed", "-1"), "--seed"),
    (("--seed", "x"), "--seed"),
    (("--burstiness", "0"), "--burstiness"),
    (("--burstiness", "nan"), "--burstiness"),
    (("--kind", "bogus"), "--kind"),
]


@pytest.mark.parametrize(("extra", "needle"), BAD_TRACE_COMMAND)
def test_trace_command_bad_options(capsys, tmp_path: Path, extra: tuple, needle: str) -> None:
    code, out, err = run(capsys, _gen(tmp_path, *extra))
    check(code, out, err, ERR, needle)
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.parametrize("which", range(5))
def test_trace_command_bad_out(capsys, tmp_path: Path, which: int) -> None:
    path, needle = _bad_outputs(tmp_path)[which]
    code, out, err = run(capsys, _gen(tmp_path, out=path))
    check(code, out, err, ERR, needle)


@pytest.mark.parametrize("seed", ["0", "7", str(2**40)])
def test_trace_command_writes_a_trace_that_plans(capsys, tmp_path: Path, seed: str) -> None:
    code, out, err = run(capsys, _gen(tmp_path, "--seed", seed))
    check(code, out, err, OK, "wrote")
    code, out, err = run(capsys, [*PLAN, "--trace-file", str(tmp_path / "t.jsonl")])
    check(code, out, err, OK, "5 requests")


# --------------------------------------------------------------------------- capacity command
CAP = ["capacity", "--model", "gpt2", "--num-gpus-per-node", "1"]

BAD_CAPACITY = [
    (["--ttft-slo", "0"], "--ttft-slo"),
    (["--ttft-slo", "-1"], "--ttft-slo"),
    (["--tpot-slo", "1e12"], "--tpot-slo must be"),
    (["--tpot-slo", "nan"], "--tpot-slo"),
    (["--attainment", "0"], "--attainment"),
    (["--attainment", "1.5"], "--attainment"),
    (["--rel-tol", "0"], "--rel-tol"),
    (["--rel-tol", "1"], "--rel-tol"),
    (["--top", "0"], "--top"),
    (["--num-nodes", "100000"], "65,536 GPUs"),
]


@pytest.mark.parametrize(("extra", "needle"), BAD_CAPACITY)
def test_capacity_bad_options(capsys, extra: list[str], needle: str) -> None:
    code, out, err = run(capsys, [*CAP, "--trace-file", TRACE, *extra])
    check(code, out, err, ERR, needle)


def test_capacity_static_trace_refused(capsys, tmp_path: Path) -> None:
    path = _trace(tmp_path, "\n".join(_line(0, 10, 5) for _ in range(4)) + "\n")
    code, out, err = run(capsys, [*CAP, "--trace-file", path])
    check(code, out, err, ERR, "spread over time")


def test_capacity_bad_json_path(capsys, tmp_path: Path) -> None:
    code, out, err = run(
        capsys, [*CAP, "--trace-file", TRACE, "--json", str(tmp_path / "no" / "c.json")]
    )
    check(code, out, err, ERR, "does not exist")
    assert out == ""


def test_capacity_goodput_is_what_the_plan_delivers(capsys, tmp_path: Path) -> None:
    # the SLOs are generous: the rate is unbounded ('>='), yet the goodput stays what the plan
    # serves per second (never the offered rate times the attainment)
    lines = [_line(i * 5 * 10**8, 20, 8) for i in range(40)]
    path = _trace(tmp_path, "\n".join(lines) + "\n")
    j = tmp_path / "c.json"
    code, out, err = run(
        capsys,
        [*CAP, "--trace-file", path, "--ttft-slo", "60000", "--tpot-slo", "60000", "--json", j],
    )
    check(code, out, err, OK, "Goodput")
    plan = orjson.loads(j.read_bytes())["plans"][0]
    assert 0 < plan["goodput_req_s"] < plan["max_rate_req_s"]


# ------------------------------------------------------------------------------ other commands
@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["models"], OK),
        (["gpus"], OK),
        (["--help"], OK),
        (["plan", "--help"], OK),
        (["validate", "--reference-dir", "/nonexistent"], ERR),
        (["profile", "--backend", "bogus", "--out", "/tmp/apex-profile-never-written"], ERR),
        (["models", "--bogus"], ERR),
    ],
)
def test_small_commands(capsys, args: list[str], expect: int) -> None:
    code, out, err = run(capsys, args)
    check(code, out, err, expect)


def test_help_names_every_option_in_full_at_80_columns(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run(capsys, ["plan", "--help"])
    check(code, out, err, OK)
    for flag in ("--gpu-memory-utilization", "--max-num-batched-tokens", "--num-gpus-per-node"):
        assert flag in out
    assert "'.[ray]'" in out  # not eaten as markup
    assert "Seed name" not in out


# ------------------------------------------------------------------------ paths the OS refuses
@pytest.mark.parametrize(
    "args",
    [
        [*PLAN, *STATIC, "--json", "a\x00b.json"],
        [*PLAN, *STATIC, "--pareto", "a\x00b.csv"],
        [*PLAN, *STATIC, "--profile-dir", "a\x00b"],
        [*PLAN, "--trace-file", "a\x00b.jsonl"],
        ["plan", "--model", "a\x00b", "--num-gpus", "1", *STATIC],
        ["trace", "--kind", "lmsys", "--rate", "1", "--num-requests", "2", "--out", "a\x00b"],
        [*CAP, "--trace-file", "a\x00b.jsonl"],
    ],
)
def test_nul_byte_in_a_path(capsys, args: list[str]) -> None:
    code, out, err = run(capsys, args)
    check(code, out, err, ERR)


def test_profile_out_under_a_file(capsys, tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    for out_dir in (f, f / "sub"):
        args = ["profile", "--backend", "cpu", "--out", str(out_dir), "--quick"]
        code, out, err = run(capsys, args)
        check(code, out, err, ERR, "Not a directory")
