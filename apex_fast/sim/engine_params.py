"""Serving-engine constants of the simulation (vLLM 0.6 defaults). The host-side step-time
parameters live in sim/step_time.py."""

from apex_fast.engines import DEFAULT_ENGINE, get_engine
from apex_fast.kernels.params import ADMIT_WHOLE_PROMPT

# vLLM keeps 1% of the KV blocks free when admitting new prompts (BlockSpaceManager watermark).
WATERMARK_FRACTION = 0.01


def watermark_fraction(admission: int) -> float:
    """Share of a KV pool an admission rule keeps free when it admits a prompt: vLLM V0's 1%
    watermark for whole-prompt admission; vLLM V1's allocate_slots (0.8.4 .. 0.11.0) and
    TensorRT-LLM's GuaranteedNoEvictScheduler compare with the free blocks alone (0)."""
    return WATERMARK_FRACTION if admission == ADMIT_WHOLE_PROMPT else 0.0


# The default engine's own limits, read from its profile (apex_fast/engines/vllm_06.py, where
# each value cites vLLM 0.6.0's source): the defaults of EngineOptions.
_DEFAULT = get_engine(DEFAULT_ENGINE)
DEFAULT_MAX_NUM_SEQS: int = _DEFAULT.max_num_seqs_default  # type: ignore[assignment]
DEFAULT_BLOCK_SIZE = _DEFAULT.block_size_default
DEFAULT_GPU_MEMORY_UTILIZATION = _DEFAULT.memory_fraction(1)
DEFAULT_UNCHUNKED_BUDGET_FLOOR = _DEFAULT.budget_unchunked_floor  # max(this, max_model_len)
# This tool's calibrated token budget with chunked prefill for the default engine (vLLM 0.6.0
# itself uses 512 when chunking; the profile's kernel_mode_note says so).
DEFAULT_CHUNKED_BUDGET = 2048

# Latency of vLLM's custom all-reduce for small messages (one kernel reading peers' buffers
# over NVLink, inside a CUDA graph). Not fitted: the reference runs cannot separate it from the
# step overhead; ~6 us is the order of a one-shot NVLink all-reduce kernel.
CUSTOM_AR_LATENCY_S = 6.0e-6
