"""GPT-2 / StarCoder, GPT-J, GPT-NeoX, BLOOM and OPT: multi-head attention, plain MLPs,
LayerNorms with bias."""

from __future__ import annotations

from apex_fast.models.config_values import Cfg, split_heads


def _mha_decoder(c: Cfg, h: int, heads: int, layers: int) -> dict:
    """The fields these families share: one KV head per query head, a plain (non-gated) MLP
    with biases, LayerNorms with bias, no learned position table (families override)."""
    return {
        "arch": "decoder",
        "num_layers": layers,
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": split_heads(c, h, heads, None),
        "gated_ffn": False,
        "mlp_bias": True,
        "norm_bias": True,
        "learned_pos": 0,
    }


def parse_gpt2_like(c: Cfg, mt: str) -> dict:
    """gpt2 and gpt_bigcode (StarCoder): learned positions, LayerNorm, biases, tied head."""
    h = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    pos = c.int("n_positions", "n_ctx", "max_position_embeddings")
    mqa = mt == "gpt_bigcode" and c.bool("multi_query", True)
    return _mha_decoder(c, h, heads, c.int("n_layer", "num_hidden_layers")) | {
        "num_kv_heads": 1 if mqa else heads,
        "intermediate_size": c.int("n_inner", default=4 * h),
        "vocab_size": c.int("vocab_size"),
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": True,
        "learned_pos": pos,
        "max_position_embeddings": pos,
        "extra_params": 2 * h,  # ln_f
    }


def parse_gptj(c: Cfg, mt: str) -> dict:
    """GPT-J: one LayerNorm per block (parallel attention + MLP), untied head with bias."""
    h = c.int("n_embd")
    heads = c.int("n_head")
    return _mha_decoder(c, h, heads, c.int("n_layer")) | {
        "intermediate_size": c.int("n_inner", default=4 * h),
        "vocab_size": c.int("vocab_size"),
        "tied_embeddings": c.bool("tie_word_embeddings", False),
        "attn_bias": False,
        "norms_per_block": 1,
        "lm_head_bias": True,
        "max_position_embeddings": c.int("n_positions", default=0, minimum=0),
        "extra_params": 2 * h,
    }


def parse_neox(c: Cfg, mt: str) -> dict:
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    return _mha_decoder(c, h, heads, c.int("num_hidden_layers")) | {
        "intermediate_size": c.int("intermediate_size", default=4 * h),
        "vocab_size": c.int("vocab_size"),
        "tied_embeddings": c.bool("tie_word_embeddings", False),
        "attn_bias": c.bool("attention_bias", True),
        "max_position_embeddings": c.int("max_position_embeddings", default=0, minimum=0),
        "extra_params": 2 * h,
    }


def parse_bloom(c: Cfg, mt: str) -> dict:
    """BLOOM: ALiBi (no position table), word-embedding LayerNorm; trained at 2048 tokens."""
    h = c.int("hidden_size", "n_embed")
    heads = c.int("n_head", "num_attention_heads")
    return _mha_decoder(c, h, heads, c.int("n_layer", "num_hidden_layers")) | {
        "intermediate_size": 4 * h,
        "vocab_size": c.int("vocab_size"),
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": True,
        "max_position_embeddings": c.int("seq_length", default=2048),
        "extra_params": 4 * h,  # word_embeddings_layernorm + ln_f
    }


def parse_opt(c: Cfg, mt: str) -> dict:
    """OPT: learned positions with a 2-row offset, optional embedding projection."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    proj = c.int("word_embed_proj_dim", default=h)
    pos = c.int("max_position_embeddings")
    bias = c.bool("enable_bias", True)
    final_ln = 2 * h if c.bool("do_layer_norm_before", True) else 0
    return _mha_decoder(c, h, heads, c.int("num_hidden_layers")) | {
        "intermediate_size": c.int("ffn_dim"),
        "vocab_size": c.int("vocab_size"),
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": bias,
        "mlp_bias": bias,
        "learned_pos": pos + 2,
        "max_position_embeddings": pos,
        "embed_dim": proj if proj != h else 0,
        "extra_params": final_ln + (2 * proj * h if proj != h else 0),
    }
