"""Run the simulations of a search: in this process, on a process pool, or on a Ray cluster.

Workers (processes or Ray tasks) only simulate; the caller computes metrics as results arrive,
so a search's answer is the same whatever the number of workers (docs/ray.md).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.plan import Plan
from apex_fast.sim.engine import EngineOptions, PlanResult, simulate_plan
from apex_fast.workload.types import Workload

if TYPE_CHECKING:  # the pool's modules load only when a pool starts
    from concurrent.futures import ProcessPoolExecutor

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
    import multiprocessing

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
        from concurrent.futures import ProcessPoolExecutor, as_completed

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
