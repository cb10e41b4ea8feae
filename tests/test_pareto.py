import csv

import numpy as np
import pytest

from apex_fast.pareto import nondominated
from apex_fast.planner import PlanRequest, run_plan


def test_nondominated_small():
    pts = np.array([[1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [5.0, 1.0], [1.0, 5.0]])
    assert nondominated(pts).tolist() == [True, True, False, True, True]


def test_pareto_csv(tmp_path):
    out = tmp_path / "front.csv"
    run_plan(PlanRequest(model="llama3-70b", gpus_per_node=8, num_requests=128, pareto_csv=out))
    rows = list(csv.DictReader(out.open()))
    assert rows and {"plan", "ttft_ms", "tpot_ms", "energy_j_per_token"} <= set(rows[0])
    tpots = [float(r["tpot_ms"]) for r in rows]
    assert tpots == sorted(tpots)


def test_plot_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "front.png"
    run_plan(PlanRequest(model="llama3-70b", gpus_per_node=8, num_requests=128, plot_png=out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
