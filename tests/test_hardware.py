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


# ---------------------------------------------------------------------- batch-2 devices
BATCH2 = {
    # name: (BF16 dense TFLOPS, FP8 dense, memory GB, TB/s, fabric, fabric GPUs) -- HARDWARE.md
    # batch 2 (datasheet sparse figures halved where NVIDIA quotes sparsity)
    "H20": (148.0, 296.0, 96.0, 4.0, "nvswitch", 8),
    "L4": (121.0, 242.5, 24.0, 0.3, "pcie", 1),
    "L40S": (362.05, 733.0, 48.0, 0.864, "pcie", 1),
    "A10G": (125.0, 0.0, 24.0, 0.6, "pcie", 1),
    "A100-SXM4-40GB": (312.0, 0.0, 40.0, 1.555, "nvswitch", 8),
    "H100-PCIe": (756.0, 1513.0, 80.0, 2.0, "pcie", 1),
    "H100-NVL": (835.0, 1671.0, 94.0, 3.9, "nvlink-bridge", 2),
    "H200-NVL": (835.0, 1671.0, 141.0, 4.8, "nvlink-bridge", 4),
    "B200": (2250.0, 4500.0, 180.0, 8.0, "nvswitch", 8),
    "GB200": (2500.0, 5000.0, 186.0, 8.0, "nvswitch", 72),
    "MI300X": (1307.4, 2614.9, 192.0, 5.3, "xgmi-mesh", 8),
    "MI325X": (1307.4, 2614.9, 256.0, 6.0, "xgmi-mesh", 8),
}


@pytest.mark.parametrize("name", sorted(BATCH2))
def test_batch2_datasheet_numbers(name: str):
    bf16, fp8, mem, bw, fabric, n = BATCH2[name]
    d = get_device(name)
    assert d.peak_tflops["fp16"] == pytest.approx(bf16)
    assert d.peak_tflops["fp8"] == pytest.approx(fp8)
    assert (d.hbm_gb, d.hbm_tbps, d.fabric, d.fabric_gpus) == (mem, bw, fabric, n)
    for field in ("peak_tflops", "fabric", "pcie_gbps", "inter_node_gbps", "tdp_w"):
        assert f"{field}: " in d.sources


def test_topology_link_per_group():
    """Peer bandwidth per GPU and direction as the fabric gives it (HARDWARE.md batch 2)."""
    l40s = Cluster(get_device("L40S"), 2, 8)
    assert [l40s.link_gbps(g) for g in (2, 8)] == [32.0, 32.0]  # PCIe Gen4 x16, no NVLink
    assert not l40s.custom_all_reduce_ok(4) and l40s.custom_all_reduce_ok(2)  # vLLM rule
    nvl = Cluster(get_device("H100-NVL"), 1, 8)
    assert nvl.link_gbps(2) == 300.0 and nvl.link_gbps(4) == 64.0  # bridge pairs, then PCIe5
    mi = Cluster(get_device("MI300X"), 1, 8)
    assert [mi.link_gbps(g) for g in (2, 4, 8)] == [64.0, 192.0, 448.0]  # one link per peer
    gb = Cluster(get_device("GB200"), 18, 4)  # NVL72: 18 trays of 4 GPUs, one NVLink domain
    assert gb.scaleup_gpus == 72
    assert not gb.spans_nodes(16) and gb.link_gbps(16) == 900.0 and gb.link_gbps(72) == 900.0
    assert not gb.custom_all_reduce_ok(8)  # ranks on different hosts: NCCL over NVLink
    two_racks = Cluster(get_device("GB200"), 36, 4)
    assert two_racks.spans_nodes(144) and two_racks.link_gbps(144) == 50.0
    assert Cluster(get_device("H100"), 2, 8).spans_nodes(16)  # HGX: the node is the domain


def test_inter_node_bandwidth_override():
    from apex_fast.hardware.devices import with_inter_node_bandwidth

    h = with_inter_node_bandwidth(get_device("H100"), 100.0)
    assert h.inter_node_gbps == 100.0 and "--inter-node-bandwidth" in h.sources
    assert Cluster(h, 2, 8).link_gbps(16) == 100.0
    assert with_inter_node_bandwidth(get_device("H100"), None) == get_device("H100")
    for bad in (0, -5, float("nan"), float("inf"), True):
        with pytest.raises(ApexError) as err:
            with_inter_node_bandwidth(get_device("H100"), bad)
        assert "\n" not in str(err.value)


def _allreduce_time(cluster: Cluster, tp: int, tokens: int = 64) -> float:
    from apex_fast.models import load_model
    from apex_fast.plans.enumerate import Pins, enumerate_plans
    from apex_fast.sim.costs import compile_costs

    m = load_model("llama3.1-405b")
    plans, _ = enumerate_plans(m, cluster, Pins(dp=1, pp=1, tp=tp))
    plan = next(p for p in plans if p.label == f"DP1 PP1 TP{tp}")
    cc = compile_costs(m, cluster, plan, max_tokens=tokens, max_seqs=8)
    return float(cc.tok_ops["AllReduce"][tokens])


def test_gb200_nvl72_tp16_all_reduce_uses_nvlink():
    """TP16 on GB200 NVL72 spans four 4-GPU trays but stays in the NVLink domain: its
    all-reduces run at NVLink5 speed, far faster than over 400 Gb/s NICs between trays."""
    import dataclasses

    gb = get_device("GB200")
    nvl72 = _allreduce_time(Cluster(gb, 4, 4), 16)
    trays_on_network = dataclasses.replace(gb, fabric_gpus=4)  # same GPUs, no NVLink switch
    network = _allreduce_time(Cluster(trays_on_network, 4, 4), 16)
    assert nvl72 * 5 < network


def test_gb200_nvl72_ep16_all_to_all_uses_nvlink():
    """Expert parallelism over 16 GPUs of four trays: the token all-to-all of Qwen3-235B-A22B
    runs over NVLink5 inside NVL72 (900 GB/s per direction), over the 400 Gb/s NICs (50 GB/s)
    when the trays are separate nodes."""
    import dataclasses

    from apex_fast.models import load_model
    from apex_fast.plans.enumerate import Pins, enumerate_plans
    from apex_fast.sim.costs import compile_costs

    m = load_model("qwen3-235b-a22b")
    gb = get_device("GB200")

    def all_to_all(dev: DeviceSpec) -> float:
        cl = Cluster(dev, 4, 4)
        plans, _ = enumerate_plans(m, cl, Pins(dp=1, pp=1, tp=16, ep=16))
        cc = compile_costs(m, cl, plans[0], max_tokens=2048, max_seqs=8)
        return float(cc.tok_ops["AllToAll"][2048])  # a prefill step: bandwidth-bound

    assert all_to_all(gb) * 5 < all_to_all(dataclasses.replace(gb, fabric_gpus=4))


def test_l40s_best_70b_plan_differs_from_h100_because_of_pcie_collectives():
    """8x L40S has no NVLink: every TP all-reduce crosses PCIe Gen4 (32 GB/s per direction,
    ~10 GB/s achieved bus bandwidth in the PCIe fit) instead of NVSwitch at 450 GB/s. A 70B
    model's per-layer all-reduces then dominate TP8, so the best L40S plan trades tensor
    parallelism for pipeline/data parallelism, while 8x H100 keeps TP >= 4. The same L40S with an
    NVSwitch fabric (the only change) goes back to at least H100's TP degree: the difference is the PCIe collectives."""
    import dataclasses

    from apex_fast.models import load_model
    from apex_fast.search import MetricOptions, search
    from apex_fast.sim.engine import EngineOptions
    from apex_fast.workload import static_workload

    m = load_model("llama3-70b")
    wl = static_workload(64, 512, 128)

    def best(dev: DeviceSpec):
        sr = search(m, Cluster(dev, 1, 8), wl, EngineOptions(), MetricOptions(), workers=1)
        return sr.ranked[0], {e.result.plan.label: e for e in sr.ranked}

    h100, _ = best(get_device("H100"))
    l40s = get_device("L40S")
    pcie, pcie_all = best(l40s)
    assert h100.result.plan.tp >= 4
    assert pcie.result.plan.tp < h100.result.plan.tp
    assert pcie.result.plan.label != h100.result.plan.label
    # TP8 on PCIe spends most of its time in all-reduce
    tp8 = {row[0]: row[2] for row in pcie_all["DP1 PP1 TP8"].metrics.breakdown}
    assert tp8["AllReduce"] > 50.0
    nvswitch = dataclasses.replace(l40s, fabric="nvswitch", fabric_gpus=8, intra_node_gbps=450.0)
    linked, _ = best(nvswitch)
    assert linked.result.plan.tp >= h100.result.plan.tp


@pytest.mark.parametrize("name", [d.name for d in list_devices() if d.name != "cpu"])
def test_every_device_plans_a_small_model(name: str):
    """Every device has a calibration entry and plans Llama-3.2-1B on two GPUs; the faster
    memory of each device shortens decode steps against the slowest one (L4, 0.3 TB/s)."""
    from apex_fast.planner import PlanRequest, run_plan

    def tpot(gpu: str) -> float:
        req = PlanRequest(
            model="llama3.2-1b",
            gpus_per_node=2,
            gpu=gpu,
            num_requests=4,
            prompt_len=128,
            output_len=16,
            workers=1,
            tp=1,
            dp=2,
        )
        return run_plan(req)[1].best.metrics.tpot_mean_s

    t = tpot(name)
    assert t > 0
    if name != "L4":
        assert t < tpot("L4")
