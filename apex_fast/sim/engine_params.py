"""Serving-engine constants of the simulation (vLLM 0.6 defaults). The host-side step-time
parameters live in sim/step_time.py."""

# vLLM keeps 1% of the KV blocks free when admitting new prompts (BlockSpaceManager watermark).
WATERMARK_FRACTION = 0.01

# vLLM's default batch limits.
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_CHUNKED_BUDGET = 2048
DEFAULT_BLOCK_SIZE = 16
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# Latency of vLLM's custom all-reduce for small messages (one kernel reading peers' buffers
# over NVLink, inside a CUDA graph). Not fitted: the reference runs cannot separate it from the
# step overhead; ~6 us is the order of a one-shot NVLink all-reduce kernel.
CUSTOM_AR_LATENCY_S = 6.0e-6
