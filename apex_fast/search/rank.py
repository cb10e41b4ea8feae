"""Evaluate every candidate plan of a search and rank the feasible ones by an objective.

`search` enumerates the plans (apex_fast/plans/), has them simulated (execute.py: in this
process, a process pool or Ray), computes their metrics here in plan order, ranks them, and
explains an empty answer (diagnose.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.limits import check_step_tokens
from apex_fast.metrics.summary import PlanMetrics, compute_metrics
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.search.diagnose import no_plan_message
from apex_fast.search.execute import SimJob, simulate_plans
from apex_fast.sim.engine import EngineOptions, PlanResult
from apex_fast.workload.types import Workload

OBJECTIVES = ("latency", "throughput", "energy", "cost")


@dataclass(frozen=True)
class MetricOptions:
    request_percentiles: tuple[float, ...] = ()
    token_percentiles: tuple[float, ...] = ()
    ttft_slo_ms: float = math.inf  # inf = no SLO set
    tpot_slo_ms: float = math.inf


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
    encoder: SearchResult | None = None  # encoder-decoder models: the encoder's search

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


def check_capacity_factor(model: ModelSpec, cf: float) -> None:
    """The MoE capacity factor bounds the most loaded expert's tokens at cf x the mean share
    (n k / E); above E / k that bound exceeds every token of the step and means nothing."""
    if not model.is_moe or not (0.0 < cf < math.inf):
        return  # not positive: EngineOptions.validate says so
    top = model.num_experts / max(model.topk, 1)
    if cf > top:
        raise ApexError(
            f"--capacity-factor {cf:g} is above {top:g} (experts / top-k = "
            f"{model.num_experts} / {model.topk}), where the most loaded expert would get more "
            "than every token of a step; use a value in (0, "
            f"{top:g}] (Switch Transformer used 1.0-1.25, GShard 2.0)"
        )


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
    workers: int | None = None,
    ray_address: str | None = None,
) -> SearchResult:
    """Evaluate every candidate plan and rank the feasible ones.

    `workers`: None = automatic (a process pool over the usable cores once the remaining plans
    are projected to take more than a moment), 1 = in this process, N = a pool of N processes.
    `ray_address`: evaluate on a Ray cluster instead (`auto`, `local` or an address; needs the
    `ray` extra). Progress calls `progress(plans_done, plans_total, label)`."""
    if objective not in OBJECTIVES:
        raise ApexError(f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    options.validate()
    check_step_tokens(options.budget(workload), options.chunked_prefill)
    check_capacity_factor(model, options.capacity_factor)
    weight, act, kv = dtypes
    plans, skipped = enumerate_plans(
        model, cluster, pins, weight, act, kv, capacity_factor=options.capacity_factor
    )
    infeasible = list(skipped)
    evaluated: list[Evaluated] = []
    if progress:
        progress(0, len(plans), plans[0].label if plans else "done")

    def done(i: int, label: str) -> None:
        if progress:
            progress(i, len(plans), label)

    job = SimJob(model, cluster, workload, options)
    # workers (processes or Ray tasks) only simulate; the metrics (Polars) are computed here, in
    # plan order, so the result is the same whatever the number of workers
    metrics: dict[int, PlanMetrics] = {}

    def consume(i: int, res: PlanResult) -> None:
        # runs here as each result arrives, so metrics overlap the workers' simulations
        if res.feasible:
            metrics[i] = compute_metrics(
                res,
                workload,
                cluster,
                list(metric_options.request_percentiles),
                list(metric_options.token_percentiles),
                metric_options.ttft_slo_ms,
                metric_options.tpot_slo_ms,
                model=model,
            )

    results = simulate_plans(
        job, plans, workers=workers, ray_address=ray_address, on_done=done, consume=consume
    )
    for i, res in enumerate(results):
        if not res.feasible:
            infeasible.append((res.plan.label, res.reason))
            continue
        evaluated.append(Evaluated(res, metrics[i]))
    if progress:
        progress(len(plans), len(plans), "done")
    evaluated.sort(key=objective_key(objective))
    if not evaluated:
        raise ApexError(
            no_plan_message(
                model,
                cluster,
                infeasible,
                weight,
                workload=workload,
                options=options,
                dtypes=dtypes,
                pins=pins,
                results=results,
            )
        )
    return SearchResult(
        model, cluster, workload, options, objective, evaluated, infeasible, len(plans)
    )
