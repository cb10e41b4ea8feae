"""The search over xPyD splits and per-pool plans, ranked by goodput per GPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from apex_fast.disagg.evaluate import DisaggCandidate, DisaggMetrics, evaluate
from apex_fast.disagg.kv_transfer import KV_TRANSFER_LATENCY_S
from apex_fast.disagg.pools import PoolConfig, instance_plans, instance_sizes, run_prefill
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.sim.engine import EngineOptions, PlanResult
from apex_fast.workload import Workload


def goodput_key(m: DisaggMetrics) -> tuple[float, float, float]:
    return (-m.goodput_per_gpu, m.latency_mean_s, m.ttft_mean_s)


@dataclass
class DisaggSearch:
    ranked: list[DisaggCandidate]
    infeasible: list[tuple[str, str]]
    num_candidates: int
    latency_s: float


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
