"""Measured tables end to end: the APEX+ reference profiles (skipped when ../shared/reference is
absent) and the CPU profile committed in profile_data/comp/cpu/."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from apex_fast.cli import main
from apex_fast.hardware.devices import PROFILE_DATA_DIR
from apex_fast.profiles import tables
from apex_fast.profiles.grid import MEASURED

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
PROFILES = REF / "profiles"
V100_ARGS = [
    "plan",
    "--model",
    "llama-7b",
    "--gpu",
    "V100-PCIE-16GB",
    "--num-gpus-per-node",
    "2",
    "--prompt-len",
    "512",
    "--output-len",
    "128",
    "--num-requests",
    "64",
    "--quiet",
]
need_ref = pytest.mark.skipif(not PROFILES.is_dir(), reason="../shared/reference not available")


def _plan(capsys: pytest.CaptureFixture, args: list[str], tmp_path: Path) -> tuple[str, dict]:
    path = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
    assert main([*args, "--json", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    return out, orjson.loads(path.read_bytes())


@need_ref
def test_reference_tables_all_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APEX_FAST_CACHE_DIR", str(tmp_path / "cache"))
    store = tables.ProfileStore(PROFILES)
    g = store.gemm("V100-PCIE-16GB")["half"]
    assert g.logt.shape == (17, 17, 319)
    t, tag = g.lookup(4096, 4096, 1024)
    assert tag == MEASURED and t == pytest.approx(421e-6)
    for gpu in ("H100-SXM-80GB", "H200-SXM-141GB", "V100-PCIE-16GB"):
        for kind in tables.COLLECTIVE_FILES:
            assert store.collective(gpu, kind) is not None
    ar = store.collective("H100-SXM-80GB", "all_reduce")
    assert {(1, 2, "half"), (1, 8, "float")} <= set(ar.curves)


@need_ref
def test_v100_measured_vs_analytic_tpot(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APEX_FAST_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "j").mkdir()
    out_m, js_m = _plan(capsys, [*V100_ARGS, "--profile-dir", str(PROFILES)], tmp_path / "j")
    out_a, js_a = _plan(capsys, V100_ARGS, tmp_path / "j")
    assert "Op costs: measured tables from" in out_m and "V100-PCIE-16GB/gemm_0.csv" in out_m
    assert "Op costs: analytic device model" in out_a
    assert "V100-PCIE-16GB/gemm_0.csv" in js_m["op_cost_source"]
    assert js_a["op_cost_source"].startswith("analytic")
    src_m = {b["name"]: b["source"] for b in js_m["best"]["breakdown"]}
    assert "V100-PCIE-16GB/gemm_0.csv" in src_m["SwiGLU"]
    nccl = [s for s in src_m.values() if "V100-PCIE-16GB/" in s and "gemm" not in s]
    assert nccl, src_m  # a collective (send/recv or all-reduce) came from the NCCL tables
    assert not any(".csv" in b["source"] for b in js_a["best"]["breakdown"])
    # the done-when: the two TPOTs agree within 30 %
    tpot_m, tpot_a = js_m["best"]["tpot_mean_s"], js_a["best"]["tpot_mean_s"]
    assert abs(tpot_m / tpot_a - 1.0) <= 0.30, (tpot_m, tpot_a)


@need_ref
def test_reference_gemm_load_uses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APEX_FAST_CACHE_DIR", str(tmp_path / "cache"))
    path = PROFILES / "comp" / "V100-PCIE-16GB" / "gemm_0.csv"
    cold = tables.load_gemm(path, "x")["half"]
    warm = tables.load_gemm(path, "x")["half"]
    assert (cold.logt == warm.logt).all()
    # the second load comes from the .npz cache (speed itself is a benchmark, not a test)
    assert list((tmp_path / "cache").rglob("*.npz"))


CPU_GEMM = PROFILE_DATA_DIR / "comp" / "cpu" / "gemm_0.csv"


@pytest.mark.skipif(not CPU_GEMM.exists(), reason="no committed CPU profile")
def test_plan_small_model_on_cpu_from_measured_tables(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    args = [
        "plan",
        "--model",
        "gpt2",
        "--gpu",
        "cpu",
        "--num-gpus-per-node",
        "1",
        "--prompt-len",
        "128",
        "--output-len",
        "16",
        "--num-requests",
        "8",
        "--quiet",
    ]
    out, js = _plan(capsys, args, tmp_path)
    assert "measured tables from" in out and "cpu/gemm_0.csv" in out
    src = {b["name"]: b["source"] for b in js["best"]["breakdown"]}
    assert "cpu/gemm_0.csv, float rows" in src["MLP"]
    assert "cpu/mha_0.csv" in src["Attention"]
    # gpt2 on 2 CPU cores: a decode step of 8 sequences takes milliseconds, not microseconds
    assert 1e-3 < js["best"]["tpot_mean_s"] < 1.0
