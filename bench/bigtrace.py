"""Big inputs: a 10-million-request trace through parsing and simulation, with time and peak RSS.

Writes a synthetic APEX+ JSON-lines trace (Poisson arrivals, log-normal prompt and output lengths)
to a temporary folder in chunks (never held in memory), parses it with `apex_fast.workload.readers` and
runs the plan search on one pinned plan (default: llama-7b on one node of 8x H100, DP8 PP1 TP1,
so each replica serves 1/8 of the requests), metrics included. Prints, for each phase, the wall
time and the process's peak resident set size so far (`resource.getrusage`; the peak is
cumulative, so the simulation figure includes the parsed workload it runs on). The trace is
deleted afterwards unless --keep is given.

Usage: python bench/bigtrace.py [--requests 10000000] [--rate 300] [--model llama-7b]
       [--gpus 8] [--dp 8] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 250_000


def rss_peak_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20  # kB on Linux, bytes on macOS


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_now_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def write_trace(path: Path, n: int, rate: float, seed: int) -> int:
    """Write n requests in chunks of CHUNK lines; returns the file size in bytes."""
    rng = np.random.default_rng(seed)
    t_ns = 0.0
    with path.open("wb", buffering=8 << 20) as f:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            gaps = rng.exponential(1.0 / rate, m) * 1e9
            t = t_ns + np.cumsum(gaps)
            t_ns = float(t[-1])
            # lmsys-like lengths (log-normal, clipped): mean prompt ~70, mean output ~150
            p = np.clip(np.exp(rng.normal(3.1, 1.3, m)), 2, 4096).astype(np.int64)
            o = np.clip(np.exp(rng.normal(4.5, 1.0, m)), 1, 1024).astype(np.int64)
            lines = [
                f'{{"StartTimeOffset": {ti}, "ContextTokens": {pi}, "GeneratedTokens": {oi}}}\n'
                for ti, pi, oi in zip(
                    t.astype(np.int64).tolist(), p.tolist(), o.tolist(), strict=True
                )
            ]
            f.write("".join(lines).encode())
            del lines
    return path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--rate", type=float, default=300.0, help="arrivals per second (all replicas)")
    ap.add_argument("--model", default="llama-7b")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--dp", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the trace file (prints its path)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    from apex_fast.hardware.cluster import Cluster
    from apex_fast.hardware.devices import get_device
    from apex_fast.models import load_model
    from apex_fast.plans.enumerate import Pins
    from apex_fast.search import MetricOptions, search
    from apex_fast.sim.engine import EngineOptions
    from apex_fast.workload import load_trace

    model = load_model(args.model)
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, args.gpus)
    pins = Pins(dp=args.dp, pp=1, tp=args.gpus // args.dp)
    opts = EngineOptions()
    # warm the Numba kernel on a tiny workload so compilation is not counted below
    from apex_fast.workload import static_workload

    search(model, cluster, static_workload(8, 16, 4), opts, MetricOptions(), pins=pins, workers=1)
    fig: dict[str, float | int | str] = {
        "requests": args.requests,
        "model": args.model,
        "plan": f"DP{pins.dp} PP1 TP{pins.tp} on {args.gpus} x H100-SXM-80GB",
        "rss_baseline_mib": round(rss_now_mib(), 1),
    }

    tmp = Path(tempfile.mkdtemp(prefix="apex-bigtrace-"))
    path = tmp / f"trace_{args.requests}.jsonl"
    try:
        t0 = time.perf_counter()
        size = write_trace(path, args.requests, args.rate, args.seed)
        fig["generate_s"] = round(time.perf_counter() - t0, 1)
        fig["file_gib"] = round(size / 2**30, 2)

        t0, c0 = time.perf_counter(), cpu_s()
        wl = load_trace(path)
        fig["parse_s"] = round(time.perf_counter() - t0, 1)
        fig["parse_cpu_s"] = round(cpu_s() - c0, 1)
        fig["parse_peak_rss_mib"] = round(rss_peak_mib(), 1)
        fig["rss_after_parse_mib"] = round(rss_now_mib(), 1)
        fig["simulated_seconds"] = round(float(wl.arrival[-1]), 1)

        t0, c0 = time.perf_counter(), cpu_s()
        sr = search(model, cluster, wl, opts, MetricOptions(), pins=pins, workers=1)
        fig["simulate_s"] = round(time.perf_counter() - t0, 1)
        fig["simulate_cpu_s"] = round(cpu_s() - c0, 1)
        fig["simulate_peak_rss_mib"] = round(rss_peak_mib(), 1)
        m = sr.best.metrics
        assert m is not None
        fig["steps"] = m.num_steps
        fig["records"] = int(
            sum(
                s.rec_sums["records"] if s.rec_sums is not None else s.rec_count.size
                for s in sr.best.result.streams
            )
        )
        fig["ttft_mean_ms"] = round(m.ttft_mean_s * 1e3, 3)
        fig["tpot_mean_ms"] = round(m.tpot_mean_s * 1e3, 3)
        fig["throughput_tok_s"] = round(m.throughput_tokens_per_s, 1)
    finally:
        if args.keep:
            print(f"trace kept at {path}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(fig, indent=2))
    else:
        for k, v in fig.items():
            print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
