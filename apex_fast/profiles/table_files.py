"""Reading APEX-format profile CSVs: validation row by row (a bad row is an ApexError naming the
file and line) and the .npz cache of the parsed grids, keyed by the file's content hash."""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError

_CACHE_VERSION = "1"


def cache_dir() -> Path:
    """Where parsed grids are cached ($APEX_FAST_CACHE_DIR, default ~/.cache/apex-fast)."""
    env = os.environ.get("APEX_FAST_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "apex-fast"


def _check_value(col: str, raw: str, kind: str) -> str | None:
    """Error text for one cell, or None when it is valid."""
    s = raw.strip()
    if kind == "str":
        return None if s else f"empty {col}"
    try:
        v = float(s)
    except ValueError:
        return f"{col} {raw!r} is not a number"
    if not math.isfinite(v):
        return f"{col} {raw!r} is not finite"
    if kind in ("int", "posint") and v != int(v):
        return f"{col} {raw!r} is not an integer"
    if kind == "posint" and v < 1:
        return f"{col} must be >= 1, got {raw!r}"
    if kind == "pos" and v <= 0:
        return f"{col} must be > 0, got {raw!r}"
    if kind in ("int", "nonneg") and v < 0:
        return f"{col} must be >= 0, got {raw!r}"
    return None


def _locate_error(path: Path, kinds: dict[str, str]) -> str:
    """Scan the file with the csv module and describe its first bad line."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return f"{path}: line 1: empty file"
        header = [h.strip() for h in header]
        idx = {c: header.index(c) for c in kinds}
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                return (
                    f"{path}: line {line}: {len(row)} fields, the header has {len(header)} "
                    f"({','.join(header)})"
                )
            for col, kind in kinds.items():
                err = _check_value(col, row[idx[col]], kind)
                if err:
                    return f"{path}: line {line}: {err}"
    return f"{path}: malformed table"


def read_table(path: Path, kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """Columns of an APEX-format CSV, validated.

    kinds maps each required column to str | int | posint | pos | nonneg
    (int: integer >= 0, posint: integer >= 1, pos: > 0, nonneg: >= 0).
    """
    import polars as pl  # only when a table is parsed (later loads read the .npz cache)

    path = Path(path)
    try:
        df = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except FileNotFoundError:
        raise ApexError(f"profile table {path} not found") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError):
        raise ApexError(_locate_error(path, kinds)) from None
    cols = [c.strip() for c in df.columns]
    df.columns = cols
    missing = [c for c in kinds if c not in cols]
    if missing:
        raise ApexError(
            f"{path}: line 1: header {','.join(cols)!r} lacks {', '.join(missing)} "
            f"(expected {','.join(kinds)})"
        )
    if df.height == 0:
        raise ApexError(f"{path}: no data rows")
    out: dict[str, np.ndarray] = {}
    bad = np.zeros(df.height, dtype=bool)
    for col, kind in kinds.items():
        s = df[col].str.strip_chars()
        if kind == "str":
            bad |= (s.is_null() | (s == "")).to_numpy()
            out[col] = s.to_numpy().astype(str)
            continue
        v = s.cast(pl.Float64, strict=False).to_numpy()
        ok = np.isfinite(v)
        if kind in ("int", "posint"):
            ok &= (v >= (1 if kind == "posint" else 0)) & (v == np.floor(np.where(ok, v, 0)))
        elif kind == "pos":
            ok &= v > 0
        else:
            ok &= v >= 0
        bad |= ~ok
        out[col] = v
    if bad.any():
        raise ApexError(_locate_error(path, kinds))
    return out


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_arrays(path: Path, kind: str, build: Callable[[Path], dict[str, np.ndarray]]):
    """Arrays built from `path`, from the .npz cache when the file's hash has been seen."""
    if not path.is_file():
        raise ApexError(f"profile table {path} not found")
    digest = file_hash(path)
    cfile = cache_dir() / f"{kind}-{path.stem}-{digest}-v{_CACHE_VERSION}.npz"
    if cfile.exists():
        try:
            with np.load(cfile, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass  # a broken cache entry is rebuilt
    arrays = build(path)
    try:
        cfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfile.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cfile)
    except OSError:
        pass  # read-only home: work without the cache
    return arrays


def group_mean_log(keys: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of `keys` (2-D) and the mean log(time) of duplicates."""
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    s = np.bincount(inv, weights=np.log(t), minlength=len(uniq))
    c = np.bincount(inv, minlength=len(uniq))
    return uniq, s / c
