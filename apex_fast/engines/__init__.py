"""Serving engines as named, sourced profiles (`--engine NAME`).

Each module describes one engine at one version (`EngineProfile`, see profile.py); every value
cites the engine source file at a named release or a documentation page. `get_engine(name)`
returns a profile; `ENGINE_NAMES` lists the names in the order `--help` shows them.
"""

from __future__ import annotations

from apex_fast.engines.profile import KNOWN_FLAGS, EngineProfile
from apex_fast.engines.sglang import SGLANG
from apex_fast.engines.trtllm import TRTLLM
from apex_fast.engines.vllm_05 import VLLM_05
from apex_fast.engines.vllm_06 import VLLM_06
from apex_fast.engines.vllm_v1 import VLLM_V1
from apex_fast.errors import ApexError

DEFAULT_ENGINE = "vllm-0.6"

ENGINES: dict[str, EngineProfile] = {p.name: p for p in (VLLM_05, VLLM_06, VLLM_V1, SGLANG, TRTLLM)}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)


def get_engine(name: str) -> EngineProfile:
    """The profile called `name`; a one-line error listing the names otherwise."""
    key = name.strip().lower()
    if key not in ENGINES:
        raise ApexError(f"unknown --engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    return ENGINES[key]


def engines_with(flag: str) -> list[str]:
    """Names of the engines that have a launch setting."""
    return [n for n, p in ENGINES.items() if flag in p.flags]


def check_flags(profile: EngineProfile, given: list[str] | set[str] | tuple[str, ...]) -> None:
    """One-line error for the first given flag this engine does not have."""
    for flag in given:
        if flag not in KNOWN_FLAGS:
            raise ValueError(f"unknown engine flag {flag}")
        if flag not in profile.flags:
            others = ", ".join(engines_with(flag)) or "none"
            raise ApexError(
                f"{flag} is not a setting of {profile.display_name} {profile.version} "
                f"(--engine {profile.name}); engines that have it: {others}"
            )


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "ENGINE_NAMES",
    "EngineProfile",
    "KNOWN_FLAGS",
    "check_flags",
    "engines_with",
    "get_engine",
]
