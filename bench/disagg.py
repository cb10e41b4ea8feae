"""Aggregated vs disaggregated search: `plan --mode both` for llama3-70b on 2 x 8 H100 over
traces/lmsys_r2_n300.jsonl (target: under 30 s on the 2-core machine; bench/README.md).

Prints the wall time of a fresh `python apex.py plan ... --mode both` (start-up included, best of
--repeat runs after one warm-up), the in-process time of the disaggregated part alone, and the
verdict line of the report.

Usage: python bench/disagg.py [--trace PATH] [--repeat 2] [--ttft-slo 500] [--tpot-slo 25]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(ROOT / "traces" / "lmsys_r2_n300.jsonl"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--ttft-slo", type=float, default=500.0)
    ap.add_argument("--tpot-slo", type=float, default=25.0)
    a = ap.parse_args()
    cmd = [
        sys.executable, str(ROOT / "apex.py"), "plan", "--model", "llama3-70b",
        "--num-nodes", "2", "--num-gpus-per-node", "8", "--trace-file", a.trace,
        "--ttft-slo", str(a.ttft_slo), "--tpot-slo", str(a.tpot_slo), "--mode", "both", "--quiet",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)  # warm-up (Numba cache, imports)
    walls = []
    out = ""
    for _ in range(max(1, a.repeat)):
        t = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        walls.append(time.perf_counter() - t)
    print(f"plan --mode both, wall (best of {len(walls)}): {min(walls):.2f} s")

    from apex_fast.disagg.deployment import plan_deployment
    from apex_fast.hardware.cluster import Cluster
    from apex_fast.hardware.devices import get_device
    from apex_fast.models import load_model
    from apex_fast.sim.engine import EngineOptions
    from apex_fast.workload import load_trace

    model = load_model("llama3-70b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 2, 8)
    wl = load_trace(a.trace)
    t = time.perf_counter()
    dep = plan_deployment(
        "disagg", model, cluster, wl, EngineOptions(), a.ttft_slo, a.tpot_slo, ("half",) * 3
    )
    dt = time.perf_counter() - t
    print(
        f"disaggregated search in-process: {dt:.2f} s, {dep.disagg.num_candidates} pool "
        f"configurations, {len(dep.disagg.ranked)} feasible deployments"
    )
    for line in out.splitlines():
        if "Verdict" in line or "Goodput per GPU" in line or line.strip().startswith("Plan "):
            print(line.strip())


if __name__ == "__main__":
    main()
