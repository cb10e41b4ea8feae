"""Machine-readable records of the bundled models (`apex.py models --json`)."""

from __future__ import annotations

from typing import Any

from apex_fast.models.loader import list_models
from apex_fast.models.names import model_aliases
from apex_fast.models.spec import ModelSpec


def attention_kind(m: ModelSpec) -> str:
    """mla, mha, mqa or gqa (grouped-query)."""
    if m.is_mla:
        return "mla"
    if m.num_kv_heads == m.num_heads:
        return "mha"
    return "mqa" if m.num_kv_heads == 1 else "gqa"


def model_record(m: ModelSpec, aliases: list[str]) -> dict[str, Any]:
    """Architecture numbers, parameter counts and KV size of one model (counts are exact
    integers; KV bytes per token for a 2-byte cache over all decoder layers)."""
    return {
        "name": m.name,
        "hf_id": m.hf_id,
        "aliases": aliases,
        "arch": m.arch,
        "model_type": m.model_type,
        "params_total": m.params_total(),
        "params_active": m.params_active(),
        "num_layers": m.num_layers,
        "encoder_layers": m.encoder_layers,
        "hidden_size": m.hidden_size,
        "num_heads": m.num_heads,
        "num_kv_heads": m.num_kv_heads,
        "head_dim": m.head_dim,
        "attention": attention_kind(m),
        "intermediate_size": m.intermediate_size,
        "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_position_embeddings,
        "moe": (
            {
                "experts": m.num_experts,
                "topk": m.topk,
                "shared_experts": m.num_shared_experts,
                "expert_intermediate_size": m.moe_intermediate_size,
                "dense_layers": m.num_dense_layers,
            }
            if m.is_moe
            else None
        ),
        "mla": (
            {
                "q_lora_rank": m.q_lora_rank,
                "kv_lora_rank": m.kv_lora_rank,
                "qk_rope_head_dim": m.qk_rope_head_dim,
                "v_head_dim": m.value_head_dim,
            }
            if m.is_mla
            else None
        ),
        "sliding_window": m.sliding_window,
        "sliding_layers": m.sliding_layers,
        "attention_sinks": m.attn_sinks,
        "native_expert_dtype": m.native_expert_dtype or None,
        "kv_bytes_per_token_16bit": m.kv_bytes_per_token(2.0),
    }


def model_records() -> list[dict[str, Any]]:
    """One record per bundled model, sorted by name."""
    aliases: dict[str, list[str]] = {}
    for alias, name in model_aliases().items():
        if alias != name:
            aliases.setdefault(name, []).append(alias)
    return [model_record(m, sorted(aliases.get(m.name, []))) for m in list_models()]
