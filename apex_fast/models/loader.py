"""Load a ModelSpec from a bundled name, an alias / Hugging Face id, or a config.json path.

Every failure is an ApexError with a one-line message; any JSON object or byte string given as a
config either loads or raises ApexError.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from apex_fast.errors import ApexError
from apex_fast.models.config import spec_from_config
from apex_fast.models.names import CONFIG_DIR, bundled_names, resolve_model_name
from apex_fast.models.spec import ModelSpec


def _read_config(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ApexError(f"cannot read model config {path}: {exc.strerror or exc}") from None
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise ApexError(f"model config {path} is not valid JSON: {first}") from None


@functools.cache
def _load_bundled(name: str) -> ModelSpec:
    path = CONFIG_DIR / f"{name}.json"
    return spec_from_config(_read_config(path), name, str(path))


def list_models() -> list[ModelSpec]:
    """All bundled models, sorted by name."""
    return [_load_bundled(n) for n in bundled_names()]


def load_model(
    name_or_path: str, num_experts: int | None = None, topk: int | None = None
) -> ModelSpec:
    """Load a model; num_experts / topk override the expert count and top-k of an MoE model."""
    ref = resolve_model_name(name_or_path)
    if ref in bundled_names():
        spec = _load_bundled(ref)
    else:
        path = Path(ref)
        label = path.parent.name if path.name == "config.json" else path.stem
        spec = spec_from_config(_read_config(path), label or str(path), str(path))
    if num_experts is None and topk is None:
        return spec
    if not spec.is_moe:
        raise ApexError(
            f"{spec.name} is a dense model; num_experts / topk apply only to mixture-of-experts "
            "models"
        )
    e = spec.num_experts if num_experts is None else num_experts
    k = spec.topk if topk is None else topk
    for label, value in (("num_experts", e), ("topk", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApexError(f"{label} must be a positive integer, got {value!r}")
    if k > e:
        raise ApexError(f"topk {k} exceeds the {e} experts of {spec.name}")
    return replace(spec, num_experts=e, topk=k)
