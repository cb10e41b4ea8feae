"""Bounds the tool enforces on its inputs before it allocates anything (docs/limits.md).

A simulation holds, per request: the workload (arrival, prompt, output: 24 B), the kernel's
per-request state and results (about 15 int64/float64 arrays: 120 B) and its step records
(up to 4 records per request, 11 numbers each: 352 B), then the per-request table of the
metrics (about 12 columns: 100 B). BYTES_PER_SIMULATED_REQUEST rounds this up to 1 KiB. A
request count whose estimate exceeds MEMORY_FRACTION of the memory available now is refused
with the figure, instead of being killed by the operating system half-way.
"""

from __future__ import annotations

import os

from apex_fast.errors import ApexError

GIB = 1024**3
BYTES_PER_SIMULATED_REQUEST = 1024  # estimate from the array sizes above (rounded up)
# `trace`: arrival, two normal draws, prompt, output and their clipped copies (~10 x 8 B) while
# generating; each written line is about 100 B (StartTimeOffset, lengths, RequestID)
BYTES_PER_GENERATED_REQUEST = 128
BYTES_PER_TRACE_LINE = 110
MEMORY_FRACTION = 0.8  # share of the currently available memory one run may plan to use


def available_memory_bytes() -> int:
    """Memory available to a new allocation now (Linux MemAvailable; else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


def _gib(x: float) -> str:
    return f"{x / GIB:,.1f} GiB"


def check_request_memory(
    num_requests: int, flag: str, bytes_per_request: int = BYTES_PER_SIMULATED_REQUEST
) -> None:
    """Refuse a request count whose estimated memory exceeds what this machine has free."""
    need = float(num_requests) * bytes_per_request
    avail = available_memory_bytes()
    if need > MEMORY_FRACTION * avail:
        most = int(MEMORY_FRACTION * avail // bytes_per_request)
        fit = f"at most about {most:,} requests fit" if most else "not even one request fits"
        raise ApexError(
            f"{flag} {num_requests:,} would need about {_gib(need)} of memory "
            f"({bytes_per_request:,} B per request), more than the {_gib(avail)} available "
            f"here; {fit}"
        )


def check_disk_space(num_bytes: float, folder: str, flag: str) -> None:
    """Refuse to start writing a file that cannot fit on its disk."""
    import shutil

    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if num_bytes > free:
        raise ApexError(
            f"{flag} would write about {_gib(num_bytes)}, more than the {_gib(free)} free on "
            f"that disk"
        )


# Largest cluster planned: the plan space grows with the divisors of the GPU count and the
# data-parallel degrees; 8192 nodes x 8 GPUs enumerate and simulate in about 11 s on one core,
# 1M GPUs in about 50 s (measured on this project's CI machine).
MAX_GPUS = 65_536
MAX_GPUS_PER_NODE = 1024
# Largest token budget of one step (--max-num-batched-tokens; without chunked prefill, the
# longest request): the step-cost tables hold one float64 per token count for every operator
# (about 16 tables), 1M tokens = about 128 MiB.
MAX_STEP_TOKENS = 1 << 20
# Step records per request: a prompt is prefilled in chunks of the step budget, one record each
BYTES_PER_STEP_RECORD = 88  # 4 float64 + 7 int64


def check_cluster_size(num_nodes: int, gpus_per_node: int) -> None:
    if gpus_per_node > MAX_GPUS_PER_NODE:
        raise ApexError(
            f"--num-gpus-per-node {gpus_per_node} is above the {MAX_GPUS_PER_NODE} GPUs per node "
            "the planner accepts"
        )
    if num_nodes >= 1 and gpus_per_node >= 1 and num_nodes * gpus_per_node > MAX_GPUS:
        raise ApexError(
            f"{num_nodes} nodes x {gpus_per_node} GPUs = {num_nodes * gpus_per_node:,} GPUs is "
            f"above the {MAX_GPUS:,} GPUs the planner enumerates in reasonable time"
        )


def check_step_tokens(budget: int, chunked: bool) -> None:
    if budget > MAX_STEP_TOKENS:
        why = (
            "--max-num-batched-tokens"
            if chunked
            else "without chunked prefill a step holds a whole request, here"
        )
        raise ApexError(
            f"a step of {budget:,} tokens ({why}) is above the {MAX_STEP_TOKENS:,}-token bound "
            "on one step's token budget; "
            + ("give a smaller value" if chunked else "use --chunked-prefill or shorter requests")
        )


def static_request_bytes(prompt_len: int, chunk: int) -> int:
    """Estimated simulation memory of one request of `prompt_len` tokens prefilled in chunks
    of `chunk` tokens (one step record per chunk)."""
    chunks = -(-max(prompt_len, 0) // max(chunk, 1))
    return BYTES_PER_SIMULATED_REQUEST + BYTES_PER_STEP_RECORD * chunks
