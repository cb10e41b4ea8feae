"""Device specs (datasheet facts, dense peaks) loaded from profile_data/devices.json."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from apex_fast.dtypes import PEAK_KEY, canonical_dtype
from apex_fast.errors import ApexError

# Repo-root profile_data/ (override with APEX_FAST_PROFILE_DATA for an installed package).
PROFILE_DATA_DIR = Path(
    os.environ.get("APEX_FAST_PROFILE_DATA", Path(__file__).resolve().parents[2] / "profile_data")
)

# when a dtype has no units of its own, GEMMs run on the next wider unit
_FALLBACK: dict[str, tuple[str, ...]] = {
    "fp8": ("fp8", "fp16", "fp32"),
    "fp16": ("fp16", "fp32"),
    "fp32": ("fp32",),
}
_KEY_LABEL = {"fp32": "single-precision", "fp16": "half-precision", "fp8": "FP8"}


FABRICS = ("nvswitch", "nvlink-bridge", "xgmi-mesh", "pcie")


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator; peaks are dense per-GPU TFLOPS, bandwidths per GPU per direction.

    Peer traffic follows `fabric` (profile_data/devices.json, HARDWARE.md batch 2):
    * ``nvswitch``: any group of up to `fabric_gpus` GPUs gets the full `intra_node_gbps`
      (HGX boards: 8; GB200 NVL72: 72 GPUs over 18 trays, one NVLink domain);
    * ``nvlink-bridge``: bridged cards (H100 NVL pairs, H200 NVL 4-way) get `intra_node_gbps`
      inside the bridge group; larger groups go over PCIe at `pcie_gbps`;
    * ``xgmi-mesh``: fully connected board with one link per peer (AMD MI300X/MI325X), so a
      group of g GPUs uses g - 1 of the `fabric_gpus` - 1 links;
    * ``pcie``: no GPU-to-GPU fabric; every peer transfer crosses PCIe (`intra_node_gbps` is the
      PCIe rate: L4, L40S, A10G, H100-PCIe without bridge).
    """

    name: str
    peak_tflops: dict[str, float]
    hbm_gb: float
    hbm_tbps: float
    intra_node_gbps: float
    intra_node_link: str
    inter_node_gbps: float
    tdp_w: float
    idle_w: float
    boost_clock_mhz: int
    clocks_mhz: tuple[int, ...]
    sources: str
    fabric: str = "nvswitch"
    fabric_gpus: int = 8
    pcie_gbps: float = 64.0

    def __hash__(self) -> int:  # dict field: hash by name (specs are unique by name)
        return hash(self.name)

    @property
    def multi_node_fabric(self) -> bool:
        """Whether the NVLink domain can span several nodes (GB200 NVL72 trays)."""
        return self.fabric == "nvswitch" and self.fabric_gpus > 8

    def nvlink_connected(self, group: int) -> bool:
        """Whether every pair of a group of `group` GPUs has a direct GPU-to-GPU link."""
        if self.fabric == "pcie":
            return group <= 1
        return group <= self.fabric_gpus

    def peer_gbps(self, group: int) -> float:
        """Per-GPU per-direction bandwidth (GB/s) of a group of `group` GPUs that stays inside
        one node or NVLink domain."""
        if self.fabric == "xgmi-mesh" and self.fabric_gpus > 1:
            links = min(max(group, 2), self.fabric_gpus) - 1
            return self.intra_node_gbps * links / (self.fabric_gpus - 1)
        if self.fabric == "nvlink-bridge" and group > self.fabric_gpus:
            return self.pcie_gbps
        return self.intra_node_gbps

    def custom_all_reduce_ok(self, group: int) -> bool:
        """vLLM's one-kernel all-reduce runs on fully GPU-linked groups, and on PCIe-only
        groups of at most two GPUs (vllm/distributed/device_communicators/custom_all_reduce.py:
        'not supported on more than two PCIe-only GPUs')."""
        return group <= 2 or self.nvlink_connected(group)


def _value(entry: dict, field: str, sources: list[str]) -> object:
    item = entry[field]
    sources.append(f"{field}: {item['source']}")
    return item["value"]


def _parse(entry: dict) -> DeviceSpec:
    src: list[str] = []
    peaks = {str(k): float(v) for k, v in _value(entry, "peak_tflops", src).items()}
    for key in ("fp32", "fp16", "fp8"):
        peaks.setdefault(key, 0.0)
    return DeviceSpec(
        name=entry["name"],
        peak_tflops=peaks,
        hbm_gb=float(_value(entry, "hbm_gb", src)),
        hbm_tbps=float(_value(entry, "hbm_tbps", src)),
        intra_node_gbps=float(_value(entry, "intra_node_gbps", src)),
        intra_node_link=str(_value(entry, "intra_node_link", src)),
        inter_node_gbps=float(_value(entry, "inter_node_gbps", src)),
        tdp_w=float(_value(entry, "tdp_w", src)),
        idle_w=float(_value(entry, "idle_w", src)),
        boost_clock_mhz=int(_value(entry, "boost_clock_mhz", src)),
        clocks_mhz=tuple(int(c) for c in _value(entry, "clocks_mhz", src)),
        fabric=str(_value(entry, "fabric", src)),
        fabric_gpus=int(_value(entry, "fabric_gpus", src)),
        pcie_gbps=float(_value(entry, "pcie_gbps", src)),
        sources="; ".join(src),
    )


@lru_cache(maxsize=1)
def _registry() -> tuple[dict[str, DeviceSpec], dict[str, str]]:
    path = PROFILE_DATA_DIR / "devices.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ApexError(f"device table {path} not found (set APEX_FAST_PROFILE_DATA)") from exc
    specs: dict[str, DeviceSpec] = {}
    aliases: dict[str, str] = {}
    for entry in raw["devices"]:
        spec = _parse(entry)
        specs[spec.name] = spec
        aliases[spec.name.lower()] = spec.name
        for alias in entry.get("aliases", []):
            aliases[alias.lower()] = spec.name
    return specs, aliases


def list_devices() -> list[DeviceSpec]:
    """All known devices, in table order."""
    return list(_registry()[0].values())


def get_device(name: str | DeviceSpec) -> DeviceSpec:
    """Look a device up by name or short alias (case-insensitive)."""
    if isinstance(name, DeviceSpec):
        return name
    specs, aliases = _registry()
    key = str(name).strip().lower().replace("_", "-")
    canon = aliases.get(key)
    if canon is None:
        known = ", ".join(specs)
        raise ApexError(f"unknown device {name!r}: known devices are {known}")
    return specs[canon]


def with_inter_node_bandwidth(device: DeviceSpec, gbps: float | None) -> DeviceSpec:
    """The device with its per-GPU inter-node bandwidth (GB/s per direction) replaced, e.g. by
    `--inter-node-bandwidth`; None keeps the datasheet/reference-system value."""
    if gbps is None:
        return device
    if isinstance(gbps, bool) or not isinstance(gbps, int | float) or not 0 < gbps < 1e6:
        raise ApexError(
            f"--inter-node-bandwidth must be a positive number of GB/s per GPU per direction, "
            f"got {gbps!r}"
        )
    note = f"inter_node_gbps: {gbps:g} GB/s per GPU per direction (--inter-node-bandwidth)"
    return dataclasses.replace(
        device, inter_node_gbps=float(gbps), sources=f"{device.sources}; {note}"
    )


def peak_flops(device: DeviceSpec | str, compute_dtype: str) -> tuple[float, str]:
    """Dense peak FLOP/s for compute_dtype GEMMs, and a note when it falls back."""
    dev = get_device(device)
    want = PEAK_KEY[canonical_dtype(compute_dtype, what="compute dtype")]
    for key in _FALLBACK[want]:
        tflops = dev.peak_tflops.get(key, 0.0)
        if tflops > 0.0:
            if key == want:
                return tflops * 1e12, ""
            note = (
                f"{dev.name} has no {_KEY_LABEL[want]} units: {compute_dtype} GEMMs run at "
                f"the {_KEY_LABEL[key]} peak"
            )
            return tflops * 1e12, note
    raise ApexError(f"{dev.name} has no peak FLOPS listed for {compute_dtype}")
