"""How reports name the engine (text line and the JSON `engine` object)."""

from __future__ import annotations

from typing import Any

from apex_fast.engines import get_engine


def engine_summary(opts: Any, budget: int) -> str:
    """One report line: the engine, its step formation and the settings in force.

    `opts` is the simulation's EngineOptions; `budget` the token budget per step."""
    p = get_engine(getattr(opts, "engine", "vllm-0.6"))
    head = f"{p.display_name}, version {p.version} (--engine {p.name})"
    chunking = _engine_chunked(opts)
    if p.name == "sglang":
        steps = (
            f"prefill-only and decode-only steps, chunked prefill {'on' if chunking else 'off'}, "
            f"{budget} tokens/prefill step"
        )
    elif p.name == "trtllm":
        steps = (
            f"in-flight batching, chunked context {'on' if chunking else 'off'}, "
            f"{budget} tokens/step"
        )
    else:
        steps = f"chunked prefill {'on' if opts.chunked_prefill else 'off'}, {budget} tokens/step"
    extra = []
    if getattr(opts, "enforce_eager", False):
        extra.append("CUDA graphs off")
    if getattr(opts, "num_scheduler_steps", 1) > 1:
        extra.append(f"{opts.num_scheduler_steps} scheduler steps")
    if not opts.custom_all_reduce:
        extra.append("custom all-reduce off")
    tail = "".join(f", {e}" for e in extra)
    return (
        f"{head}, {steps}, max {opts.max_num_seqs} seqs, block size {opts.block_size}, "
        f"gpu-memory-utilization {opts.gpu_memory_utilization}{tail}"
    )


def _engine_chunked(opts: Any) -> bool:
    own = getattr(opts, "engine_chunked_prefill", None)
    return bool(opts.chunked_prefill if own is None else own)


def engine_json(opts: Any) -> dict:
    """The engine's identity and launch settings for the JSON report."""
    p = get_engine(getattr(opts, "engine", "vllm-0.6"))
    return {
        "name": p.name,
        "display_name": p.display_name,
        "version": p.version,
        "engine_chunked_prefill": _engine_chunked(opts),
        "step_formation": (p.step_formation_chunked if _engine_chunked(opts) else p.step_formation),
        "kernel_mode": p.kernel_mode(bool(opts.chunked_prefill)),
        "enforce_eager": bool(getattr(opts, "enforce_eager", False)),
        "custom_all_reduce": bool(opts.custom_all_reduce),
        "num_scheduler_steps": int(getattr(opts, "num_scheduler_steps", 1)),
        "max_model_len": getattr(opts, "max_model_len", None),
        "prefix_caching": bool(getattr(opts, "prefix_caching", False)),
        "prefix_caching_simulated": bool(getattr(opts, "prefix_caching", False)),
        "router": getattr(opts, "router", "round-robin"),
    }
