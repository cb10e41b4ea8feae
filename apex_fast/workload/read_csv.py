"""Azure LLM inference CSV traces: `TIMESTAMP` (date-time or seconds) or `StartTimeOffset` (ns),
`ContextTokens`, `GeneratedTokens`; other columns are ignored. Times are absolute: load_trace
sorts the rows and subtracts the earliest.

The file is read in blocks of CSV_CHUNK bytes cut at line ends; a line longer than
MAX_LINE_BYTES is refused with its number before it is parsed, so a file without newlines is
refused after reading at most CSV_CHUNK bytes, and memory stays at one block plus the NumPy
columns (24 bytes per request). Polars parses each block (every line one row, no quoting: a
field is the text between commas) and converts the columns at once; the rows it cannot convert
exactly as Python's float() and datetime.fromisoformat would (blank lines, short rows, other
number or date-time spellings, bad values) go one by one through `_row`, which accepts them or
raises the line-numbered error, so the first bad line is the one reported. Date-times without
a time zone are read as UTC.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.workload.columns import (
    MAX_LINE_BYTES,
    MAX_TOKENS,
    Columns,
    bounded_lines,
    check_request,
    long_line,
)

CSV_CHUNK = 4 << 20  # bytes read and parsed at a time
MAX_ABS_SECONDS = 1e12  # a numeric time beyond this many seconds is not plausible
_SPACE = " \t\r\n\x0b\x0c"  # what Polars strips before converting (Python's float strips more)
# the date-times Polars converts (Azure's layout); anything else goes through Python
_DATETIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?$"


@dataclass(frozen=True)
class _Layout:
    """Where the columns are, from the header line."""

    path: Path
    ncols: int  # columns of the header: a row needs at least as many
    p: int
    o: int
    t: int
    ns: bool  # StartTimeOffset (nanoseconds) instead of TIMESTAMP

    @classmethod
    def of(cls, path: Path, first: bytes | None) -> _Layout:
        header = [] if first is None else first.decode("utf-8", "replace").strip().split(",")
        cols = {c.strip().lstrip("\ufeff"): i for i, c in enumerate(header)}
        for need in ("ContextTokens", "GeneratedTokens"):
            if need not in cols:
                raise ApexError(f"{path}:1: CSV header lacks {need!r}")
        tcol = cols.get("TIMESTAMP", cols.get("StartTimeOffset"))
        if tcol is None:
            raise ApexError(f"{path}:1: CSV header lacks 'TIMESTAMP' or 'StartTimeOffset'")
        p, o = cols["ContextTokens"], cols["GeneratedTokens"]
        return cls(path, len(header), p, o, tcol, "TIMESTAMP" not in cols)


def read_csv(path: Path) -> Columns:
    """The requests of an Azure-layout CSV file, in file order."""
    g = Columns()
    with path.open("rb") as f:
        first = next(bounded_lines(f, path), None)
        lay = _Layout.of(path, None if first is None else first[1])
        for lineno, block in _blocks(f, path, 2):
            t, p, o = _parse_block(block, lineno, lay)
            g.extend(t, p, o)
    return g


def _blocks(f: BinaryIO, path: Path, lineno: int):  # noqa: ANN202 (generator)
    """(number of its first line, bytes of whole lines) of about CSV_CHUNK bytes each."""
    tail = b""
    while True:
        chunk = f.read(CSV_CHUNK)
        buf = tail + chunk
        if not chunk:
            if len(buf) > MAX_LINE_BYTES:
                raise long_line(path, lineno)
            if buf:
                yield lineno, buf
            return
        cut = buf.rfind(b"\n") + 1
        block, tail = buf[:cut], buf[cut:]
        if block:
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n"))
            long = np.flatnonzero(np.diff(ends, prepend=-1) > MAX_LINE_BYTES)
            if long.size:
                raise long_line(path, lineno + int(long[0]))
            yield lineno, block
            lineno += ends.size
        if len(tail) > MAX_LINE_BYTES:
            raise long_line(path, lineno)


def _fields_per_line(block: bytes) -> np.ndarray:
    """Comma-separated fields of every line of `block` (a last line without newline included)."""
    raw = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(raw == ord("\n"))
    if not block.endswith(b"\n"):
        ends = np.append(ends, len(block))
    commas = np.flatnonzero(raw == ord(","))
    at = np.searchsorted(commas, ends)
    return np.diff(at, prepend=0) + 1


def _parse_block(
    block: bytes, lineno: int, lay: _Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, prompts, outputs) of the rows of one block; `lineno`: its first line's number."""
    import polars as pl

    need = sorted({0, lay.t, lay.p, lay.o})
    df = pl.read_csv(
        block,
        has_header=False,
        columns=need,
        schema={f"c{i}": pl.String for i in range(need[-1] + 1)},
        quote_char=None,
        truncate_ragged_lines=True,
        empty_string_is_null=False,
        missing_columns="insert",
        extra_columns="ignore",
        encoding="utf8-lossy",
    )
    fields = _fields_per_line(block)
    if df.height != fields.size:  # never seen: one row per line is what the reading relies on
        raise ApexError(f"{lay.path}:{lineno}: cannot split this CSV into one row per line")
    ts = pl.col(f"c{lay.t}").str.strip_chars(_SPACE)
    cols = df.select(
        p=pl.col(f"c{lay.p}").str.strip_chars(_SPACE).cast(pl.Float64, strict=False),
        o=pl.col(f"c{lay.o}").str.strip_chars(_SPACE).cast(pl.Float64, strict=False),
        tn=ts.cast(pl.Float64, strict=False),
        # whole seconds and microseconds (digits 7 on dropped, as datetime does) of a date-time
        ds=pl.when(ts.str.contains(_DATETIME))
        .then(ts.str.slice(0, 19).str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False))
        .dt.epoch("s"),
        du=ts.str.slice(20, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False),
    )
    p = cols["p"].to_numpy().astype(np.float64)  # null -> nan
    o = cols["o"].to_numpy().astype(np.float64)
    tn = cols["tn"].to_numpy().astype(np.float64) * (1e-9 if lay.ns else 1.0)
    dated = cols["ds"].is_not_null().to_numpy() & cols["du"].is_not_null().to_numpy()
    ds = cols["ds"].fill_null(0).to_numpy().astype(np.float64)
    t = np.where(np.isnan(tn), ds + cols["du"].fill_null(0).to_numpy() / 1e6, tn)
    with np.errstate(invalid="ignore"):
        ok = (
            (fields >= lay.ncols)
            & (p == np.floor(p))
            & (o == np.floor(o))
            & (p >= 1)
            & (p <= MAX_TOKENS)
            & (o >= 0)
            & (o <= MAX_TOKENS)
            & (np.isnan(tn) & dated | (np.abs(tn) <= MAX_ABS_SECONDS))
        )
    if ok.all():
        return t, p.astype(np.int64), o.astype(np.int64)
    keep = ok.copy()
    for i in np.flatnonzero(~ok):  # in file order: the first bad line raises
        vals = [df[f"c{c}"][int(i)] or "" for c in (lay.t, lay.p, lay.o, 0)]
        row = _row(vals, int(fields[i]), f"{lay.path}:{lineno + int(i)}", lay)
        if row is not None:
            t[i], p[i], o[i] = row
            keep[i] = True
    return t[keep], p[keep].astype(np.int64), o[keep].astype(np.int64)


def _row(vals: list[str], fields: int, where: str, lay: _Layout) -> tuple[float, int, int] | None:
    """One row the fast path did not take, checked as Python reads it: (seconds, prompt,
    output), None for a blank line, or the line-numbered error."""
    tstr, pstr, ostr, first = vals
    if fields == 1 and not first.strip():
        return None
    if fields < lay.ncols:
        raise ApexError(f"{where}: expected {lay.ncols} columns, got {fields}")
    try:
        p, o = float(pstr), float(ostr)
    except ValueError:
        raise ApexError(f"{where}: token counts must be numbers") from None
    if not (math.isfinite(p) and math.isfinite(o)) or p != int(p) or o != int(o):
        raise ApexError(f"{where}: token counts must be whole numbers")
    tstr = tstr.strip()
    try:
        t = float(tstr)
    except ValueError:
        t = _parse_datetime(tstr, where)
    else:
        if lay.ns:
            t *= 1e-9
        if not (math.isfinite(t) and abs(t) <= MAX_ABS_SECONDS):
            raise ApexError(f"{where}: time {tstr!r} is not plausible")
    check_request(where, 0.0, p, o)
    return t, int(p), int(o)


def _parse_datetime(ts: str, where: str) -> float:
    """Seconds since 1970 of an ISO date-time (naive: UTC); at most 6 fractional digits kept,
    as Azure traces carry 7 and datetime takes at most 6."""
    try:
        head, _, frac = ts.partition(".")
        frac = "".join(ch for ch in frac if ch.isdigit())[:6]
        dt = datetime.fromisoformat(head + ("." + frac if frac else ""))
    except ValueError:
        raise ApexError(f"{where}: TIMESTAMP {ts!r} is neither seconds nor a date-time") from None
    if dt.tzinfo is not None:
        return dt.timestamp()
    return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6
