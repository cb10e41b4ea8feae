"""Read request traces in the formats users have them (`load_trace` picks the reader).

* JSON lines (read_jsonl.py), APEX+ format: `StartTimeOffset` (ns since the first request),
  `ContextTokens` (prompt tokens), `GeneratedTokens` (output tokens).
* JSON lines, Mooncake format (kvcache-ai/Mooncake `mooncake_trace.jsonl`, also read by
  AIPerf and Dynamo): `timestamp` (ms since the first request), `input_length`,
  `output_length`, `hash_ids` (one id per 512-token prompt block; equal ids at a position mean
  equal prompt prefixes up to the end of that block: the prefix cache's keys).
* Any JSON-lines trace may carry `hash_ids` the same way, with `hash_block_size` (tokens per id,
  512 if absent, one value per file): `apex.py trace --kind multiturn` writes them.
* A `vllm bench serve` / `benchmarks/benchmark_serving.py --save-result` JSON file
  (read_bench.py): the
  per-request `input_lens` and `output_lens` (requests with an `errors` entry are left out);
  its `request_rate`, `burstiness` and `max_concurrency` are kept as `bench_settings` (the file
  has no arrival times).
* Azure LLM inference CSV (read_csv.py, Polars): `TIMESTAMP` (date-time or seconds; a
  date-time without time zone is UTC) or `StartTimeOffset` (ns), `ContextTokens`,
  `GeneratedTokens`.

Rows out of time order are sorted by arrival (stable) and the report says so; times are made
relative to the earliest request. An output length of 0 (a request that ended at once, as
real logs and benchmark results contain) is simulated as a request that ends after its first
token, and the report says how many there were.

Bounds (columns.py): a line may hold at most MAX_LINE_BYTES and a benchmark result file at
most MAX_JSON_BYTES, so a file with no newline (or /dev/zero) is refused instead of filling
memory. CSV files are parsed in blocks of read_csv.CSV_CHUNK bytes. JSON lines are parsed with orjson one at a time (a fast path for the common well-formed line)
in blocks of 65,536 into growing NumPy arrays, so memory stays proportional to the request
count (24 bytes per request, about 50 at the peak), not to the file size: 10 million requests
parse in ~13 s of CPU within ~0.5 GiB (bench/bigtrace.py, bench/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from apex_fast.errors import ApexError
from apex_fast.workload.columns import APEX_FIELDS, MAX_LINE_BYTES, Columns
from apex_fast.workload.read_bench import read_bench_result
from apex_fast.workload.read_csv import read_csv
from apex_fast.workload.read_jsonl import MOONCAKE_FIELDS, read_jsonl
from apex_fast.workload.types import Workload, ordered_hashes


def _sniff(path: Path) -> dict | str | None:
    """The first non-blank line parsed as a JSON object, "long" if that line is longer than
    MAX_LINE_BYTES, None otherwise (format sniffing)."""
    with path.open("rb") as f:
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return None
            if len(raw) > MAX_LINE_BYTES:
                return "long"
            if raw.strip():
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return None
                return obj if isinstance(obj, dict) else None


def _read_any(p: Path) -> tuple[Columns, str]:
    """Pick the reader from the suffix and the first line; (columns, format name)."""
    if p.suffix.lower() == ".csv":
        return read_csv(p), "CSV"
    first = _sniff(p)
    is_json = p.suffix.lower() == ".json"
    if (isinstance(first, dict) and "input_lens" in first) or (is_json and first in ("long", None)):
        return read_bench_result(p), "benchmark result"
    if (
        isinstance(first, dict)
        and all(k in first for k in MOONCAKE_FIELDS)
        and APEX_FIELDS[0] not in first
    ):
        return read_jsonl(p, MOONCAKE_FIELDS, 1e-3), "Mooncake"
    return read_jsonl(p, APEX_FIELDS, 1e-9), "JSON lines"


def load_trace(path: str | Path) -> Workload:
    """Load a trace file, sorted by arrival, times relative to the first request (seconds)."""
    p = Path(path)
    try:
        if not p.exists():
            raise ApexError(f"trace file {p} does not exist")
        if p.is_dir():
            raise ApexError(f"trace file {p} is a directory")
        g, kind = _read_any(p)
    except OSError as err:
        raise ApexError(f"cannot read trace file {p}: {err.strerror or err}") from None
    n = g.n
    if n == 0:
        raise ApexError(f"trace file {p} has no requests")
    notes = list(g.notes)
    # build each output column, then drop its oversized input buffer (bounded peak memory)
    t, g.t = g.t[:n], None
    back = int(np.count_nonzero(t[1:] < t[:-1]))
    order = None if back == 0 else np.argsort(t, kind="stable")
    if order is not None:
        t = t[order]
        notes.append(
            f"{p.name}: {back} of {n} rows are earlier than the row before them; requests "
            "sorted by arrival time"
        )
    arrival = t - t[0]
    del t
    pr, g.p = g.p[:n], None
    prompt = pr[order] if order is not None else pr.copy()
    del pr
    o, g.o = g.o[:n], None
    output = o[order] if order is not None else o.copy()
    del o
    hashes: dict = {}
    if g.hid is not None:
        hashes = ordered_hashes(g.hid[: g.nh], g.hlen[:n], order)
        hashes["hash_block"] = g.hash_block
        g.hid = None
    zeros = int(np.count_nonzero(output == 0))
    if zeros:
        output[output == 0] = 1
        notes.append(
            f"{p.name}: {zeros} requests with 0 output tokens are simulated as ending after "
            "their first token"
        )
    return Workload(
        arrival=arrival,
        prompt=prompt,
        output=output,
        name=p.name if kind == "JSON lines" else f"{p.name} ({kind})",
        notes=tuple(notes),
        bench_settings=g.bench,
        **hashes,
    )
