"""Fit the host parameters of the step-time model to measured runs (bounded pattern search).

The objective is the mean over model families of the mean over runs of
(|log(pred/meas)| of TTFT + of ITL + of mean latency) / 3, so each family weighs the same
whatever its number of runs. Parameters stay inside `step_time.PARAM_RANGES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from apex_fast.sim.step_time import PARAM_RANGES, HostParams
from apex_fast.validation.replay import Prepared, predict

METRICS = ("ttft_s", "itl_s", "latency_s")


def errors(preps: Sequence[Prepared], host: HostParams | None) -> list[dict[str, float]]:
    """Signed relative errors (pred/meas - 1) per run and metric, with the predictions."""
    rows = []
    for p in preps:
        pred = predict(p, host)
        row = {"run": p.run, **{f"{k}_pred": pred[k] for k in METRICS}}
        for k in METRICS:
            row[f"{k}_err"] = pred[k] / getattr(p.run, k) - 1.0
        row["preemptions"] = pred["preemptions"]
        row["kv_tokens"] = pred["kv_tokens"]
        rows.append(row)
    return rows


def objective(preps: Sequence[Prepared], host: HostParams) -> float:
    fams: dict[str, list[float]] = {}
    for p in preps:
        pred = predict(p, host)
        e = np.mean([abs(np.log(pred[k] / getattr(p.run, k))) for k in METRICS])
        fams.setdefault(p.run.family, []).append(float(e))
    return float(np.mean([np.mean(v) for v in fams.values()]))


def fit(
    preps: Sequence[Prepared],
    start: HostParams,
    free: Sequence[str],
    iters: int = 40,
    progress: Callable[[str], None] | None = None,
) -> tuple[HostParams, float]:
    """Bounded Hooke-Jeeves pattern search over the `free` parameters (others stay at `start`)."""
    names = list(free)
    lo = np.array([PARAM_RANGES[k][0] for k in names])
    hi = np.array([PARAM_RANGES[k][1] for k in names])
    vals = start.as_dict()

    def make(x: np.ndarray) -> HostParams:
        d = dict(vals)
        d.update({k: float(v) for k, v in zip(names, lo + x * (hi - lo), strict=True)})
        return HostParams(**d)

    x = np.clip((np.array([vals[k] for k in names]) - lo) / (hi - lo), 0.0, 1.0)
    best = objective(preps, make(x))
    step = 0.25
    for it in range(iters):
        improved = False
        for i in range(len(names)):
            for sgn in (1.0, -1.0):
                y = x.copy()
                y[i] = np.clip(y[i] + sgn * step, 0.0, 1.0)
                if y[i] == x[i]:
                    continue
                f = objective(preps, make(y))
                if f < best - 1e-9:
                    x, best, improved = y, f, True
                    break
        if not improved:
            step /= 2.0
            if step < 1e-3:
                break
        if progress is not None:
            progress(f"iteration {it + 1}: objective {best:.4f}, step {step:.4f}")
    return make(x), best
