"""Prefill and decode pools: instance sizes and plans, the requests each pool sees, and one
simulation per pool (all instances of a pool as the data-parallel copies of one plan)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, divisors, enumerate_plans
from apex_fast.plans.plan import Plan
from apex_fast.sim import records
from apex_fast.sim.engine import CompiledCosts, EngineOptions, PlanResult, simulate_plan
from apex_fast.workload import Workload


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
        mem = opts.memory(model, p, cluster, budget)
        if mem.fits:
            out.append(p)
    return out
