"""Write request traces as APEX+ JSON lines, streamed in blocks (memory: the columns plus one
block of text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.workload.multiturn import MultiTurnTrace

MAX_TRACE_REQUESTS = 100_000_000  # the largest trace `apex.py trace` writes
_WRITE_BLOCK = 16384  # lines formatted and written at a time (about 6 MB of Python objects)


def write_multiturn(path: str | Path, tr: MultiTurnTrace) -> None:
    """APEX+ JSON lines plus `hash_ids`, `hash_block_size` and `ConversationID`."""
    try:
        with Path(path).open("wb") as f:
            ns = np.rint(tr.arrival * 1e9).astype(np.int64).tolist()
            ids = tr.hash_ids.tolist()
            off = tr.hash_offsets.tolist()
            for a in range(0, len(ns), _WRITE_BLOCK):
                lines = []
                for i in range(a, min(a + _WRITE_BLOCK, len(ns))):
                    h = ",".join(map(str, ids[off[i] : off[i + 1]]))
                    lines.append(
                        b'{"StartTimeOffset":%d,"ContextTokens":%d,"GeneratedTokens":%d,'
                        b'"RequestID":"multiturn-%06d","ConversationID":%d,'
                        b'"hash_block_size":%d,"hash_ids":[%s]}\n'
                        % (
                            ns[i],
                            int(tr.prompt[i]),
                            int(tr.output[i]),
                            i,
                            int(tr.conversation[i]),
                            tr.hash_block,
                            h.encode(),
                        )
                    )
                f.write(b"".join(lines))
    except OSError as err:
        raise ApexError(f"cannot write trace {path}: {err.strerror or err}") from None


def write_trace(path: str | Path, t: np.ndarray, p: np.ndarray, o: np.ndarray) -> None:
    """APEX+ JSON lines: StartTimeOffset (ns), ContextTokens, GeneratedTokens, RequestID.
    Streamed in blocks, so memory stays at the three columns plus one block of text."""
    n = t.size
    if p.size != n or o.size != n:
        raise ApexError("trace columns differ in length")
    try:
        with Path(path).open("wb") as f:
            for a in range(0, n, _WRITE_BLOCK):
                b = min(a + _WRITE_BLOCK, n)
                ns = np.rint(t[a:b] * 1e9).astype(np.int64).tolist()
                lines = [
                    b'{"StartTimeOffset":%d,"ContextTokens":%d,"GeneratedTokens":%d,'
                    b'"RequestID":"synthetic-%06d"}\n' % (ti, pi, oi, a + i)
                    for i, (ti, pi, oi) in enumerate(
                        zip(ns, p[a:b].tolist(), o[a:b].tolist(), strict=True)
                    )
                ]
                f.write(b"".join(lines))
    except OSError as err:
        raise ApexError(f"cannot write trace {path}: {err.strerror or err}") from None
