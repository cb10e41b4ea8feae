"""`plan --mode disagg|both`: the disaggregated search, its rating and the comparison with the
aggregated search."""

from __future__ import annotations

import math
from dataclasses import dataclass

from apex_fast.disagg.kv_transfer import KV_TRANSFER_LATENCY_S
from apex_fast.disagg.rating import RatedAgg, RatedDisagg, rate_agg, rate_disagg
from apex_fast.disagg.search import DisaggSearch, search_disagg
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.sim.engine import EngineOptions
from apex_fast.workload import Workload

MODES = ("agg", "disagg", "both")


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
