"""An engine's own launch line (`vllm serve ... --max-model-len 4096`, `sglang.launch_server
... --mem-frac 0.88`, `trtllm-serve ... --max_batch_size 50`) read into LaunchSettings.

Each engine names its settings its own way; the tables below map the spellings of each
engine's command line onto the tool's settings. Flags that change nothing the simulation
models (ports, logging, tokenizer, parallel sizes given elsewhere, environment variables) are
returned as ignored, so a caller can say so. A launch line means the engine's own defaults for
what it does not set: for vLLM V0 that is chunked prefill only above a 32k context, with its
512-token budget (`EngineProfile.chunked_by_default`, `budget_chunked`), not this tool's
planning default (chunked, 2048 tokens).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable

from apex_fast.engines import get_engine
from apex_fast.engines.options import LaunchSettings
from apex_fast.engines.profile import EngineProfile


def _true(_: str | None) -> bool:
    return True


def _false(_: str | None) -> bool:
    return False


def _int(v: str | None) -> int:
    return int(float(v or ""))


def _float(v: str | None) -> float:
    return float(v or "")


def _bool(v: str | None) -> bool:
    return v is None or v.strip().lower() not in ("false", "0", "no", "off")


# flag spelling (with '-' for '_') -> (LaunchSettings field, takes a value, parse)
_Entry = tuple[str, bool, Callable[[str | None], object]]

_VLLM: dict[str, _Entry] = {
    "--max-model-len": ("max_model_len", True, _int),
    "--num-scheduler-steps": ("num_scheduler_steps", True, _int),
    "--enable-chunked-prefill": ("chunked_prefill", False, _true),
    "--no-enable-chunked-prefill": ("chunked_prefill", False, _false),
    "--max-num-seqs": ("max_num_seqs", True, _int),
    "--max-num-batched-tokens": ("max_num_batched_tokens", True, _int),
    "--gpu-memory-utilization": ("gpu_memory_utilization", True, _float),
    "--enforce-eager": ("enforce_eager", False, _true),
    "--disable-custom-all-reduce": ("disable_custom_all_reduce", False, _true),
    "--disable-frontend-multiprocessing": ("disable_frontend_multiprocessing", False, _true),
    "--enable-prefix-caching": ("prefix_caching", False, _true),
    "--no-enable-prefix-caching": ("prefix_caching", False, _false),
    "--block-size": ("block_size", True, _int),
}
# sglang server_args.py (0.4.x): names of ServerArgs fields as flags
_SGLANG: dict[str, _Entry] = {
    "--context-length": ("max_model_len", True, _int),
    "--mem-fraction-static": ("gpu_memory_utilization", True, _float),
    "--mem-frac": ("gpu_memory_utilization", True, _float),  # argparse prefix of the above
    "--chunked-prefill-size": ("max_num_batched_tokens", True, _int),
    "--max-running-requests": ("max_num_seqs", True, _int),
    "--disable-radix-cache": ("prefix_caching", False, _false),
    "--disable-cuda-graph": ("enforce_eager", False, _true),
    "--disable-custom-all-reduce": ("disable_custom_all_reduce", False, _true),
    "--page-size": ("block_size", True, _int),
    # plan shape, not a launch setting (LaunchLine.attention_copies): DP attention runs
    # --dp-size attention copies (dp_size defaults to 1)
    "--enable-dp-attention": ("dp_attention", False, _true),
    "--dp-size": ("dp_size", True, _int),
}
# trtllm-serve / trtllm-bench options (TensorRT-LLM 0.19 .. 1.0 llmapi CLI)
_TRTLLM: dict[str, _Entry] = {
    "--max-seq-len": ("max_model_len", True, _int),
    "--max-batch-size": ("max_num_seqs", True, _int),
    "--max-num-tokens": ("max_num_batched_tokens", True, _int),
    "--kv-cache-free-gpu-memory-fraction": ("gpu_memory_utilization", True, _float),
    "--enable-chunked-prefill": ("chunked_prefill", False, _bool),
    "--tokens-per-block": ("block_size", True, _int),
}
_TABLES: dict[str, dict[str, _Entry]] = {
    "vllm-0.5": _VLLM,
    "vllm-0.6": _VLLM,
    "vllm-v1": _VLLM,
    "sglang": _SGLANG,
    "trtllm": _TRTLLM,
}


@dataclasses.dataclass(frozen=True)
class LaunchLine:
    """Settings read from a launch line, and the words it had that the tool does not model."""

    settings: LaunchSettings
    ignored: tuple[str, ...]
    # attention copies the line asks for (SGLang --enable-dp-attention --dp-size N), else 1
    attention_copies: int = 1


def read_launch_line(engine: str, line: str, model_max_len: int | None = None) -> LaunchLine:
    """The settings of `engine` that `line` gives (flags in the engine's own spelling, with
    `--flag value` or `--flag=value`); `model_max_len` is the model's context length, which
    sets vLLM V0's chunked-prefill default when the line gives no --max-model-len."""
    profile = get_engine(engine)
    table = _TABLES[profile.name]
    fields: dict[str, object] = {}
    ignored: list[str] = []
    words = shlex.split(line.replace(";", " ").replace(",", " "))
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("--"):
            ignored.append(word)
            continue
        name, eq, inline = word.partition("=")
        key = name.replace("_", "-")
        entry = table.get(key)
        if entry is None:
            ignored.append(name)
            continue
        field, takes_value, parse = entry
        value: str | None = inline if eq else None
        if takes_value and value is None:
            if i >= len(words):
                raise ValueError(f"{name} needs a value in {line!r}")
            value = words[i]
            i += 1
        elif not takes_value and value is None and i < len(words) and _is_bool(words[i]):
            value = words[i]  # `--enable_chunked_prefill true`
            i += 1
        fields[field] = parse(value)
    if profile.name in ("vllm-0.5", "vllm-0.6"):
        _v0_defaults(profile, fields, model_max_len)
    dp_attention = bool(fields.pop("dp_attention", False))
    dp_size = int(fields.pop("dp_size", 1))  # type: ignore[call-overload]
    settings = LaunchSettings(engine=profile.name, **fields)  # type: ignore[arg-type]
    return LaunchLine(settings, tuple(ignored), dp_size if dp_attention else 1)


def _is_bool(word: str) -> bool:
    return word.strip().lower() in ("true", "false", "1", "0")


def _v0_defaults(
    profile: EngineProfile, fields: dict[str, object], model_max_len: int | None
) -> None:
    """vLLM V0 turns chunked prefill on by itself above a 32k context (arg_utils.py
    `create_engine_config`, 0.5.3 .. 0.6.x), with 512 tokens per step (config.py
    `SchedulerConfig`); multi-step scheduling keeps it off (0.6.0 rejects the two together)."""
    if "chunked_prefill" in fields:
        chunked = bool(fields["chunked_prefill"])
    else:
        max_len = fields.get("max_model_len", model_max_len)
        steps = int(fields.get("num_scheduler_steps", 1) or 1)  # type: ignore[call-overload]
        chunked = steps == 1 and profile.chunked_by_default(max_len)  # type: ignore[arg-type]
        fields["chunked_prefill"] = chunked
    if chunked and "max_num_batched_tokens" not in fields:
        fields["max_num_batched_tokens"] = profile.budget_chunked("", 0.0)
