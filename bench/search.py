"""Benchmark of a full plan search, as the CLI runs it.

Default: llama3-70b on one node of 8x H100 over ../shared/reference/traces/llama/lmsys_05.jsonl
(the bundled traces/ copy or the static default workload when that file is missing). Prints the
wall time of `python apex.py plan ...` in a fresh process (start-up included; best of N after
one warm-up run that fills the Numba cache), the in-process search time, plans evaluated,
simulated steps and steps per second. Prints figures only; `bench/ci_guard.py` compares them with
`bench/baseline.json`.

Usage: python bench/search.py [--static] [--repeat N] [--workers N] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "reference" / "traces" / "llama" / "lmsys_05.jsonl"


def cli_args(static: bool) -> tuple[list[str], str]:
    args = ["plan", "--model", "llama3-70b", "--num-gpus-per-node", "8", "--quiet"]
    if static:
        return args, "static 1024 x (2048 in, 128 out)"
    if TRACE.exists():
        return args + ["--trace-file", str(TRACE)], f"trace {TRACE.name}"
    return args, f"static default ({TRACE} not found)"


def wall_cli(args: list[str], repeat: int) -> list[float]:
    cmd = [sys.executable, str(ROOT / "apex.py"), *args]
    out = []
    for _ in range(repeat + 1):  # the first run is the warm-up
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        out.append(time.perf_counter() - t0)
    return out[1:]


def in_process(args: list[str], repeat: int, workers: int | None) -> dict:
    """Time the search alone (imports and the Numba cache already loaded)."""
    from apex_fast.planner import PlanRequest, run_plan

    trace = Path(args[args.index("--trace-file") + 1]) if "--trace-file" in args else None
    req = PlanRequest(model="llama3-70b", gpus_per_node=8, trace_file=trace, workers=workers)
    t_first = time.perf_counter()
    _, sr = run_plan(req)  # warm-up
    t_first = time.perf_counter() - t_first
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, sr = run_plan(req)
        best = min(best, time.perf_counter() - t0)
    feasible = sr.ranked
    steps = sum(e.metrics.num_steps for e in feasible if e.metrics is not None)
    return {
        "first_s": t_first,
        "search_s": best,
        "plans": sr.num_candidates,
        "feasible": len(feasible),
        "steps": steps,
        "best": feasible[0].result.plan.label,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--static", action="store_true", help="the static default workload instead")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON line of figures")
    a = ap.parse_args(argv)
    args, what = cli_args(a.static)
    if a.workers:
        args += ["--workers", str(a.workers)]
    walls = wall_cli(args, a.repeat)
    ip = in_process(args, a.repeat, a.workers)
    key = "static" if a.static else "lmsys"
    figures = {
        f"search_{key}_wall_s": min(walls),
        f"search_{key}_inprocess_s": ip["search_s"],
        f"search_{key}_steps_per_s": ip["steps"] / ip["search_s"],
        f"search_{key}_plans": ip["plans"],
    }
    if a.json:
        print(json.dumps(figures))
        return figures
    print(f"llama3-70b, 1 x 8 H100-SXM-80GB, {what}")
    print(f"  python apex.py {' '.join(args)}")
    print(
        f"  wall (fresh process, after one warm-up): best {min(walls):.3f} s, "
        f"all {', '.join(f'{w:.2f}' for w in walls)}"
    )
    print(
        f"  in-process search: {ip['search_s'] * 1e3:.1f} ms (best of {a.repeat}; first call "
        f"{ip['first_s'] * 1e3:.0f} ms incl. Numba cache load)"
    )
    print(
        f"  plans evaluated {ip['plans']}, feasible {ip['feasible']}, best {ip['best']}, "
        f"simulated steps {ip['steps']:,d} -> {ip['steps'] / ip['search_s'] / 1e6:.2f} M "
        "steps/s (whole search incl. metrics)"
    )
    return figures


if __name__ == "__main__":
    main()
