"""Measured profile tables: parsing, validation, grids, interpolation, tags, cache, provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.profiles import tables
from apex_fast.profiles.grid import CLAMPED, INTERPOLATED, MEASURED
from apex_fast.profiles.measured import cost_model

MK = [16, 64, 256, 1024]
NS = [1, 8, 64, 512]


def t_us(m: float, k: float, n: float) -> float:
    return 5.0 + 2e-6 * m * k * n


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("APEX_FAST_CACHE_DIR", str(d))
    return d


def write_gemm(path: Path, gpu: str = "V100-PCIE-16GB", dtype: str = "half", drop=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["gpu,dtype,m,k,n,time(us)"]
    for m in MK:
        for k in MK:
            for n in NS:
                if drop == (m, k, n):
                    continue
                lines.append(f"{gpu},{dtype},{m},{k},{n},{t_us(m, k, n):.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_comm(path: Path, gpu: str = "V100-PCIE-16GB", groups=((1, 2), (2, 1))) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["gpu,num_nodes,num_gpus_per_node,dtype,size(kb),time(us)"]
    for nn, g in groups:
        for kb in [0, 1, 16, 256, 4096]:
            lines.append(f"{gpu},{nn},{g},half,{kb},{10.0 * nn + kb * 0.1:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gemm_grid_points_interpolation_and_clamping(tmp_path: Path) -> None:
    grids = tables.load_gemm(write_gemm(tmp_path / "gemm_0.csv"), "X/gemm_0.csv")
    g = grids["half"]
    assert g.logt.shape == (4, 4, 4) and g.label == "X/gemm_0.csv"
    t, tag = g.lookup(256, 64, 8)
    assert tag == MEASURED and t == pytest.approx(t_us(256, 64, 8) * 1e-6)
    # log-linear between grid points: geometric mean at the log midpoint of n
    t, tag = g.lookup(256, 64, np.sqrt(8 * 64))
    expect = np.sqrt(t_us(256, 64, 8) * t_us(256, 64, 64)) * 1e-6
    assert tag == INTERPOLATED and t == pytest.approx(expect)
    # below the grid: clamped to the edge value; above: edge x linear scale
    t, tag = g.lookup(4, 64, 8)
    assert tag == CLAMPED and t == pytest.approx(t_us(16, 64, 8) * 1e-6)
    t, tag = g.lookup(4096, 64, 8)
    assert tag == CLAMPED and t == pytest.approx(4 * t_us(1024, 64, 8) * 1e-6)
    # vectorised over n, monotone for this monotone table
    t, tag = g.lookup(1024, 1024, np.arange(1, 600))
    assert np.all(np.diff(t) >= 0) and set(np.unique(tag)) <= {MEASURED, INTERPOLATED, CLAMPED}
    assert tag[0] == MEASURED and tag[-1] == CLAMPED


@pytest.mark.parametrize(
    "body, needle",
    [
        ("V100,half,16,16,1,12\nV100,half,16,16,abc,12\n", "line 3: n 'abc' is not a number"),
        ("V100,half,16,16,1,12\nV100,half,16,16,2\n", "line 3: 5 fields"),
        ("V100,half,16,16,1,-4\n", "line 2: time(us) must be > 0"),
        ("V100,half,0,16,1,4\n", "line 2: m must be >= 1"),
        ("V100,half,16,16.5,1,4\n", "line 2: k '16.5' is not an integer"),
        ("", "no data rows"),
    ],
)
def test_malformed_gemm_names_file_and_line(tmp_path: Path, body: str, needle: str) -> None:
    p = tmp_path / "gemm_0.csv"
    p.write_text("gpu,dtype,m,k,n,time(us)\n" + body)
    with pytest.raises(ApexError) as e:
        tables.load_gemm(p, "x")
    assert str(p) in str(e.value) and needle in str(e.value)


def test_bad_header_and_incomplete_grid(tmp_path: Path) -> None:
    p = tmp_path / "gemm_0.csv"
    p.write_text("gpu,dtype,m,k,time(us)\nV100,half,1,1,3\n")
    with pytest.raises(ApexError, match=r"line 1: header .* lacks n"):
        tables.load_gemm(p, "x")
    write_gemm(p, drop=(64, 256, 8))
    with pytest.raises(ApexError, match=r"not a full m x k x n grid .*m=64, k=256, n=8"):
        tables.load_gemm(p, "x")
    with pytest.raises(ApexError, match="not found"):
        tables.load_gemm(tmp_path / "nope.csv", "x")


def test_cache_is_keyed_by_file_hash(
    tmp_path: Path, _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write_gemm(tmp_path / "gemm_0.csv")
    first = tables.load_gemm(p, "x")["half"]
    assert len(list(_cache.glob("gemm-gemm_0-*.npz"))) == 1

    def boom(path: Path) -> dict:
        raise AssertionError("parsed again although cached")

    monkeypatch.setattr(tables, "_build_gemm", boom)
    again = tables.load_gemm(p, "x")["half"]
    np.testing.assert_array_equal(first.logt, again.logt)
    p.write_text(p.read_text().replace(",5.0", ",6.0", 1) + "")  # new content, new hash
    with pytest.raises(AssertionError, match="parsed again"):
        tables.load_gemm(p, "x")


def test_comm_table_groups_zero_kb_and_duplicates(tmp_path: Path) -> None:
    p = write_comm(tmp_path / "all_reduce.csv")
    with open(p, "a") as fh:
        fh.write("V100-PCIE-16GB,1,2,half,16,21.6\n")  # duplicate of (1,2,16 KB) = 11.6 us
    t = tables.load_comm(p, "V/all_reduce.csv")
    assert set(t.curves) == {(1, 2, "half"), (2, 1, "half")}
    c = t.curve(1, 2, "half")
    assert c.nbytes[0] == 512.0  # "0 KB" = 256 half elements
    v, tag = c.lookup(16 * 1024)
    assert tag == MEASURED and v == pytest.approx(np.sqrt(11.6 * 21.6) * 1e-6)
    assert t.curve(1, 2, "float") is c  # time follows bytes: half rows serve other dtypes
    assert t.curve(1, 8, "half") is None
    v, tag = c.lookup(8 * 4096 * 1024)
    assert tag == CLAMPED and v == pytest.approx(8 * 419.6e-6)


def test_attention_table_per_pair_coefficient(tmp_path: Path) -> None:
    p = tmp_path / "mha_0.csv"
    rows = ["gpu,dtype,num_heads,head_size,batch_size,seq_len,time(us)"]
    c = 2e-6  # us per (query, key) pair per head
    for h in (1, 8):
        for b in (1, 4):
            for s in (64, 256, 1024):
                rows.append(f"cpu,float,{h},64,{b},{s},{10 + c * b * h * s * (s + 1) / 2:.6f}")
    p.write_text("\n".join(rows) + "\n")
    a = tables.load_attn(p, "cpu/mha_0.csv")
    per_pair, tag = a.prefill_time_per_pair(heads=4, head_size=64, dtype="float")
    assert tag == MEASURED and per_pair == pytest.approx(4 * c * 1e-6, rel=0.02)
    per_pair, tag = a.prefill_time_per_pair(heads=4, head_size=128, dtype="float")
    assert tag == INTERPOLATED and per_pair == pytest.approx(8 * c * 1e-6, rel=0.02)
    assert a.prefill_time_per_pair(4, 64, "half") is None


def test_cost_model_routes_and_tags(tmp_path: Path) -> None:
    root = tmp_path / "prof"
    write_gemm(root / "comp" / "V100-PCIE-16GB" / "gemm_0.csv")
    write_comm(root / "comm" / "V100-PCIE-16GB" / "all_reduce.csv")
    dev = get_device("V100-PCIE-16GB")
    cm = cost_model(Cluster(dev, 2, 1), None, root)
    g = cm.gemm(256, 64, np.array([0.0, 8.0]), 2, 2, "half")
    assert g.t[0] == 0.0 and g.t[1] == pytest.approx(t_us(256, 64, 8) * 1e-6)
    assert g.source == "measured (V100-PCIE-16GB/gemm_0.csv)"
    assert cm.gemm(256, 64, np.array([3.0]), 2, 2, "half").source.startswith("interpolated (")
    # no float rows on this GPU: analytic
    assert cm.gemm(256, 64, np.array([3.0]), 4, 4, "float").source == "analytic"
    ar = cm.collective("all_reduce", np.array([1024.0]), 2, inter_node=True)  # (2 nodes, 1 GPU)
    assert ar.source == "measured (V100-PCIE-16GB/all_reduce.csv)"
    # 1x4 not profiled
    assert cm.collective("all_reduce", np.array([1024.0]), 4, inter_node=False).source == "analytic"
    assert cm.collective("sendrecv", np.array([1024.0]), 2, inter_node=False).source == "analytic"
    # a sum keeps both sources, in order, once each
    both = g + ar + g
    assert (
        both.source
        == "measured (V100-PCIE-16GB/gemm_0.csv) + measured (V100-PCIE-16GB/all_reduce.csv)"
    )
    assert np.array_equal((2 * both).t, 2 * (g.t + ar.t + g.t))
    assert "GEMM: V100-PCIE-16GB/gemm_0.csv" in cm.summary()
    assert "all_reduce: V100-PCIE-16GB/all_reduce.csv" in cm.summary()


def test_cost_model_without_tables_is_analytic(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cm = cost_model(Cluster(get_device("H100-SXM-80GB"), 1, 8), None, tmp_path / "empty")
    assert cm.gemm(4096, 4096, np.arange(4.0), 2, 2, "half").source == "analytic"
    assert cm.summary().startswith("analytic device model")
    assert any("has no tables for H100-SXM-80GB" in n for n in cm.notes)
    with pytest.raises(ApexError, match="does not exist"):
        cost_model(Cluster(get_device("H100-SXM-80GB"), 1, 8), None, tmp_path / "missing")


def test_cpu_uses_float_rows_for_half(tmp_path: Path) -> None:
    root = tmp_path / "prof"
    write_gemm(root / "comp" / "cpu" / "gemm_0.csv", gpu="cpu", dtype="float")
    cm = cost_model(Cluster(get_device("cpu"), 1, 1), None, root)
    g = cm.gemm(64, 64, np.array([8.0]), 2, 2, "half")  # the CPU has no half units
    assert g.source == "measured (cpu/gemm_0.csv, float rows)"
