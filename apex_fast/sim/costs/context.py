"""What every cell cost builder reads: the plan's per-device shapes, the step axes, the dtypes and
the op cost functions of the device (measured tables where they exist, analytic elsewhere)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from apex_fast.cells import ALL_REDUCE
from apex_fast.dtypes import DTYPE_BYTES, compute_dtype
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec, StepFlops
from apex_fast.plans.memory import (
    edge_weight_dtype,
    expert_weight_bytes,
    kv_heads_per_device,
    plan_mixed_precision,
    stage_layer_ranges,
)
from apex_fast.plans.plan import Plan
from apex_fast.profiles import analytic
from apex_fast.profiles.measured import CostModel, OpCost
from apex_fast.sim import engine_params as ep
from apex_fast.sim.step_time import K_FP8_ACT_QUANT, LaunchCounts

# vLLM's custom all-reduce handles messages up to 8 MiB inside an NVLink node
# (vllm/distributed/device_communicators/custom_all_reduce.py, max_size default).
CUSTOM_AR_MAX_BYTES = 8 * 1024 * 1024


def without_unquantised_act_quant(
    counts: LaunchCounts, model: ModelSpec, plan: Plan
) -> LaunchCounts:
    """Eager launches of a W8A8 plan less the FP8 input quantisation (K_FP8_ACT_QUANT launches
    per linear, sim/step_time.py) that the checkpoint's unquantised linears do not run: two
    per unquantised attention cell (QKV, output), two per unquantised FFN (gate/up, down; two
    more for MoE shared experts). Kept per layer when every layer saves the same, the rest
    taken off the launches outside the layers (only the total enters the step time)."""
    mp = plan_mixed_precision(model, plan)
    if mp is None or plan.activation_dtype != "float8":
        return counts
    ranges = stage_layer_ranges(plan)
    u_attn = plan.pp * max(mp.layers_in("attention", a, b) for a, b in ranges)
    u_ffn = plan.pp * max(mp.layers_in("ffn", a, b) for a, b in ranges)
    ffn_linears = 4 if model.is_moe and model.num_shared_experts else 2
    saved = K_FP8_ACT_QUANT * (2 * min(u_attn, counts.layers) + ffn_linears * u_ffn)
    uniform = 2 * K_FP8_ACT_QUANT if u_attn >= counts.layers else 0
    rest = saved - uniform * counts.layers
    return dataclasses.replace(
        counts, per_layer=counts.per_layer - uniform, outside=counts.outside - rest
    )


def zero_first(a: np.ndarray) -> np.ndarray:
    """The table with nothing to do at index 0 (a step without tokens or sequences)."""
    a = np.asarray(a, dtype=np.float64).copy()
    a[0] = 0.0
    return a


def custom_all_reduce_time(dm: analytic.DeviceModel, nbytes: np.ndarray, group: int) -> np.ndarray:
    """One-kernel NVLink all-reduce: a fixed latency plus the ring volume at the link rate."""
    link = dm.device.peer_gbps(group) * 1e9
    vol = 2.0 * (group - 1) / group * np.asarray(nbytes, dtype=np.float64)
    return ep.CUSTOM_AR_LATENCY_S + vol / link


@dataclass
class CellContext:
    """One plan's shapes and cost functions, as the cell builders (cells.py) read them."""

    model: ModelSpec
    cluster: Cluster
    plan: Plan
    cm: CostModel
    max_tokens: int
    max_seqs: int
    backend: str  # attention backend
    capacity_factor: float = 1.0
    cross_kv_layers: int = 0
    custom_all_reduce: bool = True
    # the engine's block-FP8 and fused-MoE kernels (engines/profile.py)
    dense_fp8_kernel: str = "deepgemm"
    moe_kernel: str = "deepgemm"
    ep_expert_map: bool = False
    n: np.ndarray = field(init=False)  # step tokens 0..max_tokens
    m: np.ndarray = field(init=False)  # sampled sequences 0..max_seqs

    def __post_init__(self) -> None:
        plan, model = self.plan, self.model
        self.dm = self.cm.dm
        self.wb = DTYPE_BYTES[plan.weight_dtype]
        self.ab = DTYPE_BYTES[plan.activation_dtype]
        self.kvb = DTYPE_BYTES[plan.kv_dtype]
        self.cdt = compute_dtype(plan.weight_dtype, plan.activation_dtype)
        self.hd = model.head_dim
        self.q_dev = model.num_heads // plan.tp
        self.kv_dev = kv_heads_per_device(model, plan.tp)
        self.gated = 2 if model.gated_ffn else 1
        # layers on the critical path: S x the largest stage
        self.lx = plan.pp * max(plan.layers_per_stage)
        self.n = np.arange(self.max_tokens + 1, dtype=np.float64)
        self.m = np.arange(self.max_seqs + 1, dtype=np.float64)
        self.n_attn = np.ceil(self.n / plan.attn_replicas)  # each attention copy: its share
        # W8A8 FP8 (vLLM --quantization fp8): every linear first quantises its input with
        # dynamic per-tensor scales (sim/step_time.py K_FP8_ACT_QUANT)
        self.w8a8 = plan.weight_dtype == "float8" and plan.activation_dtype == "float8"
        self.step_flops: StepFlops = model.step_flops(self.cross_kv_layers)
        self.cell_flops = model.flops_by_cell(self.cross_kv_layers)
        self.cell_params = model.params_by_cell()
        # linears the checkpoint keeps unquantised (models/quant.py): GEMMs in their dtype,
        # without the FP8 input quantisation
        self.mixed = plan_mixed_precision(model, plan)
        self.ub = DTYPE_BYTES[self.mixed.dtype] if self.mixed else self.wb
        self.notes: list[str] = list(self.mixed.notes) if self.mixed else []
        # embedding and LM head stay unquantised in a quantised plan (plans/memory.py)
        self.edge_dtype = edge_weight_dtype(model, plan)
        self.eb = DTYPE_BYTES[self.edge_dtype]

    # ------------------------------------------------------------------ op costs
    def gemm(self, mm: int, kk: int, nn: np.ndarray) -> OpCost:
        """C[mm x n] = W[mm x kk] . X for the step axis nn, in the plan's dtypes."""
        return self.cm.gemm(mm, kk, nn, self.wb, self.ab, self.cdt).map(zero_first)

    def gemm_in(self, dt: str, mm: int, kk: int, nn: np.ndarray) -> OpCost:
        """A GEMM with weights and inputs both in dtype `dt`, whatever the plan's dtypes."""
        b = DTYPE_BYTES[dt]
        return self.cm.gemm(mm, kk, nn, b, b, compute_dtype(dt, dt)).map(zero_first)

    def gemm_lm_head(self, mm: int, kk: int, nn: np.ndarray) -> OpCost:
        """The LM head GEMM: in the plan's dtypes, or with weights and inputs in the
        unquantised dtype when the plan quantises its linears (`edge_weight_dtype`)."""
        if self.edge_dtype == self.plan.weight_dtype:
            return self.gemm(mm, kk, nn)
        return self.gemm_in(self.edge_dtype, mm, kk, nn)

    def gemm_unquantised(self, mm: int, kk: int, nn: np.ndarray) -> OpCost:
        """A GEMM of a linear the checkpoint keeps unquantised: weights and inputs in its dtype
        (bf16 for the usual checkpoints), whatever the plan's activation dtype."""
        return self.gemm_in(self.mixed.dtype if self.mixed else self.plan.weight_dtype, mm, kk, nn)

    def unquantised_layers(self, kind: str) -> int:
        """Layers of a stream step's critical path (`lx`: S x the largest stage) whose `kind`
        cell ("attention" / "ffn") is unquantised: S x the most such cells any stage holds
        (at most its layers)."""
        if self.mixed is None:
            return 0
        most = max(self.mixed.layers_in(kind, a, b) for a, b in stage_layer_ranges(self.plan))
        return self.plan.pp * min(most, max(self.plan.layers_per_stage))

    def per_layer(self, kind: str, quantised: OpCost, unquantised: Callable[[], OpCost]) -> OpCost:
        """One layer's cost of a `kind` cell averaged over the critical path's `lx` layers: the
        quantised form in the layers the checkpoint quantised, `unquantised()` in the others."""
        u = self.unquantised_layers(kind)
        if u == 0:
            return quantised
        if u >= self.lx:
            return unquantised()
        return ((self.lx - u) / self.lx) * quantised + (u / self.lx) * unquantised()

    def unquantised_extra_weight_bytes(self, kind: str) -> float:
        """Weight bytes the unquantised cells of `kind` ("attention", "ffn") add over the
        replica, beyond the same weights in the plan's weight dtype."""
        mp, model = self.mixed, self.model
        if mp is None:
            return 0.0
        if kind == "attention":
            params = len(mp.attention_layers) * model.attn_params_per_layer()
        else:
            dense = model.num_dense_layers if model.is_moe else model.num_layers
            params = sum(
                model.dense_ffn_params() if i < dense else model.ffn_params_per_layer()
                for i in mp.ffn_layers
            )
        return params * (self.ub - self.wb)

    def all_weight_bytes(self) -> float:
        """Every weight of the replica once, in the bytes the checkpoint stores them."""
        extra = sum(self.unquantised_extra_weight_bytes(k) for k in ("attention", "ffn"))
        edges = self.model.embedding_params() + self.model.lm_head_params()
        return self.model.params_total() * self.wb + extra + edges * (self.eb - self.wb)

    def grouped_gemm(
        self,
        mm: int,
        kk: int,
        n_per_group: np.ndarray,
        groups: np.ndarray,
        unquantised: bool = False,
        block_scaled: bool = False,
        tile_rows: np.ndarray | float = analytic.WEIGHT_ONLY_TILE_N,
    ) -> np.ndarray:
        """Seconds of one fused-MoE grouped GEMM over the device's active experts (analytic);
        `unquantised`: experts the checkpoint keeps in its unquantised dtype; `block_scaled`:
        block-scaled FP8 experts (analytic.gemm_time) at the engine's fused-MoE kernel rate;
        `tile_rows`: the row tile each expert's tokens are padded to."""
        if unquantised and self.mixed is not None:
            b, dt = self.ub, self.mixed.dtype
            return analytic.grouped_gemm_time(
                self.dm, mm, kk, n_per_group, groups, b, b, compute_dtype(dt, dt),
                tile_rows=tile_rows,
            )  # fmt: skip
        ewb = expert_weight_bytes(self.model, self.plan.weight_dtype)
        rate = analytic.BLOCK_FP8_KERNEL_RATE[self.moe_kernel] if block_scaled else 1.0
        return analytic.grouped_gemm_time(
            self.dm, mm, kk, n_per_group, groups, ewb, self.ab, self.cdt,
            block_scaled=block_scaled, tile_rows=tile_rows, kernel_rate=rate,
        )  # fmt: skip

    def mem(self, nbytes: np.ndarray) -> OpCost:
        """A memory-bound elementwise kernel moving nbytes per step."""
        return self.cm.mem(nbytes).map(zero_first)

    def act_quant(self, k: float, ntok: np.ndarray) -> OpCost:
        """W8A8 FP8 input quantisation of a linear with k inputs: a max-reduction pass over the
        activations, a quantisation pass (read them, write FP8) and a one-float fill for the
        scale; nothing otherwise."""
        if not self.w8a8:
            return OpCost(np.zeros_like(ntok))
        vals = ntok * k
        ab = self.ab
        return (
            self.mem(vals * ab)
            + self.mem(vals * (ab + 1.0))
            + self.mem(np.where(ntok > 0, 4.0, 0.0))
        )

    def collective(self, kind: str, nbytes: np.ndarray, group: int, spans: bool) -> OpCost:
        """One collective over `group` devices per step; an all-reduce inside an NVLink node
        takes vLLM's custom all-reduce where it is faster (messages up to CUSTOM_AR_MAX_BYTES)."""
        t = self.cm.collective(kind, nbytes, group, spans, self.plan.activation_dtype)
        t = t.map(zero_first)
        custom = self.custom_all_reduce and not spans and self.cluster.custom_all_reduce_ok(group)
        if kind == ALL_REDUCE and custom:
            car = zero_first(custom_all_reduce_time(self.dm, nbytes, group))
            t = t.map(lambda x: np.where((nbytes <= CUSTOM_AR_MAX_BYTES) & (car < x), car, x))
        return t

    # ------------------------------------------------------------------ shapes
    def ffn_activation_bytes(self) -> np.ndarray:
        """Bytes the FFN activation kernel moves per step on one device (of the step axis n)."""
        model, plan, n = self.model, self.plan, self.n
        if model.is_moe:
            width = model.moe_intermediate_size // plan.ffn_tp
            tokens = np.ceil(n * max(model.topk, 1) * self.capacity_factor / max(plan.ep, 1))
            if self.ep_expert_map and plan.ep > 1:
                # expert parallelism through an expert map (vLLM 0.8.x): the activation
                # kernel runs over the whole [n x top-k] buffer, other ranks' rows included
                tokens = n * max(model.topk, 1)
            return (self.gated + 1) * tokens * width * self.ab
        inter = model.intermediate_size // plan.ffn_tp
        return (self.gated + 1) * np.ceil(n / plan.ffn_replicas) * inter * self.ab

    def replicated_kv_weight_bytes(self) -> float:
        """K/V projection weights held twice or more when TP exceeds the KV heads."""
        model, tp = self.model, self.plan.tp
        if model.is_mla or tp <= model.num_kv_heads:
            return 0.0
        h, hd = model.hidden_size, model.head_dim
        return model.num_layers * 2 * h * hd * (tp - model.num_kv_heads) * self.wb
