"""Benchmark-style options on the command line: every new option's bad input ends with one line
and exit code 2; the JSON carries the benchmark metrics; per-request output files."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from common import assert_bad, run

BASE = ["plan", "--model", "llama-7b", "--num-gpus-per-node", "1", "--tp", "1", "--quiet"]
SMALL = ["--num-requests", "20", "--prompt-len", "128", "--output-len", "16"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--request-rate", "0"], "--request-rate must be a positive"),
        (["--request-rate", "-3"], "--request-rate must be >= 0"),
        (["--request-rate", "nan"], "--request-rate must be"),
        (["--request-rate", "fast"], "--request-rate"),
        (["--request-rate", "2", "--burstiness", "0"], "--burstiness must be > 0"),
        (["--request-rate", "2", "--burstiness", "inf"], "--burstiness must be a finite number"),
        (["--burstiness", "0.5"], "--burstiness needs a finite --request-rate"),
        (["--max-concurrency", "-2"], "--max-concurrency must be >= 0"),
        (["--max-concurrency", "two"], "--max-concurrency"),
        (["--length-dist", "zipf"], "--length-dist: 'zipf' is not one of"),
        (["--random-range-ratio", "1"], "--random-range-ratio must be in [0, 1)"),
        (
            ["--random-range-ratio", "-0.1"],
            "--random-range-ratio must be",
        ),
        (["--seed", "-1"], "--seed must be"),
        (["--num-requests", "1000000000"], "--num-requests 1,000,000,000 would need about"),
        (["--request-rate", "1e-12"], "not a plausible workload"),
        (["--length-dist", "lognormal", "--random-range-ratio", "0.2"], "applies to uniform"),
    ],
)
def test_bad_workload_option(capsys, args: list[str], needle: str) -> None:
    assert_bad(capsys, *BASE, *SMALL, *args, needle=needle)


def test_length_options_conflict_with_a_trace(capsys, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_bytes(
        orjson.dumps({"StartTimeOffset": 0, "ContextTokens": 5, "GeneratedTokens": 5}) + b"\n"
    )
    for extra, needle in (
        (["--length-dist", "uniform"], "--length-dist would be ignored"),
        (["--random-range-ratio", "0.3"], "--random-range-ratio would be ignored"),
    ):
        assert_bad(capsys, *BASE, "--trace-file", str(trace), *extra, needle=needle)


def test_max_concurrency_refused_for_encoder_decoder(capsys) -> None:
    assert_bad(
        capsys,
        "plan", "--model", "whisper", "--num-gpus-per-node", "1", "--quiet", *SMALL,
        "--max-concurrency", "2",
        needle="--max-concurrency is not modelled for encoder-decoder models",
    )  # fmt: skip


def test_requests_out_bad_paths(capsys, tmp_path: Path) -> None:
    assert_bad(
        capsys, *BASE, *SMALL, "--requests-out", str(tmp_path / "no" / "r.parquet"),
        needle="--requests-out",
    )  # fmt: skip
    assert_bad(capsys, *BASE, *SMALL, "--requests-out", str(tmp_path), needle="is a directory")


def test_plot_cdf_bad_paths_and_missing_matplotlib(capsys, tmp_path: Path, monkeypatch) -> None:
    assert_bad(
        capsys, *BASE, *SMALL, "--plot-cdf", str(tmp_path / "no" / "c.png"), needle="--plot-cdf"
    )
    real_import = builtins.__import__

    def no_mpl(name, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    assert_bad(
        capsys, *BASE, *SMALL, "--plot-cdf", str(tmp_path / "c.png"),
        needle="--plot-cdf needs matplotlib",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kind", "zipf"], "--kind: 'zipf' is not one of"),
        (["--kind", "uniform", "--random-range-ratio", "1.5"], "--random-range-ratio"),
        (
            ["--kind", "fixed", "--prompt-len", "0"],
            "--prompt-len must be >= 1",
        ),
        (["--kind", "fixed", "--seed", "-1"], "--seed must be"),
        (
            ["--kind", "fixed", "--num-requests", "1000000000000"],
            "that nanosecond StartTimeOffset values can",
        ),
        (["--kind", "fixed", "--rate", "1e-12"], "that nanosecond StartTimeOffset values can"),
        (["--kind", "lmsys", "--random-range-ratio", "0.2"], "applies to --kind uniform"),
    ],
)
def test_trace_command_bad_input(capsys, tmp_path: Path, args: list[str], needle: str) -> None:
    base = ["trace", "--rate", "2", "--num-requests", "5", "--out", str(tmp_path / "t.jsonl")]
    assert_bad(capsys, *base, *args, needle=needle)


def test_trace_command_writes_uniform_lengths(capsys, tmp_path: Path) -> None:
    out = tmp_path / "u.jsonl"
    code, _, err = run(
        capsys, "trace", "--kind", "uniform", "--prompt-len", "100", "--output-len", "20",
        "--random-range-ratio", "0.5", "--request-rate", "inf", "--num-requests", "300",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    p = np.array([r["ContextTokens"] for r in rows])
    assert p.min() >= 50 and p.max() <= 150 and len(set(p)) > 50
    assert all(r["StartTimeOffset"] == 0 for r in rows)


def test_json_has_benchmark_metrics_and_requests_out(capsys, tmp_path: Path) -> None:
    js = tmp_path / "r.json"
    pq = tmp_path / "r.parquet"
    code, out, err = run(
        capsys, *BASE, "--num-requests", "200", "--length-dist", "lognormal",
        "--prompt-len", "300", "--output-len", "40", "--request-rate", "20", "--seed", "4",
        "--request-percentiles", "90", "--token-percentiles", "75",
        "--json", str(js), "--requests-out", str(pq),
    )  # fmt: skip
    assert code == 0, err
    data = orjson.loads(js.read_bytes())
    assert data["workload"]["max_concurrency"] == 0 and data["workload"]["notes"] == []
    best = data["best"]
    for k in (
        "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "itl_p50_s", "itl_p99_s", "latency_p99_s",
        "total_tokens_per_s", "output_tokens_per_s", "goodput_requests_per_s",
    ):  # fmt: skip
        assert isinstance(best[k], float), k
    assert set(best["ttft_percentiles_s"]) == {"p50", "p90", "p99"}
    assert set(best["itl_percentiles_s"]) == {"p50", "p75", "p99"}
    df = pl.read_parquet(pq)
    assert df.height == 200
    assert {"arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens",
            "replica", "preemptions", "cached_prompt_tokens"} <= set(df.columns)  # fmt: skip
    # TPOT per request as vllm bench defines it: (latency - ttft) / (output - 1)
    multi = df.filter(pl.col("output_tokens") > 1)
    tpot = ((multi["latency_s"] - multi["ttft_s"]) / (multi["output_tokens"] - 1)).to_numpy()
    assert best["tpot_mean_s"] == pytest.approx(float(np.mean(tpot)), rel=1e-9)
    assert best["tpot_p99_s"] == pytest.approx(float(np.percentile(tpot, 99)), rel=1e-9)
    assert best["tpot_p50_s"] == pytest.approx(float(np.median(tpot)), rel=1e-9)
    ttft = df["ttft_s"].to_numpy()
    assert best["ttft_p99_s"] == pytest.approx(float(np.percentile(ttft, 99)), rel=1e-9)
    lat = df["latency_s"].to_numpy()
    assert best["latency_p99_s"] == pytest.approx(float(np.percentile(lat, 99)), rel=1e-9)
    span = float(df["finish_s"].max())
    total = int(df["prompt_tokens"].sum() + df["output_tokens"].sum())
    assert best["total_tokens_per_s"] == pytest.approx(total / span, rel=1e-9)
    # ITL percentiles from the per-gap histogram (0.58%-wide bins): between TPOT extremes
    assert tpot.min() * 0.99 <= best["itl_p50_s"] <= best["itl_p99_s"]
    assert "Serving benchmark metrics" in out and "P90" in out and "P75" in out


def test_plot_cdf_draws_a_png(capsys, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "c.png"
    code, _, err = run(capsys, *BASE, *SMALL, "--max-concurrency", "4", "--plot-cdf", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capacity_with_synthetic_requests(capsys) -> None:
    code, out, err = run(
        capsys, "capacity", "--model", "llama-7b", "--num-gpus-per-node", "1", "--tp", "1",
        "--length-dist", "uniform", "--random-range-ratio", "0.5", "--prompt-len", "512",
        "--output-len", "64", "--num-requests", "200", "--top", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "uniform lengths 200 x (256-768 in, 32-96 out), Poisson at 1 req/s" in out
    assert "Max rate (req/s)" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--length-dist", "zipf"], "--length-dist: 'zipf' is not one of"),
        (["--burstiness", "-1"], "--burstiness must be >= 0"),
        (["--random-range-ratio", "2"], "--random-range-ratio must be"),
        (["--seed", "-4"], "--seed must be"),
    ],
)
def test_capacity_bad_workload_option(capsys, args: list[str], needle: str) -> None:
    base = ["capacity", "--model", "llama-7b", "--num-gpus-per-node", "1", "--num-requests", "20"]
    assert_bad(capsys, *base, *args, needle=needle)


def test_requests_out_unwritable_at_write_time(capsys) -> None:
    """The folder exists but refuses the file: one line, exit 2, after the search."""
    assert_bad(
        capsys, *BASE, *SMALL, "--requests-out", "/proc/none.parquet",
        needle="--requests-out: cannot write /proc/none.parquet",
    )  # fmt: skip
