"""Fitted efficiency parameters of the analytic device model (profile_data/calibration.json).

The numbers are fitted by bench/calibrate_device_model.py on real measurements; devices without
measurements name the device they were derived from. Nothing here reads ../shared at run time.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from apex_fast.errors import ApexError
from apex_fast.hardware.devices import PROFILE_DATA_DIR

CALIBRATION_FILE = PROFILE_DATA_DIR / "calibration.json"

# parameter groups and the names DeviceModel uses for them
GROUPS: dict[str, tuple[str, ...]] = {
    "gemm": ("eta_max", "sat_mn", "sat_k", "eta_mem", "t_launch"),
    "elementwise": ("eta_elem", "t_launch_elem"),
    "attention": ("eta_attn", "t_launch_attn"),
    "collective": (
        "alpha_intra",
        "alpha_inter",
        "alpha_log2",
        "alpha_log2_inter",
        "busbw_eff_intra",
        "busbw_eff_inter",
        "group_half",
        "msg_half_bytes",
        "msg_half_bytes_inter",
        "msg_ramp_pow",
        "eff_all_gather",
        "eff_reduce_scatter",
        "eff_alltoall",
        "eff_sendrecv",
    ),
}


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    try:
        return json.loads(CALIBRATION_FILE.read_text())
    except FileNotFoundError as exc:
        raise ApexError(f"calibration table {CALIBRATION_FILE} not found") from exc


def calibration_for(device_name: str) -> tuple[dict[str, float], str]:
    """Flat parameter dict for one device and a one-line note on where each group came from."""
    devices = _table()["devices"]
    if device_name not in devices:
        raise ApexError(f"no analytic calibration for device {device_name!r}")
    entry = devices[device_name]
    params: dict[str, float] = {}
    notes: list[str] = []
    for group, names in GROUPS.items():
        block = entry[group]
        for name in names:
            params[name] = float(block[name])
        notes.append(f"{group}: {block['source']}")
    params["eta_mem_skinny"] = float(entry["gemm"].get("eta_mem_skinny", 0.0))
    return params, "; ".join(notes)
