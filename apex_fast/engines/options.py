"""From launch settings (what the user gave) to the simulation's EngineOptions fields.

A setting left as None takes the chosen engine's default. The kernel has two scheduling modes
(prefill-first, chunked-mixed); each engine's step formation is mapped onto one of them as its
profile's `kernel_mode_note` says.
"""

from __future__ import annotations

from dataclasses import dataclass

from apex_fast.engines import DEFAULT_ENGINE, check_flags, get_engine
from apex_fast.engines.profile import EngineProfile
from apex_fast.errors import ApexError

# SGLang leaves max_running_requests to min(max_total_tokens // 2, req_pool_size), and the
# request pool holds at most 4096 requests (sglang 0.4.6.post5 model_runner.py:
# min(max(int(max_total_tokens / context_len * 512), 2048), 4096)). The tool bounds the
# running set by this upper end; KV blocks bound it further in the kernel.
SGLANG_MAX_RUNNING_CAP = 4096


@dataclass(frozen=True)
class LaunchSettings:
    """Engine settings as given on the command line; None = the engine's default (read from
    its profile in apex_fast/engines/). A PlanRequest (apex_fast/request.py) holds one."""

    engine: str = DEFAULT_ENGINE
    enforce_eager: bool | None = None
    disable_custom_all_reduce: bool = False
    disable_frontend_multiprocessing: bool = False
    max_model_len: int | None = None
    num_scheduler_steps: int | None = None
    prefix_caching: bool | None = None
    chunked_prefill: bool | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    gpu_memory_utilization: float | None = None

    def given_flags(self) -> list[str]:
        """The tool's flag names of the settings that were given."""
        given = {
            "--enforce-eager": bool(self.enforce_eager),
            "--disable-custom-all-reduce": self.disable_custom_all_reduce,
            "--disable-frontend-multiprocessing": self.disable_frontend_multiprocessing,
            "--max-model-len": self.max_model_len is not None,
            "--num-scheduler-steps": self.num_scheduler_steps is not None,
            "--enable-prefix-caching": self.prefix_caching is not None,
            "--chunked-prefill": self.chunked_prefill is True,
            "--no-chunked-prefill": self.chunked_prefill is False,
            "--max-num-seqs": self.max_num_seqs is not None,
            "--max-num-batched-tokens": self.max_num_batched_tokens is not None,
            "--block-size": self.block_size is not None,
            "--gpu-memory-utilization": self.gpu_memory_utilization is not None,
        }
        return [flag for flag, on in given.items() if on]


def _check_values(s: LaunchSettings) -> None:
    if s.max_model_len is not None and s.max_model_len < 1:
        raise ApexError(f"--max-model-len must be at least 1, got {s.max_model_len}")
    if s.num_scheduler_steps is not None and s.num_scheduler_steps < 1:
        raise ApexError(f"--num-scheduler-steps must be at least 1, got {s.num_scheduler_steps}")


def engine_option_fields(
    s: LaunchSettings,
    device_name: str,
    device_mem_gib: float,
    model_max_len: int | None = None,
    tp: int | None = None,
) -> dict:
    """Keyword arguments of EngineOptions for these settings on this GPU.

    `model_max_len` is the model's own context length (max_model_len when the user gives
    none); `tp` the pinned tensor-parallel size, if any (SGLang's memory fraction depends on
    it; unpinned, the single-GPU value is used).
    """
    p = get_engine(s.engine)
    check_flags(p, s.given_flags())
    _check_values(s)
    max_len = s.max_model_len if s.max_model_len is not None else model_max_len
    out: dict = {
        "engine": p.name,
        "enforce_eager": bool(s.enforce_eager) if s.enforce_eager is not None else False,
        "custom_all_reduce": p.custom_all_reduce_default and not s.disable_custom_all_reduce,
        # the HTTP front end shares the engine's process: its per-token work is on the step's
        # critical path (sim/step_time.py)
        "frontend_in_process": (not p.separate_api_process) or s.disable_frontend_multiprocessing,
        "num_scheduler_steps": s.num_scheduler_steps or 1,
        "max_model_len": s.max_model_len,
        "prefix_caching": (
            s.prefix_caching if s.prefix_caching is not None else p.prefix_caching_default
        ),
        "block_size": s.block_size if s.block_size is not None else p.block_size_default,
        "gpu_memory_utilization": (
            s.gpu_memory_utilization
            if s.gpu_memory_utilization is not None
            else p.memory_fraction(tp or 1)
        ),
    }
    if p.name == "vllm-0.6":
        out.update(_vllm06(p, s))
    elif p.name == "vllm-0.5":
        out.update(_vllm05(p, s, max_len))
    elif p.name == "vllm-v1":
        out.update(_vllm_v1(p, s, device_name, device_mem_gib))
    elif p.name == "sglang":
        out.update(_sglang(p, s, device_name, device_mem_gib))
    elif p.name == "trtllm":
        out.update(_trtllm(p, s, device_name, device_mem_gib))
    else:  # pragma: no cover - every registered engine has a branch (tested)
        raise ValueError(f"no option mapping for engine {p.name}")
    return out


def _multi_step_rule(p: EngineProfile, s: LaunchSettings) -> bool | None:
    """vLLM 0.6.0 refuses --num-scheduler-steps > 1 with chunked prefill (arg_utils.py
    `create_engine_config`). Returns the chunking to use when the user did not say."""
    steps = s.num_scheduler_steps or 1
    if steps > 1 and not p.multi_step_with_chunked_prefill:
        if s.chunked_prefill is True:
            raise ApexError(
                f"{p.display_name} {p.version} does not run --num-scheduler-steps > 1 with "
                "chunked prefill; drop --chunked-prefill"
            )
        return False
    return None


def _vllm06(p: EngineProfile, s: LaunchSettings) -> dict:
    # The calibrated default of this tool: chunked prefill on, 2048 tokens per step
    # (apex_fast.sim.engine_params.DEFAULT_CHUNKED_BUDGET), 256 sequences.
    forced = _multi_step_rule(p, s)
    chunked = s.chunked_prefill if s.chunked_prefill is not None else True
    if forced is False:
        chunked = False
    return {
        "chunked_prefill": chunked,
        "max_num_batched_tokens": s.max_num_batched_tokens,
        "max_num_seqs": s.max_num_seqs if s.max_num_seqs is not None else p.max_num_seqs_default,
        "unchunked_budget_floor": p.budget_unchunked_floor,
    }


def _vllm05(p: EngineProfile, s: LaunchSettings, max_len: int | None) -> dict:
    chunked = s.chunked_prefill if s.chunked_prefill is not None else p.chunked_by_default(max_len)
    budget = s.max_num_batched_tokens
    if budget is None and chunked:
        budget = p.budget_chunked("", 0.0)
    return {
        "chunked_prefill": chunked,
        "max_num_batched_tokens": budget,
        "max_num_seqs": s.max_num_seqs if s.max_num_seqs is not None else p.max_num_seqs_default,
        "unchunked_budget_floor": p.budget_unchunked_floor,
    }


def _vllm_v1(p: EngineProfile, s: LaunchSettings, device: str, mem_gib: float) -> dict:
    budget = s.max_num_batched_tokens
    if budget is None:
        budget = p.budget_chunked(device, mem_gib)
    seqs = s.max_num_seqs
    if seqs is None:  # a step never holds more sequences than tokens
        seqs = min(p.max_num_seqs(device) or budget, budget)
    return {
        "chunked_prefill": True,
        "max_num_batched_tokens": budget,
        "max_num_seqs": seqs,
        "unchunked_budget_floor": p.budget_unchunked_floor,
    }


def _sglang(p: EngineProfile, s: LaunchSettings, device: str, mem_gib: float) -> dict:
    chunking = s.chunked_prefill if s.chunked_prefill is not None else p.chunked_prefill_default
    if chunking:
        chunk = s.max_num_batched_tokens or p.budget_chunked(device, mem_gib)
    else:
        chunk = p.budget_unchunked_floor  # max_prefill_tokens
    seqs = s.max_num_seqs if s.max_num_seqs is not None else SGLANG_MAX_RUNNING_CAP
    return {
        # prefill-only / decode-only steps: the kernel's prefill-first mode, whose budget is
        # max(chunk, longest prompt) (EngineOptions.budget with unchunked_budget_floor)
        "chunked_prefill": False,
        "engine_chunked_prefill": bool(chunking),
        "max_num_batched_tokens": None,
        "max_num_seqs": seqs,
        "unchunked_budget_floor": max(chunk, seqs),
        # the prefill-only steps hold at most `chunk` prompt tokens (kernels/token_ratio.py)
        "prefill_chunk": chunk if chunking else 0,
    }


def _trtllm(p: EngineProfile, s: LaunchSettings, device: str, mem_gib: float) -> dict:
    chunking = s.chunked_prefill if s.chunked_prefill is not None else p.chunked_prefill_default
    budget = s.max_num_batched_tokens or p.budget_chunked(device, mem_gib)
    seqs = s.max_num_seqs
    if seqs is None:  # a step never holds more sequences than tokens
        seqs = min(p.max_num_seqs(device) or budget, budget)
    return {
        # in-flight batching: context and generation share a step -> chunked-mixed mode
        "chunked_prefill": True,
        "engine_chunked_prefill": bool(chunking),
        "max_num_batched_tokens": budget,
        "max_num_seqs": seqs,
        "unchunked_budget_floor": p.budget_unchunked_floor,
    }
