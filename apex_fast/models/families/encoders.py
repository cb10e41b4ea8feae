"""Whisper and T5 (encoder-decoder) and the CLIP vision tower (encoder only)."""

from __future__ import annotations

from apex_fast.models.config_values import Cfg, split_heads


def parse_whisper(c: Cfg, mt: str) -> dict:
    h = c.int("d_model")
    heads = c.int("decoder_attention_heads")
    inter = c.int("decoder_ffn_dim")
    if c.int("encoder_attention_heads", default=heads) != heads or (
        c.int("encoder_ffn_dim", default=inter) != inter
    ):
        raise c.fail("encoder and decoder attention heads / FFN widths differ (not supported)")
    src = c.int("max_source_positions")
    tgt = c.int("max_target_positions")
    mels = c.int("num_mel_bins")
    stem = mels * h * 3 + h + h * h * 3 + h  # conv1 + conv2
    return {
        "arch": "encoder-decoder",
        "num_layers": c.int("decoder_layers", "num_hidden_layers"),
        "encoder_layers": c.int("encoder_layers", "num_hidden_layers"),
        "encoder_seq_len": src,
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": split_heads(c, h, heads, None),
        "intermediate_size": inter,
        "vocab_size": c.int("vocab_size"),
        "gated_ffn": False,
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": True,
        "attn_k_bias": False,
        "mlp_bias": True,
        "norm_bias": True,
        "norms_per_block": 3,
        "learned_pos": tgt,
        "max_position_embeddings": tgt,
        # encoder position table + conv stem + encoder/decoder final LayerNorms
        "extra_params": src * h + stem + 4 * h,
    }


def parse_t5(c: Cfg, mt: str) -> dict:
    """T5 / mT5: relative position buckets (first layer of each stack), RMS-style norms."""
    h = c.int("d_model")
    heads = c.int("num_heads")
    enc = c.int("num_layers")
    proj = c.str("feed_forward_proj", "relu")
    buckets = c.int("relative_attention_num_buckets", default=32)
    return {
        "arch": "encoder-decoder",
        "num_layers": c.int("num_decoder_layers", default=enc),
        "encoder_layers": enc,
        "encoder_seq_len": 0,
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": c.int("d_kv", default=None) or split_heads(c, h, heads, None),
        "intermediate_size": c.int("d_ff"),
        "vocab_size": c.int("vocab_size"),
        "gated_ffn": proj.startswith("gated-") or c.bool("is_gated_act", False),
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": False,
        "mlp_bias": False,
        "norms_per_block": 3,
        "learned_pos": 0,
        "max_position_embeddings": c.int("n_positions", default=512),
        "extra_params": 2 * h + 2 * buckets * heads,
    }


def parse_clip(c: Cfg, mt: str) -> dict:
    """CLIP vision tower (ViT): patch stem, CLS token, learned positions, pre/post LayerNorm."""
    projection = 0
    if mt == "clip":
        projection = c.int("projection_dim", default=512)
        key = "vision_config" if "vision_config" in c.data else "vision_config_dict"
        c = c.sub(key)
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    layers = c.int("num_hidden_layers")
    patch = c.int("patch_size")
    image = c.int("image_size")
    if patch > image:
        raise c.fail(f"patch_size {patch} is larger than image_size {image}")
    tokens = (image // patch) ** 2 + 1
    stem = c.int("num_channels", default=3) * patch * patch * h + h
    return {
        "arch": "encoder",
        "num_layers": layers,
        "encoder_layers": layers,
        "encoder_seq_len": tokens,
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": split_heads(c, h, heads, None),
        "intermediate_size": c.int("intermediate_size"),
        "vocab_size": 0,
        "gated_ffn": False,
        "tied_embeddings": False,
        "attn_bias": True,
        "mlp_bias": True,
        "norm_bias": True,
        "learned_pos": tokens,
        "max_position_embeddings": tokens,
        "extra_params": stem + 4 * h + h * projection,
    }
