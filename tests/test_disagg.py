"""Disaggregated prefill/decode deployments: KV transfer, decode pool, goodput search."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from apex_fast.cli import main
from apex_fast.disagg.evaluate import evaluate
from apex_fast.disagg.kv_transfer import KVLink, kv_bytes_per_token, kv_link, transfer_time
from apex_fast.disagg.pools import PoolConfig, decode_workload
from apex_fast.disagg.rating import max_goodput_rate
from apex_fast.disagg.search import search_disagg
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import megatron_plan
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import Workload, static_workload

INSTANT = KVLink(gbps_per_lane=math.inf, lanes=1, latency_s=0.0, kind="test")


@pytest.fixture(scope="module")
def llama8b():
    model = load_model("llama3.1-8b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 2)
    plan = megatron_plan(model, 1, 1, 1, "half", "half", "half")
    return model, cluster, plan


def _agg_vs_disagg(setup, wl: Workload):
    model, cluster, plan = setup
    opts = EngineOptions()
    agg = simulate_plan(model, Cluster(cluster.device, 1, 1), plan, wl, opts)
    am = compute_metrics(agg, wl, cluster)
    pool = PoolConfig(plan, 1, 1)
    cand = evaluate(model, cluster, wl, opts, pool, pool, 1e9, 1e9, link=INSTANT)
    assert not isinstance(cand, str), cand
    return am, cand


def test_instant_transfer_single_request_gives_the_aggregated_tpot(llama8b):
    wl = static_workload(1, 300, 40)
    am, cand = _agg_vs_disagg(llama8b, wl)
    assert cand.metrics.transfer_mean_s == 0.0
    assert cand.metrics.tpot_mean_s == pytest.approx(am.tpot_mean_s, rel=1e-12)


def test_instant_transfer_batch_gives_the_aggregated_decode_tpot(llama8b):
    # eight prompts fit one prefill step in both runs; afterwards both decode the same batch
    wl = static_workload(8, 128, 33)
    am, cand = _agg_vs_disagg(llama8b, wl)
    assert cand.metrics.tpot_mean_s == pytest.approx(am.tpot_mean_s, rel=1e-12)
    # and the decode pool only decodes: its first step per request computes one token
    steps = cand.decode_result.streams[0].steps()
    assert steps["n_prefill_tokens"].max() == 8


def test_decode_side_requests_carry_the_prompt_kv():
    wl = Workload(
        arrival=np.array([0.0, 0.1, 0.2]),
        prompt=np.array([10, 20, 30]),
        output=np.array([5, 6, 7]),
    )
    dw, order = decode_workload(wl, np.array([0.5, 0.3, 0.4]))
    assert list(order) == [1, 2, 0]
    assert list(dw.arrival) == [0.3, 0.4, 0.5]
    assert list(dw.prompt) == [1, 1, 1]
    assert list(dw.prefix) == [19, 29, 9]
    assert list(dw.output) == [6, 7, 5]


def test_transfer_time_scales_with_prompt_and_bandwidth():
    model = load_model("llama3-70b")
    bpt = kv_bytes_per_token(model, "half")
    assert bpt == 80 * 2 * 8 * 128 * 2  # layers x K,V x KV heads x head dim x bytes
    link = KVLink(50.0, 2, 0.0, "network")
    t = transfer_time(np.array([1000, 2000, 4000]), bpt, link)
    assert t[1] == pytest.approx(2 * t[0]) and t[2] == pytest.approx(4 * t[0])
    assert t[0] == pytest.approx(1000 * bpt / 100e9)
    faster = transfer_time(np.array([1000]), bpt, KVLink(100.0, 2, 0.0, "network"))
    assert faster[0] == pytest.approx(t[0] / 2)
    lat = transfer_time(np.array([1000]), bpt, KVLink(50.0, 2, 1e-3, "network"))
    assert lat[0] == pytest.approx(t[0] + 1e-3)


def test_link_is_nvlink_inside_a_node_and_the_network_across():
    dev = get_device("H100-SXM-80GB")
    one = kv_link(Cluster(dev, 1, 8), 2, 4, 0.0, 6)
    assert one.kind == "NVLink" and one.gbps_per_lane == dev.intra_node_gbps and one.lanes == 2
    two = kv_link(Cluster(dev, 2, 8), 8, 8, 0.0, 16)
    assert two.kind == "network" and two.gbps_per_lane == dev.inter_node_gbps
    assert two.lanes == 8


def test_slower_link_delays_decode_and_ttft(llama8b):
    model, cluster, plan = llama8b
    wl = static_workload(4, 2000, 20)
    pool = PoolConfig(plan, 1, 1)
    opts = EngineOptions()
    fast = evaluate(model, cluster, wl, opts, pool, pool, 1e9, 1e9, link=INSTANT)
    slow = evaluate(
        model, cluster, wl, opts, pool, pool, 1e9, 1e9, link=KVLink(1.0, 1, 0.0, "network")
    )
    assert slow.metrics.transfer_mean_s == pytest.approx(
        1999 * kv_bytes_per_token(model, "half") / 1e9
    )
    assert slow.metrics.ttft_mean_s > fast.metrics.ttft_mean_s + 0.9 * slow.metrics.transfer_mean_s


def test_max_goodput_rate_finds_the_threshold():
    wl = Workload(
        arrival=np.linspace(0.0, 10.0, 11),
        prompt=np.ones(11, np.int64),
        output=np.ones(11, np.int64),
    )

    def att(w: Workload) -> float:  # meets the SLO while replayed at most 3x faster
        f = 10.0 / float(w.arrival[-1])
        return 1.0 if f <= 3.0 else 0.5

    f, rate = max_goodput_rate(att, wl)
    assert 2.0 <= f <= 3.0 and f > 2.6
    assert rate == pytest.approx(f * 1.1)
    assert max_goodput_rate(lambda w: 0.0, wl) == (0.0, 0.0)
    static = Workload(np.zeros(3), np.ones(3, np.int64), np.ones(3, np.int64))
    assert math.isnan(max_goodput_rate(att, static)[1])


def test_search_ranks_by_goodput_per_gpu():
    model = load_model("llama3.1-8b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 4)
    wl = static_workload(32, 512, 32)
    wl = Workload(np.linspace(0, 3, 32), wl.prompt, wl.output, "t")
    ds = search_disagg(model, cluster, wl, EngineOptions(), 500.0, 50.0)
    g = [c.metrics.goodput_per_gpu for c in ds.ranked]
    assert g == sorted(g, reverse=True)
    for c in ds.ranked:
        assert c.prefill.gpus + c.decode.gpus <= 4
        assert c.link.kind == "NVLink"


def test_cli_both_reports_the_comparison(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = [
        "plan", "--model", "llama3.1-8b", "--num-gpus", "4", "--num-requests", "16",
        "--prompt-len", "256", "--output-len", "16", "--mode", "both", "--quiet",
        "--ttft-slo", "2000", "--tpot-slo", "100", "--json", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Aggregated vs disaggregated" in text and "Verdict:" in text
    data = json.loads(out.read_text())
    dep = data["deployment"]
    assert dep["mode"] == "both" and dep["winner"] in ("agg", "disagg")
    assert dep["winner_ratio"] >= 1.0
    best = dep["disaggregated"]["best"]
    assert {"split", "prefill", "decode", "kv_link", "metrics"} <= set(best)
    assert "transfer_mean_s" in best["metrics"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--mode", "split"],
        ["--mode", "disagg", "--kv-transfer-latency", "-1"],
    ],
)
def test_cli_bad_deployment_input_exits_2(extra, capsys):
    args = ["plan", "--model", "llama3.1-8b", "--num-gpus", "2", "--num-requests", "4", "--quiet"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_cli_disagg_needs_two_gpus(capsys):
    args = ["plan", "--model", "llama3.1-8b", "--num-gpus", "1", "--mode", "disagg", "--quiet"]
    assert main(args) == 2
