"""`apex.py capacity`: the highest request rate each plan sustains within the SLOs (goodput).

The trace's arrival times are divided by a scale factor s (rate = s x the trace's mean rate; the
shape of the arrival process, bursts included, is kept). For each plan the largest s whose
SLO attainment (TTFT and TPOT both met) is at least `--attainment` is bracketed and the bracket
narrowed until it is narrower than `--rel-tol`; s stays within [2**-12, 2**12]. Every answer is
a simulated rate that met the target with a simulated rate at most `--rel-tol` above it that
did not; how the probes are placed only changes how many simulations that takes:

- Start: the answer of an earlier plan with the same stage mapping, number of streams (DP x PP)
  and similar KV cache per stream (these nearly always sustain the same rate), first step
  `--rel-tol`: 2 simulations when the rates agree. Otherwise the previous plan's answer, first
  step NEXT_PLAN_STEP; the step squares (up to x2) after each probe that does not bracket.
- Probes use what the runs so far say: y = 1 / slo_ratio (the target quantile of
  max(TTFT / TTFT SLO, TPOT / TPOT SLO) over requests) falls about linearly with the rate while
  TPOT grows with the batch, and reaches 1 at the capacity. The next probe goes just past the
  root of the line through two runs (extrapolated while bracketing, the secant of the bracket
  while narrowing, alternately on either side of it); two probes in a row that do not halve
  the bracket are followed by a bisection step, and while bracketing a probe after a
  prediction that missed moves at least sqrt(step). An overloaded run delivers the plan's
  saturated token rate, so no probe goes above that rate.
- A plan that misses the SLOs even at the lowest rate is recognised by one simulation there.

Work is shared across plans: every simulated (plan, s) is cached, the scaled workloads are built
once per s for all plans, and plans that differ only in DP share their cost tables
(apex_fast/sim/engine.py); the plans are first ranked at the trace's own rate by one ordinary
search. Attainment is assumed to fall as the rate rises (true for FCFS queueing up to
simulation noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.memo import put_bounded
from apex_fast.metrics.latency import meets_slo, request_latencies
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.plan import Plan
from apex_fast.sim.engine import EngineOptions, PlanResult, simulate_plan
from apex_fast.workload import Workload
from apex_fast.workload.scaling import scaled

MAX_SCALE_STEPS = 12  # rates from 2**-12 to 2**12 x the trace's own rate
MIN_SCALE = 2.0**-MAX_SCALE_STEPS
MAX_SCALE = 2.0**MAX_SCALE_STEPS
# first bracket step from the previous plan's answer: plans ranked next to each other at the
# trace's rate mostly sustain rates within 25% of each other; the step squares after each miss
NEXT_PLAN_STEP = 1.25
# plans with the same stage mapping and stream count sustain the same rate unless one of them
# is short of KV cache: their KV blocks per stream must be within this ratio
SIBLING_KV_RATIO = 0.5
MAX_CACHED_WORKLOADS = 256
HORIZON_LIFETIMES = 20.0  # the scaled trace spans at least this many request lifetimes


@dataclass(frozen=True)
class SloOutcome:
    attainment: float  # fraction of requests meeting both SLOs (unserved requests fail)
    ttft_mean_s: float
    tpot_mean_s: float
    throughput_tokens_per_s: float
    # requests that met both SLOs per second of the run (first arrival to last finish): what
    # the plan delivers, which an offered rate above its capacity does not raise
    goodput_req_s: float = 0.0
    # the target-quantile of max(TTFT / TTFT SLO, TPOT / TPOT SLO) over requests (inf for an
    # unserved one): <= 1 where the target is met. It grows smoothly with the rate (TPOT with
    # the batch, then TTFT with the queue), so it locates the capacity between simulations.
    slo_ratio: float = math.inf


def slo_outcome(
    res: PlanResult,
    workload: Workload,
    ttft_slo_ms: float,
    tpot_slo_ms: float,
    target: float = 0.9,
) -> SloOutcome:
    n = workload.num_requests
    if not res.streams:
        return SloOutcome(0.0, math.nan, math.nan, 0.0)
    ids = np.concatenate(res.stream_index)
    first = np.concatenate([s.first_token for s in res.streams])
    fin = np.concatenate([s.finish for s in res.streams])
    out = workload.output[ids]
    ok, ttft, tpot, _ = request_latencies(workload.arrival[ids], first, fin, out)
    ttft_ok, tpot_ok = meets_slo(ttft, tpot, ttft_slo_ms, tpot_slo_ms)
    met = ttft_ok & tpot_ok
    makespan = float(fin[ok].max()) if ok.any() else 0.0
    multi = ok & (out > 1)
    tpot0 = np.nan_to_num(tpot, nan=0.0)
    ratio = np.where(
        ok, np.maximum(ttft / (ttft_slo_ms / 1e3), tpot0 / (tpot_slo_ms / 1e3)), np.inf
    )
    k = min(max(math.ceil(target * n), 1), ratio.size)
    return SloOutcome(
        attainment=float(met.sum()) / n,
        ttft_mean_s=float(ttft[ok].mean()) if ok.any() else math.nan,
        tpot_mean_s=float(tpot[multi].mean()) if multi.any() else math.nan,
        throughput_tokens_per_s=float(out[ok].sum()) / makespan if makespan > 0 else 0.0,
        goodput_req_s=float(met.sum()) / makespan if makespan > 0 else 0.0,
        slo_ratio=float(np.partition(ratio, k - 1)[k - 1]) if ratio.size else math.inf,
    )


@dataclass
class PlanCapacity:
    plan: Plan
    base_rate: float  # the trace's own mean rate, requests/s
    scale: float  # 0 = the target is not met even at the lowest rate tried
    bounded: bool  # False: still met at the highest rate tried (the trace is too short)
    outcome: SloOutcome | None
    simulations: int
    cache: dict[float, SloOutcome] = field(default_factory=dict, repr=False)

    @property
    def max_rate(self) -> float:
        return self.scale * self.base_rate


class CapacitySearch:
    """Max sustainable rate per plan; caches every simulated (plan, scale)."""

    def __init__(
        self,
        model: ModelSpec,
        cluster: Cluster,
        workload: Workload,
        options: EngineOptions,
        ttft_slo_ms: float,
        tpot_slo_ms: float,
        attainment: float = 0.9,
        rel_tol: float = 0.02,
    ) -> None:
        if not (0.0 < attainment <= 1.0):
            raise ApexError(f"--attainment must be in (0, 1], got {attainment}")
        if not (0.0 < rel_tol < 1.0):
            raise ApexError(f"--rel-tol must be in (0, 1), got {rel_tol}")
        if workload.num_requests < 2 or float(workload.arrival[-1]) <= 0:
            raise ApexError(
                "capacity needs arrival times spread over time (a --trace-file whose requests do "
                "not all arrive at once, or synthetic requests)"
            )
        self.model, self.cluster, self.workload, self.options = model, cluster, workload, options
        self.ttft, self.tpot = ttft_slo_ms, tpot_slo_ms
        self.target, self.rel_tol = attainment, rel_tol
        self.base_rate = (workload.num_requests - 1) / float(workload.arrival[-1])
        # steady state: the offered load must last many request lifetimes; a request served at
        # the SLOs lives about TTFT + mean output x TPOT
        lifetime = ttft_slo_ms / 1e3 + float(workload.output.mean()) * tpot_slo_ms / 1e3
        self.horizon_s = HORIZON_LIFETIMES * lifetime
        self.hint = 1.0
        self.total_simulations = 0
        self.mean_output = float(workload.output.mean())
        self._workloads: dict[float, Workload] = {}
        self._answers: dict[tuple, list[tuple[float, float]]] = {}

    def _workload(self, scale: float) -> Workload:
        """The scaled workload, built once per scale and shared by every plan."""
        w = self._workloads.get(scale)
        if w is None:
            w = scaled(self.workload, scale, self.horizon_s, open_loop=True)
            put_bounded(self._workloads, scale, w, MAX_CACHED_WORKLOADS)
        return w

    def _eval(self, plan: Plan, scale: float, cache: dict[float, SloOutcome]) -> SloOutcome:
        if scale not in cache:
            w = self._workload(scale)
            res = simulate_plan(self.model, self.cluster, plan, w, self.options)
            cache[scale] = slo_outcome(res, w, self.ttft, self.tpot, self.target)
            self.total_simulations += 1
        return cache[scale]

    def _kv_per_stream(self, plan: Plan) -> float:
        """KV cache blocks of one stream (a pipeline engine of one DP replica)."""
        o = self.options
        mem = o.memory(self.model, plan, self.cluster, o.budget(self.workload))
        return mem.kv_blocks_per_replica / plan.pp

    def _saturation(self, o: SloOutcome) -> float | None:
        """The scale whose offered token rate equals the rate this overloaded run delivered."""
        per_scale = self.base_rate * self.mean_output  # offered tokens/s at scale 1
        if o.slo_ratio < 2.0 or not o.throughput_tokens_per_s > 0 or not per_scale > 0:
            return None  # not clearly overloaded: its token rate is the offered one
        return o.throughput_tokens_per_s / per_scale

    def _start(self, plan: Plan, kv: float) -> tuple[float, float]:
        """Start point and first step of the bracket: the answer of a plan with the same stage
        mapping, number of streams and KV cache per stream within SIBLING_KV_RATIO (one step of
        --rel-tol), else the previous plan's answer (a step of NEXT_PLAN_STEP; 2 at first)."""
        for kv_other, scale in self._answers.get(_stage_key(plan), []):
            if scale > 0 and min(kv, kv_other) >= SIBLING_KV_RATIO * max(kv, kv_other):
                return scale, 1.0 + self.rel_tol
        return self.hint, (NEXT_PLAN_STEP if self.total_simulations else 2.0)

    def run(self, plan: Plan) -> PlanCapacity:
        """Capacity of one plan; its answer is the start point of the plans evaluated later."""
        cache: dict[float, SloOutcome] = {}

        def good(s: float) -> bool:
            return self._eval(plan, s, cache).attainment >= self.target

        def done(scale: float, bounded: bool) -> PlanCapacity:
            if scale > 0:
                self.hint = scale
            self._answers.setdefault(_stage_key(plan), []).append((kv, scale))
            out = cache.get(scale)
            return PlanCapacity(plan, self.base_rate, scale, bounded, out, len(cache), cache)

        kv = self._kv_per_stream(plan)
        s, step = self._start(plan, kv)
        s = min(max(s, MIN_SCALE), MAX_SCALE)
        tol = self.rel_tol
        # while bracketing, after a probe placed by a prediction that did not bracket, the
        # next one moves at least sqrt(step), so a poor prediction cannot make the steps creep
        trust = True
        if good(s):
            lo, hi = s, None
            while lo < MAX_SCALE:
                t = lo * step
                pred = _extrapolate(cache)
                if pred is not None:  # just beyond the predicted capacity, at most x step
                    t = min(max(pred * (1.0 + tol / 2), lo * (1.0 + tol)), t)
                    if not trust:
                        t = max(t, lo * math.sqrt(step))
                t = min(t, MAX_SCALE)
                if not good(t):
                    hi = t
                    break
                lo, step, trust = t, min(step * step, 2.0), pred is None
            if hi is None:
                return done(lo, False)
        else:
            if s <= MIN_SCALE or not good(MIN_SCALE):
                return done(0.0, True)  # the SLOs are missed even with requests far apart
            lo, hi = None, s
            while lo is None:
                t = max(hi / step, MIN_SCALE)
                pred = _extrapolate_down(cache)
                if pred is not None:  # just below the predicted capacity, at most / 8
                    t = max(min(pred / (1.0 + tol / 2), hi / (1.0 + tol)), hi / 8.0, MIN_SCALE)
                    if not trust:
                        t = max(min(t, hi / math.sqrt(step)), MIN_SCALE)
                # an overloaded run delivers the plan's saturated token rate: no higher rate
                # can be sustained, so the next probe is at most just below it
                sat = self._saturation(cache[hi])
                if sat is not None and MIN_SCALE < sat / (1.0 + tol / 2) < t:
                    t = sat / (1.0 + tol / 2)
                if good(t):
                    lo = t
                else:
                    hi, step, trust = t, min(step * step, 2.0), pred is None
        # narrow [lo, hi]: probe just past the root of the secant of 1/slo_ratio (linear in
        # the rate while TPOT grows with the batch), alternately on either side of it; when two
        # probes in a row have not halved the bracket, the next one bisects it
        widths = [math.log(hi / lo)]
        last_good = False
        while hi / lo > 1.0 + tol:
            t = math.sqrt(lo * hi)
            stalled = len(widths) >= 3 and widths[-1] > 0.5 * widths[-3]
            pred = None if stalled else _secant(cache, lo, hi)
            if pred is not None:
                t = pred * (1.0 + tol / 2) if last_good else pred / (1.0 + tol / 2)
                t = min(max(t, lo * (1.0 + tol / 4)), hi / (1.0 + tol / 4))
            last_good = good(t)
            if last_good:
                lo = t
            else:
                hi = t
            widths = [] if stalled else widths
            widths.append(math.log(hi / lo))
        return done(lo, True)


def _y(o: SloOutcome) -> float:
    """1 / slo_ratio: falls roughly linearly with the rate, 1 at the capacity, 0 if unserved."""
    return 0.0 if not o.slo_ratio > 0 else 1.0 / o.slo_ratio


def _secant(cache: dict[float, SloOutcome], lo: float, hi: float) -> float | None:
    """Where the line through (lo, y(lo)) and (hi, y(hi)) reaches y = 1, if inside (lo, hi)."""
    y_lo, y_hi = _y(cache[lo]), _y(cache[hi])
    if not (y_lo >= 1.0 > y_hi) or not math.isfinite(y_lo):
        return None
    t = lo + (y_lo - 1.0) * (hi - lo) / (y_lo - y_hi)
    return t if lo < t < hi else None


def _extrapolate_down(cache: dict[float, SloOutcome]) -> float | None:
    """From the two lowest rates that missed the target (and served requests): where
    y = 1 / slo_ratio, extended linearly to lower rates, reaches 1."""
    bad = sorted(x for x, o in cache.items() if 0.5 < _y(o) < 1.0)  # not yet queueing up
    if len(bad) < 2:
        return None
    s1, s2 = bad[:2]
    y1, y2 = _y(cache[s1]), _y(cache[s2])
    if not y2 < y1:
        return None
    return s1 + (1.0 - y1) * (s2 - s1) / (y2 - y1)


def _extrapolate(cache: dict[float, SloOutcome]) -> float | None:
    """From the two highest rates that met the target: where y = 1 / slo_ratio, extended
    linearly, reaches 1 (None when it does not fall with the rate)."""
    good = sorted(x for x, o in cache.items() if math.isfinite(_y(o)) and _y(o) >= 1.0)
    if len(good) < 2:
        return None
    (s1, s2) = good[-2:]
    y1, y2 = _y(cache[s1]), _y(cache[s2])
    if not y2 < y1:
        return None
    return s2 + (y2 - 1.0) * (s2 - s1) / (y1 - y2)


def _stage_key(plan: Plan) -> tuple:
    """Plans with equal keys differ only in how DP and PP split the same number of streams."""
    mapping = plan.label.split(" ", 2)[2:]  # the label without DPn PPn
    dtypes = (plan.weight_dtype, plan.activation_dtype, plan.kv_dtype)
    return (tuple(mapping), dtypes, plan.dp * plan.pp)


def format_table(caps: list[PlanCapacity], target: float) -> str:
    from apex_fast.report.text import table

    rows = []
    for c in caps:
        o = c.outcome
        if c.scale == 0.0:
            rate = f"< {c.base_rate / 2**MAX_SCALE_STEPS:.3g}"
        else:
            rate = ("" if c.bounded else ">= ") + f"{c.max_rate:.3f}"
        rows.append(
            [
                c.plan.label,
                rate,
                f"{c.scale:.3g}x" if c.scale else "-",
                f"{100 * o.attainment:.1f}" if o else "-",
                f"{o.goodput_req_s:.3f}" if o else "-",
                f"{o.ttft_mean_s * 1e3:.1f}" if o else "-",
                f"{o.tpot_mean_s * 1e3:.2f}" if o else "-",
                f"{o.throughput_tokens_per_s:.0f}" if o else "-",
                str(c.simulations),
            ]
        )
    return table(
        [
            "Plan",
            "Max rate (req/s)",
            "x trace",
            f"SLOs met (%, target {100 * target:g})",
            "Goodput (req/s)",
            "TTFT (ms)",
            "TPOT (ms)",
            "Tokens/s",
            "Sims",
        ],
        rows,
    )
