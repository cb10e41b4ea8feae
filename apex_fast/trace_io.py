"""Read request traces: JSON lines (APEX+ format) or Azure-style CSV.

JSON lines: one object per line with `StartTimeOffset` (ns since the first request),
`ContextTokens` (prompt tokens) and `GeneratedTokens` (output tokens). Lines are parsed with
orjson one at a time (a fast path for the common well-formed line) in blocks of 65,536 into
growing NumPy arrays, so memory stays proportional to the request count (24 bytes per request,
about 50 at the peak), not to the file size: 10 million requests parse in ~13 s of CPU within
~0.5 GiB (bench/bigtrace.py, bench/README.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson

from apex_fast.errors import ApexError
from apex_fast.sim.workload import Workload

MAX_TOKENS = 100_000_000
_FIELDS = ("StartTimeOffset", "ContextTokens", "GeneratedTokens")


class _Grow:
    """Append-only int64/float64 columns that double their capacity."""

    def __init__(self) -> None:
        self.n = 0
        self.t = np.empty(1024, np.float64)
        self.p = np.empty(1024, np.int64)
        self.o = np.empty(1024, np.int64)

    def add(self, t: float, p: int, o: int) -> None:
        if self.n == self.t.size:
            self.t = np.resize(self.t, 2 * self.n)
            self.p = np.resize(self.p, 2 * self.n)
            self.o = np.resize(self.o, 2 * self.n)
        self.t[self.n] = t
        self.p[self.n] = p
        self.o[self.n] = o
        self.n += 1

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


def _check(where: str, t: float, p: float, o: float) -> None:
    if t < 0:
        raise ApexError(f"{where}: StartTimeOffset is negative ({t})")
    if p < 1:
        raise ApexError(f"{where}: ContextTokens must be at least 1, got {int(p)}")
    if o < 1:
        raise ApexError(f"{where}: GeneratedTokens must be at least 1, got {int(o)}")
    if p > MAX_TOKENS or o > MAX_TOKENS:
        raise ApexError(f"{where}: token counts above {MAX_TOKENS} are not plausible")
    if t > 1e21:
        raise ApexError(f"{where}: StartTimeOffset {t} ns is not plausible")


def _parse_line(raw: bytes, where: str) -> tuple[float, int, int] | None:
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
        raise ApexError(f"{where}: expected a JSON object with {', '.join(_FIELDS)}")
    vals = []
    for name in _FIELDS:
        if name not in obj:
            raise ApexError(f"{where}: missing field {name!r}")
        vals.append(_number(obj[name], name, where, integer=name != "StartTimeOffset"))
    t, p, o = vals
    _check(where, t, p, o)
    return t * 1e-9, int(p), int(o)


_BLOCK = 65536  # lines parsed into Python lists before they are copied into the NumPy columns


def _read_jsonl(path: Path) -> _Grow:
    """Stream the file line by line. The common line (integer token counts in range, a finite
    non-negative time) takes a fast path; anything else goes through `_parse_line`, which
    accepts it exactly as before or raises the line-numbered error. Memory: the NumPy columns
    plus one block of at most _BLOCK lines."""
    g = _Grow()
    loads = orjson.loads
    ts: list[float] = []
    ps: list[int] = []
    os_: list[int] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                obj = loads(raw)
                t = obj["StartTimeOffset"]
                p = obj["ContextTokens"]
                o = obj["GeneratedTokens"]
                ok = (
                    type(p) is int
                    and type(o) is int
                    and 0 < p <= MAX_TOKENS
                    and 0 < o <= MAX_TOKENS
                    and (type(t) is int or type(t) is float)
                    and 0 <= t <= 1e21
                )
            except (ValueError, KeyError, TypeError, IndexError):
                ok = False
            if ok:
                ts.append(t * 1e-9)
            else:
                parsed = _parse_line(raw, f"{path}:{lineno}")
                if parsed is None:
                    continue
                t, p, o = parsed
                ts.append(t)
            ps.append(p)
            os_.append(o)
            if len(ts) == _BLOCK:
                g.extend(ts, ps, os_)
                ts.clear()
                ps.clear()
                os_.clear()
    if ts:
        g.extend(ts, ps, os_)
    return g


def _read_csv(path: Path) -> _Grow:
    """Azure LLM inference trace layout: TIMESTAMP (date-time or seconds), ContextTokens,
    GeneratedTokens."""
    g = _Grow()
    with path.open("r", encoding="utf-8", errors="replace") as f:
        header = f.readline().strip().split(",")
        cols = {c.strip(): i for i, c in enumerate(header)}
        for need in ("ContextTokens", "GeneratedTokens"):
            if need not in cols:
                raise ApexError(f"{path}:1: CSV header lacks {need!r}")
        tcol = cols.get("TIMESTAMP", cols.get("StartTimeOffset"))
        if tcol is None:
            raise ApexError(f"{path}:1: CSV header lacks 'TIMESTAMP' or 'StartTimeOffset'")
        t0: float | None = None
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            parts = line.rstrip("\n").split(",")
            if len(parts) < len(header):
                raise ApexError(f"{where}: expected {len(header)} columns, got {len(parts)}")
            try:
                p = float(parts[cols["ContextTokens"]])
                o = float(parts[cols["GeneratedTokens"]])
            except ValueError:
                raise ApexError(f"{where}: token counts must be numbers") from None
            ts = parts[tcol].strip()
            try:
                t = float(ts)
                if "StartTimeOffset" in cols and tcol == cols["StartTimeOffset"]:
                    t *= 1e-9
            except ValueError:
                t = _parse_datetime(ts, where)
            if t0 is None:
                t0 = t
            t -= t0
            _check(where, max(t, 0.0), p, o)
            g.add(max(t, 0.0), int(p), int(o))
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


def load_trace(path: str | Path) -> Workload:
    """Load a trace file, sorted by arrival, times relative to the first request (seconds)."""
    p = Path(path)
    if not p.exists():
        raise ApexError(f"trace file {p} does not exist")
    if p.is_dir():
        raise ApexError(f"trace file {p} is a directory")
    g = _read_csv(p) if p.suffix.lower() == ".csv" else _read_jsonl(p)
    n = g.n
    if n == 0:
        raise ApexError(f"trace file {p} has no requests")
    # build each output column, then drop its oversized input buffer (bounded peak memory)
    t, g.t = g.t[:n], None
    order = None if bool(np.all(t[1:] >= t[:-1])) else np.argsort(t, kind="stable")
    if order is not None:
        t = t[order]
    arrival = t - t[0]
    del t
    pr, g.p = g.p[:n], None
    prompt = pr[order] if order is not None else pr.copy()
    del pr
    o, g.o = g.o[:n], None
    output = o[order] if order is not None else o.copy()
    del o
    return Workload(arrival=arrival, prompt=prompt, output=output, name=p.name)
