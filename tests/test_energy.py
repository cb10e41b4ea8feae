import numpy as np
import pytest

from apex_fast.hardware.devices import get_device
from apex_fast.metrics.energy import power_coefficients, step_power_w, voltage_factor
from apex_fast.planner import PlanRequest, run_plan


@pytest.mark.parametrize("name", ["H100-SXM-80GB", "A100-SXM-80GB", "V100", "B200"])
def test_power_between_idle_and_tdp_and_monotone(name):
    dev = get_device(name)
    u = np.linspace(0, 1, 11)
    p = step_power_w(dev, u, 1.0, u)
    assert np.all(p >= dev.idle_w) and np.all(p <= dev.tdp_w)
    assert np.all(np.diff(p) >= 0)
    k = power_coefficients(dev)
    assert k.compute_w > 0 and k.memory_w > 0


def test_anchors_match_splitwise_figures():
    h100 = get_device("H100-SXM-80GB")
    assert step_power_w(h100, 0.56, 1.0, 0.08) == pytest.approx(700.0)
    assert step_power_w(h100, 0.07, 1.0, 0.36) == pytest.approx(380.0)


def test_lower_clock_lowers_power():
    dev = get_device("H100-SXM-80GB")
    cf = 810 / 1980
    assert voltage_factor(cf) < voltage_factor(1.0) == 1.0
    assert step_power_w(dev, 0.3, cf, 0.2) < step_power_w(dev, 0.3, 1.0, 0.2)
    # HBM power does not depend on the SM clock
    d_lo = step_power_w(dev, 0.0, cf, 0.5) - step_power_w(dev, 0.0, cf, 0.0)
    d_hi = step_power_w(dev, 0.0, 1.0, 0.5) - step_power_w(dev, 0.0, 1.0, 0.0)
    assert d_lo == pytest.approx(d_hi)


def _metrics(**kw):
    req = PlanRequest(model="llama3-70b", gpus_per_node=8, num_requests=64, **kw)
    return run_plan(req)[1]


def test_frequency_810_slower_and_cheaper_on_compute_bound_work():
    # long prompts, short outputs: prefill (compute-bound) dominates
    base = _metrics(tp=8, prompt_len=2048, output_len=16).best.metrics
    low = _metrics(tp=8, prompt_len=2048, output_len=16, frequency=810).best.metrics
    assert low.makespan_s > base.makespan_s * 1.3
    assert low.energy_kj < base.energy_kj
    assert low.tpot_mean_s < base.tpot_mean_s * 1980 / 810  # never slower than the clock ratio


def test_energy_objective_not_worse_than_latency_and_report_shows_trade():
    text, sr = run_plan(
        PlanRequest(model="llama3-70b", gpus_per_node=8, num_requests=256, objective="energy")
    )
    lat = run_plan(PlanRequest(model="llama3-70b", gpus_per_node=8, num_requests=256))[1]
    assert sr.best.metrics.energy_kj <= lat.best.metrics.energy_kj + 1e-9
    assert "Trade" in text and "energy" in text


def test_cost_objective_and_usd_per_mtok():
    text, sr = run_plan(
        PlanRequest(
            model="llama3-70b",
            gpus_per_node=8,
            num_requests=64,
            objective="cost",
            gpu_hour_cost=2.0,
        )
    )
    m = sr.best.metrics
    gen = m.throughput_tokens_per_s * m.makespan_s
    assert m.cost_usd_per_mtok == pytest.approx(2.0 * 8 * m.makespan_s / 3600 / gen * 1e6)
    assert "per million generated tokens" in text
    costs = [e.metrics.cost_usd_per_mtok for e in sr.ranked]
    assert costs == sorted(costs)
