import math
import re

import numpy as np
import pytest

from apex_fast.capacity import (
    CapacitySearch,
    SloOutcome,
    _extrapolate,
    _extrapolate_down,
    _secant,
)
from apex_fast.cli import main
from apex_fast.planner import PlanRequest, run_plan
from apex_fast.workload import load_trace
from apex_fast.workload.scaling import scaled


def test_scaled_repeats_to_horizon():
    w = load_trace("traces/lmsys_r2_n300.jsonl")
    s = scaled(w, 4.0, horizon_s=200.0)
    assert s.arrival[-1] >= 150.0 and s.num_requests % w.num_requests == 0
    assert np.all(np.diff(s.arrival) >= 0)


def test_capacity_bracket_is_consistent():
    _, sr = run_plan(
        PlanRequest(
            model="llama3-70b", gpus_per_node=8, trace_file="traces/creation_r1_n200.jsonl", tp=8
        )
    )
    cs = CapacitySearch(sr.model, sr.cluster, sr.workload, sr.options, 200.0, 50.0, 0.9, 0.05)
    cap = cs.run(sr.best.result.plan)
    assert cap.bounded and cap.scale > 0
    assert cap.outcome.attainment >= 0.9
    above = [s for s, o in cap.cache.items() if s > cap.scale * 1.05]
    assert above and all(cap.cache[s].attainment < 0.9 for s in above)
    assert cap.simulations <= 16


def test_capacity_cli(capsys):
    rc = main(
        [
            "capacity", "--model", "llama3-70b", "--num-gpus-per-node", "8",
            "--trace-file", "traces/lmsys_r2_n300.jsonl", "--top", "2",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "Max rate (req/s)" in out and out.count("DP") >= 2


def _search(trace: str = "traces/creation_r1_n200.jsonl", **pins):
    _, sr = run_plan(PlanRequest(model="llama3-70b", gpus_per_node=8, trace_file=trace, **pins))
    cs = CapacitySearch(sr.model, sr.cluster, sr.workload, sr.options, 200.0, 50.0, 0.9, 0.05)
    return sr, cs


def _bracketed(cap, target: float = 0.9, rel_tol: float = 0.05) -> bool:
    """The answer meets the target and a rate at most rel_tol above it does not."""
    above = [s for s in cap.cache if cap.scale < s <= cap.scale * (1 + rel_tol) * (1 + 1e-9)]
    return cap.cache[cap.scale].attainment >= target and any(
        cap.cache[s].attainment < target for s in above
    )


def test_plan_with_same_mapping_starts_from_its_answer():
    # DP1 PP2 TP4 and DP2 PP1 TP4: same stage mapping, two streams each
    sr, cs = _search(tp=4)
    plans = {e.result.plan.label: e.result.plan for e in sr.ranked}
    first = cs.run(plans["DP1 PP2 TP4"])
    second = cs.run(plans["DP2 PP1 TP4"])
    assert _bracketed(first) and _bracketed(second)
    # the second plan's bracket starts at the first plan's answer with a step of rel_tol:
    # two simulations when both sustain the same rate (at most a few more otherwise)
    assert min(second.cache) <= first.scale <= max(second.cache)
    assert second.simulations < first.simulations
    # the same answer as a search that starts from scratch, within the tolerance
    _, fresh = _search(tp=4)
    alone = fresh.run(plans["DP2 PP1 TP4"])
    assert abs(math.log(alone.scale / second.scale)) <= 2 * math.log(1.05)


def test_plan_missing_slos_at_every_rate_costs_two_simulations():
    sr, cs = _search(tp=1, pp=8)  # 8 stages of one GPU: TPOT above 50 ms even when alone
    plan = sr.ranked[0].result.plan
    assert plan.label == "DP1 PP8 TP1"
    cap = cs.run(plan)
    assert cap.scale == 0.0 and cap.outcome is None
    assert cap.simulations == 2  # the start rate, then the lowest rate
    assert cap.cache[min(cap.cache)].attainment < 0.9


def test_capacity_cli_evaluates_every_feasible_plan_by_default(capsys):
    args = [
        "capacity", "--model", "llama3-70b", "--num-gpus-per-node", "8",
        "--trace-file", "traces/lmsys_r2_n300.jsonl", "--tp", "4",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    m = re.search(r"evaluated (\d+) of (\d+) feasible plans", out)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 2
    assert main([*args, "--top", "1"]) == 0
    assert "evaluated 1 of" in capsys.readouterr().out


def _o(y: float) -> SloOutcome:
    ratio = math.inf if y == 0 else 1.0 / y
    return SloOutcome(1.0 if y >= 1 else 0.0, 0.1, 0.01, 1.0, slo_ratio=ratio)


def test_secant_and_extrapolation_find_the_root_of_a_line():
    # y = 1 / slo_ratio = 2 - 0.25 s reaches 1 at s = 4
    line = {s: _o(2.0 - 0.25 * s) for s in (1.0, 2.0, 5.0, 5.5)}
    assert _secant(line, 2.0, 5.0) == pytest.approx(4.0)
    assert _extrapolate(line) == pytest.approx(4.0)  # from s = 1 and 2 (both met)
    assert _extrapolate_down(line) == pytest.approx(4.0)  # from s = 5 and 5.5 (both missed)
    # no prediction from a rising or unserved curve
    assert _extrapolate({1.0: _o(1.5), 2.0: _o(1.8)}) is None
    assert _secant({1.0: _o(1.5), 2.0: _o(0.0)}, 1.0, 2.0) == pytest.approx(1.0 + 0.5 / 1.5)


def test_every_answer_of_a_chain_is_bracketed():
    """Whatever start point the earlier plans give, each answer met the target and a rate at
    most rel_tol above it did not."""
    sr, cs = _search(pp=1)
    for e in sr.ranked[:4]:
        cap = cs.run(e.result.plan)
        assert cap.bounded and cap.scale > 0 and _bracketed(cap), e.result.plan.label
