"""Machine-readable records of the known devices (`apex.py gpus --json`)."""

from __future__ import annotations

from typing import Any

from apex_fast.hardware.devices import DeviceSpec, list_devices


def device_record(d: DeviceSpec) -> dict[str, Any]:
    """Datasheet numbers (dense peaks per GPU; bandwidths per GPU per direction) and the
    interconnect topology of one device, with the source of every value."""
    sources = dict(part.split(": ", 1) for part in d.sources.split("; ") if ": " in part)
    return {
        "name": d.name,
        "peak_tflops_dense": dict(d.peak_tflops),
        "memory_gb": d.hbm_gb,
        "memory_tbps": d.hbm_tbps,
        "fabric": d.fabric,
        "fabric_gpus": d.fabric_gpus,
        "intra_node_gbps": d.intra_node_gbps,
        "intra_node_link": d.intra_node_link,
        "pcie_gbps": d.pcie_gbps,
        "inter_node_gbps": d.inter_node_gbps,
        "tdp_w": d.tdp_w,
        "idle_w": d.idle_w,
        "boost_clock_mhz": d.boost_clock_mhz,
        "clocks_mhz": list(d.clocks_mhz),
        "sources": sources,
    }


def device_records() -> list[dict[str, Any]]:
    """One record per known device, in table order."""
    return [device_record(d) for d in list_devices()]
