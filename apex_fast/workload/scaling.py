"""The same requests at another rate: arrival times divided by a factor, and (for a steady state)
the trace repeated back to back."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from apex_fast.workload.types import Workload

MAX_REQUESTS = 200_000  # cap on the repeated trace


def scaled(
    workload: Workload, scale: float, horizon_s: float = 0.0, open_loop: bool = False
) -> Workload:
    """The same requests arriving `scale` times faster; if the result spans less than
    `horizon_s`, the trace is repeated back to back (one mean gap between copies) until it does
    (at most MAX_REQUESTS requests), so that a rate above the plan's capacity shows up as a
    growing queue rather than as a short burst the plan can absorb. Every other field (prefix,
    closed-loop clients, notes) is kept, per-request ones repeated with the trace; `open_loop`
    drops a closed loop's concurrency limit, so that the offered rate is the scaled one."""
    arr = workload.arrival / scale
    n = workload.num_requests
    gap = float(arr[-1]) / max(n - 1, 1)
    period = float(arr[-1]) + gap
    copies = 1
    if horizon_s > 0 and period > 0:
        copies = max(1, min(math.ceil(horizon_s / period), MAX_REQUESTS // n))
    name = f"{workload.name} x{scale:.3g}" + (f" (repeated {copies}x)" if copies > 1 else "")
    conc = 0 if open_loop else workload.max_concurrency
    if copies == 1:
        arr = np.ascontiguousarray(arr)
        return dataclasses.replace(workload, arrival=arr, name=name, max_concurrency=conc)
    fields: dict = {
        "max_concurrency": conc,
        "arrival": (arr[None, :] + period * np.arange(copies)[:, None]).ravel(),
        "prompt": np.tile(workload.prompt, copies),
        "output": np.tile(workload.output, copies),
        "name": name,
    }
    if workload.prefix is not None:
        fields["prefix"] = np.tile(workload.prefix, copies)
    if workload.hash_ids is not None:  # a repeated copy carries the same prompt prefixes
        lens = np.tile(np.diff(workload.hash_offsets), copies)
        fields["hash_ids"] = np.tile(workload.hash_ids, copies)
        fields["hash_offsets"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return dataclasses.replace(workload, **fields)
