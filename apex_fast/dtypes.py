"""Data types accepted by --weight-dtype, --activation-dtype and --kv-dtype."""

from __future__ import annotations

from apex_fast.errors import ApexError

# canonical name -> bytes per element
DTYPE_BYTES: dict[str, float] = {
    "float": 4.0,
    "half": 2.0,
    "float8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

_ALIASES: dict[str, str] = {
    "float": "float",
    "float32": "float",
    "fp32": "float",
    "half": "half",
    "float16": "half",
    "fp16": "half",
    "bfloat16": "half",
    "bf16": "half",
    "float8": "float8",
    "fp8": "float8",
    "int8": "int8",
    "int4": "int4",
}

# which peak-FLOPS key of a DeviceSpec each compute dtype uses
PEAK_KEY: dict[str, str] = {"float": "fp32", "half": "fp16", "float8": "fp8"}


def canonical_dtype(name: str, what: str = "dtype", allow_int: bool = False) -> str:
    """Return the canonical dtype name or raise ApexError listing the accepted ones."""
    key = _ALIASES.get(str(name).strip().lower())
    if key is None or (key in ("int8", "int4") and not allow_int):
        accepted = "float, half, float8" + (", int8, int4" if allow_int else "")
        raise ApexError(f"unknown {what} {name!r}: use one of {accepted}")
    return key


def dtype_bytes(name: str) -> float:
    return DTYPE_BYTES[canonical_dtype(name, allow_int=True)]


def compute_dtype(weight: str, activation: str) -> str:
    """GEMMs run in the wider of the weight and activation types (int weights are dequantised)."""
    w = canonical_dtype(weight, allow_int=True)
    a = canonical_dtype(activation)
    order = {"float8": 0, "int8": 0, "int4": 0, "half": 1, "float": 2}
    w_eff = "float8" if w in ("int8", "int4", "float8") else w
    return w_eff if order[w_eff] >= order[a] else a
