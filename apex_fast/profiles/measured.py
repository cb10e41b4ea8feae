"""Op costs from measured tables where they exist, from the analytic model elsewhere.

`cost_model(cluster, clock_mhz, profile_dir)` wraps the calibrated analytic `DeviceModel` and the
tables of the device's backend (`<root>/comp/<device>/`, `<root>/comm/<device>/`, see
`apex_fast/profiles/tables.py`). Each cost function returns seconds and records where they came
from; `take()` hands the sources recorded since the last call to the cost compiler, which stores
them per operator (`CompiledCosts.provenance`), e.g. "interpolated (V100-PCIE-16GB/gemm_0.csv)".

Rules: a device's GEMM table serves every GEMM of its dtype (a device without units of the compute
dtype, such as the CPU for half, uses the rows of the dtype it really computes in); a collective
table serves the groups whose (num_nodes, num_gpus_per_node) it has rows for; a causal attention
table gives the prefill cost per (query, key) pair; everything else is analytic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import PROFILE_DATA_DIR, peak_flops
from apex_fast.profiles import analytic
from apex_fast.profiles.grid import TAG_NAMES
from apex_fast.profiles.tables import GemmGrid, ProfileStore, open_store

ANALYTIC = analytic.PROVENANCE


def _tagged(tags: np.ndarray, label: str, extra: str = "") -> str:
    worst = int(tags.max()) if tags.size else 0
    return f"{TAG_NAMES[worst]} ({label}{extra})"


def combine(sources: list[str]) -> str:
    """One provenance string for an operator made of several parts (duplicates dropped)."""
    seen: list[str] = []
    for s in sources:
        if s and s not in seen:
            seen.append(s)
    return " + ".join(seen) if seen else ANALYTIC


@dataclass
class CostModel:
    """Analytic device model plus the measured tables of its backend."""

    dm: analytic.DeviceModel
    gpus_per_node: int
    store: ProfileStore | None = None
    freq: int = 0
    notes: list[str] = field(default_factory=list)
    used: dict[str, str] = field(default_factory=dict)  # what -> table label
    _pending: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.dm.device.name

    def take(self) -> str:
        """Provenance of the costs computed since the last call."""
        out = combine(self._pending)
        self._pending.clear()
        return out

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
    ) -> np.ndarray:
        grid, extra = self._gemm_grid(compute_dtype)
        # 16-bit tables do not describe weight-only quantised kernels: use the model for those
        if grid is None or weight_bytes < act_bytes:
            self._pending.append(ANALYTIC)
            return analytic.gemm_time(self.dm, m, k, n, weight_bytes, act_bytes, compute_dtype)
        m_, k_, n_ = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (m, k, n)))
        empty = (m_ <= 0) | (k_ <= 0) | (n_ <= 0)
        t, tags = grid.lookup(m_, k_, n_)
        self._pending.append(_tagged(tags[~empty], grid.label, extra))
        self.used["GEMM"] = grid.label
        return np.where(empty, 0.0, t)

    def mem(self, nbytes: np.ndarray | float) -> np.ndarray:
        self._pending.append(ANALYTIC)
        return analytic.mem_time(self.dm, nbytes)

    # ------------------------------------------------------------------ collectives
    def placement(self, kind: str, group: int, inter_node: bool) -> tuple[int, int]:
        """(num_nodes, num_gpus_per_node) of a group, as the comm tables key them."""
        if not inter_node:
            return 1, group
        if kind == "sendrecv":
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
    ) -> np.ndarray:
        s = np.asarray(nbytes, dtype=np.float64)
        if group <= 1:
            return np.zeros_like(s)
        table = self.store.collective(self.backend, kind) if self.store is not None else None
        curve = None
        if table is not None:
            curve = table.curve(*self.placement(kind, group, inter_node), dtype)
        if curve is None:
            self._pending.append(ANALYTIC)
            return analytic.collective_time(self.dm, kind, s, group, inter_node)
        t, tags = curve.lookup(s)
        self._pending.append(_tagged(tags[s > 0], curve.label))
        self.used[kind] = curve.label
        return np.where(s > 0, t, 0.0)

    # ------------------------------------------------------------------ attention
    def attn_prefill_time_per_pair(self, heads: int, head_dim: int, compute_dtype: str) -> float:
        table = self.store.attention(self.backend, self.freq) if self.store is not None else None
        if table is not None:
            grid, _ = self._gemm_grid(compute_dtype)
            dts = [compute_dtype] + ([grid.dtype] if grid is not None else [])
            for dt in dts:
                fit = table.prefill_time_per_pair(heads, head_dim, dt)
                if fit is not None:
                    self._pending.append(f"{TAG_NAMES[fit[1]]} ({table.label})")
                    self.used["attention"] = table.label
                    return fit[0]
        self._pending.append(ANALYTIC)
        return analytic.attn_prefill_time_per_pair(self.dm, heads, head_dim, compute_dtype)

    def attn_decode_time_per_token(self, kv_heads: int, head_dim: int, kv_bytes: float) -> float:
        self._pending.append(ANALYTIC)
        return analytic.attn_decode_time_per_token(self.dm, kv_heads, head_dim, kv_bytes)

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
