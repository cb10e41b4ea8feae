"""Evaluate every candidate plan and rank the feasible ones by an objective."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.metrics.summary import PlanMetrics, compute_metrics
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.memory import GIB
from apex_fast.sim.engine import EngineOptions, PlanResult, simulate_plan
from apex_fast.sim.workload import Workload

OBJECTIVES = ("latency", "throughput", "energy", "cost")


@dataclass(frozen=True)
class MetricOptions:
    request_percentiles: tuple[float, ...] = ()
    token_percentiles: tuple[float, ...] = ()
    ttft_slo_ms: float = 10.0
    tpot_slo_ms: float = 10.0


@dataclass
class Evaluated:
    result: PlanResult
    metrics: PlanMetrics | None

    @property
    def feasible(self) -> bool:
        return self.result.feasible and self.metrics is not None


@dataclass
class SearchResult:
    model: ModelSpec
    cluster: Cluster
    workload: Workload
    options: EngineOptions
    objective: str
    ranked: list[Evaluated]  # feasible, best first
    infeasible: list[tuple[str, str]] = field(default_factory=list)  # (plan label, reason)
    num_candidates: int = 0

    @property
    def best(self) -> Evaluated:
        return self.ranked[0]


def objective_key(objective: str) -> Callable[[Evaluated], tuple[float, ...]]:
    def key(e: Evaluated) -> tuple[float, ...]:
        m = e.metrics
        assert m is not None
        if objective == "latency":
            main = m.latency_mean_s
        elif objective == "throughput":
            main = -m.throughput_tokens_per_s
        elif objective == "energy":
            main = m.energy_kj
        elif objective == "cost":
            from apex_fast.metrics.energy import gpu_seconds_per_token

            main = gpu_seconds_per_token(m)  # $/token = $/GPU-hour x this / 3600
        else:
            raise ApexError(f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
        p = e.result.plan
        return (main if math.isfinite(main) else math.inf, m.makespan_s, p.dp, p.pp, p.tp, p.ep)

    return key


def search(
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    options: EngineOptions,
    metric_options: MetricOptions,
    pins: Pins | None = None,
    dtypes: tuple[str, str, str] = ("half", "half", "half"),
    objective: str = "latency",
    progress: Callable[[int, int, str], None] | None = None,
) -> SearchResult:
    if objective not in OBJECTIVES:
        raise ApexError(f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    options.validate()
    weight, act, kv = dtypes
    plans, skipped = enumerate_plans(model, cluster, pins, weight, act, kv)
    infeasible = list(skipped)
    evaluated: list[Evaluated] = []
    for i, plan in enumerate(plans):
        if progress:
            progress(i, len(plans), plan.label)
        res = simulate_plan(model, cluster, plan, workload, options)
        if not res.feasible:
            infeasible.append((plan.label, res.reason))
            continue
        met = compute_metrics(
            res,
            workload,
            cluster,
            list(metric_options.request_percentiles),
            list(metric_options.token_percentiles),
            metric_options.ttft_slo_ms,
            metric_options.tpot_slo_ms,
        )
        evaluated.append(Evaluated(res, met))
    if progress:
        progress(len(plans), len(plans), "done")
    evaluated.sort(key=objective_key(objective))
    if not evaluated:
        raise ApexError(no_plan_message(model, cluster, infeasible, weight))
    return SearchResult(
        model, cluster, workload, options, objective, evaluated, infeasible, len(plans)
    )


def no_plan_message(
    model: ModelSpec, cluster: Cluster, infeasible: list[tuple[str, str]], weight: str
) -> str:
    from apex_fast.dtypes import DTYPE_BYTES

    need = model.params_total() * DTYPE_BYTES[weight]
    per_gpu = cluster.device.hbm_gb * GIB * 0.9
    smallest = max(1, math.ceil(need / per_gpu))
    reasons = "; ".join(f"{lbl}: {why}" for lbl, why in infeasible[:3])
    return (
        f"no plan of {model.name} fits {cluster.num_gpus} x {cluster.device.name}: its weights "
        f"alone need {need / GIB:.1f} GiB ({weight}); at least {smallest} GPUs of this type would "
        f"be needed before KV cache and activations ({reasons})"
    )
