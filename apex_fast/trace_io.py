"""Read request traces in the formats users have them.

* JSON lines, APEX+ format: `StartTimeOffset` (ns since the first request), `ContextTokens`
  (prompt tokens), `GeneratedTokens` (output tokens).
* JSON lines, Mooncake format (kvcache-ai/Mooncake `mooncake_trace.jsonl`, also read by
  AIPerf and Dynamo): `timestamp` (ms since the first request), `input_length`,
  `output_length`, `hash_ids` (one id per 512-token prompt block; equal ids at a position mean
  equal prompt prefixes up to the end of that block: the prefix cache's keys).
* Any JSON-lines trace may carry `hash_ids` the same way, with `hash_block_size` (tokens per id,
  512 if absent, one value per file): `apex.py trace --kind multiturn` writes them.
* A `vllm bench serve` / `benchmarks/benchmark_serving.py --save-result` JSON file: the
  per-request `input_lens` and `output_lens` (requests with an `errors` entry are left out);
  its `request_rate`, `burstiness` and `max_concurrency` are kept as `bench_settings` (the file
  has no arrival times).
* Azure LLM inference CSV: `TIMESTAMP` (date-time or seconds) or `StartTimeOffset` (ns),
  `ContextTokens`, `GeneratedTokens`.

Rows out of time order are sorted by arrival (stable) and the report says so; times are made
relative to the earliest request. An output length of 0 (a request that ended at once, as
real logs and benchmark results contain) is simulated as a request that ends after its first
token, and the report says how many there were.

Bounds: a line may hold at most MAX_LINE_BYTES and a benchmark result file at most
MAX_JSON_BYTES, so a file with no newline (or /dev/zero) is refused instead of filling memory.
JSON lines are parsed with orjson one at a time (a fast path for the common well-formed line)
in blocks of 65,536 into growing NumPy arrays, so memory stays proportional to the request
count (24 bytes per request, about 50 at the peak), not to the file size: 10 million requests
parse in ~13 s of CPU within ~0.5 GiB (bench/bigtrace.py, bench/README.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson

from apex_fast.errors import ApexError
from apex_fast.sim.workload import Workload

MAX_TOKENS = 100_000_000
MAX_LINE_BYTES = 1 << 20  # 1 MiB: a Mooncake line with 100k-token prompts is ~2 KB
MAX_JSON_BYTES = 1 << 30  # 1 GiB: a benchmark result with every generated text kept
_FIELDS = ("StartTimeOffset", "ContextTokens", "GeneratedTokens")
_MOONCAKE = ("timestamp", "input_length", "output_length")
MOONCAKE_HASH_BLOCK = 512  # tokens per Mooncake hash id (kvcache-ai/Mooncake trace README)
MAX_HASH_ID = 1 << 32  # ids below this: id x block size x attention copies fits in an int64
MAX_HASH_BLOCK = 1 << 20  # tokens per hash id, at most


class _Grow:
    """Append-only int64/float64 columns that double their capacity."""

    def __init__(self) -> None:
        self.n = 0
        self.t = np.empty(1024, np.float64)
        self.p = np.empty(1024, np.int64)
        self.o = np.empty(1024, np.int64)
        self.notes: list[str] = []
        self.bench: dict | None = None
        # prefix hashes: flat ids, and per request how many (only once a line had some)
        self.hid: np.ndarray | None = None
        self.nh = 0
        self.hlen: np.ndarray | None = None
        self.hash_block: int | None = None

    def add_hashes(self, lens: list[int], ids: list[int]) -> None:
        """Hash ids of the block of requests just added by `extend` (lens aligned with it)."""
        if self.hid is None:
            if not ids:
                return
            self.hid = np.empty(max(1024, len(ids)), np.int64)
            self.hlen = np.zeros(self.t.size, np.int64)
        if self.hlen.size < self.t.size:
            self.hlen = np.resize(self.hlen, self.t.size)
        k = len(lens)
        self.hlen[self.n - k : self.n] = lens
        if self.nh + len(ids) > self.hid.size:
            self.hid = np.resize(self.hid, max(2 * self.hid.size, self.nh + len(ids)))
        self.hid[self.nh : self.nh + len(ids)] = ids
        self.nh += len(ids)

    def extend(self, t: list, p: list, o: list) -> None:
        """Append a block of values (times already in seconds)."""
        k = len(t)
        if self.n + k > self.t.size:
            cap = max(2 * self.t.size, self.n + k)
            self.t = np.resize(self.t, cap)
            self.p = np.resize(self.p, cap)
            self.o = np.resize(self.o, cap)
        self.t[self.n : self.n + k] = t
        self.p[self.n : self.n + k] = p
        self.o[self.n : self.n + k] = o
        self.n += k


def _number(v: object, name: str, where: str, integer: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApexError(f"{where}: field {name!r} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ApexError(f"{where}: field {name!r} must be finite, got {v!r}")
    if integer and v != int(v):
        raise ApexError(f"{where}: field {name!r} must be a whole number, got {v!r}")
    return v


def _check(where: str, t: float, p: float, o: float, names: tuple[str, str, str] = _FIELDS) -> None:
    tn, pn, on = names
    if t < 0:
        raise ApexError(f"{where}: {tn} is negative ({t})")
    if p < 1:
        raise ApexError(f"{where}: {pn} must be at least 1, got {int(p)}")
    if o < 0:
        raise ApexError(f"{where}: {on} must be at least 0, got {int(o)}")
    if p > MAX_TOKENS or o > MAX_TOKENS:
        raise ApexError(f"{where}: token counts above {MAX_TOKENS} are not plausible")
    if t > 1e21:
        raise ApexError(f"{where}: {tn} {t} is not plausible")


def _parse_line(
    raw: bytes, where: str, names: tuple[str, str, str], scale: float
) -> tuple[float, int, int] | None:
    """Full validation of one line: (seconds, prompt, output), None for a blank line, or an
    ApexError naming the line."""
    line = raw.strip()
    if not line:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ApexError(f"{where}: not valid JSON") from None
    if not isinstance(obj, dict):
        raise ApexError(f"{where}: expected a JSON object with {', '.join(names)}")
    vals = []
    for name in names:
        if name not in obj:
            raise ApexError(f"{where}: missing field {name!r}")
        vals.append(_number(obj[name], name, where, integer=name != names[0]))
    t, p, o = vals
    _check(where, t, p, o, names)
    return t * scale, int(p), int(o)


def _hash_ids(obj: dict, where: str, g: _Grow) -> list[int]:
    """The line's `hash_ids` (empty if absent), checked; records `hash_block_size`."""
    h = obj.get("hash_ids")
    if h is None:
        return []
    if type(h) is not list or not all(type(x) is int and 0 <= x < MAX_HASH_ID for x in h):
        raise ApexError(
            f"{where}: field 'hash_ids' must be a list of whole numbers in [0, 2^32), got "
            f"{str(h)[:60]}"
        )
    bsz = obj.get("hash_block_size", MOONCAKE_HASH_BLOCK)
    if type(bsz) is not int or not (1 <= bsz <= MAX_HASH_BLOCK):
        raise ApexError(
            f"{where}: field 'hash_block_size' must be a positive whole number up to "
            f"{MAX_HASH_BLOCK}, got {bsz!r}"
        )
    if g.hash_block is None:
        g.hash_block = bsz
    elif bsz != g.hash_block:
        raise ApexError(
            f"{where}: hash_block_size {bsz} differs from {g.hash_block} earlier in the file"
        )
    return h


_BLOCK = 65536  # lines parsed into Python lists before they are copied into the NumPy columns


def _lines(f, path: Path):  # noqa: ANN001, ANN202 (binary file, generator)
    """(line number, bytes) with every line at most MAX_LINE_BYTES long."""
    readline = f.readline
    lineno = 0
    while True:
        raw = readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE_BYTES:
            raise ApexError(
                f"{path}:{lineno}: line longer than {MAX_LINE_BYTES // (1 << 20)} MiB; "
                "not a trace of one request per line"
            )
        yield lineno, raw


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


def _read_jsonl(path: Path, names: tuple[str, str, str], scale: float) -> _Grow:
    """Stream the file line by line. The common line (integer token counts in range, a finite
    non-negative time) takes a fast path; anything else goes through `_parse_line`, which
    accepts it exactly as before or raises the line-numbered error. Memory: the NumPy columns
    plus one block of at most _BLOCK lines."""
    g = _Grow()
    loads = orjson.loads
    tn, pn, on = names
    ts: list[float] = []
    ps: list[int] = []
    os_: list[int] = []
    hl: list[int] = []
    hs: list[int] = []
    with path.open("rb") as f:
        for lineno, raw in _lines(f, path):
            try:
                obj = loads(raw)
                t = obj[tn]
                p = obj[pn]
                o = obj[on]
                ok = (
                    type(p) is int
                    and type(o) is int
                    and 0 < p <= MAX_TOKENS
                    and 0 <= o <= MAX_TOKENS
                    and (type(t) is int or type(t) is float)
                    and 0 <= t <= 1e21
                )
            except (ValueError, KeyError, TypeError, IndexError):
                ok = False
            if ok:
                ts.append(t * scale)
            else:
                parsed = _parse_line(raw, f"{path}:{lineno}", names, scale)
                if parsed is None:
                    continue
                t, p, o = parsed
                ts.append(t)
            ps.append(p)
            os_.append(o)
            h = _hash_ids(obj, f"{path}:{lineno}", g) if "hash_ids" in obj else []
            hl.append(len(h))
            hs.extend(h)
            if len(ts) == _BLOCK:
                g.extend(ts, ps, os_)
                g.add_hashes(hl, hs)
                ts.clear()
                ps.clear()
                os_.clear()
                hl.clear()
                hs.clear()
    if ts:
        g.extend(ts, ps, os_)
        g.add_hashes(hl, hs)
    return g


def _read_bench_result(path: Path) -> _Grow:
    """A `vllm bench serve --save-result` JSON document (one object)."""
    with path.open("rb") as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ApexError(f"{path}: larger than {MAX_JSON_BYTES >> 30} GiB; not a benchmark result")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ApexError(
            f"{path}: not valid JSON (expected a vllm bench serve --save-result file, or JSON "
            "lines with one request per line)"
        ) from None
    del data
    if not isinstance(obj, dict) or "input_lens" not in obj or "output_lens" not in obj:
        raise ApexError(
            f"{path}: a JSON document without 'input_lens' and 'output_lens' (save the "
            "benchmark with --save-result --save-detailed, or give JSON lines)"
        )
    ins, outs = obj["input_lens"], obj["output_lens"]
    if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
        raise ApexError(f"{path}: 'input_lens' and 'output_lens' must be lists of equal length")
    errors = obj.get("errors")
    if not isinstance(errors, list) or len(errors) != len(ins):
        errors = [""] * len(ins)
    g = _Grow()
    ps: list[int] = []
    os_: list[int] = []
    failed = 0
    for i, (p, o, e) in enumerate(zip(ins, outs, errors, strict=True)):
        where = f"{path}: request {i}"
        if e:
            failed += 1
            continue
        p = _number(p, "input_lens", where, integer=True)
        o = _number(o, "output_lens", where, integer=True)
        _check(where, 0.0, p, o, ("time", "input_lens", "output_lens"))
        ps.append(int(p))
        os_.append(int(o))
    g.extend([0.0] * len(ps), ps, os_)
    rate = obj.get("request_rate", "inf")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ApexError(f"{path}: request_rate {rate!r} is not a number or 'inf'") from None
    if not rate > 0:
        raise ApexError(f"{path}: request_rate must be positive, got {rate}")
    burst = obj.get("burstiness", 1.0)
    if isinstance(burst, bool) or not isinstance(burst, (int, float)) or not burst > 0:
        burst = 1.0
    conc = obj.get("max_concurrency")
    conc = conc if isinstance(conc, int) and not isinstance(conc, bool) and conc > 0 else 0
    g.bench = {"request_rate": rate, "burstiness": float(burst), "max_concurrency": conc}
    if failed:
        g.notes.append(f"{path.name}: {failed} failed requests of the benchmark left out")
    return g


def _read_csv(path: Path) -> _Grow:
    """Azure LLM inference trace layout: TIMESTAMP (date-time or seconds), ContextTokens,
    GeneratedTokens. Absolute times; load_trace sorts them and subtracts the earliest."""
    g = _Grow()
    with path.open("rb") as f:
        lines = _lines(f, path)
        first = next(lines, None)
        header = [] if first is None else first[1].decode("utf-8", "replace").strip().split(",")
        cols = {c.strip().lstrip("\ufeff"): i for i, c in enumerate(header)}
        for need in ("ContextTokens", "GeneratedTokens"):
            if need not in cols:
                raise ApexError(f"{path}:1: CSV header lacks {need!r}")
        tcol = cols.get("TIMESTAMP", cols.get("StartTimeOffset"))
        if tcol is None:
            raise ApexError(f"{path}:1: CSV header lacks 'TIMESTAMP' or 'StartTimeOffset'")
        ns = "TIMESTAMP" not in cols  # StartTimeOffset column: nanoseconds
        ts: list[float] = []
        ps: list[int] = []
        os_: list[int] = []
        for lineno, raw in lines:
            line = raw.decode("utf-8", "replace")
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            parts = line.rstrip("\r\n").split(",")
            if len(parts) < len(header):
                raise ApexError(f"{where}: expected {len(header)} columns, got {len(parts)}")
            try:
                p = float(parts[cols["ContextTokens"]])
                o = float(parts[cols["GeneratedTokens"]])
            except ValueError:
                raise ApexError(f"{where}: token counts must be numbers") from None
            if not (math.isfinite(p) and math.isfinite(o)) or p != int(p) or o != int(o):
                raise ApexError(f"{where}: token counts must be whole numbers")
            tstr = parts[tcol].strip()
            try:
                t = float(tstr)
            except ValueError:
                t = _parse_datetime(tstr, where)
            else:
                if ns:
                    t *= 1e-9
                if not (math.isfinite(t) and abs(t) <= 1e12):
                    raise ApexError(f"{where}: time {tstr!r} is not plausible")
            _check(where, 0.0, p, o)
            ts.append(t)
            ps.append(int(p))
            os_.append(int(o))
            if len(ts) == _BLOCK:
                g.extend(ts, ps, os_)
                ts.clear()
                ps.clear()
                os_.clear()
        if ts:
            g.extend(ts, ps, os_)
    return g


def _parse_datetime(ts: str, where: str) -> float:
    from datetime import datetime

    try:
        # Azure traces carry 7 fractional digits; datetime takes at most 6
        head, _, frac = ts.partition(".")
        frac = "".join(ch for ch in frac if ch.isdigit())[:6]
        dt = datetime.fromisoformat(head + ("." + frac if frac else ""))
    except ValueError:
        raise ApexError(f"{where}: TIMESTAMP {ts!r} is neither seconds nor a date-time") from None
    return dt.timestamp()


def _read_any(p: Path) -> tuple[_Grow, str]:
    """Pick the reader from the suffix and the first line; (columns, format name)."""
    if p.suffix.lower() == ".csv":
        return _read_csv(p), "CSV"
    first = _sniff(p)
    is_json = p.suffix.lower() == ".json"
    if (isinstance(first, dict) and "input_lens" in first) or (is_json and first in ("long", None)):
        return _read_bench_result(p), "benchmark result"
    if isinstance(first, dict) and all(k in first for k in _MOONCAKE) and _FIELDS[0] not in first:
        return _read_jsonl(p, _MOONCAKE, 1e-3), "Mooncake"
    return _read_jsonl(p, _FIELDS, 1e-9), "JSON lines"


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
        hashes = _ordered_hashes(g.hid[: g.nh], g.hlen[:n], order)
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


def _ordered_hashes(ids: np.ndarray, lens: np.ndarray, order: np.ndarray | None) -> dict:
    """Flat ids and offsets with the requests in `order` (None: as read)."""
    off = np.zeros(lens.size + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    if order is None:
        return {"hash_ids": ids.copy(), "hash_offsets": off}
    new_lens = lens[order]
    new_off = np.zeros(lens.size + 1, np.int64)
    np.cumsum(new_lens, out=new_off[1:])
    src = np.repeat(off[:-1][order] - new_off[:-1], new_lens) + np.arange(new_off[-1])
    return {"hash_ids": ids[src], "hash_offsets": new_off}
