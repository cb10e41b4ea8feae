import numpy as np

from apex_fast.capacity import CapacitySearch, scaled
from apex_fast.cli import main
from apex_fast.planner import PlanRequest, run_plan
from apex_fast.trace_io import load_trace


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
