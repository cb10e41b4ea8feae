"""One xPyD deployment: prefill pool, KV transfer, decode pool, and its metrics."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from apex_fast.disagg.kv_transfer import (
    KV_TRANSFER_LATENCY_S,
    KVLink,
    kv_bytes_per_token,
    kv_link,
    transfer_time,
)
from apex_fast.disagg.pools import PoolConfig, pool_busy, request_times, run_decode, run_prefill
from apex_fast.hardware.cluster import Cluster
from apex_fast.metrics.latency import meets_slo, request_latencies
from apex_fast.models.spec import ModelSpec
from apex_fast.sim.engine import EngineOptions, PlanResult
from apex_fast.workload import Workload


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
    out = workload.output
    ok, ttft_all, tpot_all, lat_all = request_latencies(workload.arrival, first, fin, out)
    ttft_met, tpot_met = (m[ok] for m in meets_slo(ttft_all, tpot_all, ttft_slo_ms, tpot_slo_ms))
    ttft, lat = ttft_all[ok], lat_all[ok]
    tpot = np.nan_to_num(tpot_all, nan=0.0)[ok]  # a one-token request: 0
    makespan = float(fin[ok].max()) if ok.any() else math.inf
    meet = ttft_met & tpot_met
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
        slo_ttft_pct=100.0 * float(np.mean(ttft_met)),
        slo_tpot_pct=100.0 * float(np.mean(tpot_met)),
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
        prefill_mean_s=float(np.mean(prefill_done - workload.arrival)),
        preemptions=int(sum(int(s.preemptions.sum()) for s in decode_res.streams)),
    )


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
