"""Model names: bundled configs, aliases (Hugging Face ids, short names), config paths and
suggestions for unknown names."""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

from apex_fast.errors import ApexError

CONFIG_DIR = Path(__file__).resolve().with_name("configs")

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
qwen3-14b: Qwen/Qwen3-14B Qwen/Qwen3-14B-Base
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


@functools.cache
def bundled_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem.lower() for p in CONFIG_DIR.glob("*.json")))


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
    canonical = key if key in bundled_names() else _ALIASES.get(key)
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
    choices = [c for c in [*bundled_names(), *_ALIASES] if size is None or _model_size(c) == size]
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
