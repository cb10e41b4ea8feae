"""Why no plan of a search is feasible, in one line the user can act on.

The words and the KV numbers come from apex_fast/sim/rejection.py, the one place that derives
a stream's KV capacity and explains rejections (also used by sim/engine.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from apex_fast.dtypes import DTYPE_BYTES
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.memory import GIB, USABLE_FRACTION, MemoryReport
from apex_fast.plans.plan import Plan
from apex_fast.sim.engine import EngineOptions, PlanResult
from apex_fast.sim.rejection import (
    over_budget_reason,
    over_capacity_reason,
    stream_kv_bytes,
    stream_kv_capacity,
)
from apex_fast.workload.types import Workload

MAX_HINT_NODES = 4096  # the smallest-cluster hint looks at clusters of up to this many nodes
MAX_HINT_SIZES = 400  # ... and at most this many cluster sizes (docs/limits.md)


@dataclass(frozen=True)
class _Probe:
    """What the hint needs to try plans of other clusters of the same GPU type."""

    model: ModelSpec
    options: EngineOptions
    dtypes: tuple[str, str, str]
    budget: int

    def plans(self, c: Cluster, pins: Pins | None) -> list[Plan]:
        try:
            return enumerate_plans(
                self.model, c, pins, *self.dtypes, capacity_factor=self.options.capacity_factor
            )[0]
        except ApexError:
            return []

    def capacity(self, c: Cluster, plan: Plan) -> tuple[int, MemoryReport]:
        """KV tokens one stream of `plan` gives a single request (0 = memory does not fit)."""
        o = self.options
        mem = o.memory(self.model, plan, c, self.budget)
        return (stream_kv_capacity(mem, plan.pp, o) if mem.fits else 0), mem


def no_plan_message(
    model: ModelSpec,
    cluster: Cluster,
    infeasible: list[tuple[str, str]],
    weight: str,
    *,
    workload: Workload | None = None,
    options: EngineOptions | None = None,
    dtypes: tuple[str, str, str] | None = None,
    pins: Pins | None = None,
    results: list[PlanResult] | None = None,
) -> str:
    """One line: why no plan fits, how much memory the model needs (weights, activations, runtime
    and the KV cache of the longest request) and the smallest cluster of the same GPU type (and
    node size) on which some plan holds it; or which requests no plan can hold. `results`: the
    search's simulated plans of this cluster (else they are enumerated again)."""
    dev = cluster.device
    head = f"no plan of {model.name} fits {cluster.num_gpus} x {dev.name}"
    here = "; ".join(f"{lbl}: {why}" for lbl, why in infeasible[:2])
    here = f" (here: {here})" if here else ""
    weights = model.params_total() * DTYPE_BYTES[weight]
    if workload is None or options is None:
        return f"{head}: its weights alone need {weights / GIB:.1f} GiB ({weight}){here}"
    budget = options.budget(workload)
    if not options.chunked_prefill and int(workload.prompt.max()) > budget:
        return f"{head}: {over_budget_reason(workload, budget)}"
    probe = _Probe(model, options, dtypes or (weight, "half", "half"), budget)
    longest = int((workload.prompt + workload.output).max())  # KV by a request's last token
    # requests that no plan of this cluster can hold, however it is parallelised
    if results is None:
        caps = [(probe.capacity(cluster, p)[0], p.label) for p in probe.plans(cluster, pins)]
    else:
        caps = [
            (stream_kv_capacity(r.memory, r.plan.pp, options) if r.memory.fits else 0, r.plan.label)
            for r in results
        ]
    best_here = max(caps, default=(0, ""))
    too_long = ""
    if best_here[0] > 0 and longest > best_here[0]:
        too_long = over_capacity_reason(workload, *best_here)
    # smallest cluster of this GPU type and node size on which a plan holds the longest request
    usable = dev.hbm_gb * GIB * USABLE_FRACTION * options.gpu_memory_utilization
    gpn = cluster.gpus_per_node
    lo = max(1, math.ceil(weights / usable))
    sizes = [g for g in range(lo, gpn + 1)] + [
        k * gpn for k in range(max(2, math.ceil(lo / gpn)), MAX_HINT_NODES + 1)
    ]
    if not sizes or lo > sizes[-1]:
        return (
            f"{head}: its weights alone are {weights / GIB:,.1f} GiB ({weight}), more than "
            f"{MAX_HINT_NODES * gpn:,} {dev.name} GPUs ({usable / GIB:.1f} GiB usable each; the "
            f"largest cluster considered) can hold{here}"
        )
    tried = [x for x in sizes if x >= lo][:MAX_HINT_SIZES]
    found = _smallest_cluster(probe, cluster, tried, longest)
    if found is None:
        where = f"no {dev.name} cluster of up to {tried[-1]} GPUs holds it"
    else:
        g, where = found
        pinned = pins is not None and any(
            v is not None for v in (pins.dp, pins.pp, pins.tp, pins.ep)
        )
        if g <= cluster.num_gpus and pinned:
            where += ", without the --dp/--pp/--tp/--ep pins"
    if too_long:
        return f"{head}: {too_long}; {where}"
    return (
        f"{head} ({usable / GIB:.1f} GiB usable per GPU at --gpu-memory-utilization "
        f"{options.gpu_memory_utilization:g}): its weights alone are {weights / GIB:.1f} GiB "
        f"({weight}); {where}{here}"
    )


def _smallest_cluster(
    probe: _Probe, cluster: Cluster, sizes: list[int], longest: int
) -> tuple[int, str] | None:
    """The first cluster size (GPUs) on which a plan's stream holds the longest request, and
    the words that say so with the memory one replica needs; None if none does."""
    dev, gpn = cluster.device, cluster.gpus_per_node
    for g in sizes:
        c = cluster if g == cluster.num_gpus else Cluster(dev, max(1, g // gpn), min(g, gpn))
        for pl in probe.plans(c, None):
            cap_tok, mem = probe.capacity(c, pl)
            if cap_tok >= longest:
                kv_dev = stream_kv_bytes(longest, pl.pp, probe.options, mem.kv_bytes_per_token)
                per_dev = mem.weights + mem.activation + mem.runtime + kv_dev
                devs = max(1, g // pl.dp)
                shape = (
                    f"{c.num_nodes} nodes x {c.gpus_per_node}, " if c.num_nodes > 1 < gpn else ""
                )
                return g, (
                    f"one replica needs about {per_dev * devs / GIB:.1f} GiB ({per_dev / GIB:.1f} "
                    f"GiB on each of its {devs} GPUs: weights, activations, runtime and KV cache "
                    f"for the longest request of {longest} tokens); the smallest {dev.name} "
                    f"cluster that holds it is {g} GPUs ({shape}plan {pl.label})"
                )
    return None
