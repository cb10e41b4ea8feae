"""Serving-engine constants of the simulation (vLLM 0.6 defaults and fitted overheads)."""

# Fixed CPU-side cost of one engine step: scheduling, input preparation, sampler bookkeeping and
# detokenisation in vLLM 0.6 with CUDA graphs. Initial estimate (the vLLM 0.6 Llama-70B runs on
# 8x H100 in ../shared/reference show decode steps a few ms longer than their weight-streaming
# time); calibrated in docs/validation.md once the replay exists.
ENGINE_STEP_OVERHEAD_S = 3.0e-3

# vLLM keeps 1% of the KV blocks free when admitting new prompts (BlockSpaceManager watermark).
WATERMARK_FRACTION = 0.01

# vLLM's default batch limits.
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_CHUNKED_BUDGET = 2048
DEFAULT_BLOCK_SIZE = 16
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# Latency of vLLM's custom all-reduce for small messages (one kernel reading peers' buffers
# over NVLink, inside a CUDA graph). Initial estimate; fitted in docs/validation.md.
CUSTOM_AR_LATENCY_S = 6.0e-6
