"""bench/replay_device_check.py: the same rows replayed on the device they name and on another."""

from __future__ import annotations

import pytest
from common import bench_script

SOURCE = "qwen3-8b/h100-latency"  # GPUStack's Qwen3-8B latency page: small closed-loop rows


def _script():
    return bench_script("replay_device_check")


def test_no_matching_row_is_a_usage_error(capsys):
    mod = _script()
    assert mod.main(["--source", "no-such-source", "--gpu", "H100-SXM-80GB", "--as", "L4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_named_device_column_is_the_replay_and_a_slower_device_predicts_slower(capsys):
    """The first column is exactly the published replay; on a device with 60% of the memory
    bandwidth (H100 PCIe against SXM) a batch-1 decode is predicted slower, so the ITL error of
    the concurrency-1 row rises and the throughput error falls."""
    from apex_fast.data import published_measurements
    from apex_fast.validation.published import replay_row

    mod = _script()
    (row,) = [
        r
        for r in published_measurements("vllm-v1")
        if SOURCE in r["source_url"] and r["max_concurrency"] == 1
    ]
    same = replay_row(row)
    other = replay_row({**row, "gpu": "H100-PCIe"})
    assert other["itl_mean_ms_pred"] > same["itl_mean_ms_pred"]
    assert other["output_tok_s_pred"] < same["output_tok_s_pred"]
    got = mod._err(same, ("itl_mean_ms", "tpot_mean_ms"))
    assert got == pytest.approx(same["itl_mean_ms_pred"] / same["itl_mean_ms_meas"] - 1.0)
    rc = mod.main(
        ["--source", SOURCE, "--gpu", "H100-SXM-80GB", "--as", "H100-PCIe", "--engine", "sglang"]
    )
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    n = sum(
        1
        for r in published_measurements("sglang")
        if SOURCE in r["source_url"] and r["gpu"] == "H100-SXM-80GB"
    )
    assert n >= 1
    assert len(lines) == n + 2  # header, the page's SGLang rows, the mean absolute errors
    assert all("sglang" in line for line in lines[1 : n + 1])
    assert lines[-1].startswith("mean absolute error")
