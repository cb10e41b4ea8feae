"""KV transfer between the pools: bytes per prompt token, the link and the time per request."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apex_fast.dtypes import DTYPE_BYTES
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec

# Fixed cost of one KV transfer (connection lookup, descriptor exchange / RDMA handshake and the
# completion notification), independent of its size. ASSUMPTION, not a measurement: 1 ms is
# the order of the per-request overhead the vLLM and Dynamo disaggregation connectors add on top
# of the wire time (docs/disaggregation.md discusses the range; --kv-transfer-latency sets it).
KV_TRANSFER_LATENCY_S = 1e-3


@dataclass(frozen=True)
class KVLink:
    """How a prefill instance's KV reaches a decode instance."""

    gbps_per_lane: float  # GB/s per GPU per direction
    lanes: int  # GPUs sending shards in parallel
    latency_s: float
    kind: str  # "NVLink" or "network"

    @property
    def gbps(self) -> float:
        return self.gbps_per_lane * self.lanes


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str) -> float:
    """Bytes of KV cache of one token over all layers (what a transfer moves per prompt token)."""
    return float(model.kv_bytes_per_token(DTYPE_BYTES[kv_dtype]))


def transfer_time(tokens: np.ndarray, bytes_per_token: float, link: KVLink) -> np.ndarray:
    """Seconds to move the KV of `tokens` prompt tokens: latency + bytes / bandwidth."""
    nbytes = np.asarray(tokens, np.float64) * bytes_per_token
    return link.latency_s + nbytes / (link.gbps * 1e9)


def kv_link(
    cluster: Cluster, prefill_gpus: int, decode_gpus: int, latency_s: float, total_gpus: int
) -> KVLink:
    """NVLink inside one NVLink domain, else the inter-node network (per-GPU NICs)."""
    lanes = max(1, min(prefill_gpus, decode_gpus))
    dev = cluster.device
    if total_gpus <= cluster.scaleup_gpus:
        return KVLink(
            dev.peer_gbps(min(total_gpus, cluster.scaleup_gpus)), lanes, latency_s, "NVLink"
        )
    return KVLink(dev.inter_node_gbps, lanes, latency_s, "network")
