from pathlib import Path

import numpy as np
import pytest
from common import bench_script

from apex_fast.errors import ApexError
from apex_fast.hardware import get_device
from apex_fast.profiles import analytic as an

REFERENCE = Path(__file__).parents[1].parent / "shared" / "reference"
DEVICES = ["V100", "A100", "H100", "H200", "B200"]


@pytest.fixture(params=DEVICES)
def dm(request):
    return an.device_model(request.param)


def test_provenance(dm):
    assert an.PROVENANCE == "analytic" and dm.provenance == "analytic"
    assert dm.calibration


def test_gemm_monotonic_in_tokens(dm):
    n = np.arange(1, 8193)
    t = an.gemm_time(dm, 8192, 8192, n, 2.0, 2.0, "half")
    assert t.shape == n.shape
    # monotonic from 2 tokens on; n = 1 may be faster still (GEMV path: V100's skinny drop)
    assert np.all(np.diff(t[1:]) >= 0)
    assert t[0] <= t[1]
    assert an.gemm_time(dm, 8192, 8192, 0, 2.0, 2.0, "half") == 0.0


def test_gemm_memory_bound_at_one_token(dm):
    m = k = 8192
    t = float(an.gemm_time(dm, m, k, 1, 2.0, 2.0, "half"))
    weight_time = m * k * 2.0 / (dm.device.hbm_tbps * 1e12)
    assert weight_time < t < 1.5 * weight_time + dm.t_launch


def test_gemm_compute_bound_for_many_tokens(dm):
    m, k, n = 8192, 8192, 16384
    t = float(an.gemm_time(dm, m, k, n, 2.0, 2.0, "half"))
    ideal = 2.0 * m * k * n / dm.peak("half")
    assert ideal < t < ideal / 0.5
    mem = (m * k + k * n + m * n) * 2.0 / (dm.device.hbm_tbps * 1e12 * dm.eta_mem)
    assert t > 2 * mem


def test_clock_scaling_never_faster():
    dev = get_device("H100")
    n = np.array([1, 16, 256, 4096, 16384])
    prev = None
    for clock in sorted(dev.clocks_mhz, reverse=True):
        t = an.gemm_time(an.device_model(dev, clock), 8192, 8192, n, 2.0, 2.0, "half")
        if prev is not None:
            assert np.all(t >= prev)
        prev = t
    slow, fast = an.device_model(dev, 810), an.device_model(dev)
    big_slow = float(an.gemm_time(slow, 8192, 8192, 16384, 2, 2, "half"))
    big_fast = float(an.gemm_time(fast, 8192, 8192, 16384, 2, 2, "half"))
    assert big_slow / big_fast == pytest.approx(1980 / 810, rel=0.05)
    assert an.attn_decode_time_per_token(slow, 8, 128, 2) == an.attn_decode_time_per_token(
        fast, 8, 128, 2
    )
    with pytest.raises(ApexError):
        an.device_model(dev, 5000)


def test_fp8_is_faster_only_where_units_exist():
    h100, a100 = an.device_model("H100"), an.device_model("A100")
    big = (8192, 8192, 16384, 1.0, 1.0)
    assert an.gemm_time(h100, *big, "float8") < an.gemm_time(h100, *big, "half")
    assert an.gemm_time(a100, *big, "float8") == an.gemm_time(a100, *big, "half")


def test_mem_and_attention(dm):
    nb = np.array([0, 1e6, 1e8])
    t = an.mem_time(dm, nb)
    assert t[0] == 0 and 0 < t[1] < t[2]
    assert t[2] > 1e8 / (dm.device.hbm_tbps * 1e12)
    pair = an.attn_prefill_time_per_pair(dm, 64, 128, "half")
    assert pair == pytest.approx(4 * 64 * 128 / (dm.peak("half") * dm.eta_attn))
    tok = an.attn_decode_time_per_token(dm, 8, 128, 2.0)
    assert tok == pytest.approx(2 * 8 * 128 * 2 / (dm.device.hbm_tbps * 1e12 * dm.eta_mem))
    assert an.attn_launch_time(dm) > 0


def test_ring_factors():
    assert an.ring_factor("all_reduce", 8) == pytest.approx(2 * 7 / 8)
    for kind in ("all_gather", "reduce_scatter", "alltoall"):
        assert an.ring_factor(kind, 4) == pytest.approx(3 / 4)
    assert an.ring_factor("sendrecv", 2) == 1.0
    with pytest.raises(ApexError):
        an.ring_factor("broadcast", 2)


def test_collective_bandwidth_term_follows_ring_factor():
    dm = an.device_model("H100")
    big = np.array([1e9, 2e9])
    for kind in ("all_reduce", "all_gather"):
        t = an.collective_time(dm, kind, big, 8, False)
        slope = (t[1] - t[0]) / 1e9  # seconds per byte at ~saturated busbw
        bw = an.busbw(dm, kind, np.array([2e9]), 8, False)[0]
        assert slope == pytest.approx(an.ring_factor(kind, 8) / bw, rel=0.05)


def test_collective_group_one_is_free_and_monotonic(dm):
    s = np.geomspace(1e3, 1e9, 25)
    for kind in an.COLLECTIVES:
        assert np.all(an.collective_time(dm, kind, s, 1, False) == 0.0)
        group = 2 if kind == "sendrecv" else 8
        t = an.collective_time(dm, kind, s, group, False)
        assert np.all(t > 0) and np.all(np.diff(t) > 0)


def test_inter_node_slower(dm):
    s = np.geomspace(1e5, 1e9, 9)
    for kind in an.COLLECTIVES:
        group = 2 if kind == "sendrecv" else 16
        intra = an.collective_time(dm, kind, s, group, False)
        inter = an.collective_time(dm, kind, s, group, True)
        assert np.all(inter > intra)


def _calibration_script():
    return bench_script("calibrate_device_model")


def test_fitted_model_matches_reference():
    if not REFERENCE.is_dir():
        pytest.skip("reference data not available")
    cal = _calibration_script()
    gemms = cal.load_gemms(REFERENCE)
    for name, g in gemms.items():
        dm = an.device_model(name)
        pred = an.gemm_time(dm, g.m, g.k, g.n, 2.0, 2.0, "half")
        err = np.abs(pred - g.t) / g.t
        assert np.median(err) < 0.15, name
    comms = cal.load_comms(REFERENCE)
    for name, c in comms.items():
        dm = an.device_model(name)
        err = np.abs(cal.predict_comm(c)(dm) - c.t) / c.t
        assert np.median(err) < 0.20, name
        intra = ~c.inter
        assert np.median(err[intra]) < 0.15, name
