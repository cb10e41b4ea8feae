"""Hardware: device specs and clusters."""

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import DeviceSpec, get_device, list_devices, peak_flops

__all__ = ["Cluster", "DeviceSpec", "get_device", "list_devices", "peak_flops"]
