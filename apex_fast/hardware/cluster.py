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

    @property
    def scaleup_gpus(self) -> int:
        """GPUs that reach each other without the inter-node network: a node, or a whole
        multi-node NVLink domain (GB200 NVL72: 72 GPUs across 18 trays of 4)."""
        if self.device.multi_node_fabric:
            return max(self.gpus_per_node, min(self.device.fabric_gpus, self.num_gpus))
        return self.gpus_per_node

    def spans_nodes(self, group_size: int) -> bool:
        """Whether a contiguous group of group_size GPUs needs the inter-node network (crosses a
        node boundary, or for a multi-node NVLink domain the domain boundary)."""
        return group_size > self.scaleup_gpus

    def link_gbps(self, group_size: int) -> float:
        """Per-GPU per-direction bandwidth (GB/s) of the slowest link the group uses."""
        if group_size <= 1:
            return float("inf")
        if self.spans_nodes(group_size):
            return self.device.inter_node_gbps
        return self.device.peer_gbps(group_size)

    def custom_all_reduce_ok(self, group_size: int) -> bool:
        """vLLM's custom all-reduce needs all ranks on one host (shared IPC buffers) and a
        fully GPU-linked group (or at most two PCIe peers)."""
        return group_size <= self.gpus_per_node and self.device.custom_all_reduce_ok(group_size)
