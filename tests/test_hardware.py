import pytest

from apex_fast.errors import ApexError
from apex_fast.hardware import Cluster, DeviceSpec, get_device, list_devices, peak_flops

NAMES = ["V100-PCIE-16GB", "A100-SXM-80GB", "H100-SXM-80GB", "H200-SXM-141GB", "B200", "cpu"]


def test_all_devices_present():
    names = [d.name for d in list_devices()]
    for name in NAMES:
        assert name in names
    for d in list_devices():
        assert isinstance(d, DeviceSpec)
        assert set(d.peak_tflops) >= {"fp32", "fp16", "fp8"}
        assert d.hbm_gb > 0 and d.hbm_tbps > 0 and d.tdp_w > d.idle_w > 0
        assert d.boost_clock_mhz == max(d.clocks_mhz)
        assert d.sources


def test_dense_datasheet_numbers():
    h100 = get_device("H100-SXM-80GB")
    assert h100.peak_tflops["fp16"] == pytest.approx(989.4)
    assert h100.peak_tflops["fp8"] == pytest.approx(1978.9)
    assert h100.hbm_tbps == pytest.approx(3.35)
    assert h100.intra_node_gbps == 450 and h100.intra_node_link == "NVLink4"
    assert 810 in h100.clocks_mhz and 1980 in h100.clocks_mhz
    v100 = get_device("V100")
    assert v100.peak_tflops == {"fp32": 14.0, "fp16": 112.0, "fp8": 0.0}
    assert get_device("A100").peak_tflops["fp16"] == 312.0
    assert get_device("A100").peak_tflops["fp8"] == 0.0
    assert get_device("H200").hbm_gb == 141.0 and get_device("H200").hbm_tbps == 4.8


@pytest.mark.parametrize(
    "alias,name",
    [
        ("h100", "H100-SXM-80GB"),
        ("H100", "H100-SXM-80GB"),
        ("a100", "A100-SXM-80GB"),
        ("V100", "V100-PCIE-16GB"),
        ("H200", "H200-SXM-141GB"),
        ("b200", "B200"),
        ("h100-sxm-80gb", "H100-SXM-80GB"),
        ("H100_SXM_80GB", "H100-SXM-80GB"),
    ],
)
def test_aliases(alias, name):
    assert get_device(alias).name == name


def test_unknown_device_lists_known():
    with pytest.raises(ApexError) as err:
        get_device("TPU-v5")
    msg = str(err.value)
    assert "TPU-v5" in msg
    for name in NAMES:
        assert name in msg


def test_peak_flops_and_fp8_fallback():
    flops, note = peak_flops(get_device("H100"), "half")
    assert flops == pytest.approx(989.4e12) and note == ""
    flops, note = peak_flops(get_device("H100"), "float8")
    assert flops == pytest.approx(1978.9e12) and note == ""
    for dev, half in (("A100", 312e12), ("V100", 112e12)):
        flops, note = peak_flops(dev, "float8")
        assert flops == pytest.approx(half)
        assert "no FP8 units" in note and "half-precision" in note
    flops, _ = peak_flops("V100", "float")
    assert flops == pytest.approx(14e12)


def test_cluster():
    c = Cluster(get_device("H100"), 2, 8)
    assert c.num_gpus == 16
    assert not c.spans_nodes(8) and c.spans_nodes(16)
    assert c.link_gbps(8) == 450 and c.link_gbps(16) == 50


@pytest.mark.parametrize("nodes,gpn", [(0, 8), (1, 0), (-1, 2), (1, 2.5)])
def test_cluster_validation(nodes, gpn):
    with pytest.raises(ApexError) as err:
        Cluster(get_device("H100"), nodes, gpn)
    assert "\n" not in str(err.value)
