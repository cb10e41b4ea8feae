"""A ModelSpec from a parsed config.json: the architecture family's parser, then checks across
fields (heads, experts)."""

from __future__ import annotations

from typing import Any

from apex_fast.errors import ApexError
from apex_fast.models.config_values import Cfg, short_repr
from apex_fast.models.families import FAMILIES, GENERIC_KEYS, parse_llama_like
from apex_fast.models.quant import checkpoint_precision
from apex_fast.models.spec import ModelSpec


def _validate(c: Cfg, kw: dict) -> None:
    heads, kv = kw["num_heads"], kw["num_kv_heads"]
    if kv > heads or heads % kv:
        raise c.fail(f"{kv} KV heads do not divide {heads} attention heads")
    if kw.get("num_experts"):
        e, k = kw["num_experts"], kw["topk"]
        if k > e:
            raise c.fail(f"num_experts_per_tok {k} exceeds the {e} experts")
        if k + kw.get("num_shared_experts", 0) < 1:
            raise c.fail("an MoE layer must use at least one expert per token")


def spec_from_config(config: Any, name: str, source: str = "") -> ModelSpec:
    """Build a ModelSpec from a parsed config.json object (any JSON value is accepted as input;
    anything unusable raises ApexError)."""
    where = source or name
    if not isinstance(config, dict):
        raise ApexError(
            f"model config {where}: expected a JSON object, got {type(config).__name__}"
        )
    c = Cfg(config, where)
    mt = c.data.get("model_type")
    if mt is not None and not isinstance(mt, str):
        raise c.fail(f"model_type must be a string, got {short_repr(mt)}")
    family = FAMILIES.get(mt or "")
    if family is None:
        if not all(c.has(k) for k in GENERIC_KEYS):
            known = ", ".join(sorted(FAMILIES))
            what = f"unknown model_type {mt!r}" if mt else "no model_type"
            raise c.fail(
                f"{what} (known: {known}); a generic decoder needs {', '.join(GENERIC_KEYS)}"
            )
        family = parse_llama_like
    kw = family(c, mt or "")
    kw |= checkpoint_precision(config, kw, where)
    _validate(c, kw)
    hf_id = config.get("_source") or config.get("_name_or_path") or ""
    return ModelSpec(
        name=name,
        model_type=mt or "generic",
        source=source,
        hf_id=hf_id if isinstance(hf_id, str) else "",
        **kw,
    )
