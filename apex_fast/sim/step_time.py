"""Host side of an engine step: what the CPU does around the GPU work, and how the two compose.

A step of the serving engine (vLLM 0.6 V0, single-step scheduling) is

    duration = host_step + host_seq * n_scheduled + max(gpu, launch)

- `gpu`: the device time of the step's kernels (`sim/costs/`, from the device model).
- `host_step`: CPU time per step that does not overlap the GPU: scheduling, input preparation,
  the eagerly launched sampler, the GPU->CPU sync of the sampled tokens and output processing.
- `host_seq`: CPU time per scheduled sequence in the engine process (block tables, input lists,
  sampling metadata, detokenisation and the output objects of that sequence), plus, when the
  HTTP front end runs in the engine's process (vLLM `--disable-frontend-multiprocessing`; the
  default before 0.5.4), its per-token streaming work (`host_frontend_seq`), which then holds the
  same Python thread as the engine.
- `launch`: the CPU time to launch the forward pass's kernels. A decode-only batch that fits a
  captured CUDA graph replays it (one launch, counted in host_step: launch = 0); a step with
  prefill tokens, or a batch larger than the largest captured graph, runs eagerly, and the GPU
  can never finish before the CPU has launched every kernel:
      launch = host_op * (layers * kernels_per_layer + kernels_outside)
  where the kernel count follows the plan's actual cells and dtypes (`launch_counts`) and
  host_op is the CPU time per launched kernel including the Python module code around it (a
  separate per-layer Python cost was tried: it is not identifiable from one model family, and
  per-family fits without it agree on host_op within 3%, see docs/validation.md).

`host_seq` is not fitted: the measured runs hold at most ~14 concurrent sequences and cannot
pin down a cost that a 256-sequence batch multiplies, so it comes from a published
high-concurrency profile (ENGINE_SEQ_CPU_S below). The other three host parameters are fitted
once, jointly, on the measured runs of two model families and
dtypes (`bench/fit_step_time.py`, result in `profile_data/step_time_fit.json`, method and tables in
`docs/validation.md`). Nothing here depends on the run, the model or the dtype except through the
kernel counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from apex_fast.engines import get_engine
from apex_fast.engines.vllm_06 import V0_EAGER_KERNELS
from apex_fast.errors import ApexError
from apex_fast.hardware.devices import PROFILE_DATA_DIR
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.plan import Plan

FIT_FILE = PROFILE_DATA_DIR / "step_time_fit.json"

# Engine-process CPU time per scheduled sequence per step in vLLM V0: a user profile of vLLM
# (Aug 2024) measured ~20 ms of CPU time between GPU steps at a batch of ~200 sequences
# (sampling, input preparation, output processing, scheduling; comment of 2024-08-08 in
# https://github.com/vllm-project/vllm/issues/6801): (20 ms - ~3 ms per step) / 200 = 85 us.
ENGINE_SEQ_CPU_S = 85e-6

# Plausible ranges of the fitted parameters (the fit is bounded to them; docs/validation.md).
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "host_step_s": (0.5e-3, 8e-3),
    "host_frontend_seq_s": (0.0, 500e-6),
    "host_op_s": (2e-6, 40e-6),
}


@dataclass(frozen=True)
class HostParams:
    """CPU-side constants of one engine (seconds). See the module docstring."""

    host_step_s: float
    host_frontend_seq_s: float
    host_op_s: float
    host_engine_seq_s: float = ENGINE_SEQ_CPU_S
    source: str = ""

    @classmethod
    def from_params(cls, params: dict, source: str = "") -> HostParams:
        """From a fit file's `params` object (the fitted parameters by name)."""
        return cls(**{k: float(params[k]) for k in PARAM_RANGES}, source=source)

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PARAM_RANGES}

    def seq_s(self, frontend_in_process: bool) -> float:
        """CPU seconds per scheduled sequence per step on the engine's critical path."""
        return self.host_engine_seq_s + (self.host_frontend_seq_s if frontend_in_process else 0.0)


@lru_cache(maxsize=4)
def fit_data() -> dict:
    """The contents of profile_data/step_time_fit.json (cached)."""
    try:
        return json.loads(FIT_FILE.read_text())
    except (OSError, ValueError) as e:  # pragma: no cover - shipped with the package
        raise ApexError(f"cannot read the step-time fit {FIT_FILE}: {e}") from None


# Exposed host time per iteration of an engine whose scheduler overlaps the GPU (the next step is
# scheduled while the current one runs): TensorRT-LLM's PyTorch executor leaves ~580 us of GPU
# idle per iteration (Llama-3.1-8B FP8, B200, concurrency 64;
# https://github.com/NVIDIA/TensorRT-LLM/issues/13957). Used for TensorRT-LLM and, as the only
# published figure for an overlapping Python engine loop, for SGLang and vLLM V1 (derived).
OVERLAP_EXPOSED_STEP_S = 580e-6
# vLLM V1 per-sequence engine-core CPU time: update_from_output takes 0.142 ms at 128 sequences
# (https://github.com/vllm-project/vllm/pull/46112); scheduling the same sequences is taken as
# equal, so ~2.2 us per sequence (derived).
V1_ENGINE_SEQ_S = 2 * 0.142e-3 / 128

# How each engine's host parameters are obtained from the fitted vLLM 0.6 ones (documented in
# docs/engines.md): "fit" = fitted on measured runs; the others are derived.
_DERIVED = {
    # same V0 engine loop and Python model code as 0.6 (0.5 lacks async output processing,
    # whose overlap the 0.6 fit includes: 0.5 is likely a little slower than predicted)
    "vllm-0.5": "vLLM 0.6 fit (same V0 engine loop)",
    "vllm-v1": "derived: overlapped-engine exposed step time, V1 per-sequence cost, eager launch "
    "cost of the vLLM 0.6 fit",
    "sglang": "derived: overlap scheduler (exposed step time only), eager launch cost of the "
    "vLLM 0.6 fit",
    "trtllm": "derived: overlap scheduler, ~580 us idle per iteration, eager launch cost of "
    "the vLLM 0.6 fit",
}


def host_params(engine: str = "vllm-0.6") -> HostParams:
    """Host parameters of `engine`: fitted (profile_data/step_time_fit.json) or derived."""
    data = fit_data()
    entry = data.get("engines", {}).get(engine)
    if entry is not None:
        return HostParams.from_params(entry["params"], entry["fit"])
    if engine not in _DERIVED:
        raise ApexError(f"no host parameters for engine {engine!r}")
    base = host_params("vllm-0.6")
    why = _DERIVED[engine]
    if engine == "vllm-0.5":
        return HostParams(base.host_step_s, base.host_frontend_seq_s, base.host_op_s, source=why)
    # these engines keep the HTTP front end and detokeniser in other processes
    seq = V1_ENGINE_SEQ_S if engine == "vllm-v1" else 0.0
    return HostParams(OVERLAP_EXPOSED_STEP_S, 0.0, base.host_op_s, seq, source=why)


# --- kernel counts -------------------------------------------------------------------------------
# What an eager forward launches per decoder layer. The kernels every profiled engine launches
# alike are counted here (read in vllm 0.6.0: model_executor/models/llama.py
# LlamaDecoderLayer.forward, layers/layernorm.py (fused add+RMSNorm), layers/activation.py
# SiluAndMul, layers/fused_moe/fused_moe.py); those where engines differ (rotary embedding, KV
# write, FP8 activation quantisation, custom all-reduce) come from the engine profile
# (EngineProfile.eager_kernels, apex_fast/engines/).
K_NORM = 1  # fused residual-add + RMSNorm (one custom op)
K_LINEAR = 1  # cuBLAS / CUTLASS GEMM
# vLLM 0.6's W8A8 FP8 activation quantisation launches per linear (dynamic scales: torch.zeros
# for the scale, segmented_max_reduction, scaled_fp8_quant_kernel; engines/vllm_06.py)
K_FP8_ACT_QUANT = V0_EAGER_KERNELS.fp8_quant_per_linear
# attention: a mixed step runs the prefill kernel and the decode kernel. TensorRT-LLM's attention
# op (trtllm) runs QKV preprocessing (RoPE + KV write), context FMHA and XQA generation from one
# Python call; it is charged as two launches, its preprocessing replacing the separate rotary and
# KV-write launches (EagerKernels rotary = kv_write = 0).
K_ATTN = {"flash-attn": 2, "xformers": 3, "flashinfer": 2, "trtllm": 2}
K_ACT = 1  # SiluAndMul / GELU
# vLLM V1's attention op writes the KV cache (reshape_and_cache_flash) before attending; under
# piecewise graphs both are launched eagerly
K_KV_WRITE_PIECEWISE = 1
K_ALLREDUCE_NCCL = 1  # an NCCL all-reduce is one call
# fused MoE (vllm 0.6.0 layers/fused_moe/fused_moe.py): router GEMM, topk-softmax,
# moe_align_block_size (+ its buffers), two grouped GEMMs, activation, reduction over top-k
K_MOE = 8
# outside the layers, inside the forward: embedding (vocabulary-parallel: mask, lookup, fill,
# all-reduce) and the final norm
K_OUTSIDE = 5


@dataclass(frozen=True)
class LaunchCounts:
    """Kernels launched by one eager forward pass of one pipeline stage."""

    per_layer: int
    outside: int
    layers: int

    @property
    def total(self) -> int:
        return self.layers * self.per_layer + self.outside


def launch_counts(
    model: ModelSpec,
    plan: Plan,
    attention_backend: str,
    custom_all_reduce: bool,
    engine: str = "vllm-0.6",
) -> LaunchCounts:
    """Kernel launches of one eager step of `plan` under `engine`, counted from its cells and
    dtypes."""
    ek = get_engine(engine).eager_kernels
    w8a8 = plan.weight_dtype == "float8" and plan.activation_dtype == "float8"
    quant = ek.fp8_quant_per_linear if w8a8 else 0
    lin = K_LINEAR + quant
    ar = ek.custom_all_reduce if custom_all_reduce else K_ALLREDUCE_NCCL
    n_ar = sum(1 for c in plan.collectives if c.group > 1)
    attn = K_ATTN.get(attention_backend, 2)
    per_layer = 2 * K_NORM + ek.rotary + ek.kv_write + attn
    # QKV and output projections; linears whose input arrives in FP8 quantise nothing
    per_layer += 2 * lin - (min(ek.fp8_prequantised_linears, 2) * quant)
    if model.arch == "encoder-decoder":
        per_layer += 2 * lin + attn + K_NORM  # cross-attention
    if model.is_moe:
        per_layer += K_MOE + 2 * quant
        if model.num_shared_experts:
            per_layer += 2 * lin + K_ACT
    else:
        per_layer += 2 * lin + K_ACT  # gate+up (or up) and down projections
    per_layer += n_ar * ar
    return LaunchCounts(
        per_layer=per_layer,
        outside=K_OUTSIDE,
        layers=plan.pp * max(plan.layers_per_stage),  # a stream's step passes every stage
    )


@dataclass(frozen=True)
class StepHost:
    """How the host side enters one plan's step costs: its launch counts and the engine's graph
    and scheduling settings. `fields(host)` gives the host-dependent StepCosts fields, so a
    refit (validation.replay) recomputes exactly what compile_costs set."""

    launch: LaunchCounts
    backend: str  # attention backend (its launches stay eager under piecewise graphs)
    frontend_in_process: bool
    num_scheduler_steps: int
    graph_max_seqs: int  # decode batches up to this size replay a whole CUDA graph
    piecewise: bool  # steps up to piecewise_tokens replay piecewise graphs (vLLM V1)
    piecewise_tokens: int

    def fields(self, host: HostParams) -> dict:
        n = self.num_scheduler_steps
        return {
            # multi-step scheduling (vLLM --num-scheduler-steps N): the scheduler and input
            # preparation run once per N decode steps (an approximation that also amortises
            # them over prefill steps, which run single-step)
            "overhead": host.host_step_s / n,
            # a step that does not replay a whole graph cannot end before the CPU has launched
            # every kernel
            "eager_floor": launch_time(self.launch, host),
            # per-sequence work stays per token: vLLM 0.6's MultiStepOutputProcessor
            # (_process_seq_outputs) appends, detokenises and stop-checks every token of the
            # window (docs/engines.md "Multi-step scheduling in vLLM V0")
            "host_seq": host.seq_s(self.frontend_in_process),
            "graph_max_seqs": self.graph_max_seqs,
            "piecewise_tokens": self.piecewise_tokens if self.piecewise else 0,
            "piecewise_floor": (
                piecewise_launch_time(self.launch, host, self.backend) if self.piecewise else 0.0
            ),
        }


def piecewise_launch_time(counts: LaunchCounts, params: HostParams, backend: str) -> float:
    """CPU seconds of a step replaying piecewise CUDA graphs: only attention (and its KV write)
    is launched per layer from Python (vLLM V1, torch.compile split at attention)."""
    return params.host_op_s * counts.layers * (K_ATTN.get(backend, 2) + K_KV_WRITE_PIECEWISE)


def launch_time(counts: LaunchCounts, params: HostParams) -> float:
    """CPU seconds to launch one eager forward pass (the floor of an eager step)."""
    return params.host_op_s * counts.total
