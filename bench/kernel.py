"""Benchmark of the batching kernel alone: simulated scheduler steps per second on one core.

Traces, on the cost tables of llama3-70b, DP1 PP1 TP8 on 8x H100 (chunked prefill, budget
2048, max 256 sequences, the plan's 87,815 KV blocks):

* lmsys_05 (decode-heavy, real): ../shared/reference/traces/llama/lmsys_05.jsonl, 1024
  requests, mean prompt 62 and output 162 tokens, over 2023 s (skipped if missing);
* decode-heavy: short prompts (32..256 tokens), long outputs (512..4096 tokens), Poisson
  arrivals at 1 request/s (about 60 running sequences);
* decode-saturated: the same at 4 requests/s: the batch stays at max-num-seqs (256) with an
  arrival or a completion every few steps, so runs of identical steps are short and every
  record costs a walk over 256 sequences (the kernel's worst case per step);
* prefill-heavy: long prompts (1024..8192 tokens), short outputs (1..16 tokens), 2 requests/s.

A simulated step is one iteration of the vLLM scheduler (the kernel advances runs of identical
decode steps in one go, and those steps count). The kernel is single-threaded, so steps per
second of one call are steps per second per core. The pure-Python oracle (`tests/oracle.py`,
one step at a time) runs on a small prefix of each trace for comparison.

Prints figures only; `bench/ci_guard.py` compares them with `bench/baseline.json`.
`--old DIR`: also time the kernel of another source tree (e.g. main: `git worktree add
/tmp/apex-main main`, or `mkdir /tmp/apex-main && git archive main | tar -x -C /tmp/apex-main`)
in the same run: in rounds interleaved with this kernel's (best of each), the other tree's
`run_stream` runs in a child process (its own apex_fast and kernels, the same trace, scheduler
limits and cost tables), its outputs are checked identical to this tree's and the ratio printed.
Usage: python bench/kernel.py [--json] [--repeat N] [--no-oracle] [--old DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# The kernel alone: NumPy's OpenBLAS threads, woken by the cost tables' matrix products in
# setup(), spin for a while after each product and took up to a third of the kernel's core on
# the 2-core machine (decode-saturated 10.8 vs 18.7 M steps/s). One BLAS thread (set before
# NumPy loads it; the child processes of --old inherit it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from apex_fast.hardware.cluster import Cluster  # noqa: E402
from apex_fast.hardware.devices import get_device  # noqa: E402
from apex_fast.models import load_model  # noqa: E402
from apex_fast.plans.enumerate import megatron_plan  # noqa: E402
from apex_fast.sim.costs import compile_costs  # noqa: E402
from apex_fast.sim.stream import SchedulerConfig, run_stream  # noqa: E402

BUDGET = 2048
MAX_SEQS = 256
OLD_ROUNDS = 3  # with --old: rounds of (old kernel, this kernel), best of each


TRACE = ROOT.parent / "shared" / "reference" / "traces" / "llama" / "lmsys_05.jsonl"
KINDS = ("lmsys_05", "decode-heavy", "decode-saturated", "prefill-heavy")


def make_trace(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "lmsys_05":
        from apex_fast.workload import load_trace

        w = load_trace(TRACE)
        return w.arrival, w.prompt, w.output
    if kind in ("decode-heavy", "decode-saturated"):
        rate = 1.0 if kind == "decode-heavy" else 4.0
        prompt = rng.integers(32, 257, n)
        output = rng.integers(512, 4097, n)
    elif kind == "prefill-heavy":
        rate = 2.0
        prompt = rng.integers(1024, 8193, n)
        output = rng.integers(1, 17, n)
    else:
        raise ValueError(kind)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    arrival -= arrival[0]
    return arrival.astype(np.float64), prompt.astype(np.int64), output.astype(np.int64)


def setup():
    model = load_model("llama3-70b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 8)
    plan = megatron_plan(model, 1, 1, 8, "half", "half", "half")
    costs = compile_costs(model, cluster, plan, BUDGET, MAX_SEQS).costs
    # that plan has 87,815 KV blocks of 16 tokens (apex_fast.plans.memory); 1% watermark
    cfg = SchedulerConfig(
        num_blocks=87815, block_size=16, watermark=878, max_num_seqs=MAX_SEQS, budget=BUDGET
    )
    return cfg, costs


def time_kernel(trace, cfg, costs, repeat: int) -> tuple[float, int, int]:
    """(best seconds, simulated steps, records, sequence-steps) over `repeat` runs after one
    warm-up."""
    res = run_stream(*trace, cfg, costs)  # warm-up (loads the Numba cache)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = run_stream(*trace, cfg, costs)
        best = min(best, time.perf_counter() - t0)
    seq_steps = int(np.sum(res.rec_count * res.rec_sched))
    return best, res.num_steps, int(res.rec_count.size), seq_steps


# the child process of --old: imports apex_fast (and apex_fast.kernels, installed from the
# top-level kernels/ folder) from the tree argv[1], not from this installation, and times its
# run_stream on the job pickled in argv[2]; writes (best seconds, steps, records, arrays) to argv[3]
_OLD_CHILD = """
import importlib.util, os, pickle, sys, time
tree, job, out = sys.argv[1:4]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path.insert(0, tree)
import apex_fast
spec = importlib.util.spec_from_file_location(
    "apex_fast.kernels", os.path.join(tree, "kernels", "__init__.py"),
    submodule_search_locations=[os.path.join(tree, "kernels")])
mod = importlib.util.module_from_spec(spec)
sys.modules["apex_fast.kernels"] = mod
spec.loader.exec_module(mod)
from apex_fast.sim.stream import run_stream
assert run_stream.__code__.co_filename.startswith(tree)
with open(job, "rb") as f:
    trace, cfg, costs, repeat = pickle.load(f)
res = run_stream(*trace, cfg, costs)
best = float("inf")
for _ in range(repeat):
    t0 = time.perf_counter()
    res = run_stream(*trace, cfg, costs)
    best = min(best, time.perf_counter() - t0)
arrays = {k: v for k, v in vars(res).items() if hasattr(v, "dtype")}
with open(out, "wb") as f:
    pickle.dump((best, res.num_steps, int(res.rec_count.size), arrays), f)
"""


def time_old_tree(tree: str, trace, cfg, costs, repeat: int) -> tuple[float, int, int, dict]:
    """(best seconds, steps, records, output arrays) of the other tree's run_stream, run in a
    child process on the same trace, limits and cost tables."""
    import pickle
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        job, out = f"{tmp}/job.pkl", f"{tmp}/out.pkl"
        with open(job, "wb") as f:
            pickle.dump((trace, cfg, costs, repeat), f)
        subprocess.run([sys.executable, "-c", _OLD_CHILD, tree, job, out], check=True)
        with open(out, "rb") as f:
            return pickle.load(f)


def same_result(a, old_arrays: dict) -> bool:
    """Every output array of `a` equal to the other tree's."""
    mine = {k: v for k, v in vars(a).items() if isinstance(v, np.ndarray)}
    return mine.keys() == old_arrays.keys() and all(
        np.array_equal(v, old_arrays[k]) for k, v in mine.items()
    )


def time_oracle(trace, cfg, costs, n: int) -> tuple[float, int]:
    sys.path.insert(0, str(ROOT / "tests"))
    from oracle import simulate  # type: ignore[import-not-found]

    small = tuple(a[:n] for a in trace)
    t0 = time.perf_counter()
    orc = simulate(*small, cfg, costs)
    return time.perf_counter() - t0, orc.num_steps


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--oracle-requests", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-oracle", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON line of figures")
    ap.add_argument("--old", help="another source tree whose kernel is timed side by side")
    a = ap.parse_args(argv)
    cfg, costs = setup()
    figures: dict[str, float] = {}
    lines = []
    for kind in KINDS:
        if kind == "lmsys_05" and not TRACE.exists():
            lines.append(f"{kind:16s} skipped: {TRACE} not found")
            continue
        trace = make_trace(kind, a.requests)
        secs, steps, recs, seq_steps = time_kernel(trace, cfg, costs, a.repeat)
        ref = run_stream(*trace, cfg, costs)
        key = kind.replace("-", "_")
        old_line = ""
        if a.old:  # rounds of (old, new), interleaved: both see the same load
            osecs = float("inf")
            for _ in range(OLD_ROUNDS):
                o, osteps, orecs, old_arrays = time_old_tree(a.old, trace, cfg, costs, a.repeat)
                same = same_result(ref, old_arrays)
                osecs = min(osecs, o)
                # this tree's kernel in a child process too: both sides in the same conditions
                secs = min(secs, time_old_tree(str(ROOT), trace, cfg, costs, a.repeat)[0])
                if not same:
                    break
            figures[f"old_kernel_{key}_steps_per_s"] = osteps / osecs
            old_line = (
                f"{kind:16s} old kernel: {orecs:>7,d} records, {osecs * 1e3:7.2f} ms -> "
                f"{osteps / osecs / 1e6:7.2f} M steps/s; new/old {osecs / secs:5.2f}x; "
                f"outputs {'identical' if same else 'DIFFER'}"
            )
        sps = steps / secs
        figures[f"kernel_{key}_steps_per_s"] = sps
        lines.append(
            f"{kind:16s} kernel: {trace[0].size} requests, {steps:>9,d} steps in {recs:>7,d} "
            f"records, {secs * 1e3:7.2f} ms -> {sps / 1e6:7.2f} M steps/s, "
            f"{seq_steps / secs / 1e6:7.1f} M sequence-steps/s (best of {a.repeat})"
        )
        if old_line:
            lines.append(old_line)
        if not a.no_oracle:
            osecs, osteps = time_oracle(trace, cfg, costs, a.oracle_requests)
            osps = osteps / osecs
            figures[f"oracle_{key}_steps_per_s"] = osps
            lines.append(
                f"{kind:16s} oracle: {a.oracle_requests} requests, {osteps:>10,d} steps, "
                f"{osecs * 1e3:8.2f} ms -> {osps / 1e6:8.4f} M steps/s; kernel is "
                f"{sps / osps:,.0f}x faster"
            )
    if a.json:
        import json

        print(json.dumps(figures))
    else:
        print("\n".join(lines))
    return figures


if __name__ == "__main__":
    main()
