"""`apex.py profile`: the CPU profiler writes APEX-format tables the loader reads back."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from apex_fast.cli import main
from apex_fast.profiles import tables
from apex_fast.profiles.collect import ATTN_HEADER, GEMM_HEADER, attn_grid, gemm_grid, time_call


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prof")
    assert main(["profile", "--backend", "cpu", "--out", str(out), "--quick"]) == 0
    return out


def test_quick_cpu_profile_writes_apex_tables(
    quick_profile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APEX_FAST_CACHE_DIR", str(tmp_path / "cache"))
    gemm = quick_profile / "comp" / "cpu" / "gemm_0.csv"
    with open(gemm) as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == GEMM_HEADER == ("gpu", "dtype", "m", "k", "n", "time(us)")
    ms, ks, ns = gemm_grid(quick=True)
    assert len(rows) - 1 == len(ms) * len(ks) * len(ns)
    assert all(r[0] == "cpu" and r[1] == "float" and float(r[5]) > 0 for r in rows[1:])
    grid = tables.load_gemm(gemm, "cpu/gemm_0.csv")["float"]
    big, _ = grid.lookup(4096, 4096, 1024)
    small, _ = grid.lookup(64, 64, 1)
    assert big > 100 * small  # 34 GFLOP vs 8 kFLOP
    mha = quick_profile / "comp" / "cpu" / "mha_0.csv"
    assert mha.read_text().splitlines()[0] == ",".join(ATTN_HEADER)
    a = tables.load_attn(mha, "cpu/mha_0.csv")
    assert len(a.t) == len(attn_grid(quick=True))
    fit = a.prefill_time_per_pair(16, 64, "float")
    assert fit is not None and fit[0] > 0
    assert (quick_profile / "comp" / "cpu" / "meta.json").exists()


def test_profile_rejects_unavailable_backend_and_dtype(capsys: pytest.CaptureFixture) -> None:
    # no PyTorch / CUDA here: a GPU backend ends with one line and exit code 2
    assert main(["profile", "--backend", "H100-SXM-80GB", "--out", "/nonexistent/x"]) == 2
    assert "needs PyTorch" in capsys.readouterr().err
    assert main(["profile", "--backend", "cpu", "--dtype", "half", "--out", "/nonexistent"]) == 2
    assert "float (float32) only" in capsys.readouterr().err


def test_time_call_takes_fastest_of_at_least_three() -> None:
    calls = []
    t = time_call(lambda: calls.append(1), min_time=0.0)
    assert len(calls) >= 4 and t >= 0  # one warm-up + three timed


def test_retime_outliers_fixes_stalled_points() -> None:
    from apex_fast.profiles.collect import retime_outliers

    axes = ([1, 2], [1, 2], [1, 2, 4])
    t = np.ones((2, 2, 3))
    t[0, 0, 0] = 50.0  # slower than its larger neighbours: a stall
    t[1, 1, 2] = 80.0  # the largest point has no larger neighbour: kept
    n = retime_outliers(t, axes, lambda m, k, n: lambda: None, min_time=0.0)
    assert n == 1 and t[0, 0, 0] < 1.0 and t[1, 1, 2] == 80.0
