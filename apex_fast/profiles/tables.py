"""Measured op-cost tables in the APEX+ profiler formats, as dense NumPy grids.

Layout of a profile root (the default is `profile_data/`, `--profile-dir` names another):

    comp/<Backend>/gemm_<freq>.csv   gpu,dtype,m,k,n,time(us)          C[m x n] = W[m x k] . X[k x n]
    comp/<Backend>/mha_<freq>.csv    gpu,dtype,num_heads,head_size,batch_size,seq_len,time(us)
    comm/<Backend>/<collective>.csv  gpu,num_nodes,num_gpus_per_node,dtype,size(kb),time(us)

<freq> is the SM clock in MHz, 0 = default clock. Extra columns (power, energy) are ignored.

Each file is parsed once (Polars), validated row by row (a bad row is an ApexError naming the file
and line), turned into grids and cached as .npz keyed by the file's content hash under
`$APEX_FAST_CACHE_DIR` (default `~/.cache/apex-fast`); later loads read only the .npz.

Lookups interpolate log(time) linearly in log coordinates between the measured grid points. Outside
the grid nothing is extrapolated silently: below the smallest size the value is clamped to the
edge; above the largest size the edge value is scaled linearly with the size (a GEMM or a message
that large is a sequence of edge-sized tiles; APEX+ does the same for collectives). Every lookup
returns a tag per point: MEASURED (a grid point), INTERPOLATED, CLAMPED (outside the grid).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError

MEASURED, INTERPOLATED, CLAMPED = 0, 1, 2
TAG_NAMES = {MEASURED: "measured", INTERPOLATED: "interpolated", CLAMPED: "clamped"}

COLLECTIVE_FILES = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv")
_DTYPES = ("half", "float", "float8", "bfloat16", "float16", "float32", "int8")
_CACHE_VERSION = "1"
# nccl-tests start at 256 elements: a "0 KB" row (integer-truncated) is 512 B of half
_ZERO_KB_BYTES = 512.0


def cache_dir() -> Path:
    """Where parsed grids are cached ($APEX_FAST_CACHE_DIR, default ~/.cache/apex-fast)."""
    env = os.environ.get("APEX_FAST_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "apex-fast"


# --------------------------------------------------------------------------- parsing
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


def _cached(path: Path, kind: str, build: Callable[[Path], dict[str, np.ndarray]]):
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


def _group_mean_log(keys: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of `keys` (2-D) and the mean log(time) of duplicates."""
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    s = np.bincount(inv, weights=np.log(t), minlength=len(uniq))
    c = np.bincount(inv, minlength=len(uniq))
    return uniq, s / c


# --------------------------------------------------------------------------- 1-D / N-D grids
def _axis_weights(axis: np.ndarray, x: np.ndarray):
    """Lower index, weight of the upper neighbour, exact-hit and outside flags, scale above top.

    axis: sorted log coordinates; x: log query values.
    """
    lo, hi = axis[0], axis[-1]
    xc = np.clip(x, lo, hi)
    outside = (x < lo - 1e-9) | (x > hi + 1e-9)
    above = np.maximum(x - hi, 0.0)  # log of the linear scale factor above the top
    if len(axis) == 1:
        i0 = np.zeros(x.shape, dtype=np.int64)
        return i0, np.zeros(x.shape), np.ones(x.shape, dtype=bool), outside, above
    i0 = np.clip(np.searchsorted(axis, xc, side="right") - 1, 0, len(axis) - 2)
    w = (xc - axis[i0]) / (axis[i0 + 1] - axis[i0])
    exact = (np.abs(w) < 1e-9) | (np.abs(w - 1.0) < 1e-9)
    return i0, w, exact, outside, above


def interp_grid(
    axes: list[np.ndarray], logv: np.ndarray, queries: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Multilinear interpolation of logv (shape = axis lengths) at log coordinates `queries`.

    Returns (value, tag) with value = exp(interpolated log value) x linear scale above the top.
    """
    qs = np.broadcast_arrays(*[np.asarray(q, dtype=np.float64) for q in queries])
    shape = qs[0].shape
    parts = [_axis_weights(ax, q.reshape(-1)) for ax, q in zip(axes, qs, strict=True)]
    npts = qs[0].size
    acc = np.zeros(npts)
    nd = len(axes)
    for corner in range(1 << nd):
        idx = []
        wt = np.ones(npts)
        for d in range(nd):
            i0, w, *_ = parts[d]
            up = (corner >> d) & 1
            if len(axes[d]) == 1:
                if up:
                    wt = wt * 0.0
                idx.append(i0)
                continue
            idx.append(i0 + up)
            wt = wt * (w if up else 1.0 - w)
        if not wt.any():
            continue
        acc += wt * logv[tuple(idx)]
    scale = np.zeros(npts)
    exact = np.ones(npts, dtype=bool)
    outside = np.zeros(npts, dtype=bool)
    for _, _, ex, out, above in parts:
        exact &= ex
        outside |= out
        scale += above
    tag = np.where(outside, CLAMPED, np.where(exact, MEASURED, INTERPOLATED)).astype(np.int8)
    return np.exp(acc + scale).reshape(shape), tag.reshape(shape)


# --------------------------------------------------------------------------- GEMM
@dataclass(frozen=True)
class GemmGrid:
    """Measured GEMM times of one dtype on a dense (m, k, n) grid."""

    label: str  # e.g. "V100-PCIE-16GB/gemm_0.csv"
    dtype: str
    m: np.ndarray
    k: np.ndarray
    n: np.ndarray
    logt: np.ndarray  # log(seconds), shape (len(m), len(k), len(n))

    def lookup(
        self, m: np.ndarray | float, k: np.ndarray | float, n: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and tags for GEMMs C[m x n] = W[m x k] . X[k x n] (sizes >= 1)."""
        q = [np.log(np.maximum(np.asarray(x, dtype=np.float64), 1.0)) for x in (m, k, n)]
        return interp_grid([np.log(self.m), np.log(self.k), np.log(self.n)], self.logt, q)


def _build_gemm(path: Path) -> dict[str, np.ndarray]:
    cols = read_table(
        path,
        {
            "gpu": "str",
            "dtype": "str",
            "m": "posint",
            "k": "posint",
            "n": "posint",
            "time(us)": "pos",
        },
    )
    out: dict[str, np.ndarray] = {}
    dtypes = sorted(set(cols["dtype"].tolist()))
    for dt in dtypes:
        sel = cols["dtype"] == dt
        keys = np.stack([cols["m"][sel], cols["k"][sel], cols["n"][sel]], axis=1)
        uniq, logt = _group_mean_log(keys, cols["time(us)"][sel] * 1e-6)
        axes = [np.unique(uniq[:, d]) for d in range(3)]
        size = len(axes[0]) * len(axes[1]) * len(axes[2])
        grid = np.full(size, np.nan)
        flat = (
            np.searchsorted(axes[0], uniq[:, 0]) * len(axes[1])
            + np.searchsorted(axes[1], uniq[:, 1])
        ) * len(axes[2]) + np.searchsorted(axes[2], uniq[:, 2])
        grid[flat] = logt
        if np.isnan(grid).any():
            miss = int(np.flatnonzero(np.isnan(grid))[0])
            i, rem = divmod(miss, len(axes[1]) * len(axes[2]))
            j, l_ = divmod(rem, len(axes[2]))
            raise ApexError(
                f"{path}: dtype {dt} is not a full m x k x n grid "
                f"({int(np.isnan(grid).sum())} of {size} points missing, e.g. "
                f"m={int(axes[0][i])}, k={int(axes[1][j])}, n={int(axes[2][l_])})"
            )
        out[f"{dt}/m"], out[f"{dt}/k"], out[f"{dt}/n"] = axes
        out[f"{dt}/logt"] = grid.reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    out["dtypes"] = np.array(dtypes)
    out["gpus"] = np.array(sorted(set(cols["gpu"].tolist())))
    return out


def load_gemm(path: Path, label: str) -> dict[str, GemmGrid]:
    """dtype -> GemmGrid for one gemm_<freq>.csv."""
    a = _cached(Path(path), "gemm", _build_gemm)
    return {
        str(dt): GemmGrid(label, str(dt), a[f"{dt}/m"], a[f"{dt}/k"], a[f"{dt}/n"], a[f"{dt}/logt"])
        for dt in a["dtypes"]
    }


# --------------------------------------------------------------------------- collectives
@dataclass(frozen=True)
class CommCurve:
    """Measured times of one collective for one (num_nodes, num_gpus_per_node, dtype)."""

    label: str
    nbytes: np.ndarray  # sorted message sizes in bytes (nccl-tests convention)
    logt: np.ndarray  # log(seconds)

    def lookup(self, nbytes: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        s = np.log(np.maximum(np.asarray(nbytes, dtype=np.float64), 1.0))
        return interp_grid([np.log(self.nbytes)], self.logt, [s])


def _build_comm(path: Path) -> dict[str, np.ndarray]:
    cols = read_table(
        path,
        {
            "gpu": "str",
            "num_nodes": "posint",
            "num_gpus_per_node": "posint",
            "dtype": "str",
            "size(kb)": "nonneg",
            "time(us)": "pos",
        },
    )
    dts = sorted(set(cols["dtype"].tolist()))
    dt_code = np.searchsorted(np.array(dts), cols["dtype"])
    nbytes = np.where(cols["size(kb)"] > 0, cols["size(kb)"] * 1024.0, _ZERO_KB_BYTES)
    keys = np.stack(
        [cols["num_nodes"], cols["num_gpus_per_node"], dt_code.astype(np.float64), nbytes], axis=1
    )
    uniq, logt = _group_mean_log(keys, cols["time(us)"] * 1e-6)
    return {"keys": uniq, "logt": logt, "dtypes": np.array(dts)}


@dataclass
class CommTable:
    """All groups of one collective file: (num_nodes, num_gpus_per_node, dtype) -> curve."""

    label: str
    curves: dict[tuple[int, int, str], CommCurve] = field(default_factory=dict)

    def curve(self, num_nodes: int, gpus_per_node: int, dtype: str) -> CommCurve | None:
        """Exact dtype first; else the half rows, else any (collective time follows bytes)."""
        for dt in (dtype, "half", *sorted({k[2] for k in self.curves})):
            c = self.curves.get((num_nodes, gpus_per_node, dt))
            if c is not None:
                return c
        return None


def load_comm(path: Path, label: str) -> CommTable:
    a = _cached(Path(path), "comm", _build_comm)
    keys, logt, dts = a["keys"], a["logt"], a["dtypes"]
    table = CommTable(label)
    groups = np.unique(keys[:, :3], axis=0)
    for nn, g, d in groups:
        sel = (keys[:, 0] == nn) & (keys[:, 1] == g) & (keys[:, 2] == d)
        order = np.argsort(keys[sel, 3])
        table.curves[(int(nn), int(g), str(dts[int(d)]))] = CommCurve(
            label, keys[sel, 3][order], logt[sel][order]
        )
    return table


# --------------------------------------------------------------------------- attention
@dataclass(frozen=True)
class AttnTable:
    """Measured self-attention forward times (APEX mha/bimha layout), one row per point."""

    label: str
    dtype: np.ndarray
    heads: np.ndarray
    head_size: np.ndarray
    batch: np.ndarray
    seq: np.ndarray
    t: np.ndarray  # seconds

    def prefill_time_per_pair(
        self, heads: int, head_size: int, dtype: str, causal: bool = True
    ) -> tuple[float, int] | None:
        """Seconds per (query, key) pair for `heads` heads, fitted on the rows of this table.

        Per row: (t - t_floor) / (batch x rows' heads x pairs), pairs = L(L+1)/2 causal or L^2;
        t_floor = the smallest time of the dtype (launch). The median over the largest-work
        quarter of the rows at the nearest head size is scaled to `heads` and `head_size`.
        Returns (seconds, tag) or None when the dtype is absent.
        """
        sel = self.dtype == dtype
        if not sel.any():
            return None
        sizes = np.unique(self.head_size[sel])
        hs = sizes[np.argmin(np.abs(np.log(sizes / head_size)))]
        sel &= self.head_size == hs
        floor = float(self.t[self.dtype == dtype].min())
        pairs = self.seq * (self.seq + 1) / 2.0 if causal else self.seq**2
        work = self.batch * self.heads * pairs
        w = work[sel]
        top = w >= np.quantile(w, 0.75)
        per = (self.t[sel][top] - floor) / w[top]
        per = per[per > 0]
        if per.size == 0:
            return None
        coef = float(np.median(per)) * heads * head_size / hs
        return coef, MEASURED if hs == head_size else INTERPOLATED


def _build_attn(path: Path) -> dict[str, np.ndarray]:
    cols = read_table(
        path,
        {
            "gpu": "str",
            "dtype": "str",
            "num_heads": "pos",
            "head_size": "pos",
            "batch_size": "pos",
            "seq_len": "pos",
            "time(us)": "pos",
        },
    )
    return {
        "dtype": cols["dtype"],
        "heads": cols["num_heads"],
        "head_size": cols["head_size"],
        "batch": cols["batch_size"],
        "seq": cols["seq_len"],
        "t": cols["time(us)"] * 1e-6,
    }


def load_attn(path: Path, label: str) -> AttnTable:
    a = _cached(Path(path), "attn", _build_attn)
    return AttnTable(label, a["dtype"], a["heads"], a["head_size"], a["batch"], a["seq"], a["t"])


# --------------------------------------------------------------------------- store
def _backend_dir(base: Path, backend: str) -> Path | None:
    d = base / backend
    if d.is_dir():
        return d
    if base.is_dir():
        for c in base.iterdir():
            if c.is_dir() and c.name.lower() == backend.lower():
                return c
    return None


@dataclass
class ProfileStore:
    """Lazy, memoised access to the tables under one profile root."""

    root: Path
    _memo: dict = field(default_factory=dict, repr=False)

    def _get(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def gemm(self, backend: str, freq: int = 0) -> dict[str, GemmGrid]:
        """dtype -> grid from comp/<backend>/gemm_<freq>.csv ({} when absent)."""

        def make() -> dict[str, GemmGrid]:
            d = _backend_dir(self.root / "comp", backend)
            if d is None or not (d / f"gemm_{freq}.csv").is_file():
                return {}
            return load_gemm(d / f"gemm_{freq}.csv", f"{d.name}/gemm_{freq}.csv")

        return self._get(("gemm", backend, freq), make)

    def attention(self, backend: str, freq: int = 0, causal: bool = True) -> AttnTable | None:
        name = f"{'mha' if causal else 'bimha'}_{freq}.csv"

        def make() -> AttnTable | None:
            d = _backend_dir(self.root / "comp", backend)
            if d is None or not (d / name).is_file():
                return None
            return load_attn(d / name, f"{d.name}/{name}")

        return self._get(("attn", backend, freq, causal), make)

    def collective(self, backend: str, kind: str) -> CommTable | None:
        def make() -> CommTable | None:
            d = _backend_dir(self.root / "comm", backend)
            if d is None or not (d / f"{kind}.csv").is_file():
                return None
            return load_comm(d / f"{kind}.csv", f"{d.name}/{kind}.csv")

        return self._get(("comm", backend, kind), make)

    def has_backend(self, backend: str) -> bool:
        return any(_backend_dir(self.root / s, backend) is not None for s in ("comp", "comm"))


@lru_cache(maxsize=8)
def _store(root: str) -> ProfileStore:
    return ProfileStore(Path(root))


def open_store(root: str | Path | None = None) -> ProfileStore:
    """The (process-wide, memoised) store of a profile root; default: profile_data/."""
    if root is None:
        from apex_fast.hardware.devices import PROFILE_DATA_DIR

        root = PROFILE_DATA_DIR
    p = Path(root).expanduser()
    if not p.is_dir():
        raise ApexError(f"profile directory {p} does not exist")
    return _store(str(p.resolve()))
