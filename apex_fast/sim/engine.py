"""Simulate one plan over a workload: memory, cost tables, one kernel run per stream."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.memo import put_bounded
from apex_fast.metrics.records import compact_stream
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.memory import MemoryReport, memory_report
from apex_fast.plans.plan import Plan
from apex_fast.sim import engine_params as ep
from apex_fast.sim.costs import CompiledCosts, compile_costs
from apex_fast.sim.prefix import (
    check_router,
    copy_tags,
    prefix_cache_blocker,
    prefix_split,
    stream_keys,
)
from apex_fast.sim.rejection import (
    beyond_copy,
    beyond_copy_reason,
    kernel_rejection_reason,
    stream_kv_capacity,
)
from apex_fast.sim.step_time import HostParams
from apex_fast.sim.stream import SchedulerConfig, StreamResult, run_stream
from apex_fast.workload import Workload, closed_loop_split

if TYPE_CHECKING:
    from apex_fast.engines.profile import EngineProfile
    from apex_fast.sim.speculative import SpeculativeConfig


@dataclass(frozen=True)
class EngineOptions:
    """Serving-engine settings (vLLM names)."""

    block_size: int = ep.DEFAULT_BLOCK_SIZE
    max_num_seqs: int = ep.DEFAULT_MAX_NUM_SEQS
    max_num_batched_tokens: int | None = None
    chunked_prefill: bool = True
    gpu_memory_utilization: float = ep.DEFAULT_GPU_MEMORY_UTILIZATION
    clock_mhz: int | None = None
    # vLLM's custom all-reduce (NVLink peer-to-peer, one kernel) replaces NCCL for small
    # messages inside a node; vLLM enables it by default.
    custom_all_reduce: bool = True
    # root of measured op tables (comp/<device>/, comm/<device>/); None = profile_data/
    profile_dir: str | None = None
    # Model vLLM's async output processing (outputs surface when the next step ends). Off: the
    # replay of the reference runs fits far worse with it (TTFT error 15% vs 7%).
    async_output: bool = False
    # MoE: the most loaded expert gets at most capacity_factor x its mean share of tokens
    capacity_factor: float = 1.0
    # encoder of an encoder-decoder model: decoder layers whose cross-attention K/V this
    # encoder computes per input token
    cross_kv_layers: int = 0
    # attention kernels: "auto" = the engine's choice for the KV dtype and GPU
    attention_backend: str = "auto"
    # CPU-side step-time parameters; None = the fitted ones (profile_data/step_time_fit.json)
    host: HostParams | None = None
    # the HTTP front end shares the engine's process and thread (vLLM
    # --disable-frontend-multiprocessing; separate process by default since vLLM 0.5.4)
    frontend_in_process: bool = False
    # --- the serving engine (apex_fast.engines); recorded here for the step-time model ---
    engine: str = "vllm-0.6"  # profile name (--engine)
    enforce_eager: bool = False  # CUDA graphs off (--enforce-eager / --disable-cuda-graph)
    num_scheduler_steps: int = 1  # vLLM multi-step scheduling (--num-scheduler-steps)
    max_model_len: int | None = None  # --max-model-len (None: the model's own)
    # automatic prefix caching (--enable-prefix-caching): simulated in the kernel from the
    # workload's prompt hashes (apex_fast.sim.prefix, docs/scheduler.md "Prefix cache")
    prefix_caching: bool = False
    # data-parallel routing of requests to replicas: "round-robin" or "prefix" (--router)
    router: str = "round-robin"
    # the engine's own chunked-prefill setting where its step formation maps onto a kernel
    # mode of another name (SGLang chunks in prefill-first mode, TensorRT-LLM mixes steps
    # without chunking); None = same as chunked_prefill
    engine_chunked_prefill: bool | None = None
    # without chunked prefill the step budget is max(this, max_model_len or the longest
    # request): 2048 for vLLM V0 (SchedulerConfig), SGLang's chunk size for its prefill-only
    # steps (apex_fast.engines.options)
    unchunked_budget_floor: int = ep.DEFAULT_UNCHUNKED_BUDGET_FLOOR
    # SGLang: prefill tokens per prefill-only step, longer prompts split over consecutive steps
    # (its chunked_prefill_size; the kernel's ADMIT_TOKEN_RATIO); 0 = prompts never split
    prefill_chunk: int = 0
    # speculative decoding (apex_fast.sim.speculative.SpeculativeConfig); None = off
    speculative: SpeculativeConfig | None = None
    # a disaggregated decode instance: requests arrive with their prompt's KV and their first
    # one-token step runs like a decode (apex_fast.disagg.pools.decode_pool_costs)
    decode_pool: bool = False

    @property
    def profile(self) -> EngineProfile:
        """The engine's profile (apex_fast/engines/), where its rules are declared."""
        from apex_fast.engines import get_engine

        return get_engine(self.engine)

    @property
    def admission_policy(self) -> int:
        """The engine's KV admission policy (kernels/params.py ADMIT_*; EngineProfile)."""
        return self.profile.admission_policy

    def memory(self, model: ModelSpec, plan: Plan, cluster: Cluster, budget: int) -> MemoryReport:
        """Memory of `plan`'s most loaded device under these settings (plans/memory.py): the
        engine's memory fraction read as its kind, `budget` tokens in the profiling step."""
        return memory_report(
            model,
            plan,
            cluster.device.hbm_gb,
            self.gpu_memory_utilization,
            budget,
            self.max_num_seqs,
            self.block_size,
            self.memory_fraction_kind,
            self.memory_peak_rule,
        )

    @property
    def memory_fraction_kind(self) -> str:
        """What `gpu_memory_utilization` means for this engine (plans.memory.kv_pool_bytes)."""
        return self.profile.memory_fraction_kind

    @property
    def memory_peak_rule(self) -> str:
        """How this engine measures its profiling peak (plans.memory.profiling_terms)."""
        return self.profile.memory_peak_rule

    def budget(self, workload: Workload) -> int:
        """Tokens per step. Default: 2048 with chunked prefill; without it vLLM uses
        max(max_model_len, 2048), and we take the longest request as max_model_len unless
        --max-model-len is given."""
        if self.max_num_batched_tokens is not None:
            b = self.max_num_batched_tokens
        elif self.chunked_prefill:
            b = ep.DEFAULT_CHUNKED_BUDGET
        else:
            longest = int(np.max(workload.prompt + workload.output))
            b = max(self.unchunked_budget_floor, self.max_model_len or longest)
        return max(b, self.max_num_seqs)

    def validate(self) -> None:
        if self.block_size < 1:
            raise ApexError(f"--block-size must be at least 1, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ApexError(f"--max-num-seqs must be at least 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None:
            if self.max_num_batched_tokens < 1:
                raise ApexError(
                    f"--max-num-batched-tokens must be at least 1, got {self.max_num_batched_tokens}"
                )
            if self.max_num_batched_tokens < self.max_num_seqs:
                raise ApexError(
                    f"--max-num-batched-tokens ({self.max_num_batched_tokens}) must be at least "
                    f"--max-num-seqs ({self.max_num_seqs}), as in vLLM"
                )
        u = self.gpu_memory_utilization
        if not (0.0 < u <= 1.0):
            raise ApexError(f"--gpu-memory-utilization must be in (0, 1], got {u}")
        if self.num_scheduler_steps < 1:
            raise ApexError(
                f"--num-scheduler-steps must be at least 1, got {self.num_scheduler_steps}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ApexError(f"--max-model-len must be at least 1, got {self.max_model_len}")
        check_router(getattr(self, "router", "round-robin"))
        cf = getattr(self, "capacity_factor", 1.0)
        if not (0.0 < cf < float("inf")):
            raise ApexError(f"--capacity-factor must be a positive number, got {cf}")
        if self.speculative is not None:
            self.speculative.validate()
            if self.num_scheduler_steps > 1:  # vLLM 0.6 arg_utils.py create_engine_config
                raise ApexError("vLLM runs no speculative decoding with --num-scheduler-steps > 1")


@dataclass
class PlanResult:
    plan: Plan
    memory: MemoryReport
    feasible: bool
    reason: str = ""
    compiled: CompiledCosts | None = None
    streams: list[StreamResult] = field(default_factory=list)
    stream_index: list[np.ndarray] = field(default_factory=list)  # request ids per stream
    rejected: np.ndarray | None = None  # ids of requests that can never be served
    budget: int = 0
    clock_factor: float = 1.0  # SM clock / boost clock
    scheduler: SchedulerConfig | None = None  # the limits each stream ran with
    # stream number (replica * pp + pipeline engine) of each entry of `streams`
    stream_numbers: list[int] = field(default_factory=list)
    # prefix caching: simulated for this run, or why not ("" = simulated or off)
    prefix_cache_on: bool = False
    prefix_cache_note: str = ""


def copies_blocker(copies: int) -> str:
    """Why prefix caching is not simulated for a plan with `copies` attention copies ("" if
    it is): each copy keeps a KV pool of its own, and the simulated prefix cache is one pool
    (docs/memory.md, "KV cache per attention copy")."""
    if copies > 1:
        return (
            f"not simulated with {copies} attention copies per stage (each copy keeps its own "
            "KV cache; the simulated prefix cache is one pool)"
        )
    return ""


def stream_split(workload: Workload, dp: int, pp: int) -> list[np.ndarray]:
    """Round-robin over DP replicas, then over the pipeline virtual engines of each replica."""
    ids = np.arange(workload.num_requests)
    return [ids[r::dp][v::pp] for r in range(dp) for v in range(pp)]


# Plans that differ only in their data-parallel degree have identical streams: they share one
# compiled set of cost tables (the largest cost of a search after the kernel itself).
_COST_CACHE: dict[tuple, CompiledCosts] = {}
_COST_CACHE_MAX = 64


def costs_for_options(
    model: ModelSpec,
    cluster: Cluster,
    plan: Plan,
    max_tokens: int,
    max_seqs: int,
    opts: EngineOptions,
    cross_kv_layers: int | None = None,
) -> CompiledCosts:
    """compile_costs with the engine settings of `opts` (the one place that maps them)."""
    return compile_costs(
        model,
        cluster,
        plan,
        max_tokens,
        max_seqs,
        clock_mhz=opts.clock_mhz,
        custom_all_reduce=opts.custom_all_reduce,
        profile_dir=opts.profile_dir,
        capacity_factor=opts.capacity_factor,
        cross_kv_layers=opts.cross_kv_layers if cross_kv_layers is None else cross_kv_layers,
        attention_backend=opts.attention_backend,
        host=opts.host,
        frontend_in_process=opts.frontend_in_process,
        engine=opts.engine,
        enforce_eager=opts.enforce_eager,
        num_scheduler_steps=max(opts.num_scheduler_steps, 1),
    )


def _compiled_costs(
    model: ModelSpec, cluster: Cluster, plan: Plan, budget: int, opts: EngineOptions
) -> CompiledCosts:
    key = (model, cluster, dataclasses.replace(plan, dp=1), budget, opts)
    hit = _COST_CACHE.get(key)
    if hit is not None:
        return hit
    compiled = costs_for_options(model, cluster, plan, budget, opts.max_num_seqs, opts)
    return put_bounded(_COST_CACHE, key, compiled, _COST_CACHE_MAX)


def scheduler_config(
    blocks: int, budget: int, opts: EngineOptions, model: ModelSpec, copies: int = 1
) -> SchedulerConfig:
    """The scheduler limits of one stream with `blocks` KV blocks split over `copies` attention
    copies (each a pool of blocks // copies with its own watermark)."""
    policy = opts.admission_policy
    per_copy = blocks // copies
    watermark = int(ep.watermark_fraction(policy) * per_copy)
    return SchedulerConfig(
        num_blocks=per_copy * copies,
        block_size=opts.block_size,
        watermark=watermark,
        max_num_seqs=opts.max_num_seqs,
        budget=budget,
        chunked=opts.chunked_prefill,
        output_lag=opts.async_output,
        window_blocks=model.kv_window_blocks(opts.block_size),
        full_kv_fraction=model.kv_full_fraction,
        admission=policy,
        copies=copies,
        prefill_chunk=opts.prefill_chunk if not opts.chunked_prefill else 0,
        num_scheduler_steps=max(opts.num_scheduler_steps, 1),
    )


def frontend_lag(opts: EngineOptions) -> float:
    """Seconds each request spends in the engine's front end before the engine loop can
    schedule it (EngineProfile.request_frontend_s). A decode pool of a disaggregated
    deployment receives its requests from the prefill pool, not from clients: none there."""
    if opts.decode_pool:
        return 0.0
    return opts.profile.request_frontend_s


def simulate_plan(
    model: ModelSpec,
    cluster: Cluster,
    plan: Plan,
    workload: Workload,
    opts: EngineOptions,
) -> PlanResult:
    budget = opts.budget(workload)
    mem = opts.memory(model, plan, cluster, budget)
    if not mem.fits:
        return PlanResult(plan, mem, False, mem.reason, budget=budget)
    blocks = mem.kv_blocks_per_replica // plan.pp
    if blocks < 1:
        return PlanResult(
            plan, mem, False, "KV cache smaller than one block per stream", budget=budget
        )
    if opts.speculative is None:
        compiled = _compiled_costs(model, cluster, plan, budget, opts)
    else:  # verification + proposals, one step per E tokens (docs/speculative.md)
        from apex_fast.sim.speculative import apply_to_plan

        compiled, blocks, workload = apply_to_plan(
            model, cluster, plan, workload, opts, mem.kv_available, mem.kv_bytes_per_token, budget
        )
        if blocks < 1:
            reason = "no room for the KV cache next to the speculative proposer"
            return PlanResult(plan, mem, False, reason, budget=budget)
    if opts.decode_pool:
        from apex_fast.disagg.pools import decode_pool_costs

        compiled = decode_pool_costs(compiled)
    copies = plan.attn_replicas  # each attention copy has a KV pool of its own
    cfg = scheduler_config(blocks, budget, opts, model, copies)
    streams: list[StreamResult] = []
    pc_note = ""
    if opts.prefix_caching:
        pc_note = prefix_cache_blocker(workload, cfg.window_blocks) or copies_blocker(copies)
    pc_on = opts.prefix_caching and not pc_note
    tags = None
    if getattr(opts, "router", "round-robin") == "prefix" and not workload.max_concurrency:
        index, tags = prefix_split(workload, plan.dp, plan.pp, opts.block_size, copies)
    else:
        index = stream_split(workload, plan.dp, plan.pp)
    slots = [0] * len(index)
    if workload.max_concurrency:  # closed loop: the clients' slots spread over the streams
        index, slots = closed_loop_split(
            workload.num_requests, plan.dp, plan.pp, workload.max_concurrency
        )
    if copies > 1 and tags is None:  # requests dealt to the copies in turn (round robin)
        tags = copy_tags(workload.num_requests, index, copies)
    rejected: list[np.ndarray] = []
    too_long = np.empty(0, np.int64)
    if plan.attn_replicas > 1:
        # each attention copy keeps the KV cache of its own sequences: a sequence whose KV
        # outgrows one copy can never be served (the kernel would reject it too; taken out
        # here to say why)
        index, too_long = beyond_copy(workload, index, mem, plan.pp, opts)
        if too_long.size:
            rejected.append(too_long)
    clock_factor = opts.clock_mhz / cluster.device.boost_clock_mhz if opts.clock_mhz else 1.0
    own_only = pc_on and not workload.has_hash_ids and opts.profile.hashless_prompts_keep_own_blocks
    lag = frontend_lag(opts)
    for ids, conc in zip(index, slots, strict=True):
        if ids.size == 0:
            continue
        run = functools.partial(
            run_stream,
            workload.arrival[ids] + lag,
            workload.prompt[ids],
            workload.output[ids],
            cfg,
            compiled.costs,
            None if workload.prefix is None else workload.prefix[ids],
            max_concurrency=conc,
            copy=None if tags is None else tags[ids],
        )
        if own_only:
            # distinct prompts (keys without workload hashes) hit only their own blocks after
            # a preemption: without one the keys change nothing, so they are built and given
            # only to a rerun
            res = run(block_keys=None)
            if res.preemptions.any():
                keys = stream_keys(workload, ids, opts.block_size, opts.engine, tags, copies)
                if keys[0].size:
                    res = run(block_keys=keys)
        else:
            keys = (
                stream_keys(workload, ids, opts.block_size, opts.engine, tags, copies)
                if pc_on
                else None
            )
            res = run(block_keys=keys)
        if lag and res.arrival is not None:
            res.arrival = res.arrival - lag  # the client's send time
        streams.append(compact_stream(res, compiled, cluster, plan, clock_factor, model))
        bad = ids[res.finish < 0]
        if bad.size:
            rejected.append(bad)
    numbers = [k for k, ids in enumerate(index) if ids.size]
    index = [ids for ids in index if ids.size]
    rej = np.sort(np.concatenate(rejected)) if rejected else np.empty(0, np.int64)
    result = PlanResult(plan, mem, True, "", compiled, streams, index, rej, budget)
    result.scheduler = cfg
    result.stream_numbers = numbers
    result.prefix_cache_on = pc_on
    result.prefix_cache_note = pc_note
    result.clock_factor = clock_factor
    if too_long.size:
        result.feasible = False
        copy_tokens = stream_kv_capacity(mem, plan.pp, opts)
        result.reason = beyond_copy_reason(workload, rej, copy_tokens)
    elif rej.size:
        result.feasible = False
        result.reason = kernel_rejection_reason(workload, rej, cfg)
    return result
