"""Benchmark-style workload options (`--request-rate`, `--burstiness`, `--max-concurrency`,
`--length-dist`, `--random-range-ratio`, a trace file) and the Workload they describe; their
definitions follow `vllm bench serve` (docs/metrics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.workload.generators import LENGTH_DISTS, arrivals, synthetic_lengths
from apex_fast.workload.readers import load_trace
from apex_fast.workload.types import Workload, check_sizes, static_workload

# Largest request count a synthetic workload may hold (24 bytes per request in memory: 2.4 GB).
MAX_SYNTHETIC_REQUESTS = 100_000_000


@dataclass(frozen=True)
class WorkloadOptions:
    """Benchmark-style workload options (names as `vllm bench serve` spells them)."""

    trace_file: Path | None = None
    num_requests: int = 1024
    prompt_len: int = 2048
    output_len: int = 128
    request_rate: float | None = None  # None: the trace's own times, or all at t = 0
    burstiness: float = 1.0
    max_concurrency: int = 0  # 0 = no limit (open loop)
    length_dist: str | None = None  # None = fixed, or uniform when a range ratio is given
    random_range_ratio: float = 0.0
    seed: int = 0


def check_options(o: WorkloadOptions) -> None:
    """Refuse bad values and conflicting options (one line each)."""
    if o.request_rate is not None and not (o.request_rate > 0):
        raise ApexError(
            f"--request-rate must be a positive number of requests/s or inf, got {o.request_rate}"
        )
    if not (o.burstiness > 0 and math.isfinite(o.burstiness)):
        raise ApexError(f"--burstiness must be > 0 (1 = Poisson), got {o.burstiness}")
    if o.max_concurrency < 0:
        raise ApexError(f"--max-concurrency must be >= 1 (0 = no limit), got {o.max_concurrency}")
    if not (0.0 <= o.random_range_ratio < 1.0):
        raise ApexError(f"--random-range-ratio must be in [0, 1), got {o.random_range_ratio}")
    if o.length_dist is not None and o.length_dist not in LENGTH_DISTS:
        raise ApexError(
            f"unknown --length-dist {o.length_dist!r}: use one of {', '.join(LENGTH_DISTS)}"
        )
    if o.random_range_ratio and o.length_dist not in (None, "uniform"):
        raise ApexError(
            f"--random-range-ratio applies to uniform lengths, not --length-dist {o.length_dist}"
        )
    if o.seed < 0:
        raise ApexError(f"--seed must be >= 0, got {o.seed}")
    if o.burstiness != 1.0 and (o.request_rate is None or math.isinf(o.request_rate)):
        raise ApexError("--burstiness needs a finite --request-rate (it shapes the arrival gaps)")
    if o.trace_file is not None:
        if o.length_dist is not None:
            raise ApexError("--length-dist and --trace-file both set the lengths; give one")
        if o.random_range_ratio:
            raise ApexError("--random-range-ratio and --trace-file both set the lengths; give one")
    elif o.num_requests > MAX_SYNTHETIC_REQUESTS:
        raise ApexError(
            f"--num-requests {o.num_requests} is above the {MAX_SYNTHETIC_REQUESTS:,} requests "
            "a synthetic workload may hold"
        )


def _rate_words(rate: float, burstiness: float) -> str:
    if math.isinf(rate):
        return "all at t = 0"
    shape = "Poisson" if burstiness == 1.0 else f"gamma arrivals (burstiness {burstiness:g})"
    return f"{shape} at {rate:g} req/s"


def build_workload(o: WorkloadOptions) -> Workload:
    """The workload the options describe (trace or synthetic lengths; trace times, synthetic
    arrivals or a closed loop)."""
    check_options(o)
    rng = np.random.default_rng(o.seed)
    notes: list[str] = []
    rate = o.request_rate
    burst = o.burstiness
    conc = o.max_concurrency
    hashes: dict = {}
    if o.trace_file is not None:
        wl = load_trace(o.trace_file)
        if wl.hash_ids is not None:
            hashes = {
                "hash_ids": wl.hash_ids,
                "hash_offsets": wl.hash_offsets,
                "hash_block": wl.hash_block,
            }
        notes += list(wl.notes)
        prompt, output, arrival = wl.prompt, wl.output, wl.arrival
        n = wl.num_requests
        meta = wl.bench_settings
        base = wl.name
        if meta is not None and rate is None:
            # a benchmark result file: replay it as it was run
            rate = meta.get("request_rate")
            burst = meta.get("burstiness", 1.0) if o.burstiness == 1.0 else o.burstiness
            if not conc and meta.get("max_concurrency"):
                conc = int(meta["max_concurrency"])
            notes.append(
                f"{wl.name}: per-request lengths from the benchmark result; arrivals as it was "
                f"run ({_rate_words(rate, burst)}"
                + (f", max concurrency {conc}" if conc else "")
                + f"), drawn with seed {o.seed}"
            )
        if rate is not None:
            arrival = arrivals(n, rate, burst, rng)
            base += f", {_rate_words(rate, burst)}"
            if meta is None:
                notes.append(
                    f"the trace's arrival times are replaced by {_rate_words(rate, burst)} "
                    f"(--request-rate, seed {o.seed}); its lengths are kept"
                )
    else:
        n = o.num_requests
        check_sizes(n, o.prompt_len, o.output_len)
        dist = o.length_dist or ("uniform" if o.random_range_ratio > 0 else "fixed")
        if dist == "fixed" and rate is None and not conc:
            return static_workload(n, o.prompt_len, o.output_len)
        r = rate if rate is not None else math.inf
        arrival = arrivals(n, r, burst, rng)
        prompt, output, base = synthetic_lengths(
            dist, n, o.prompt_len, o.output_len, o.random_range_ratio, rng
        )
        base = f"{base}, {_rate_words(r, burst)}"
    if conc:
        base += f", max concurrency {conc} (closed loop)"
        conc = min(conc, n)  # more clients than requests: the same as one client per request
    return Workload(
        arrival=np.ascontiguousarray(arrival, np.float64),
        prompt=np.ascontiguousarray(prompt, np.int64),
        output=np.ascontiguousarray(output, np.int64),
        name=base,
        max_concurrency=conc,
        notes=tuple(notes),
        **hashes,
    )
