"""DistServe goodput: the fastest replay of the trace that keeps the SLO attainment target, for
the best disaggregated deployments and the best aggregated plans."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from apex_fast.disagg.evaluate import DisaggCandidate, evaluate
from apex_fast.disagg.search import DisaggSearch
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.plan import Plan
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import Workload
from apex_fast.workload.scaling import scaled

# DistServe's goodput: the highest request rate at which at least this share of the requests
# meets both SLOs (Zhong et al., OSDI'24, Sec. 2.2 and Sec. 6.1: 90%)
SLO_ATTAINMENT_TARGET = 0.90
RATE_SCALES = (1 / 16, 256.0)  # range of arrival-rate multipliers searched
RATE_BISECTIONS = 4


def max_goodput_rate(
    attainment: Callable[[Workload], float], workload: Workload
) -> tuple[float, float]:
    """(rate multiplier, requests/s): the fastest replay of the trace whose SLO attainment
    (`attainment(workload)`, a fraction) stays >= SLO_ATTAINMENT_TARGET. Doubling then
    bisection on the multiplier; (0, 0) if even the slowest replay misses it."""
    span = float(workload.arrival[-1] - workload.arrival[0])
    if span <= 0:  # every request at once: no rate to vary (callers use the trace's goodput)
        return 1.0, math.nan
    base = workload.num_requests / span
    lo_f, hi_f = RATE_SCALES

    def ok(f: float) -> bool:
        return attainment(scaled(workload, f)) >= SLO_ATTAINMENT_TARGET

    f = 1.0
    if ok(f):
        lo, hi = f, None
        while f < hi_f:
            f *= 2.0
            if ok(f):
                lo = f
            else:
                hi = f
                break
        if hi is None:
            return lo, lo * base
    else:
        hi, lo = f, None
        while f > lo_f:
            f /= 2.0
            if ok(f):
                lo = f
                break
            hi = f
        if lo is None:
            return 0.0, 0.0
    for _ in range(RATE_BISECTIONS):
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, lo * base


# Candidates of each mode whose DistServe goodput (a rate search, ~10 simulations each) is
# measured (for disaggregated deployments: the best of each pool split); the rest are ranked by
# their goodput per GPU at the trace's own rate only
GOODPUT_TOP = 4


@dataclass
class RatedAgg:
    evaluated: object  # search.Evaluated
    goodput_rps: float  # at the trace's rate
    max_rate_rps: float  # DistServe goodput
    rate_multiplier: float
    gpus: int

    @property
    def max_rate_per_gpu(self) -> float:
        return self.max_rate_rps / self.gpus

    @property
    def label(self) -> str:
        return self.evaluated.result.plan.label


@dataclass
class RatedDisagg:
    candidate: DisaggCandidate
    max_rate_rps: float
    rate_multiplier: float

    @property
    def max_rate_per_gpu(self) -> float:
        return self.max_rate_rps / self.candidate.metrics.gpus

    @property
    def label(self) -> str:
        return self.candidate.label


def rate_disagg(
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    opts: EngineOptions,
    ds: DisaggSearch,
    ttft_slo_ms: float,
    tpot_slo_ms: float,
) -> RatedDisagg:
    best: RatedDisagg | None = None
    slos = (ttft_slo_ms, tpot_slo_ms)
    # the best deployment of each pool split (prefill GPUs, decode GPUs), best splits first
    per_split: dict[tuple[int, int], DisaggCandidate] = {}
    for cand in ds.ranked:
        per_split.setdefault((cand.prefill.gpus, cand.decode.gpus), cand)
    for cand in list(per_split.values())[:GOODPUT_TOP]:

        def att(wl: Workload, c: DisaggCandidate = cand) -> float:
            r = evaluate(model, cluster, wl, opts, c.prefill, c.decode, *slos, link=c.link)
            return 0.0 if isinstance(r, str) else r.metrics.slo_both_pct / 100.0

        f, rate = max_goodput_rate(att, workload)
        if math.isnan(rate):
            rate = cand.metrics.goodput_rps
        rd = RatedDisagg(cand, rate, f)
        if best is None or rd.max_rate_per_gpu > best.max_rate_per_gpu:
            best = rd
    assert best is not None
    return best


def rate_agg(sr, ttft_slo_ms: float, tpot_slo_ms: float) -> RatedAgg:
    """The aggregated plan with the highest DistServe goodput per GPU among the best few by
    goodput per GPU at the trace's rate (ties: lower mean latency)."""
    from apex_fast.metrics.summary import compute_metrics

    gpus = sr.cluster.num_gpus

    def trace_goodput(e) -> float:
        m = e.metrics
        n = m.throughput_requests_per_s * m.makespan_s
        return m.slo_both_pct / 100.0 * n / m.makespan_s if m.makespan_s > 0 else 0.0

    ranked = sorted(sr.ranked, key=lambda e: (-trace_goodput(e), e.metrics.latency_mean_s))
    best: RatedAgg | None = None
    for e in ranked[:GOODPUT_TOP]:
        plan = e.result.plan

        def att(wl: Workload, plan: Plan = plan) -> float:
            res = simulate_plan(sr.model, sr.cluster, plan, wl, sr.options)
            if not res.feasible:
                return 0.0
            m = compute_metrics(res, wl, sr.cluster, [], [], ttft_slo_ms, tpot_slo_ms)
            return m.slo_both_pct / 100.0

        f, rate = max_goodput_rate(att, sr.workload)
        if math.isnan(rate):
            rate = trace_goodput(e)
        ra = RatedAgg(e, trace_goodput(e), rate, f, gpus)
        if best is None or ra.max_rate_per_gpu > best.max_rate_per_gpu:
            best = ra
    assert best is not None
    return best
