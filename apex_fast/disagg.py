"""Disaggregated prefill/decode deployments (xPyD): model, simulation and search over splits.

A request's prompt is processed by one of x prefill instances (a prefill-only stream: the request
with a single output token through the usual simulator); its KV cache then crosses the link to
one of y decode instances, which starts it when the KV has arrived. As in vLLM's NIXL connector,
the decode instance receives the KV of all prompt tokens but the last and computes that one
token itself, sampling the first output token: on the decode side a request is a 1-token prompt
with `prompt - 1` KV tokens already present (the kernel's `prefix`). That one query reads its
context like a decode, so its attention is priced as decode attention; the step that admits it
is a prefill-type step for the engine and keeps the engine's eager-mode rule, as in an
aggregated run.

KV transfer: bytes = the prompt's KV (all layers, the KV dtype); the prefill instance's GPUs
send their shards in parallel (min(prefill, decode instance GPUs) lanes), over NVLink when the
whole deployment sits in one NVLink domain, else over the inter-node network, plus a fixed
latency per transfer. Routing is round-robin in both pools (in arrival order for prefill, in
KV-arrival order for decode). Ranking: goodput per GPU, DistServe's measure (requests meeting
both SLOs per second per GPU, here at the trace's own rate). docs/disaggregation.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from apex_fast.dtypes import DTYPE_BYTES
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, divisors, enumerate_plans
from apex_fast.plans.memory import memory_report
from apex_fast.plans.plan import Plan
from apex_fast.sim import records
from apex_fast.sim.engine import CompiledCosts, EngineOptions, PlanResult, simulate_plan
from apex_fast.sim.workload import Workload

MODES = ("agg", "disagg", "both")

# Fixed cost of one KV transfer (connection lookup, descriptor exchange / RDMA handshake and the
# completion notification), independent of its size. ASSUMPTION, not a measurement: 1 ms is
# the order of the per-request overhead the vLLM and Dynamo disaggregation connectors add on top
# of the wire time (docs/disaggregation.md discusses the range; --kv-transfer-latency sets it).
KV_TRANSFER_LATENCY_S = 1e-3


@dataclass(frozen=True)
class KVLink:
    """How a prefill instance's KV reaches a decode instance."""

    gbps_per_lane: float  # GB/s per GPU per direction
    lanes: int  # GPUs sending shards in parallel
    latency_s: float
    kind: str  # "NVLink" or "network"

    @property
    def gbps(self) -> float:
        return self.gbps_per_lane * self.lanes


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str) -> float:
    """Bytes of KV cache of one token over all layers (what a transfer moves per prompt token)."""
    return float(model.kv_bytes_per_token(DTYPE_BYTES[kv_dtype]))


def transfer_time(tokens: np.ndarray, bytes_per_token: float, link: KVLink) -> np.ndarray:
    """Seconds to move the KV of `tokens` prompt tokens: latency + bytes / bandwidth."""
    nbytes = np.asarray(tokens, np.float64) * bytes_per_token
    return link.latency_s + nbytes / (link.gbps * 1e9)


def kv_link(
    cluster: Cluster, prefill_gpus: int, decode_gpus: int, latency_s: float, total_gpus: int
) -> KVLink:
    """NVLink inside one NVLink domain, else the inter-node network (per-GPU NICs)."""
    lanes = max(1, min(prefill_gpus, decode_gpus))
    dev = cluster.device
    if total_gpus <= cluster.scaleup_gpus:
        return KVLink(
            dev.peer_gbps(min(total_gpus, cluster.scaleup_gpus)), lanes, latency_s, "NVLink"
        )
    return KVLink(dev.inter_node_gbps, lanes, latency_s, "network")


def pool_cluster(cluster: Cluster, gpus: int) -> Cluster | None:
    """The cluster one instance of `gpus` GPUs runs on (a part of a node, or whole nodes)."""
    gpn = cluster.gpus_per_node
    if gpus <= gpn:
        return Cluster(cluster.device, 1, gpus) if gpn % gpus == 0 else None
    if gpus % gpn == 0 and gpus // gpn <= cluster.num_nodes:
        return Cluster(cluster.device, gpus // gpn, gpn)
    return None


def instance_sizes(cluster: Cluster) -> list[int]:
    """GPUs per instance that pack into the cluster's nodes, leaving room for the other pool."""
    n = cluster.num_gpus
    sizes = [d for d in divisors(cluster.gpus_per_node)]
    sizes += [k * cluster.gpus_per_node for k in range(2, cluster.num_nodes)]
    return sorted(s for s in set(sizes) if s < n)


def decode_pool_costs(compiled: CompiledCosts) -> CompiledCosts:
    """A decode instance's steps: a new request's single query token reads its context like a
    decode (attention priced per context token, not per causal pair of a prefill)."""
    c = compiled.costs
    costs = dataclasses.replace(c, c_attn=c.c_ctx)
    return dataclasses.replace(compiled, costs=costs)


def prefill_workload(workload: Workload) -> Workload:
    """Prefill-only requests: the prompt and one sampled token (discarded by the decode side)."""
    return dataclasses.replace(
        workload, output=np.ones_like(workload.output), name=f"{workload.name} (prefill)"
    )


def decode_workload(workload: Workload, kv_ready: np.ndarray) -> tuple[Workload, np.ndarray]:
    """Decode-side requests sorted by KV arrival, and the original ids in that order."""
    order = np.lexsort((np.arange(kv_ready.size), kv_ready))
    prefix = workload.prompt[order] - 1
    if workload.prefix is not None:
        prefix = prefix + workload.prefix[order]
    wl = Workload(
        arrival=kv_ready[order],
        prompt=np.ones(order.size, np.int64),
        output=workload.output[order],
        name=f"{workload.name} (decode)",
        prefix=prefix.astype(np.int64),
    )
    return wl, order


def request_times(res: PlanResult, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(first token, finish) per request id of a simulated workload (-1: never served)."""
    first = np.full(n, -1.0)
    fin = np.full(n, -1.0)
    for ids, s in zip(res.stream_index, res.streams, strict=True):
        first[ids] = s.first_token
        fin[ids] = s.finish
    return first, fin


def pool_busy(res: PlanResult) -> np.ndarray:
    """Busy seconds of each stream of a pool."""
    out = []
    for s in res.streams:
        cnt = s.rec_count.astype(np.float64)
        out.append(float(np.sum(records.run_duration(cnt, s.rec_d0, s.rec_dd))))
    return np.array(out)


@dataclass
class PoolConfig:
    plan: Plan  # one instance (dp = 1)
    instances: int
    gpus_per_instance: int

    @property
    def gpus(self) -> int:
        return self.instances * self.gpus_per_instance

    @property
    def label(self) -> str:
        return f"{self.instances} x ({self.plan.label.replace('DP1 ', '')})"


@dataclass
class DisaggMetrics:
    ttft_mean_s: float
    ttft_p95_s: float
    tpot_mean_s: float
    latency_mean_s: float
    latency_p95_s: float
    throughput_tokens_per_s: float
    throughput_requests_per_s: float
    makespan_s: float
    slo_ttft_pct: float
    slo_tpot_pct: float
    slo_both_pct: float
    goodput_rps: float  # requests meeting both SLOs per second
    goodput_per_gpu: float
    gpus: int
    prefill_util_pct: float  # mean busy share of the prefill instances over the makespan
    decode_util_pct: float
    transfer_mean_s: float
    transfer_p95_s: float
    transfer_max_s: float
    transfer_total_gb: float
    prefill_mean_s: float  # arrival -> prefill done (queueing + prefill)
    preemptions: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class DisaggCandidate:
    prefill: PoolConfig
    decode: PoolConfig
    link: KVLink
    metrics: DisaggMetrics
    prefill_result: PlanResult = field(repr=False)
    decode_result: PlanResult = field(repr=False)

    @property
    def split(self) -> str:
        return f"{self.prefill.instances}P{self.decode.instances}D"

    @property
    def label(self) -> str:
        return f"{self.split}: prefill {self.prefill.label}, decode {self.decode.label}"


def deployment_metrics(
    workload: Workload,
    prefill_res: PlanResult,
    decode_res: PlanResult,
    order: np.ndarray,
    transfer: np.ndarray,
    prefill_done: np.ndarray,
    gpus: int,
    bytes_per_token: float,
    ttft_slo_ms: float,
    tpot_slo_ms: float,
) -> DisaggMetrics:
    n = workload.num_requests
    d_first, d_fin = request_times(decode_res, n)
    first = np.full(n, -1.0)
    fin = np.full(n, -1.0)
    first[order] = d_first
    fin[order] = d_fin
    ok = fin >= 0
    arr = workload.arrival
    out = workload.output
    ttft = (first - arr)[ok]
    lat = (fin - arr)[ok]
    multi = ok & (out > 1)
    tpot_all = np.zeros(n)
    tpot_all[multi] = (fin - first)[multi] / (out[multi] - 1)
    tpot = tpot_all[ok]
    makespan = float(fin[ok].max()) if ok.any() else math.inf
    meet = (ttft <= ttft_slo_ms / 1e3) & (tpot <= tpot_slo_ms / 1e3)
    good = float(meet.sum()) / makespan if makespan > 0 else 0.0
    pb = pool_busy(prefill_res)
    db = pool_busy(decode_res)
    pp = max(1, prefill_res.plan.pp)
    dp_ = max(1, decode_res.plan.pp)
    return DisaggMetrics(
        ttft_mean_s=float(ttft.mean()),
        ttft_p95_s=float(np.percentile(ttft, 95)),
        tpot_mean_s=float(tpot[out[ok] > 1].mean()) if np.any(out[ok] > 1) else 0.0,
        latency_mean_s=float(lat.mean()),
        latency_p95_s=float(np.percentile(lat, 95)),
        throughput_tokens_per_s=float(out[ok].sum()) / makespan,
        throughput_requests_per_s=float(ok.sum()) / makespan,
        makespan_s=makespan,
        slo_ttft_pct=100.0 * float(np.mean(ttft <= ttft_slo_ms / 1e3)),
        slo_tpot_pct=100.0 * float(np.mean(tpot <= tpot_slo_ms / 1e3)),
        slo_both_pct=100.0 * float(meet.sum()) / n,
        goodput_rps=good,
        goodput_per_gpu=good / gpus,
        gpus=gpus,
        # a pipeline's streams share the instance's GPUs: busy per instance = streams' sum / S
        prefill_util_pct=100.0 * float(pb.sum() / pp / prefill_res.plan.dp) / makespan,
        decode_util_pct=100.0 * float(db.sum() / dp_ / decode_res.plan.dp) / makespan,
        transfer_mean_s=float(transfer.mean()),
        transfer_p95_s=float(np.percentile(transfer, 95)),
        transfer_max_s=float(transfer.max()),
        transfer_total_gb=float(np.sum(workload.prompt) * bytes_per_token / 1e9),
        prefill_mean_s=float(np.mean(prefill_done - arr)),
        preemptions=int(sum(int(s.preemptions.sum()) for s in decode_res.streams)),
    )


def run_prefill(
    model: ModelSpec, pool: PoolConfig, cluster: Cluster, workload: Workload, opts: EngineOptions
) -> tuple[PlanResult, np.ndarray]:
    """Simulate the prefill pool; returns the result and each request's prefill finish time."""
    p_opts = dataclasses.replace(opts, speculative=None)
    plan = dataclasses.replace(pool.plan, dp=pool.instances)
    pc = pool_cluster(cluster, pool.gpus_per_instance) or cluster
    res = simulate_plan(model, pc, plan, prefill_workload(workload), p_opts)
    if not res.feasible:
        return res, np.empty(0)
    _, fin = request_times(res, workload.num_requests)
    return res, fin


def run_decode(
    model: ModelSpec,
    pool: PoolConfig,
    cluster: Cluster,
    workload: Workload,
    opts: EngineOptions,
    kv_ready: np.ndarray,
) -> tuple[PlanResult, np.ndarray]:
    """Simulate the decode pool for requests whose KV is ready at `kv_ready`."""
    d_opts = dataclasses.replace(
        opts, chunked_prefill=True, engine_chunked_prefill=None, decode_pool=True
    )
    wl, order = decode_workload(workload, kv_ready)
    plan = dataclasses.replace(pool.plan, dp=pool.instances)
    pc = pool_cluster(cluster, pool.gpus_per_instance) or cluster
    return simulate_plan(model, pc, plan, wl, d_opts), order


def evaluate(
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    opts: EngineOptions,
    prefill: PoolConfig,
    decode: PoolConfig,
    ttft_slo_ms: float,
    tpot_slo_ms: float,
    latency_s: float = KV_TRANSFER_LATENCY_S,
    link: KVLink | None = None,
    prefill_run: tuple[PlanResult, np.ndarray] | None = None,
) -> DisaggCandidate | str:
    """Simulate one xPyD deployment; a reason string when it is infeasible."""
    p_res, p_fin = prefill_run or run_prefill(model, prefill, cluster, workload, opts)
    if not p_res.feasible:
        return f"prefill {prefill.label}: {p_res.reason}"
    bpt = kv_bytes_per_token(model, prefill.plan.kv_dtype)
    if link is None:
        link = kv_link(
            cluster,
            prefill.gpus_per_instance,
            decode.gpus_per_instance,
            latency_s,
            prefill.gpus + decode.gpus,
        )
    # the decode side needs the KV of all prompt tokens but the last
    xfer = transfer_time(np.maximum(workload.prompt - 1, 0), bpt, link)
    ready = p_fin + xfer
    d_res, order = run_decode(model, decode, cluster, workload, opts, ready)
    if not d_res.feasible:
        return f"decode {decode.label}: {d_res.reason}"
    m = deployment_metrics(
        workload,
        p_res,
        d_res,
        order,
        xfer,
        p_fin,
        prefill.gpus + decode.gpus,
        bpt,
        ttft_slo_ms,
        tpot_slo_ms,
    )
    return DisaggCandidate(prefill, decode, link, m, p_res, d_res)


def goodput_key(m: DisaggMetrics) -> tuple[float, float, float]:
    return (-m.goodput_per_gpu, m.latency_mean_s, m.ttft_mean_s)


@dataclass
class DisaggSearch:
    ranked: list[DisaggCandidate]
    infeasible: list[tuple[str, str]]
    num_candidates: int
    latency_s: float


def instance_plans(
    model: ModelSpec,
    cluster: Cluster,
    size: int,
    opts: EngineOptions,
    budget: int,
    dtypes: tuple[str, str, str],
) -> list[Plan]:
    """Single-instance plans of `size` GPUs whose weights and some KV fit."""
    pc = pool_cluster(cluster, size)
    if pc is None:
        return []
    try:
        plans, _ = enumerate_plans(
            model, pc, Pins(dp=1), *dtypes, capacity_factor=opts.capacity_factor
        )
    except ApexError:
        return []
    out = []
    for p in plans:
        mem = memory_report(
            model,
            p,
            cluster.device.hbm_gb,
            opts.gpu_memory_utilization,
            budget,
            opts.max_num_seqs,
            opts.block_size,
        )
        if mem.fits:
            out.append(p)
    return out


def search_disagg(
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    opts: EngineOptions,
    ttft_slo_ms: float,
    tpot_slo_ms: float,
    dtypes: tuple[str, str, str] = ("half", "half", "half"),
    latency_s: float = KV_TRANSFER_LATENCY_S,
    progress: Callable[[int, int, str], None] | None = None,
) -> DisaggSearch:
    """Enumerate xPyD splits and per-pool plans; rank by goodput per GPU.

    For each prefill pool (instance plan x count) the prefill simulation runs once; per prefill
    pool size the pool with the lowest mean prefill time is kept, and every decode instance
    plan is tried with as many instances as the remaining GPUs hold."""
    n = cluster.num_gpus
    if n < 2:
        raise ApexError("a disaggregated deployment needs at least 2 GPUs")
    budget = opts.budget(workload)
    sizes = instance_sizes(cluster)
    plans = {s: instance_plans(model, cluster, s, opts, budget, dtypes) for s in sizes}
    sizes = [s for s in sizes if plans[s]]
    if not sizes:
        raise ApexError(
            f"no instance of {model.name} smaller than the whole cluster fits "
            f"{cluster.device.name} memory: a disaggregated deployment needs two pools"
        )
    smallest = min(sizes)
    infeasible: list[tuple[str, str]] = []
    # prefill pools
    best_prefill: dict[int, tuple[float, PoolConfig, tuple[PlanResult, np.ndarray]]] = {}
    jobs = [(s, p, x) for s in sizes for p in plans[s] for x in range(1, (n - smallest) // s + 1)]
    total = len(jobs)
    done = 0
    for s, p, x in jobs:
        pool = PoolConfig(p, x, s)
        run = run_prefill(model, pool, cluster, workload, opts)
        done += 1
        if progress:
            progress(done, total, f"prefill {pool.label}")
        if not run[0].feasible:
            infeasible.append((f"prefill {pool.label}", run[0].reason))
            continue
        score = float(np.mean(run[1] - workload.arrival))
        g = pool.gpus
        if g not in best_prefill or score < best_prefill[g][0]:
            best_prefill[g] = (score, pool, run)
    # decode pools against the best prefill pool of each size
    cands: list[DisaggCandidate] = []
    djobs = []
    for g, (_, ppool, run) in sorted(best_prefill.items()):
        rest = n - g
        for s in sizes:
            y = rest // s
            if y < 1:
                continue
            for p in plans[s]:
                djobs.append((ppool, run, PoolConfig(p, y, s)))
    total += len(djobs)
    for ppool, run, dpool in djobs:
        r = evaluate(
            model,
            cluster,
            workload,
            opts,
            ppool,
            dpool,
            ttft_slo_ms,
            tpot_slo_ms,
            latency_s=latency_s,
            prefill_run=run,
        )
        done += 1
        if progress:
            progress(done, total, f"decode {dpool.label}")
        if isinstance(r, str):
            infeasible.append((f"{ppool.label} + {dpool.label}", r))
        else:
            cands.append(r)
    if not cands:
        why = "; ".join(f"{a}: {b}" for a, b in infeasible[:2])
        raise ApexError(f"no disaggregated deployment of {model.name} is feasible ({why})")
    cands.sort(key=lambda c: goodput_key(c.metrics))
    return DisaggSearch(cands, infeasible, len(jobs) + len(djobs), latency_s)


# DistServe's goodput: the highest request rate at which at least this share of the requests
# meets both SLOs (Zhong et al., OSDI'24, Sec. 2.2 and Sec. 6.1: 90%)
SLO_ATTAINMENT_TARGET = 0.90
RATE_SCALES = (1 / 16, 256.0)  # range of arrival-rate multipliers searched
RATE_BISECTIONS = 4


def scaled_workload(workload: Workload, f: float) -> Workload:
    """The trace replayed `f` times faster (same requests, arrival times divided by f)."""
    return dataclasses.replace(workload, arrival=workload.arrival / f)


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
        return attainment(scaled_workload(workload, f)) >= SLO_ATTAINMENT_TARGET

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


@dataclass
class Deployment:
    """The outcome of `plan --mode disagg|both`."""

    mode: str
    model: ModelSpec
    cluster: Cluster
    workload: Workload
    options: EngineOptions
    ttft_slo_ms: float
    tpot_slo_ms: float
    disagg: DisaggSearch
    best_disagg: RatedDisagg
    best_agg: RatedAgg | None = None

    @property
    def winner(self) -> str:
        if self.best_agg is None:
            return "disagg"
        a, d = self.best_agg.max_rate_per_gpu, self.best_disagg.max_rate_per_gpu
        return "disagg" if d > a else "agg"


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
    # the best deployment of each pool split (prefill GPUs, decode GPUs), best splits first
    per_split: dict[tuple[int, int], DisaggCandidate] = {}
    for cand in ds.ranked:
        per_split.setdefault((cand.prefill.gpus, cand.decode.gpus), cand)
    for cand in list(per_split.values())[:GOODPUT_TOP]:

        def att(wl: Workload, c: DisaggCandidate = cand) -> float:
            r = evaluate(
                model,
                cluster,
                wl,
                opts,
                c.prefill,
                c.decode,
                ttft_slo_ms,
                tpot_slo_ms,
                link=c.link,
            )
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


def plan_deployment(
    mode: str,
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    opts: EngineOptions,
    ttft_slo_ms: float,
    tpot_slo_ms: float,
    dtypes: tuple[str, str, str],
    latency_ms: float | None = None,
    agg_search=None,
) -> Deployment:
    """`plan --mode disagg|both`: the disaggregated search and, with an aggregated search
    result, the comparison of the best of each by DistServe goodput per GPU."""
    if mode not in MODES:
        raise ApexError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if getattr(workload, "max_concurrency", 0):
        raise ApexError(
            f"--mode {mode}: --max-concurrency (a closed loop) is not modelled for "
            "disaggregated deployments; use --request-rate or a trace"
        )
    if model.arch != "decoder":
        raise ApexError(f"--mode {mode}: disaggregated serving is modelled for decoder models only")
    lat = KV_TRANSFER_LATENCY_S if latency_ms is None else latency_ms / 1e3
    if not (lat >= 0 and math.isfinite(lat)):
        raise ApexError(f"--kv-transfer-latency must be >= 0 ms, got {latency_ms}")
    opts.validate()
    ds = search_disagg(
        model, cluster, workload, opts, ttft_slo_ms, tpot_slo_ms, dtypes=dtypes, latency_s=lat
    )
    best_d = rate_disagg(model, cluster, workload, opts, ds, ttft_slo_ms, tpot_slo_ms)
    best_a = None if agg_search is None else rate_agg(agg_search, ttft_slo_ms, tpot_slo_ms)
    return Deployment(
        mode, model, cluster, workload, opts, ttft_slo_ms, tpot_slo_ms, ds, best_d, best_a
    )
