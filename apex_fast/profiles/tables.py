"""Measured op-cost tables in the APEX+ profiler formats, as dense NumPy grids.

Layout of a profile root (the default is `profile_data/`, `--profile-dir` names another):

    comp/<Backend>/gemm_<freq>.csv   gpu,dtype,m,k,n,time(us)          C[m x n] = W[m x k] . X[k x n]
    comp/<Backend>/mha_<freq>.csv    gpu,dtype,num_heads,head_size,batch_size,seq_len,time(us)
    comm/<Backend>/<collective>.csv  gpu,num_nodes,num_gpus_per_node,dtype,size(kb),time(us)

<freq> is the SM clock in MHz, 0 = default clock. Extra columns (power, energy) are ignored.

Each file is parsed once (Polars), validated row by row (a bad row is an ApexError naming the file
and line), turned into grids and cached as .npz keyed by the file's content hash under
`$APEX_FAST_CACHE_DIR` (default `~/.cache/apex-fast`); later loads read only the .npz
(table_files.py).

Lookups interpolate log(time) linearly in log coordinates between the measured grid points. Outside
the grid nothing is extrapolated silently: below the smallest size the value is clamped to the
edge; above the largest size the edge value is scaled linearly with the size (a GEMM or a message
that large is a sequence of edge-sized tiles; APEX+ does the same for collectives). Every lookup
returns a tag per point: MEASURED (a grid point), INTERPOLATED, CLAMPED (outside the grid)
(grid.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.profiles.grid import INTERPOLATED, MEASURED, interp_grid
from apex_fast.profiles.table_files import cached_arrays, group_mean_log, read_table

COLLECTIVE_FILES = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv")
# nccl-tests start at 256 elements: a "0 KB" row (integer-truncated) is 512 B of half
_ZERO_KB_BYTES = 512.0
# the columns each table must have and the values they take (read_table's kinds)
GEMM_COLUMNS = {
    "gpu": "str",
    "dtype": "str",
    "m": "posint",
    "k": "posint",
    "n": "posint",
    "time(us)": "pos",
}
COMM_COLUMNS = {
    "gpu": "str",
    "num_nodes": "posint",
    "num_gpus_per_node": "posint",
    "dtype": "str",
    "size(kb)": "nonneg",
    "time(us)": "pos",
}
ATTN_COLUMNS = {
    "gpu": "str",
    "dtype": "str",
    "num_heads": "pos",
    "head_size": "pos",
    "batch_size": "pos",
    "seq_len": "pos",
    "time(us)": "pos",
}


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
    cols = read_table(path, GEMM_COLUMNS)
    out: dict[str, np.ndarray] = {}
    dtypes = sorted(set(cols["dtype"].tolist()))
    for dt in dtypes:
        sel = cols["dtype"] == dt
        keys = np.stack([cols["m"][sel], cols["k"][sel], cols["n"][sel]], axis=1)
        uniq, logt = group_mean_log(keys, cols["time(us)"][sel] * 1e-6)
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
    a = cached_arrays(Path(path), "gemm", _build_gemm)
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
    cols = read_table(path, COMM_COLUMNS)
    dts = sorted(set(cols["dtype"].tolist()))
    dt_code = np.searchsorted(np.array(dts), cols["dtype"])
    nbytes = np.where(cols["size(kb)"] > 0, cols["size(kb)"] * 1024.0, _ZERO_KB_BYTES)
    keys = np.stack(
        [cols["num_nodes"], cols["num_gpus_per_node"], dt_code.astype(np.float64), nbytes], axis=1
    )
    uniq, logt = group_mean_log(keys, cols["time(us)"] * 1e-6)
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
    a = cached_arrays(Path(path), "comm", _build_comm)
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
    cols = read_table(path, ATTN_COLUMNS)
    return {
        "dtype": cols["dtype"],
        "heads": cols["num_heads"],
        "head_size": cols["head_size"],
        "batch": cols["batch_size"],
        "seq": cols["seq_len"],
        "t": cols["time(us)"] * 1e-6,
    }


def load_attn(path: Path, label: str) -> AttnTable:
    a = cached_arrays(Path(path), "attn", _build_attn)
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

    def _table(self, key: tuple, sub: str, backend: str, name: str, load, absent):
        """The table sub/<backend>/<name> read by `load`, or `absent` when there is none."""

        def make():
            d = _backend_dir(self.root / sub, backend)
            if d is None or not (d / name).is_file():
                return absent
            return load(d / name, f"{d.name}/{name}")

        return self._get(key, make)

    def gemm(self, backend: str, freq: int = 0) -> dict[str, GemmGrid]:
        """dtype -> grid from comp/<backend>/gemm_<freq>.csv ({} when absent)."""
        key = ("gemm", backend, freq)
        return self._table(key, "comp", backend, f"gemm_{freq}.csv", load_gemm, {})

    def attention(self, backend: str, freq: int = 0, causal: bool = True) -> AttnTable | None:
        name = f"{'mha' if causal else 'bimha'}_{freq}.csv"
        return self._table(("attn", backend, freq, causal), "comp", backend, name, load_attn, None)

    def collective(self, backend: str, kind: str) -> CommTable | None:
        return self._table(("comm", backend, kind), "comm", backend, f"{kind}.csv", load_comm, None)

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
