"""Replay one measured run in the simulator, fast enough to refit the host parameters.

`prepare` builds the run's plan, memory and GPU cost tables once; `predict` then runs the
scheduler kernel with any host parameters (they only change scalar step costs), so a fit over
the runs costs one kernel run per run per evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.costs import CompiledCosts
from apex_fast.sim.engine import EngineOptions, PlanResult, simulate_plan
from apex_fast.sim.step_time import HostParams, host_params
from apex_fast.sim.stream import SchedulerConfig, run_stream
from apex_fast.validation.runs import Run


@dataclass
class Prepared:
    run: Run
    result: PlanResult
    compiled: CompiledCosts
    cfg: SchedulerConfig


def engine_options(run: Run, async_output: bool = False) -> EngineOptions:
    """The simulator settings of a measured server."""
    return EngineOptions(
        block_size=run.block_size,
        max_num_seqs=run.max_num_seqs,
        max_num_batched_tokens=run.budget,
        chunked_prefill=run.chunked,
        gpu_memory_utilization=run.gpu_memory_utilization,
        custom_all_reduce=run.custom_all_reduce,
        async_output=async_output,
        host=host_params(run.engine),
        frontend_in_process=run.frontend_in_process,
    )


def prepare(run: Run, async_output: bool = False) -> Prepared:
    model = load_model(run.model)
    cluster = Cluster(get_device(run.gpu), 1, run.tp)
    plans, _ = enumerate_plans(
        model,
        cluster,
        Pins(dp=1, pp=1, tp=run.tp),
        weight=run.weight_dtype,
        act=run.activation_dtype,
        kv=run.kv_dtype,
    )
    # the Megatron plan: attention and FFN both split over the TP group
    plan = next(
        p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1 and (p.ep or 1) == 1
    )
    opts = engine_options(run, async_output)
    res = simulate_plan(model, cluster, plan, run.workload, opts)
    if not res.feasible or res.compiled is None:
        raise ApexError(f"{run.label}: the simulated server is infeasible: {res.reason}")
    assert res.scheduler is not None
    return Prepared(run, res, res.compiled, res.scheduler)


def predict(prep: Prepared, host: HostParams | None = None) -> dict[str, float]:
    """Mean TTFT, token-weighted ITL and mean latency (seconds) of the run with `host`."""
    wl = prep.run.workload
    if host is None:
        s = prep.result.streams[0]
    else:
        costs = prep.compiled.with_host(host)
        s = run_stream(wl.arrival, wl.prompt, wl.output, prep.cfg, costs, wl.prefix)
    ttft = s.first_token - wl.arrival
    gaps = np.sum(wl.output - 1)
    return {
        "ttft_s": float(np.mean(ttft)),
        "itl_s": float(np.sum(s.finish - s.first_token) / gaps) if gaps > 0 else 0.0,
        "latency_s": float(np.mean(s.finish - wl.arrival)),
        "preemptions": int(np.sum(s.preemptions)),
        "kv_tokens": int(prep.result.memory.kv_tokens),
    }
