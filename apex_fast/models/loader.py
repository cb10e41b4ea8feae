"""Load a ModelSpec from a bundled name, an alias / Hugging Face id, or a config.json path.

Every failure is an ApexError with a one-line message; any JSON object or byte string given as a
config either loads or raises ApexError.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from apex_fast.errors import ApexError
from apex_fast.models.quant import checkpoint_precision
from apex_fast.models.spec import ModelSpec

_CONFIG_DIR = Path(__file__).resolve().with_name("configs")
_MAX_INT = 2**31 - 1
_MISSING = object()

# bundled name: accepted aliases (seed tool shortcuts, Hugging Face ids, friendly spellings);
# matched case-insensitively.
_ALIAS_TABLE = """
llama-7b: huggyllama/llama-7b
llama-13b: huggyllama/llama-13b
llama-30b: huggyllama/llama-30b llama-33b
llama-65b: huggyllama/llama-65b
llama3-70b: meta-llama/Meta-Llama-3-70B meta-llama/Meta-Llama-3-70B-Instruct llama-3-70b
    llama3-70b-local
llama3.1-70b: meta-llama/Llama-3.1-70B meta-llama/Llama-3.1-70B-Instruct
    meta-llama/Meta-Llama-3.1-70B meta-llama/Meta-Llama-3.1-70B-Instruct llama-3.1-70b
    llama3.1-70b-local
llama3.1-405b: meta-llama/Llama-3.1-405B meta-llama/Llama-3.1-405B-Instruct
    meta-llama/Meta-Llama-3.1-405B meta-llama/Meta-Llama-3.1-405B-Instruct llama-3.1-405b
llama3.1-405b-fp8: meta-llama/Llama-3.1-405B-FP8 meta-llama/Llama-3.1-405B-Instruct-FP8
    meta-llama/Meta-Llama-3.1-405B-FP8 meta-llama/Meta-Llama-3.1-405B-Instruct-FP8 llama-3.1-405b-fp8
mistral-7b: mistralai/Mistral-7B-v0.1 mistral-7b-local
openhermes-2.5-mistral-7b: teknium/OpenHermes-2.5-Mistral-7B
mistral-large-2407: mistralai/Mistral-Large-Instruct-2407 mistral-large
mixtral-8x7b: mistralai/Mixtral-8x7B-v0.1 mistralai/Mixtral-8x7B-Instruct-v0.1
    cognitivecomputations/dolphin-2.5-mixtral-8x7b mixtral-8x7b-local
mixtral-8x22b: mistralai/Mixtral-8x22B-v0.1 mistral-community/Mixtral-8x22B-v0.1
    mistral-community/Mixtral-8x22B-v0.1-AWQ mixtral-8x22b-local
gpt-j: EleutherAI/gpt-j-6b gptj gpt-j-6b
gpt-neox: EleutherAI/gpt-neox-20b gpt-neox-20b gptneox
bloom: bigscience/bloom bloom-176b
opt: facebook/opt-66b opt-66b
gpt2: openai-community/gpt2
wizardcoder: WizardLM/WizardCoder-15B-V1.0 WizardLMTeam/WizardCoder-15B-V1.0 wizardcoder-15b
whisper: openai/whisper-large-v3 whisper-large-v3
t5: google/flan-t5-xxl flan-t5-xxl
clip: openai/clip-vit-large-patch14 clip-vit-large-patch14
qwen3-moe: Qwen/Qwen3-30B-A3B qwen3-30b-a3b
qwen3-235b-a22b: Qwen/Qwen3-235B-A22B
deepseek-v3: deepseek-ai/DeepSeek-V3 deepseek-ai/DeepSeek-V3-Base
deepseek-r1: deepseek-ai/DeepSeek-R1 deepseek-ai/DeepSeek-R1-Zero
llama2-7b: meta-llama/Llama-2-7b-hf meta-llama/Llama-2-7b meta-llama/Llama-2-7b-chat-hf
    meta-llama/Llama-2-7b-chat llama-2-7b
llama2-13b: meta-llama/Llama-2-13b-hf meta-llama/Llama-2-13b meta-llama/Llama-2-13b-chat-hf
    meta-llama/Llama-2-13b-chat llama-2-13b
llama2-70b: meta-llama/Llama-2-70b-hf meta-llama/Llama-2-70b meta-llama/Llama-2-70b-chat-hf
    meta-llama/Llama-2-70b-chat llama-2-70b
llama3.1-8b: meta-llama/Llama-3.1-8B meta-llama/Llama-3.1-8B-Instruct
    meta-llama/Meta-Llama-3.1-8B meta-llama/Meta-Llama-3.1-8B-Instruct llama-3.1-8b
llama3.2-1b: meta-llama/Llama-3.2-1B meta-llama/Llama-3.2-1B-Instruct llama-3.2-1b
llama3.2-3b: meta-llama/Llama-3.2-3B meta-llama/Llama-3.2-3B-Instruct llama-3.2-3b
llama3.3-70b: meta-llama/Llama-3.3-70B-Instruct llama-3.3-70b
qwen2.5-7b: Qwen/Qwen2.5-7B Qwen/Qwen2.5-7B-Instruct qwen2.5-7b-instruct
qwen2.5-32b: Qwen/Qwen2.5-32B Qwen/Qwen2.5-32B-Instruct qwen2.5-32b-instruct
qwen2.5-72b: Qwen/Qwen2.5-72B Qwen/Qwen2.5-72B-Instruct qwen2.5-72b-instruct
qwen3-8b: Qwen/Qwen3-8B Qwen/Qwen3-8B-Base
qwen3-32b: Qwen/Qwen3-32B
gpt-oss-20b: openai/gpt-oss-20b
gpt-oss-120b: openai/gpt-oss-120b
gemma-3-27b: google/gemma-3-27b-it google/gemma-3-27b-pt gemma3-27b
mistral-small-24b: mistralai/Mistral-Small-24B-Instruct-2501 mistralai/Mistral-Small-24B-Base-2501
    mistral-small-24b-instruct-2501
phi-4: microsoft/phi-4 phi4
"""


def _parse_aliases(table: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in table.replace("\n    ", " ").strip().splitlines():
        name, _, rest = entry.partition(":")
        for alias in rest.split():
            out[alias.lower()] = name.strip()
    return out


_ALIASES = _parse_aliases(_ALIAS_TABLE)

_GENERIC_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


class _Cfg:
    """A config dict with typed, error-reporting accessors."""

    def __init__(self, data: dict, where: str) -> None:
        self.data = data
        self.where = where

    def fail(self, msg: str) -> ApexError:
        return ApexError(f"model config {self.where}: {msg}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, *keys: str, default: Any = _MISSING, minimum: int = 1) -> int:
        for key in keys:
            value = self.data.get(key)
            if value is None:
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(f"{key} must be an integer, got {_short(value)}")
            if not minimum <= value <= _MAX_INT:
                raise self.fail(f"{key} = {value} is out of range [{minimum}, {_MAX_INT}]")
            return value
        if default is _MISSING:
            raise self.fail(f"missing {' / '.join(keys)}")
        return default

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(f"{key} must be true or false, got {_short(value)}")
        return value

    def str(self, key: str, default: str = "") -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(f"{key} must be a string, got {_short(value)}")
        return value

    def sub(self, key: str) -> _Cfg:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self.fail(f"{key} must be an object")
        return _Cfg(value, f"{self.where} [{key}]")


def _short(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def _heads(c: _Cfg, h: int, heads: int, head_dim: int | None) -> int:
    if head_dim is not None:
        return head_dim
    if h % heads:
        raise c.fail(f"hidden size {h} is not divisible by {heads} heads and no head_dim is given")
    return h // heads


# ---------------------------------------------------------------------- families
_MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")


def _llama_like(c: _Cfg, mt: str) -> dict:
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
        out["head_dim"] = _heads(c, h, heads, c.int("head_dim", default=None))
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
            "intermediate_size", default=out.get("moe_intermediate_size", _MISSING)
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


def _sliding_layer_count(c: _Cfg, layers: int) -> int:
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


def _dense_layer_count(c: _Cfg, layers: int) -> int:
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


def _gemma3(c: _Cfg, mt: str) -> dict:
    """Gemma 3: the text decoder of `text_config` (gemma3_text), plus the SigLIP vision tower
    and its projector as weights outside the decoder (they run only for image inputs)."""
    text = c.sub("text_config")
    out = _llama_like(text, "gemma3_text")
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


def _gpt2_like(c: _Cfg, mt: str) -> dict:
    """gpt2 and gpt_bigcode (StarCoder): learned positions, LayerNorm, biases, tied head."""
    h = c.int("n_embd", "hidden_size")
    heads = c.int("n_head", "num_attention_heads")
    pos = c.int("n_positions", "n_ctx", "max_position_embeddings")
    mqa = mt == "gpt_bigcode" and c.bool("multi_query", True)
    return {
        "arch": "decoder",
        "num_layers": c.int("n_layer", "num_hidden_layers"),
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": 1 if mqa else heads,
        "head_dim": _heads(c, h, heads, None),
        "intermediate_size": c.int("n_inner", default=4 * h),
        "vocab_size": c.int("vocab_size"),
        "gated_ffn": False,
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": True,
        "mlp_bias": True,
        "norm_bias": True,
        "learned_pos": pos,
        "max_position_embeddings": pos,
        "extra_params": 2 * h,  # ln_f
    }


def _gptj(c: _Cfg, mt: str) -> dict:
    """GPT-J: one LayerNorm per block (parallel attention + MLP), untied head with bias."""
    h = c.int("n_embd")
    heads = c.int("n_head")
    return {
        "arch": "decoder",
        "num_layers": c.int("n_layer"),
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": _heads(c, h, heads, None),
        "intermediate_size": c.int("n_inner", default=4 * h),
        "vocab_size": c.int("vocab_size"),
        "gated_ffn": False,
        "tied_embeddings": c.bool("tie_word_embeddings", False),
        "attn_bias": False,
        "mlp_bias": True,
        "norm_bias": True,
        "norms_per_block": 1,
        "lm_head_bias": True,
        "learned_pos": 0,
        "max_position_embeddings": c.int("n_positions", default=0, minimum=0),
        "extra_params": 2 * h,
    }


def _neox(c: _Cfg, mt: str) -> dict:
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    return {
        "arch": "decoder",
        "num_layers": c.int("num_hidden_layers"),
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": _heads(c, h, heads, None),
        "intermediate_size": c.int("intermediate_size", default=4 * h),
        "vocab_size": c.int("vocab_size"),
        "gated_ffn": False,
        "tied_embeddings": c.bool("tie_word_embeddings", False),
        "attn_bias": c.bool("attention_bias", True),
        "mlp_bias": True,
        "norm_bias": True,
        "learned_pos": 0,
        "max_position_embeddings": c.int("max_position_embeddings", default=0, minimum=0),
        "extra_params": 2 * h,
    }


def _bloom(c: _Cfg, mt: str) -> dict:
    """BLOOM: ALiBi (no position table), word-embedding LayerNorm; trained at 2048 tokens."""
    h = c.int("hidden_size", "n_embed")
    heads = c.int("n_head", "num_attention_heads")
    return {
        "arch": "decoder",
        "num_layers": c.int("n_layer", "num_hidden_layers"),
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": _heads(c, h, heads, None),
        "intermediate_size": 4 * h,
        "vocab_size": c.int("vocab_size"),
        "gated_ffn": False,
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": True,
        "mlp_bias": True,
        "norm_bias": True,
        "learned_pos": 0,
        "max_position_embeddings": c.int("seq_length", default=2048),
        "extra_params": 4 * h,  # word_embeddings_layernorm + ln_f
    }


def _opt(c: _Cfg, mt: str) -> dict:
    """OPT: learned positions with a 2-row offset, optional embedding projection."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    proj = c.int("word_embed_proj_dim", default=h)
    pos = c.int("max_position_embeddings")
    bias = c.bool("enable_bias", True)
    final_ln = 2 * h if c.bool("do_layer_norm_before", True) else 0
    return {
        "arch": "decoder",
        "num_layers": c.int("num_hidden_layers"),
        "hidden_size": h,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_dim": _heads(c, h, heads, None),
        "intermediate_size": c.int("ffn_dim"),
        "vocab_size": c.int("vocab_size"),
        "gated_ffn": False,
        "tied_embeddings": c.bool("tie_word_embeddings", True),
        "attn_bias": bias,
        "mlp_bias": bias,
        "norm_bias": True,
        "learned_pos": pos + 2,
        "max_position_embeddings": pos,
        "embed_dim": proj if proj != h else 0,
        "extra_params": final_ln + (2 * proj * h if proj != h else 0),
    }


def _whisper(c: _Cfg, mt: str) -> dict:
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
        "head_dim": _heads(c, h, heads, None),
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


def _t5(c: _Cfg, mt: str) -> dict:
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
        "head_dim": c.int("d_kv", default=None) or _heads(c, h, heads, None),
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


def _clip(c: _Cfg, mt: str) -> dict:
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
        "head_dim": _heads(c, h, heads, None),
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


_FAMILIES: dict[str, Callable[[_Cfg, str], dict]] = {
    **dict.fromkeys(
        (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen2_moe",
            "qwen3",
            "qwen3_moe",
            "deepseek_v2",
            "deepseek_v3",
            "phi3",
            "gpt_oss",
            "gemma3_text",
        ),
        _llama_like,
    ),
    "gemma3": _gemma3,
    "gpt2": _gpt2_like,
    "gpt_bigcode": _gpt2_like,
    "gptj": _gptj,
    "gpt_neox": _neox,
    "bloom": _bloom,
    "opt": _opt,
    "whisper": _whisper,
    "t5": _t5,
    "mt5": _t5,
    "clip": _clip,
    "clip_vision_model": _clip,
}


def _validate(c: _Cfg, kw: dict) -> None:
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
    c = _Cfg(config, where)
    mt = c.data.get("model_type")
    if mt is not None and not isinstance(mt, str):
        raise c.fail(f"model_type must be a string, got {_short(mt)}")
    family = _FAMILIES.get(mt or "")
    if family is None:
        if not all(c.has(k) for k in _GENERIC_KEYS):
            known = ", ".join(sorted(_FAMILIES))
            what = f"unknown model_type {mt!r}" if mt else "no model_type"
            raise c.fail(
                f"{what} (known: {known}); a generic decoder needs {', '.join(_GENERIC_KEYS)}"
            )
        family = _llama_like
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


# ---------------------------------------------------------------------- files and names
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
def _bundled() -> tuple[str, ...]:
    return tuple(sorted(p.stem.lower() for p in _CONFIG_DIR.glob("*.json")))


@functools.cache
def _load_bundled(name: str) -> ModelSpec:
    path = _CONFIG_DIR / f"{name}.json"
    return spec_from_config(_read_config(path), name, str(path))


def _config_path(name: str, known: bool) -> Path | None:
    try:
        p = Path(name).expanduser()
        if p.is_dir() and (p / "config.json").is_file():
            return p / "config.json"
        if p.is_file() and (p.suffix.lower() == ".json" or not known):
            return p
    except (OSError, ValueError, RuntimeError):
        return None
    return None


def model_aliases() -> dict[str, str]:
    """Every accepted alias (lower case; HF ids, seed shortcuts) -> bundled model name."""
    return dict(sorted(_ALIASES.items()))


def resolve_model_name(name: str) -> str:
    """The bundled model name for a name, alias or HF id (case-insensitive), or the path of the
    config file when name is a .json file or a directory holding config.json."""
    if not isinstance(name, str) or not name.strip():
        raise ApexError("empty model name")
    key = name.strip().lower()
    canonical = key if key in _bundled() else _ALIASES.get(key)
    path = _config_path(name.strip(), canonical is not None)
    if path is not None:
        return str(path)
    if canonical is not None:
        return canonical
    if _is_dir(name.strip()):
        raise ApexError(f"directory {name.strip()} has no config.json")
    if key.endswith(".json"):
        raise ApexError(f"model config file {name.strip()} does not exist")
    hint = _suggestions(key)
    raise ApexError(
        f"unknown model {name.strip()!r}{hint}; pass the model's config.json (a file path, or a "
        "directory holding config.json, e.g. downloaded from its Hugging Face page) as --model; "
        "`apex.py models` lists the bundled ones"
    )


_SIZE_RE = re.compile(r"(?:^|[-_/ ])(\d+x)?(\d+(?:\.\d+)?)([bm])(?=$|[-_/ ])")


def _model_size(name: str) -> str | None:
    """The parameter-size tag of a model name ('70b', '8x7b', '1.5b'), None if it has none."""
    match = _SIZE_RE.search(name.lower())
    if match is None:
        return None
    return f"{match.group(1) or ''}{float(match.group(2)):g}{match.group(3)}"


def _suggestions(key: str) -> str:
    """' (did you mean a, b?)' for close names of the same size, '' if there are none: a name
    that states a size (meta-llama-3-8b) is never offered a model of another size."""
    size = _model_size(key)
    choices = [c for c in [*_bundled(), *_ALIASES] if size is None or _model_size(c) == size]
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.6)
    if not close and "/" in key:  # an HF id: compare the repo name with the bundled names
        repo = key.rsplit("/", 1)[1]
        close = difflib.get_close_matches(repo, choices, n=3, cutoff=0.6)
    names = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
    return f" (did you mean {', '.join(names)}?)" if names else ""


def _is_dir(name: str) -> bool:
    try:
        return Path(name).expanduser().is_dir()
    except (OSError, ValueError, RuntimeError):
        return False


def list_models() -> list[ModelSpec]:
    """All bundled models, sorted by name."""
    return [_load_bundled(n) for n in _bundled()]


def load_model(
    name_or_path: str, num_experts: int | None = None, topk: int | None = None
) -> ModelSpec:
    """Load a model; num_experts / topk override the expert count and top-k of an MoE model."""
    ref = resolve_model_name(name_or_path)
    if ref in _bundled():
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
