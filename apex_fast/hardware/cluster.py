"""A homogeneous cluster: num_nodes nodes of gpus_per_node identical GPUs."""

from __future__ import annotations

from dataclasses import dataclass

from apex_fast.errors import ApexError
from apex_fast.hardware.devices import DeviceSpec


@dataclass(frozen=True)
class Cluster:
    device: DeviceSpec
    num_nodes: int
    gpus_per_node: int

    def __post_init__(self) -> None:
        for field in ("num_nodes", "gpus_per_node"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ApexError(f"{field} must be an integer >= 1, got {value!r}")

    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    def spans_nodes(self, group_size: int) -> bool:
        """Whether a contiguous group of group_size GPUs crosses a node boundary."""
        return group_size > self.gpus_per_node

    def link_gbps(self, group_size: int) -> float:
        """Per-GPU per-direction bandwidth (GB/s) of the slowest link the group uses."""
        if group_size <= 1:
            return float("inf")
        if self.spans_nodes(group_size):
            return self.device.inter_node_gbps
        return self.device.intra_node_gbps
