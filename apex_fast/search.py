"""Evaluate every candidate plan and rank the feasible ones by an objective."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.limits import check_step_tokens
from apex_fast.metrics.summary import PlanMetrics, compute_metrics
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.memory import GIB, USABLE_FRACTION, copy_seq_blocks, memory_report
from apex_fast.plans.plan import Plan
from apex_fast.sim.engine import EngineOptions, PlanResult, simulate_plan
from apex_fast.sim.engine_params import WATERMARK_FRACTION
from apex_fast.sim.workload import Workload

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
            )
        )
    return SearchResult(
        model, cluster, workload, options, objective, evaluated, infeasible, len(plans)
    )


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
) -> str:
    """One line: why no plan fits, how much memory the model needs (weights, activations, runtime
    and the KV cache of the longest request) and the smallest cluster of the same GPU type (and
    node size) on which some plan holds it; or which requests no plan can hold."""
    from apex_fast.dtypes import DTYPE_BYTES

    dev = cluster.device
    head = f"no plan of {model.name} fits {cluster.num_gpus} x {dev.name}"
    here = "; ".join(f"{lbl}: {why}" for lbl, why in infeasible[:2])
    here = f" (here: {here})" if here else ""
    weights = model.params_total() * DTYPE_BYTES[weight]
    if workload is None or options is None:
        return f"{head}: its weights alone need {weights / GIB:.1f} GiB ({weight}){here}"
    dts = dtypes or (weight, "half", "half")
    bs = options.block_size
    budget = options.budget(workload)
    need_tok = workload.prompt + workload.output  # KV a request holds by its last token
    longest = int(need_tok.max())

    def number(ids: np.ndarray) -> str:
        shown = ", ".join(str(int(i)) for i in ids[:5]) + (" ..." if ids.size > 5 else "")
        return f"{ids.size} request(s) (#{shown}; numbered from 0 in arrival order)"

    if not options.chunked_prefill and int(workload.prompt.max()) > budget:
        ids = np.flatnonzero(workload.prompt > budget)
        return (
            f"{head}: {number(ids)} have prompts up to {int(workload.prompt.max())} tokens, "
            f"more than the token budget of {budget} (--max-num-batched-tokens) without chunked "
            "prefill; raise the budget or use --chunked-prefill"
        )

    def stream_tokens(c: Cluster, plan: Plan) -> tuple[int, object]:
        """KV tokens one stream of `plan` can give a single request (0 = memory does not fit)."""
        mem = memory_report(
            model,
            plan,
            c.device.hbm_gb,
            options.gpu_memory_utilization,
            budget,
            options.max_num_seqs,
            bs,
            options.memory_fraction_kind,
        )
        if not mem.fits:
            return 0, mem
        # one sequence's KV cache lives in one attention copy of one pipeline stream
        return copy_seq_blocks(mem, plan.pp, WATERMARK_FRACTION) * bs, mem

    def plans_of(c: Cluster, p: Pins | None) -> list[Plan]:
        try:
            return enumerate_plans(
                model, c, p, *dts, capacity_factor=getattr(options, "capacity_factor", 1.0)
            )[0]
        except ApexError:
            return []

    # requests that no plan of this cluster can hold, however it is parallelised
    best_here = max(
        ((stream_tokens(cluster, pl)[0], pl.label) for pl in plans_of(cluster, pins)),
        default=(0, ""),
    )
    too_long = ""
    if best_here[0] > 0 and longest > best_here[0]:
        ids = np.flatnonzero(workload.prompt > best_here[0])
        what = "prompts"
        if ids.size == 0:
            ids, what = np.flatnonzero(need_tok > best_here[0]), "prompts plus outputs"
        top = int((workload.prompt if what == "prompts" else need_tok)[ids].max())
        too_long = (
            f"{number(ids)} have {what} up to {top} tokens, more than the KV cache of any plan "
            f"here (at most {best_here[0]} tokens per stream, {best_here[1]})"
        )

    # smallest cluster of this GPU type and node size on which a plan holds the longest request
    usable = dev.hbm_gb * GIB * USABLE_FRACTION * options.gpu_memory_utilization
    gpn = cluster.gpus_per_node
    lo = max(1, math.ceil(weights / usable))
    sizes = [g for g in range(lo, gpn + 1)] + [
        k * gpn for k in range(max(2, math.ceil(lo / gpn)), 4097)
    ]
    if not sizes or lo > sizes[-1]:
        return (
            f"{head}: its weights alone are {weights / GIB:,.1f} GiB ({weight}), more than "
            f"{4096 * gpn:,} {dev.name} GPUs ({usable / GIB:.1f} GiB usable each; the largest "
            f"cluster considered) can hold{here}"
        )
    found = None
    for g in [x for x in sizes if x >= lo][:400]:
        c = cluster if g == cluster.num_gpus else Cluster(dev, max(1, g // gpn), min(g, gpn))
        for pl in plans_of(c, None):
            cap_tok, mem = stream_tokens(c, pl)
            if cap_tok >= longest:
                found = (g, c, pl, mem)
                break
        if found:
            break
    if found is None:
        tried = [x for x in sizes if x >= lo][:400]
        where = f"no {dev.name} cluster of up to {tried[-1]} GPUs holds it"
    else:
        g, c, pl, mem = found
        blocks_req = math.ceil(longest / bs)
        kv_dev = pl.pp * blocks_req / (1 - WATERMARK_FRACTION) * bs * mem.kv_bytes_per_token
        per_dev = mem.weights + mem.activation + mem.runtime + kv_dev
        devs = max(1, g // pl.dp)
        shape = f"{c.num_nodes} nodes x {c.gpus_per_node}, " if c.num_nodes > 1 < gpn else ""
        where = (
            f"one replica needs about {per_dev * devs / GIB:.1f} GiB ({per_dev / GIB:.1f} GiB on "
            f"each of its {devs} GPUs: weights, activations, runtime and KV cache for the longest "
            f"request of {longest} tokens); the smallest {dev.name} cluster that holds it is "
            f"{g} GPUs ({shape}plan {pl.label})"
        )
        if (
            g <= cluster.num_gpus
            and pins is not None
            and any(v is not None for v in (pins.dp, pins.pp, pins.tp, pins.ep))
        ):
            where += ", without the --dp/--pp/--tp/--ep pins"
    if too_long:
        return f"{head}: {too_long}; {where}"
    return (
        f"{head} ({usable / GIB:.1f} GiB usable per GPU at --gpu-memory-utilization "
        f"{options.gpu_memory_utilization:g}): its weights alone are {weights / GIB:.1f} GiB "
        f"({weight}); {where}{here}"
    )


# ---------------------------------------------------------------------------------------------
# Parallel evaluation of plans

AUTO_MIN_PLANS = 4  # automatic mode: fewer remaining plans than this always run here
# automatic mode uses a pool only with at least this many usable cores: on 2 cores the pickling
# and forking cost more than they save (bench/trillion.py: 27 s in-process, 31 s with 2 workers,
# 37 s with 1 worker overlapping the parent's metrics; bench/README.md)
AUTO_MIN_CORES = 4
AUTO_POOL_AFTER_S = 0.5  # ... and a pool starts once the rest is projected to take longer


@dataclass(frozen=True)
class SimJob:
    """What every plan of one search is simulated against (sent once to each worker)."""

    model: ModelSpec
    cluster: Cluster
    workload: Workload
    options: EngineOptions

    def run(self, plan: Plan) -> PlanResult:
        return simulate_plan(self.model, self.cluster, plan, self.workload, self.options)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_WORKER_JOB: SimJob | None = None


def _worker_init(job: SimJob) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job
    # Ctrl-C reaches the whole process group: the parent stops the workers, which must not
    # print tracebacks of their own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_run(i: int, plan: Plan) -> tuple[int, PlanResult]:
    assert _WORKER_JOB is not None
    return i, _WORKER_JOB.run(plan)


def _ray_run(job: SimJob, i: int, plan: Plan) -> tuple[int, PlanResult]:
    return i, job.run(plan)


def _pool_context():
    # fork shares the loaded modules and the Numba kernel with the workers at no cost; the
    # workers run only NumPy and Numba code (Polars' thread pool would not survive a fork)
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def simulate_plans(
    job: SimJob,
    plans: list[Plan],
    workers: int | None = None,
    ray_address: str | None = None,
    on_done: Callable[[int, str], None] | None = None,
    consume: Callable[[int, PlanResult], None] | None = None,
) -> list[PlanResult]:
    """Simulate every plan; results in plan order, identical whatever the number of workers."""
    if workers is not None and workers < 1:
        raise ApexError(f"--workers must be at least 1, got {workers}")
    n = len(plans)
    out: list[PlanResult | None] = [None] * n
    count = 0

    def finished(i: int, res: PlanResult) -> None:
        nonlocal count
        out[i] = res
        count += 1
        if consume:
            consume(i, res)
        if on_done:
            on_done(count, res.plan.label)

    if ray_address:
        _simulate_ray(job, plans, ray_address, finished)
        return [r for r in out if r is not None]
    cores = usable_cores()
    # the first plan always runs here: it loads the Numba kernel once, before any fork
    i = 0
    t_mark = 0.0
    while i < n:
        finished(i, job.run(plans[i]))
        i += 1
        if i == 1:
            t_mark = time.perf_counter()
            if workers is not None and workers > 1:
                break
            continue
        if workers is None and cores >= AUTO_MIN_CORES and n - i >= AUTO_MIN_PLANS:
            per_plan = (time.perf_counter() - t_mark) / (i - 1)
            if per_plan * (n - i) > AUTO_POOL_AFTER_S:
                break
    if i < n:
        # automatic: leave one core to this process, which computes the metrics of the results
        # as they arrive (simulation and metrics then overlap)
        nproc = min(workers or max(cores - 1, 1), n - i)
        ex = ProcessPoolExecutor(
            nproc, mp_context=_pool_context(), initializer=_worker_init, initargs=(job,)
        )
        try:
            futures = [ex.submit(_worker_run, j, plans[j]) for j in range(i, n)]
            for f in as_completed(futures):
                finished(*f.result())
        except BaseException:
            # Ctrl-C or an error: stop the workers now instead of waiting for their plans
            _stop_pool(ex)
            raise
        ex.shutdown(wait=True)
    return [r for r in out if r is not None]


def _stop_pool(ex: ProcessPoolExecutor) -> None:
    """Cancel the queued plans and end the worker processes at once."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    writer = getattr(getattr(ex, "_result_queue", None), "_writer", None)
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
    # a worker ended in the middle of sending a result leaves the pool's manager thread
    # waiting for the rest of the message; with every worker gone, closing our end of the
    # result pipe turns that wait into end-of-file, and the thread winds the pool down
    if writer is not None:
        try:
            writer.close()
        except OSError:
            pass


def _simulate_ray(
    job: SimJob, plans: list[Plan], address: str, finished: Callable[[int, PlanResult], None]
) -> None:
    try:
        import ray
    except ImportError:
        raise ApexError(
            "--ray needs Ray, an optional extra: pip install -e '.[ray]' (or pip install ray)"
        ) from None
    if not ray.is_initialized():
        # "local" starts Ray on this machine; "auto" joins the running cluster; else an address
        kwargs = {} if address == "local" else {"address": address}
        try:
            ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds for a bad address
            raise ApexError(f"--ray {address}: cannot connect to Ray: {e}") from None
    job_ref = ray.put(job)
    task = ray.remote(_ray_run)
    pending = [task.remote(job_ref, i, p) for i, p in enumerate(plans)]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            finished(*ray.get(ref))
