"""A workload: arrival times and token lengths of the requests, sorted by arrival."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apex_fast.errors import ApexError


@dataclass(frozen=True)
class Workload:
    arrival: np.ndarray  # seconds since the first request, sorted
    prompt: np.ndarray  # tokens, >= 1
    output: np.ndarray  # tokens, >= 1
    name: str = "static"
    # KV tokens each request brings without compute (cross-attention over its encoder output)
    prefix: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.arrival.size
        bad_prefix = self.prefix is not None and self.prefix.size != n
        if self.prompt.size != n or self.output.size != n or bad_prefix:
            raise ApexError("workload arrays differ in length")
        if n == 0:
            raise ApexError("the workload has no requests")

    @property
    def num_requests(self) -> int:
        return int(self.arrival.size)


def static_workload(num_requests: int, prompt_len: int, output_len: int) -> Workload:
    """All requests arrive at time 0 (the seed's fixed-length mode)."""
    if num_requests < 1:
        raise ApexError(f"--num-requests must be at least 1, got {num_requests}")
    if prompt_len < 1:
        raise ApexError(f"--prompt-len must be at least 1, got {prompt_len}")
    if output_len < 1:
        raise ApexError(f"--output-len must be at least 1, got {output_len}")
    return Workload(
        arrival=np.zeros(num_requests, np.float64),
        prompt=np.full(num_requests, prompt_len, np.int64),
        output=np.full(num_requests, output_len, np.int64),
        name=f"static {num_requests} x ({prompt_len} in, {output_len} out)",
    )
