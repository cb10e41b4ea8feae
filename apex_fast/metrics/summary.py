"""Metrics of one simulated plan (definitions in ../shared/SPEC.md §7 and docs/metrics.md).

Per-request times are aggregated with Polars; per-step records (one record = `count` steps of the
same shape) give busy time, FLOPs, bytes, the per-operator breakdown and energy in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from apex_fast import cells as names
from apex_fast.dtypes import compute_dtype
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import peak_flops
from apex_fast.metrics.latency import meets_slo, request_latencies
from apex_fast.metrics.records import SumInputs, plan_sums
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.memory import GIB
from apex_fast.sim.costs import CompiledCosts
from apex_fast.sim.engine import PlanResult
from apex_fast.sim.prefix import cache_stats
from apex_fast.sim.stream import gap_bin_edges
from apex_fast.workload import Workload


@dataclass
class PlanMetrics:
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    tpot_mean_s: float
    itl_mean_s: float
    tbt_p50_s: float
    tbt_p95_s: float
    tbt_percentiles_s: dict[float, float]
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    latency_percentiles_s: dict[float, float]
    throughput_tokens_per_s: float
    processed_tokens_per_s: float
    throughput_requests_per_s: float
    mfu: float
    mbu: float
    energy_kj: float
    energy_j_per_token: float
    param_gb_per_device: float
    activation_gb_per_device: float
    kv_cache_gb_per_device: float
    kv_tokens_per_replica: int
    avg_requests_per_iteration: float
    avg_tokens_per_iteration: float
    makespan_s: float
    busy_s: float
    num_steps: int
    preemptions: int
    slo_ttft_pct: float
    slo_tpot_pct: float
    slo_both_pct: float
    breakdown: list[tuple[str, float, float, str]] = field(default_factory=list)
    # cost: GPU-hours of the run (all GPUs x makespan); $ per million generated tokens is set by
    # the planner when --gpu-hour-cost is given (apex_fast.metrics.energy.usd_per_mtok)
    gpu_hours: float = 0.0
    gpu_hour_cost: float = 0.0
    cost_usd_per_mtok: float = float("nan")
    # serving-benchmark metrics, as `vllm bench serve` defines them (docs/metrics.md): median
    # and P99 of TTFT, TPOT (per request), ITL (per token gap) and end-to-end latency, plus the
    # percentiles asked for (--request-percentiles for per-request metrics, --token-percentiles
    # for ITL); token and request throughputs; goodput = requests/s meeting both SLOs
    completed_requests: int = 0
    ttft_p99_s: float = float("nan")
    tpot_p50_s: float = float("nan")
    tpot_p99_s: float = float("nan")
    itl_p50_s: float = float("nan")
    itl_p99_s: float = float("nan")
    latency_p99_s: float = float("nan")
    output_tokens_per_s: float = 0.0
    total_tokens_per_s: float = 0.0
    goodput_requests_per_s: float = 0.0
    ttft_percentiles_s: dict[float, float] = field(default_factory=dict)
    tpot_percentiles_s: dict[float, float] = field(default_factory=dict)
    itl_percentiles_s: dict[float, float] = field(default_factory=dict)
    # KV tokens one attention copy holds (a sequence must fit in one copy); copies per stage
    kv_tokens_per_copy: int = 0
    attn_copies: int = 1
    # KV blocks in use at the busiest step of the busiest scheduler stream (from the step
    # records' blocks_used, after that step's allocations)
    kv_blocks_peak: int = 0
    # automatic prefix caching (docs/metrics.md): prompt tokens found cached at admission over
    # all prompt tokens of the served requests, and their number; prefix_cache = "on", "off"
    # or "on, <why it is not simulated>"
    prefix_cache: str = "off"
    prefix_cache_hit_rate: float = 0.0
    cached_prompt_tokens: int = 0

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "breakdown"}
        for k, v in d.items():
            if k.endswith("_percentiles_s"):
                d[k] = {f"p{_fmt_p(p)}": x for p, x in v.items()}
        d["breakdown"] = [
            {"name": n, "seconds": s, "ratio_pct": r, "source": src}
            for n, s, r, src in self.breakdown
        ]
        return d


def _fmt_p(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def hist_percentiles(hist: np.ndarray, ps: list[float]) -> dict[float, float]:
    """Percentiles of the gap histogram (value = geometric centre of the bin; bins are 0.58% wide)."""
    total = int(hist.sum())
    edges = gap_bin_edges()
    out: dict[float, float] = {}
    if total == 0:
        return {p: float("nan") for p in ps}
    cum = np.cumsum(hist)
    for p in ps:
        rank = max(1, int(np.ceil(p / 100.0 * total)))
        b = int(np.searchsorted(cum, rank))
        out[p] = float(np.sqrt(edges[b] * edges[b + 1]))
    return out


def _request_row(
    res: PlanResult,
    workload: Workload,
    req_ps: list[float],
    bench_req_ps: list[float],
    ttft_slo_ms: float,
    tpot_slo_ms: float,
) -> dict:
    """Per-request aggregates of the served requests (one Polars row): TTFT, TPOT, ITL,
    latency means and percentiles, makespan end, token counts, SLO attainment."""
    import polars as pl  # here, not at import: command lines that stop earlier skip it

    # ---- per request (Polars; the columns are dropped as soon as the frame holds them)
    ids = np.concatenate(res.stream_index)
    served = all(bool((s.finish >= 0).all()) for s in res.streams)
    # entry times: the arrival, or later when a concurrency limit held the request back
    cols = {
        "arrival": np.concatenate(
            [
                s.arrival if s.arrival is not None else workload.arrival[i]
                for s, i in zip(res.streams, res.stream_index, strict=True)
            ]
        ),
        "first": np.concatenate([s.first_token for s in res.streams]),
        "finish": np.concatenate([s.finish for s in res.streams]),
        "prompt": workload.prompt[ids],
        "output": workload.output[ids],
    }
    del ids
    _, cols["ttft"], cols["tpot"], cols["latency"] = request_latencies(
        cols["arrival"], cols["first"], cols["finish"], cols["output"]
    )
    cols["ttft_ok"], cols["tpot_ok"] = meets_slo(
        cols["ttft"], cols["tpot"], ttft_slo_ms, tpot_slo_ms
    )
    df = pl.DataFrame(cols)
    del cols
    if not served:
        df = df.filter(pl.col("finish") >= 0)
    df = df.with_columns(pl.col("tpot").fill_nan(None))
    aggs = [
        pl.col("ttft").mean().alias("ttft_mean"),
        pl.col("ttft").quantile(0.5, "linear").alias("ttft_p50"),
        pl.col("ttft").quantile(0.95, "linear").alias("ttft_p95"),
        pl.col("tpot").mean().alias("tpot_mean"),
        ((pl.col("finish") - pl.col("first")).sum() / (pl.col("output") - 1).sum()).alias("itl"),
        pl.col("latency").mean().alias("lat_mean"),
        pl.col("finish").max().alias("end"),
        pl.col("output").sum().alias("gen"),
        (pl.col("prompt") + pl.col("output")).sum().alias("proc"),
        pl.len().alias("n"),
        pl.col("ttft_ok").mean().alias("slo_ttft"),
        pl.col("tpot_ok").mean().alias("slo_tpot"),
        (pl.col("ttft_ok") & pl.col("tpot_ok")).mean().alias("slo_both"),
    ]
    aggs += [pl.col("latency").quantile(p / 100.0, "linear").alias(f"lat_p{p}") for p in req_ps]
    for col in ("ttft", "tpot", "latency"):
        aggs += [
            pl.col(col).quantile(p / 100.0, "linear").alias(f"b_{col}_p{p}") for p in bench_req_ps
        ]
    return df.select(aggs).row(0, named=True)


def _breakdown(
    sums: dict[str, float], cc: CompiledCosts, makespan: float, nstreams: int
) -> list[tuple[str, float, float, str]]:
    """Per-operator breakdown from the record sums: mean over streams, Idle = makespan - mean
    busy."""
    costs = cc.costs
    raw: dict[str, float] = {}
    for name in cc.tok_ops:
        raw[name] = sums["tok:" + name]
    for name in cc.seq_ops:
        raw[name] = raw.get(name, 0.0) + sums["seq:" + name]
    attn_t = costs.c_attn * sums["cnt_work"] + costs.c_ctx * sums["ctx"]
    raw[cc.attn_op] = raw.get(cc.attn_op, 0.0) + attn_t
    raw[cc.overhead_op] = costs.overhead * sums["cnt"]
    if costs.host_seq > 0:
        per_seq = costs.host_seq * sums["cnt_nsched"]
        raw[names.SEQ_OVERHEAD] = per_seq
    if costs.eager_floor > 0:
        raw[names.LAUNCH_FLOOR] = sums["stretch"]
    breakdown: list[tuple[str, float, float, str]] = []
    total = makespan if makespan > 0 else 1.0
    for name, t in raw.items():
        t_mean = t / nstreams
        if t_mean <= 1e-9:
            continue
        src = cc.provenance.get(name, "analytic")
        breakdown.append((name, t_mean, 100.0 * t_mean / total, src))
    idle = max(0.0, makespan - sums["dur"] / nstreams)
    breakdown.append((names.IDLE, idle, 100.0 * idle / total, "simulated"))
    breakdown.append((names.TOTAL, makespan, 100.0, ""))
    return breakdown


def compute_metrics(
    res: PlanResult,
    workload: Workload,
    cluster: Cluster,
    request_percentiles: list[float] | None = None,
    token_percentiles: list[float] | None = None,
    ttft_slo_ms: float = math.inf,
    tpot_slo_ms: float = math.inf,
    model: ModelSpec | None = None,
) -> PlanMetrics:
    assert res.compiled is not None
    cc = res.compiled
    plan = res.plan
    dev = cluster.device
    req_ps = sorted({50.0, 95.0, *(request_percentiles or [])})
    tok_ps = sorted({50.0, 95.0, *(token_percentiles or [])})
    # the benchmark table: median and P99 always, plus the percentiles asked for
    bench_req_ps = sorted({50.0, 99.0, *(request_percentiles or [])})
    bench_tok_ps = sorted({50.0, 99.0, *(token_percentiles or [])})

    row = _request_row(res, workload, req_ps, bench_req_ps, ttft_slo_ms, tpot_slo_ms)
    bench = {
        col: {p: _f(row[f"b_{col}_p{p}"]) for p in bench_req_ps}
        for col in ("ttft", "tpot", "latency")
    }
    makespan = float(row["end"])  # first arrival is t = 0
    lat_ps = {p: float(row[f"lat_p{p}"]) for p in req_ps}

    # ---- per step records (sums over bounded chunks of records: apex_fast.metrics.records)
    sums = plan_sums(res.streams, SumInputs(cc, cluster, plan, res.clock_factor, model))
    busy = sums["dur"]

    cdt = compute_dtype(plan.weight_dtype, plan.activation_dtype)
    peak, _ = peak_flops(dev, cdt)
    bw = dev.hbm_tbps * 1e12
    mfu = float(sums["flops"] / (peak * sums["gpu_busy"])) if busy > 0 else 0.0
    mbu = float(sums["bytes"] / (bw * sums["gpu_busy"])) if busy > 0 else 0.0
    busy_energy = sums["energy"]
    idle_gpu_s = max(0.0, cluster.num_gpus * makespan - sums["gpu_busy"])
    energy_j = busy_energy + dev.idle_w * idle_gpu_s

    nstreams = len(res.streams)
    breakdown = _breakdown(sums, cc, makespan, nstreams)

    hist = np.sum(np.stack([s.gap_hist for s in res.streams]), axis=0)
    tbt = hist_percentiles(hist, tok_ps)
    itl = hist_percentiles(hist, bench_tok_ps)
    gen = float(row["gen"])
    steps = sums["cnt"]
    m = res.memory
    return PlanMetrics(
        ttft_mean_s=float(row["ttft_mean"]),
        ttft_p50_s=float(row["ttft_p50"]),
        ttft_p95_s=float(row["ttft_p95"]),
        tpot_mean_s=_f(row["tpot_mean"]),
        itl_mean_s=_f(row["itl"]),
        tbt_p50_s=tbt[50.0],
        tbt_p95_s=tbt[95.0],
        tbt_percentiles_s=tbt,
        latency_mean_s=float(row["lat_mean"]),
        latency_p50_s=lat_ps[50.0],
        latency_p95_s=lat_ps[95.0],
        latency_percentiles_s=lat_ps,
        throughput_tokens_per_s=gen / makespan if makespan > 0 else 0.0,
        processed_tokens_per_s=float(row["proc"]) / makespan if makespan > 0 else 0.0,
        throughput_requests_per_s=float(row["n"]) / makespan if makespan > 0 else 0.0,
        mfu=mfu,
        mbu=mbu,
        energy_kj=energy_j / 1e3,
        energy_j_per_token=energy_j / gen if gen else 0.0,
        param_gb_per_device=m.weights / GIB,
        activation_gb_per_device=m.activation / GIB,
        kv_cache_gb_per_device=m.kv_available / GIB,
        kv_tokens_per_replica=m.kv_tokens_per_replica,
        kv_tokens_per_copy=m.kv_tokens_per_copy,
        attn_copies=m.attn_copies,
        kv_blocks_peak=int(sums["blocks_peak"]),
        avg_requests_per_iteration=sums["cnt_nsched"] / steps if steps else 0.0,
        avg_tokens_per_iteration=sums["cnt_ntok"] / steps if steps else 0.0,
        makespan_s=makespan,
        busy_s=busy / nstreams,
        num_steps=int(steps),
        preemptions=sum(int(s.preemptions.sum()) for s in res.streams),
        # an SLO not set (infinite) has no attainment to report
        slo_ttft_pct=100.0 * float(row["slo_ttft"]) if math.isfinite(ttft_slo_ms) else math.nan,
        slo_tpot_pct=100.0 * float(row["slo_tpot"]) if math.isfinite(tpot_slo_ms) else math.nan,
        slo_both_pct=(
            100.0 * float(row["slo_both"])
            if math.isfinite(ttft_slo_ms) or math.isfinite(tpot_slo_ms)
            else math.nan
        ),
        breakdown=breakdown,
        gpu_hours=cluster.num_gpus * makespan / 3600.0,
        completed_requests=int(row["n"]),
        ttft_p99_s=bench["ttft"][99.0],
        tpot_p50_s=bench["tpot"][50.0],
        tpot_p99_s=bench["tpot"][99.0],
        itl_p50_s=itl[50.0],
        itl_p99_s=itl[99.0],
        latency_p99_s=bench["latency"][99.0],
        output_tokens_per_s=gen / makespan if makespan > 0 else 0.0,
        total_tokens_per_s=float(row["proc"]) / makespan if makespan > 0 else 0.0,
        goodput_requests_per_s=(
            float(row["slo_both"]) * float(row["n"]) / makespan if makespan > 0 else 0.0
        ),
        ttft_percentiles_s=bench["ttft"],
        tpot_percentiles_s=bench["tpot"],
        itl_percentiles_s=itl,
        **_prefix_cache_metrics(res, workload),
    )


def _prefix_cache_metrics(res: PlanResult, workload: Workload) -> dict:
    if not res.prefix_cache_on:
        note = res.prefix_cache_note
        return {"prefix_cache": f"on, {note}" if note else "off"}
    ids = np.concatenate(res.stream_index)
    cached = np.concatenate([s.cached for s in res.streams])
    served = np.concatenate([s.finish for s in res.streams]) >= 0
    rate, tokens = cache_stats(cached, workload.prompt[ids], served)
    return {"prefix_cache": "on", "prefix_cache_hit_rate": rate, "cached_prompt_tokens": tokens}


def _f(v: object) -> float:
    return float("nan") if v is None else float(v)
