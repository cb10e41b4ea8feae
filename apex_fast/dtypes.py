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
    # OCP Microscaling (MX) v1.0 MXFP4: FP4 E2M1 elements in blocks of 32 sharing one 8-bit
    # power-of-two (E8M0) scale = (32 x 4 + 8) / 32 = 4.25 bits per weight; the format of
    # gpt-oss's expert weights (quantization_config quant_method "mxfp4", MODELS.md batch 2)
    "mxfp4": 4.25 / 8,
}
# weight-only formats (dequantised for the GEMM), accepted by --weight-dtype only
WEIGHT_ONLY = ("int8", "int4", "mxfp4")

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
    "mxfp4": "mxfp4",
}

# which peak-FLOPS key of a DeviceSpec each compute dtype uses
PEAK_KEY: dict[str, str] = {"float": "fp32", "half": "fp16", "float8": "fp8"}


def canonical_dtype(name: str, what: str = "dtype", allow_int: bool = False) -> str:
    """Return the canonical dtype name or raise ApexError listing the accepted ones."""
    key = _ALIASES.get(str(name).strip().lower())
    if key is None or (key in WEIGHT_ONLY and not allow_int):
        accepted = "float, half, float8" + (", int8, int4, mxfp4" if allow_int else "")
        raise ApexError(f"unknown {what} {name!r}: use one of {accepted}")
    return key


def dtype_aliases(allow_int: bool = False) -> tuple[str, ...]:
    """Every name `canonical_dtype` accepts (canonical names and aliases), for choice lists."""
    return tuple(k for k, v in _ALIASES.items() if allow_int or v not in WEIGHT_ONLY)


def compute_dtype(weight: str, activation: str) -> str:
    """GEMMs run in the wider of the weight and activation types (int weights are dequantised)."""
    w = canonical_dtype(weight, allow_int=True)
    a = canonical_dtype(activation)
    order = {"float8": 0, "half": 1, "float": 2}
    w_eff = "float8" if w in (*WEIGHT_ONLY, "float8") else w
    return w_eff if order[w_eff] >= order[a] else a
