"""A workload: arrival times and token lengths of the requests, sorted by arrival, and how the
clients send them (open loop at the arrival times, or closed loop behind a concurrency limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from apex_fast.errors import ApexError, check_at_least


@dataclass(frozen=True)
class Workload:
    arrival: np.ndarray  # seconds since the first request, sorted
    prompt: np.ndarray  # tokens, >= 1
    output: np.ndarray  # tokens, >= 1
    name: str = "static"
    # KV tokens each request brings without compute (cross-attention over its encoder output)
    prefix: np.ndarray | None = None
    # closed loop: at most this many requests in the system at once (0 = open loop)
    max_concurrency: int = 0
    # facts about how the workload was built that the report should state
    notes: tuple[str, ...] = field(default=())
    # a benchmark result file's own settings (request_rate, burstiness, max_concurrency)
    bench_settings: dict | None = field(default=None, compare=False)
    # prompt prefix hashes (Mooncake `hash_ids`): request i's prompt blocks of `hash_block`
    # tokens have the ids hash_ids[hash_offsets[i]:hash_offsets[i+1]]; an id names the prompt
    # prefix that ends with its block (equal ids at a position: equal tokens up to there)
    hash_ids: np.ndarray | None = field(default=None, compare=False)
    hash_offsets: np.ndarray | None = field(default=None, compare=False)
    hash_block: int = 512

    def __post_init__(self) -> None:
        n = self.arrival.size
        bad_prefix = self.prefix is not None and self.prefix.size != n
        if self.prompt.size != n or self.output.size != n or bad_prefix:
            raise ApexError("workload arrays differ in length")
        if n == 0:
            raise ApexError("the workload has no requests")
        if (self.hash_ids is None) != (self.hash_offsets is None):
            raise ApexError("hash ids need their per-request offsets")
        if self.hash_offsets is not None and self.hash_offsets.size != n + 1:
            raise ApexError("workload arrays differ in length")

    @property
    def has_hash_ids(self) -> bool:
        return self.hash_ids is not None and self.hash_ids.size > 0

    @property
    def num_requests(self) -> int:
        return int(self.arrival.size)


def check_sizes(num_requests: int, prompt_len: int, output_len: int) -> None:
    """--num-requests, --prompt-len and --output-len of synthetic requests: each at least 1."""
    check_at_least("--num-requests", num_requests, 1)
    check_at_least("--prompt-len", prompt_len, 1)
    check_at_least("--output-len", output_len, 1)


def static_workload(num_requests: int, prompt_len: int, output_len: int) -> Workload:
    """All requests arrive at time 0 (the seed's fixed-length mode)."""
    check_sizes(num_requests, prompt_len, output_len)
    return Workload(
        arrival=np.zeros(num_requests, np.float64),
        prompt=np.full(num_requests, prompt_len, np.int64),
        output=np.full(num_requests, output_len, np.int64),
        name=f"static {num_requests} x ({prompt_len} in, {output_len} out)",
    )


def closed_loop_split(
    num_requests: int, dp: int, pp: int, max_concurrency: int
) -> tuple[list[np.ndarray], list[int]]:
    """Requests and concurrency slots per scheduler stream (DP replica x pipeline virtual
    engine, stream index r*pp + v) for a closed loop of `max_concurrency` clients.

    The clients are spread evenly over the streams (a balanced router: each client keeps its
    connection to one engine; with fewer clients than streams, the streams used are spread over
    the replicas first), and request i goes to the stream of client i mod N, so every stream
    gets requests in proportion to its clients. Approximation: a global FIFO semaphore in front
    of a router that balances by load would move a freed slot to any engine; here a slot stays
    with its engine.
    """
    streams = dp * pp
    used = min(streams, max_concurrency)
    order = np.array([(k % dp) * pp + (k // dp) % pp for k in range(used)], np.int64)
    client_stream = order[np.arange(max_concurrency) % used]
    slots = np.bincount(client_stream, minlength=streams)
    req_stream = client_stream[np.arange(num_requests) % max_concurrency]
    sort = np.argsort(req_stream, kind="stable")
    bounds = np.searchsorted(req_stream[sort], np.arange(streams + 1))
    index = [sort[bounds[s] : bounds[s + 1]] for s in range(streams)]
    return index, [int(x) for x in slots]


def ordered_hashes(ids: np.ndarray, lens: np.ndarray, order: np.ndarray | None) -> dict:
    """Workload fields `hash_ids` and `hash_offsets` of requests whose flat `ids` come `lens`
    per request, with the requests put in `order` (None: as they are, ids copied)."""
    off = np.zeros(lens.size + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    if order is None:
        return {"hash_ids": ids.copy(), "hash_offsets": off}
    new_lens = lens[order]
    new_off = np.zeros(lens.size + 1, np.int64)
    np.cumsum(new_lens, out=new_off[1:])
    src = np.repeat(off[:-1][order] - new_off[:-1], new_lens) + np.arange(new_off[-1])
    return {"hash_ids": ids[src], "hash_offsets": new_off}
