"""Llama-like decoders (llama, mistral, mixtral, qwen2/3 and their MoE, deepseek v2/v3, phi3,
gpt-oss, gemma3) and Gemma 3's multimodal wrapper."""

from __future__ import annotations

from typing import Any

from apex_fast.models.config_values import MISSING, Cfg, split_heads

_MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")


def parse_llama_like(c: Cfg, mt: str) -> dict:
    """llama, mistral, mixtral, qwen2/3(+moe), deepseek v2/v3 and unknown llama-like configs."""
    h = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    heads = c.int("num_attention_heads")
    out: dict[str, Any] = {"arch": "decoder", "gated_ffn": True, "extra_params": h}
    if c.has("kv_lora_rank"):  # DeepSeek multi-head latent attention
        rope = c.int("qk_rope_head_dim")
        out |= {
            "kv_lora_rank": c.int("kv_lora_rank"),
            "q_lora_rank": c.int("q_lora_rank", default=0, minimum=0),
            "qk_rope_head_dim": rope,
            "head_dim": c.int("qk_nope_head_dim") + rope,
            "v_head_dim": c.int("v_head_dim"),
            "num_kv_heads": heads,
        }
    else:
        out["num_kv_heads"] = c.int("num_key_value_heads", default=heads)
        out["head_dim"] = split_heads(c, h, heads, c.int("head_dim", default=None))
    qwen2 = mt in ("qwen2", "qwen2_moe")
    gpt_oss = mt == "gpt_oss"
    out["attn_bias"] = c.bool("attention_bias", qwen2)
    if qwen2:
        out["attn_out_bias"] = False
    out["qk_norm"] = mt in ("qwen3", "qwen3_moe", "gemma3_text")
    if gpt_oss:
        # gpt-oss: a learned sink logit per head; experts carry biases, the router a bias; the
        # expert matrices ship as MXFP4 (MODELS.md batch 2, openai/gpt-oss-* config.json)
        out["attn_sinks"] = True
        out["mlp_bias"] = True
        out["router_bias"] = True
    quant = c.data.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "mxfp4":
        out["native_expert_dtype"] = "mxfp4"
    if isinstance(quant, dict) and quant.get("quant_method") == "fp8":
        out["native_weight_dtype"] = "float8"
    if mt == "gemma3_text":  # pre/post attention and pre/post FFN RMSNorms, tied embeddings
        out["norms_per_block"] = 4
    experts = c.int("num_local_experts", "n_routed_experts", "num_experts", default=0, minimum=0)
    moe_keys = [k for k in ("num_local_experts", "n_routed_experts", "num_experts") if c.has(k)]
    if experts == 0 and moe_keys and (c.has("num_experts_per_tok") or mt in _MOE_TYPES):
        raise c.fail(
            f"{moe_keys[0]} = 0: a mixture-of-experts config needs at least one expert "
            "(remove the key for a dense model)"
        )
    dense = 0
    if experts:
        topk = c.data.get("num_experts_per_tok", c.data.get("experts_per_token"))
        if topk is None:
            raise c.fail(f"{experts} experts but no num_experts_per_tok")
        out |= {
            "num_experts": experts,
            "topk": c.int("num_experts_per_tok", "experts_per_token"),
            "moe_intermediate_size": c.int("moe_intermediate_size", "intermediate_size"),
            "num_shared_experts": c.int("n_shared_experts", default=0, minimum=0),
            "router_bias": gpt_oss or c.str("topk_method") == "noaux_tc",
        }
        dense = _dense_layer_count(c, layers)
    out |= {
        "num_layers": layers,
        "hidden_size": h,
        "num_heads": heads,
        "intermediate_size": c.int(
            "intermediate_size", default=out.get("moe_intermediate_size", MISSING)
        ),
        "vocab_size": c.int("vocab_size"),
        "tied_embeddings": c.bool("tie_word_embeddings", mt == "gemma3_text"),
        "mlp_bias": out.get("mlp_bias", c.bool("mlp_bias", False)),
        "learned_pos": 0,
        "max_position_embeddings": c.int(
            "max_position_embeddings", "max_sequence_length", default=0, minimum=0
        ),
        "num_dense_layers": dense,
    }
    window = c.int("sliding_window", default=0, minimum=0)
    if not c.bool("use_sliding_window", True):
        window = 0
    out["sliding_window"] = window
    out["num_sliding_layers"] = _sliding_layer_count(c, layers) if window else 0
    return out


def _sliding_layer_count(c: Cfg, layers: int) -> int:
    """Layers that use the sliding window: `layer_types` when given (gpt-oss, newer Gemma-3),
    else Gemma-3's `sliding_window_pattern` p (layer i is global iff (i + 1) % p == 0), else
    Qwen2's `max_window_layers` (layers from that index on slide), else every layer (Mistral)."""
    types = c.data.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise c.fail(f"layer_types must be a list of {layers} layer kinds")
        return sum(1 for t in types if t == "sliding_attention")
    if c.has("sliding_window_pattern"):
        p = c.int("sliding_window_pattern")
        return layers - layers // p
    if c.has("max_window_layers") and c.has("use_sliding_window"):
        return layers - min(c.int("max_window_layers", minimum=0), layers)
    return layers


def _dense_layer_count(c: Cfg, layers: int) -> int:
    """Layers of an MoE model that keep the dense FFN (counted without looping over layers)."""
    if c.has("first_k_dense_replace") or c.has("moe_layer_freq"):  # DeepSeek
        first = min(c.int("first_k_dense_replace", default=0, minimum=0), layers)
        freq = c.int("moe_layer_freq", default=1)
        # MoE iff i >= first and i % freq == 0
        moe = -(-layers // freq) - (-(-first // freq))
        return layers - moe
    step = c.int("decoder_sparse_step", default=1)  # Qwen MoE: MoE iff (i + 1) % step == 0
    only = c.data.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in only
    ):
        raise c.fail("mlp_only_layers must be a list of layer indices")
    forced = {i for i in only if 0 <= i < layers and (i + 1) % step == 0}
    return layers - (layers // step - len(forced))


def parse_gemma3(c: Cfg, mt: str) -> dict:
    """Gemma 3: the text decoder of `text_config` (gemma3_text), plus the SigLIP vision tower
    and its projector as weights outside the decoder (they run only for image inputs)."""
    text = c.sub("text_config")
    out = parse_llama_like(text, "gemma3_text")
    vision = 0
    if isinstance(c.data.get("vision_config"), dict):
        v = c.sub("vision_config")
        vh = v.int("hidden_size")
        patch, image = v.int("patch_size"), v.int("image_size")
        if patch > image:
            raise v.fail(f"patch_size {patch} is larger than image_size {image}")
        block = 4 * vh * vh + 4 * vh + 2 * vh * v.int("intermediate_size")
        block += v.int("intermediate_size") + vh + 4 * vh  # MLP biases, two LayerNorms
        stem = v.int("num_channels", default=3) * patch * patch * vh + vh
        positions = (image // patch) ** 2 * vh
        tower = v.int("num_hidden_layers") * block + stem + positions + 2 * vh  # + post-norm
        # projector: soft-embedding RMSNorm (vision width) + linear vision -> text width
        vision = tower + vh + vh * out["hidden_size"]
    out["extra_params"] += vision
    return out
