"""MoE weight traffic: a step reads only the experts its tokens are routed to (MBU <= 100%)."""

from __future__ import annotations

import numpy as np
import pytest

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.memory import expected_experts_touched, moe_step_weight_bytes
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import load_trace

H100 = get_device("H100-SXM-80GB")


def test_expected_experts_closed_form() -> None:
    e, k = 8, 2
    n = np.array([0, 1, 2, 3, 1000])
    got = expected_experts_touched(e, k, n)
    assert got[0] == 0.0
    assert got[1] == pytest.approx(k)  # one token touches exactly its k experts
    # two tokens: 8 * (1 - (6/8)^2) = 3.5 (2 + 2 minus the expected overlap 2 * 2/8)
    assert got[2] == pytest.approx(3.5)
    assert got[3] == pytest.approx(8 * (1 - 0.75**3))
    assert got[4] == pytest.approx(e)  # many tokens touch every expert
    assert np.all(np.diff(got) >= 0)


def test_expected_experts_matches_sampling() -> None:
    rng = np.random.default_rng(0)
    e, k, n, trials = 16, 2, 5, 20000
    picks = np.argsort(rng.random((trials, n, e)), axis=2)[:, :, :k]
    distinct = np.array([np.unique(p).size for p in picks])
    assert distinct.mean() == pytest.approx(expected_experts_touched(e, k, n), rel=0.01)


def test_top_all_experts_reads_every_expert() -> None:
    assert expected_experts_touched(8, 8, np.array([1]))[0] == pytest.approx(8)


def test_step_bytes_one_token_reads_topk_experts() -> None:
    m = load_model("mixtral-8x7b")
    plan = enumerate_plans(m, Cluster(H100, 1, 4), Pins(dp=1, pp=1, tp=4))[0][0]
    total = m.params_total() * 2.0
    per_expert = m.expert_params() * 2.0 * m.num_layers
    one = moe_step_weight_bytes(m, plan, total, np.array([1]))[0]
    assert one == pytest.approx(total - (m.num_experts - m.topk) * per_expert)
    many = moe_step_weight_bytes(m, plan, total, np.array([10_000]))[0]
    assert many == pytest.approx(total)


def test_mixtral_dp2_pp2_tp1_mbu_at_most_100_percent() -> None:
    # the case: mixtral-8x7b, 4 x H100, lmsys trace, DP2 PP2 TP1 reported 147.5% MBU
    m = load_model("mixtral-8x7b-local", num_experts=8)
    cl = Cluster(H100, 1, 4)
    plan = next(p for p in enumerate_plans(m, cl)[0] if p.label == "DP2 PP2 TP1")
    wl = load_trace("traces/lmsys_r2_n300.jsonl")
    res = simulate_plan(m, cl, plan, wl, EngineOptions())
    assert res.feasible, res.reason
    upper = compute_metrics(res, wl, cl)  # every expert counted every step (the old figure)
    met = compute_metrics(res, wl, cl, model=m)
    assert upper.mbu > 1.0  # the bug this guards against
    assert 0.0 < met.mbu <= 1.0
    assert met.energy_kj <= upper.energy_kj  # the power model reads the same bytes
