"""Config parsers per architecture family: each maps a config.json to ModelSpec fields."""

from __future__ import annotations

from collections.abc import Callable

from apex_fast.models.config_values import Cfg
from apex_fast.models.families.encoders import parse_clip, parse_t5, parse_whisper
from apex_fast.models.families.gpt import (
    parse_bloom,
    parse_gpt2_like,
    parse_gptj,
    parse_neox,
    parse_opt,
)
from apex_fast.models.families.llama import parse_gemma3, parse_llama_like

GENERIC_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


FAMILIES: dict[str, Callable[[Cfg, str], dict]] = {
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
        parse_llama_like,
    ),
    "gemma3": parse_gemma3,
    "gpt2": parse_gpt2_like,
    "gpt_bigcode": parse_gpt2_like,
    "gptj": parse_gptj,
    "gpt_neox": parse_neox,
    "bloom": parse_bloom,
    "opt": parse_opt,
    "whisper": parse_whisper,
    "t5": parse_t5,
    "mt5": parse_t5,
    "clip": parse_clip,
    "clip_vision_model": parse_clip,
}
