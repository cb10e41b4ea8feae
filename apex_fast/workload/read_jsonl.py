"""JSON-lines traces: APEX+ (`StartTimeOffset` ns, `ContextTokens`, `GeneratedTokens`) and
Mooncake (`timestamp` ms, `input_length`, `output_length`), with optional prompt `hash_ids`.

Lines are parsed with orjson one at a time (a fast path for the common well-formed line) in
blocks of BLOCK into growing NumPy columns, so memory stays proportional to the request count.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from apex_fast.errors import ApexError
from apex_fast.workload.columns import (
    BLOCK,
    MAX_TOKENS,
    Columns,
    bounded_lines,
    check_request,
    number,
)

MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
MOONCAKE_HASH_BLOCK = 512  # tokens per Mooncake hash id (kvcache-ai/Mooncake trace README)
MAX_HASH_ID = 1 << 32  # ids below this: id x block size x attention copies fits in an int64
MAX_HASH_BLOCK = 1 << 20  # tokens per hash id, at most


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
        vals.append(number(obj[name], name, where, integer=name != names[0]))
    t, p, o = vals
    check_request(where, t, p, o, names)
    return t * scale, int(p), int(o)


def _hash_ids(obj: dict, where: str, g: Columns) -> list[int]:
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


def read_jsonl(path: Path, names: tuple[str, str, str], scale: float) -> Columns:
    """Stream the file line by line. The common line (integer token counts in range, a finite
    non-negative time) takes a fast path; anything else goes through `_parse_line`, which
    accepts it exactly as before or raises the line-numbered error. Memory: the NumPy columns
    plus one block of at most BLOCK lines."""
    g = Columns()
    loads = orjson.loads
    tn, pn, on = names
    ts: list[float] = []
    ps: list[int] = []
    os_: list[int] = []
    hl: list[int] = []
    hs: list[int] = []
    with path.open("rb") as f:
        for lineno, raw in bounded_lines(f, path):
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
            if len(ts) == BLOCK:
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
