"""Benchmark of `capacity` over every feasible plan: llama3-70b on one node of 8 H100s,
traces/creation_r1_n200.jsonl, TTFT <= 200 ms and TPOT <= 50 ms for 90% of requests.

Runs `python apex.py capacity ... --all` in a fresh process (start-up, the ranking search and
every plan's capacity search included) and prints wall time, CPU time (user + system of the
child, steadier on a shared machine) and the number of simulations. With `--baseline REF` the
same command also runs on the tree of git revision REF (bench/startup.py extracts it), the two
runs interleaved; best of `--repeat`. Prints figures only.

Usage: python bench/capacity.py [--baseline REF] [--repeat N] [--json]
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import ROOT, bench_args, trees_to_time  # noqa: E402

ARGS = [
    "capacity", "--model", "llama3-70b", "--num-gpus-per-node", "8",
    "--trace-file", str(ROOT / "traces" / "creation_r1_n200.jsonl"),
    "--ttft-slo", "200", "--tpot-slo", "50", "--all",
]  # fmt: skip


def run_once(tree: Path) -> tuple[float, float, int, str]:
    """(wall s, CPU s, simulations, stdout) of one fresh capacity run in `tree`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(tree / "apex.py"), *ARGS],
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)),
    ).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"^(\d+) simulations in", out, re.M)
    return wall, cpu, int(m.group(1)) if m else -1, out


def main() -> None:
    a = bench_args(__doc__, 1)
    with tempfile.TemporaryDirectory(prefix="apex-capacity-") as tmp:
        trees = trees_to_time(a.baseline, Path(tmp))
        if "old" in trees:
            run_once(trees["old"])  # warm-up: the extracted tree compiles its Numba cache
        best: dict[str, tuple[float, float, int]] = {}
        for _ in range(a.repeat):
            for label, tree in trees.items():
                w, c, sims, _ = run_once(tree)
                bw, bc, _ = best.get(label, (float("inf"), float("inf"), sims))
                best[label] = (min(bw, w), min(bc, c), sims)
    if a.json:
        w, c, sims = best["new"]
        print(json.dumps({"capacity_all_wall_s": w, "capacity_all_cpu_s": c, "sims": sims}))
        return
    print(f"best of {a.repeat}, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(f"{'tree':<6} {'wall':>8} {'CPU':>8} {'simulations':>12}")
    for label, (w, c, sims) in best.items():
        print(f"{label:<6} {w:>7.2f}s {c:>7.2f}s {sims:>12d}")
    if "old" in best:
        (ow, oc, _), (nw, nc, _) = best["old"], best["new"]
        print(f"old/new: wall {ow / nw:.2f}x, CPU {oc / nc:.2f}x")


if __name__ == "__main__":
    main()
