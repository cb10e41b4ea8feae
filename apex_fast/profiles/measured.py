"""Op costs from measured tables where they exist, from the analytic model elsewhere.

`cost_model(cluster, clock_mhz, profile_dir)` wraps the calibrated analytic `DeviceModel` and the
tables of the device's backend (`<root>/comp/<device>/`, `<root>/comm/<device>/`, see
`apex_fast/profiles/tables.py`). Each cost function returns an `OpCost`: the seconds together with
where they came from, e.g. "interpolated (V100-PCIE-16GB/gemm_0.csv)". Adding two OpCosts adds
their times and keeps both sources (in order, duplicates dropped); the cost compiler stores the
source of each operator row (`CompiledCosts.provenance`).

Rules: a device's GEMM table serves every GEMM of its dtype (a device without units of the compute
dtype, such as the CPU for half, uses the rows of the dtype it really computes in); a collective
table serves the groups whose (num_nodes, num_gpus_per_node) it has rows for; a causal attention
table gives the prefill cost per (query, key) pair; everything else is analytic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apex_fast.cells import SEND_RECV
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import PROFILE_DATA_DIR, peak_flops
from apex_fast.profiles import analytic
from apex_fast.profiles.grid import TAG_NAMES
from apex_fast.profiles.tables import GemmGrid, ProfileStore, open_store

ANALYTIC = analytic.PROVENANCE


def _tagged(tags: np.ndarray, label: str, extra: str = "") -> str:
    worst = int(tags.max()) if tags.size else 0
    return f"{TAG_NAMES[worst]} ({label}{extra})"


def combine(sources: list[str] | tuple[str, ...]) -> str:
    """One provenance string for an operator made of several parts (duplicates dropped)."""
    seen: list[str] = []
    for s in sources:
        if s and s not in seen:
            seen.append(s)
    return " + ".join(seen) if seen else ANALYTIC


def merge_sources(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The sources of a, then those of b that a lacks."""
    return a + tuple(s for s in b if s not in a)


@dataclass(frozen=True)
class OpCost:
    """Seconds of one op (an array over a batch axis, or a scalar coefficient) and where they came
    from. `a + b` adds the times (in that order) and keeps the sources of both; `k * a` scales the
    time; numbers add to the time without a source."""

    t: np.ndarray | float
    sources: tuple[str, ...] = ()
    __array_ufunc__ = None  # numpy scalars and arrays defer to the reflected operators below

    @property
    def source(self) -> str:
        return combine(self.sources)

    def __add__(self, other: OpCost | np.ndarray | float) -> OpCost:
        if isinstance(other, OpCost):
            return OpCost(self.t + other.t, merge_sources(self.sources, other.sources))
        return OpCost(self.t + other, self.sources)

    def __radd__(self, other: np.ndarray | float) -> OpCost:
        return OpCost(other + self.t, self.sources)

    def __rmul__(self, k: np.ndarray | float) -> OpCost:
        return OpCost(k * self.t, self.sources)

    def map(self, f: Callable[[np.ndarray], np.ndarray]) -> OpCost:
        """The same sources with the time transformed by f."""
        return OpCost(f(self.t), self.sources)


@dataclass
class CostModel:
    """Analytic device model plus the measured tables of its backend."""

    dm: analytic.DeviceModel
    gpus_per_node: int
    store: ProfileStore | None = None
    freq: int = 0
    notes: list[str] = field(default_factory=list)
    used: dict[str, str] = field(default_factory=dict)  # what -> table label

    @property
    def backend(self) -> str:
        return self.dm.device.name

    # ------------------------------------------------------------------ GEMM
    def _gemm_grid(self, compute_dtype: str) -> tuple[GemmGrid | None, str]:
        if self.store is None:
            return None, ""
        grids = self.store.gemm(self.backend, self.freq)
        if compute_dtype in grids:
            return grids[compute_dtype], ""
        peak, note = peak_flops(self.dm.device, compute_dtype)
        if note:  # no units of this dtype: use the rows of the dtype the device computes in
            for alt in ("half", "float"):
                alt_peak, alt_note = peak_flops(self.dm.device, alt)
                if alt in grids and not alt_note and alt_peak == peak:
                    return grids[alt], f", {alt} rows"
        return None, ""

    def gemm(
        self,
        m: int | np.ndarray,
        k: int | np.ndarray,
        n: np.ndarray,
        weight_bytes: float,
        act_bytes: float,
        compute_dtype: str,
    ) -> OpCost:
        grid, extra = self._gemm_grid(compute_dtype)
        # 16-bit tables do not describe weight-only quantised kernels: use the model for those
        if grid is None or weight_bytes < act_bytes:
            t = analytic.gemm_time(self.dm, m, k, n, weight_bytes, act_bytes, compute_dtype)
            return OpCost(t, (ANALYTIC,))
        m_, k_, n_ = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (m, k, n)))
        empty = (m_ <= 0) | (k_ <= 0) | (n_ <= 0)
        t, tags = grid.lookup(m_, k_, n_)
        self.used["GEMM"] = grid.label
        return OpCost(np.where(empty, 0.0, t), (_tagged(tags[~empty], grid.label, extra),))

    def mem(self, nbytes: np.ndarray | float) -> OpCost:
        return OpCost(analytic.mem_time(self.dm, nbytes), (ANALYTIC,))

    # ------------------------------------------------------------------ collectives
    def placement(self, kind: str, group: int, inter_node: bool) -> tuple[int, int]:
        """(num_nodes, num_gpus_per_node) of a group, as the comm tables key them."""
        if not inter_node:
            return 1, group
        if kind == SEND_RECV:
            return 2, 1
        nodes = -(-group // self.gpus_per_node)
        return nodes, group // nodes

    def collective(
        self,
        kind: str,
        nbytes: np.ndarray | float,
        group: int,
        inter_node: bool,
        dtype: str = "half",
    ) -> OpCost:
        s = np.asarray(nbytes, dtype=np.float64)
        if group <= 1:
            return OpCost(np.zeros_like(s))
        table = self.store.collective(self.backend, kind) if self.store is not None else None
        curve = None
        if table is not None:
            curve = table.curve(*self.placement(kind, group, inter_node), dtype)
        if curve is None:
            return OpCost(
                analytic.collective_time(self.dm, kind, s, group, inter_node), (ANALYTIC,)
            )
        t, tags = curve.lookup(s)
        self.used[kind] = curve.label
        return OpCost(np.where(s > 0, t, 0.0), (_tagged(tags[s > 0], curve.label),))

    # ------------------------------------------------------------------ attention
    def attn_prefill_time_per_pair(self, heads: int, head_dim: int, compute_dtype: str) -> OpCost:
        table = self.store.attention(self.backend, self.freq) if self.store is not None else None
        if table is not None:
            grid, _ = self._gemm_grid(compute_dtype)
            dts = [compute_dtype] + ([grid.dtype] if grid is not None else [])
            for dt in dts:
                fit = table.prefill_time_per_pair(heads, head_dim, dt)
                if fit is not None:
                    self.used["attention"] = table.label
                    return OpCost(fit[0], (f"{TAG_NAMES[fit[1]]} ({table.label})",))
        t = analytic.attn_prefill_time_per_pair(self.dm, heads, head_dim, compute_dtype)
        return OpCost(t, (ANALYTIC,))

    def attn_decode_time_per_token(self, kv_heads: int, head_dim: int, kv_bytes: float) -> OpCost:
        t = analytic.attn_decode_time_per_token(self.dm, kv_heads, head_dim, kv_bytes)
        return OpCost(t, (ANALYTIC,))

    def attn_launch_time(self) -> float:
        return analytic.attn_launch_time(self.dm)

    # ------------------------------------------------------------------ report
    def summary(self) -> str:
        """One line for the report header: what the op costs really came from."""
        if not self.used:
            return (
                "analytic device model (roofline with fitted efficiencies; see "
                "docs/device_model.md), no measured tables"
                + (f" under {self.store.root}" if self.store is not None else "")
            )
        tables = ", ".join(f"{what}: {label}" for what, label in self.used.items())
        root = self.store.root if self.store is not None else ""
        return f"measured tables from {root} ({tables}); analytic model for the other ops"


def cost_model(
    cluster: Cluster, clock_mhz: int | None = None, profile_dir: str | Path | None = None
) -> CostModel:
    """The cost model of a cluster's device; tables from profile_dir (default profile_data/)."""
    dm = analytic.device_model(cluster.device, clock_mhz)
    store: ProfileStore | None
    if profile_dir is None:
        store = open_store(PROFILE_DATA_DIR) if PROFILE_DATA_DIR.is_dir() else None
    else:
        store = open_store(profile_dir)
    freq = 0
    notes: list[str] = []
    if clock_mhz is not None and clock_mhz != dm.device.boost_clock_mhz:
        freq = int(clock_mhz)
    if store is not None and freq and not store.gemm(dm.device.name, freq):
        if store.gemm(dm.device.name, 0):
            notes.append(
                f"no gemm_{freq}.csv for {dm.device.name} at {freq} MHz: GEMMs use the analytic "
                "model scaled to that clock"
            )
    if profile_dir is not None and store is not None and not store.has_backend(dm.device.name):
        notes.append(
            f"{store.root} has no tables for {dm.device.name} (comp/ or comm/"
            f"{dm.device.name}/): all op costs are analytic"
        )
    return CostModel(
        dm=dm, gpus_per_node=cluster.gpus_per_node, store=store, freq=freq, notes=notes
    )
