"""What every trace reader shares: the bounds on a trace, the growing NumPy columns the rows go
into, the checks of one request's values, and lines read at most MAX_LINE_BYTES at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError, check_at_least

MAX_TOKENS = 100_000_000  # tokens of one request's prompt or output, at most
MAX_LINE_BYTES = 1 << 20  # 1 MiB: a Mooncake line with 100k-token prompts is ~2 KB
MAX_JSON_BYTES = 1 << 30  # 1 GiB: a benchmark result with every generated text kept
APEX_FIELDS = ("StartTimeOffset", "ContextTokens", "GeneratedTokens")
BLOCK = 65536  # rows parsed into Python lists before they are copied into the NumPy columns


class Columns:
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

    def extend(self, t: list | np.ndarray, p: list | np.ndarray, o: list | np.ndarray) -> None:
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


def number(v: object, name: str, where: str, integer: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApexError(f"{where}: field {name!r} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ApexError(f"{where}: field {name!r} must be finite, got {v!r}")
    if integer and v != int(v):
        raise ApexError(f"{where}: field {name!r} must be a whole number, got {v!r}")
    return v


def check_request(
    where: str, t: float, p: float, o: float, names: tuple[str, str, str] = APEX_FIELDS
) -> None:
    tn, pn, on = names
    if t < 0:
        raise ApexError(f"{where}: {tn} is negative ({t})")
    check_at_least(f"{where}: {pn}", p, 1)
    check_at_least(f"{where}: {on}", o, 0)
    if p > MAX_TOKENS or o > MAX_TOKENS:
        raise ApexError(f"{where}: token counts above {MAX_TOKENS} are not plausible")
    if t > 1e21:
        raise ApexError(f"{where}: {tn} {t} is not plausible")


def bounded_lines(f, path: Path):  # noqa: ANN001, ANN202 (binary file, generator)
    """(line number, bytes) with every line at most MAX_LINE_BYTES long."""
    readline = f.readline
    lineno = 0
    while True:
        raw = readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE_BYTES:
            raise long_line(path, lineno)
        yield lineno, raw


def long_line(path: Path, lineno: int) -> ApexError:
    """The error for a line above MAX_LINE_BYTES (a file with no newline, /dev/zero, ...)."""
    return ApexError(
        f"{path}:{lineno}: line longer than {MAX_LINE_BYTES // (1 << 20)} MiB; "
        "not a trace of one request per line"
    )
