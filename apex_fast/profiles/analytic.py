"""Analytic op-cost model (roofline with calibrated efficiencies). All times in seconds.

GEMM  C[m x n] = W[m x k] . X[k x n], n = tokens:
    t = max(2mkn / (peak * eta_c), bytes / (bw * eta_mem)) + t_launch
    eta_c = eta_max * s(m, sat_mn) * s(n, sat_mn) * s(k, sat_k),  s(x, c) = x / (x + c)
    (block-scaled FP8: s(n, sat_mn) becomes n f / (n + sat_mn f), f = k / (k + BLOCK_FP8_SAT_K))
Collective over a group of g GPUs moving S bytes (nccl-tests "size"):
    t = alpha + f(g) * S / busbw
    busbw = link * eff * kind_eff * g/(g + group_half) / (1 + (msg_half_bytes / S) ** msg_ramp_pow)
    (the group factor is 1 for sendrecv)
    alpha = alpha_intra + alpha_log2 * phases * log2(g)  (phases: all-reduce 2, send/recv 0, else 1;
    inter-node: alpha_inter, alpha_log2_inter and
    msg_half_bytes_inter replace the intra-node values)
The compute peak scales with clock / boost clock; memory and link bandwidths do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apex_fast.cells import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    COLLECTIVE_TITLES,
    REDUCE_SCATTER,
    SEND_RECV,
)
from apex_fast.errors import ApexError
from apex_fast.hardware.devices import DeviceSpec, get_device, peak_flops
from apex_fast.profiles.calibration import calibration_for

PROVENANCE = "analytic"
SKINNY_MAX_N = 128

COLLECTIVES = tuple(COLLECTIVE_TITLES)
# latency grows with log2(group) per phase: all-reduce = reduce-scatter + all-gather (2 phases);
# a send/recv is one message whatever the group
_LATENCY_PHASES = {
    ALL_REDUCE: 2.0,
    ALL_GATHER: 1.0,
    REDUCE_SCATTER: 1.0,
    ALL_TO_ALL: 1.0,
    SEND_RECV: 0.0,
}


@dataclass(frozen=True)
class DeviceModel:
    """Efficiency parameters of one device at one SM clock (see module docstring)."""

    device: DeviceSpec
    clock_mhz: int
    # GEMM
    eta_max: float
    sat_mn: float
    sat_k: float
    eta_mem: float
    t_launch: float
    # memory-bound elementwise kernels (norms, activations, residual adds)
    eta_elem: float
    t_launch_elem: float
    # attention: flash-attention fraction of the dense peak, launch per layer
    eta_attn: float
    t_launch_attn: float
    # collectives
    alpha_intra: float
    alpha_inter: float
    alpha_log2: float
    alpha_log2_inter: float
    busbw_eff_intra: float
    busbw_eff_inter: float
    group_half: float
    msg_half_bytes: float
    msg_half_bytes_inter: float
    msg_ramp_pow: float
    eff_all_gather: float
    eff_reduce_scatter: float
    eff_alltoall: float
    eff_sendrecv: float
    # memory efficiency of skinny GEMMs, 2 <= n < SKINNY_MAX_N tokens (0: same as eta_mem).
    # Volta's cuBLAS leaves its GEMV path for n >= 2 and streams weights at less than half the
    # bandwidth (V100 table); Ampere and Hopper show no such drop.
    eta_mem_skinny: float = 0.0
    calibration: str = ""
    provenance: str = PROVENANCE

    @property
    def clock_scale(self) -> float:
        return self.clock_mhz / self.device.boost_clock_mhz

    @property
    def mem_bw(self) -> float:
        """HBM bytes/s (datasheet; not clock dependent)."""
        return self.device.hbm_tbps * 1e12

    def peak(self, compute_dtype: str) -> float:
        """Dense peak FLOP/s at this clock (falls back to wider units, see peak_flops)."""
        return peak_flops(self.device, compute_dtype)[0] * self.clock_scale


def device_model(device: DeviceSpec | str, clock_mhz: int | None = None) -> DeviceModel:
    """The calibrated analytic model of a device, at its boost clock unless clock_mhz is given."""
    dev = get_device(device)
    clock = dev.boost_clock_mhz if clock_mhz is None else int(clock_mhz)
    if clock <= 0 or clock > dev.boost_clock_mhz:
        supported = ", ".join(str(c) for c in dev.clocks_mhz)
        raise ApexError(
            f"clock {clock_mhz} MHz is outside 1..{dev.boost_clock_mhz} for {dev.name} "
            f"(supported: {supported})"
        )
    params, note = calibration_for(dev.name)
    return DeviceModel(device=dev, clock_mhz=clock, calibration=note, **params)


def _sat(x: np.ndarray | float, c: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (x + c)


# Weight-only quantised GEMMs (int4/int8 AWQ/GPTQ/Marlin-style kernels, FP8-Marlin W8A16): the
# kernel streams the narrow weights, dequantises them in registers and multiplies in 16 bits.
# Marlin reaches near-ideal speed-ups over FP16 (close to 4x for 4-bit) up to batches of 16-32
# tokens (Frantar et al., "MARLIN: Mixed-Precision Auto-Regressive Parallel Inference on Large
# Language Models", arXiv 2408.11743), i.e. it streams weights at the FP16 GEMM's memory
# efficiency; at large batches it runs at about FP16 GEMM speed. Its tensor-core tiles are 16
# tokens wide (PTX mma.m16n8k16), so a batch of n tokens costs the compute of ceil(n/16)*16.
WEIGHT_ONLY_TILE_N = 16
# 4-bit checkpoints carry one FP16 scale per group of 128 weights (AWQ and GPTQ defaults:
# AWQ paper arXiv 2306.00978 uses g128; AutoGPTQ's default group_size 128).
INT4_GROUP_SIZE = 128


def weight_only_gemm_time(
    dm: DeviceModel,
    m: np.ndarray,
    k: np.ndarray,
    n: np.ndarray,
    weight_bytes: float,
    act_bytes: float,
) -> np.ndarray:
    """Seconds for a weight-only quantised GEMM (weights narrower than the 16-bit activations)."""
    n_pad = np.ceil(n / WEIGHT_ONLY_TILE_N) * WEIGHT_ONLY_TILE_N
    eta_c = dm.eta_max * _sat(m, dm.sat_mn) * _sat(k, dm.sat_k)
    t_compute = 2.0 * m * k * n_pad / (dm.peak("half") * eta_c)
    scales = 2.0 / INT4_GROUP_SIZE if weight_bytes < 1.0 else 0.0
    nbytes = m * k * (weight_bytes + scales) + (k * n + m * n) * act_bytes
    return np.maximum(t_compute, nbytes / (dm.mem_bw * dm.eta_mem)) + dm.t_launch


# Block-scaled FP8 GEMMs (DeepSeek-V3/R1's checkpoint format: one FP32 scale per 128x128 weight
# block and per 1x128 activation group; DeepGEMM, CUTLASS and Triton block-FP8 kernels). The
# partial sums of every 128-deep K block are promoted to FP32 and rescaled on CUDA cores, and a
# tile's prologue and epilogue are paid once per output tile, so the tensor cores idle more the
# shorter K is: the throughput falls with K where a per-tensor-scaled FP8 GEMM keeps its rate.
# Modelled as a factor f = k / (k + BLOCK_FP8_SAT_K) on the rate of the useful columns of the
# GEMM's compute time (`_n_efficiency`).
# Documented fit (bench/fit_block_fp8.py): the DeepGEMM README's table of FP8 block-scaled GEMMs
# with 4096 tokens on H800 (https://github.com/deepseek-ai/DeepGEMM, README "Performance",
# normal GEMMs M = 4096: K 512 -> 590 TFLOPS, 1536 -> 990, 2048 -> 1025, 7168 -> 1058/1304,
# 16384 -> 1358), each divided by this device model's per-tensor FP8 GEMM of the same shape on
# H100-SXM (same GH100 compute as H800); least squares in log space over the six shapes. The
# fit leaves a median error of 1.5% over those shapes (26% without the term; the script
# prints each). DeepGEMM is the
# fastest published block-FP8 kernel (its README: 1.0-1.2x faster than CUTLASS 3.6 at M = 4096),
# so for the CUTLASS and Triton kernels vLLM 0.8.4 runs this is a lower bound on the loss; their
# own rates relative to DeepGEMM: BLOCK_FP8_KERNEL_RATE below.
BLOCK_FP8_SAT_K = 750.0
BLOCK_FP8_SOURCE = (
    "fitted: DeepGEMM README block-scaled FP8 GEMMs at M = 4096 on H800 "
    "(https://github.com/deepseek-ai/DeepGEMM), bench/fit_block_fp8.py"
)


def block_fp8_k_efficiency(k: np.ndarray | float) -> np.ndarray:
    """Share of a per-tensor FP8 GEMM's compute rate a block-scaled FP8 GEMM of depth k keeps."""
    return _sat(k, BLOCK_FP8_SAT_K)


# Block-scaled FP8 kernels other than DeepGEMM: compute rate relative to DeepGEMM on the same
# shape (the model above is fitted to DeepGEMM). Documented fit (bench/fit_block_fp8_kernels.py):
# SGLang's bench_fp8_blockwise_gemm.py tables of April 2025, DeepSeek-V3 shapes at M = 4096
# tokens (compute-bound), times of vLLM's CUTLASS block-FP8 kernel (ops.cutlass_scaled_mm with
# block scales, what vLLM 0.8.4 runs for the dense linears on Hopper), SGLang's Triton block-FP8
# kernel (the same inner loop as the Triton fused-MoE kernel of vLLM 0.8.4 and SGLang 0.4.x)
# and DeepGEMM (https://github.com/sgl-project/sglang/pull/5207: N=4608 K=7168 350.2 / 466.1 /
# 270.7 us; https://github.com/sgl-project/sglang/pull/5820: N=3072 K=1536 53.0 / 68.7 / 37.6 us);
# the geometric mean of DeepGEMM time / kernel time over the shapes.
BLOCK_FP8_KERNEL_RATE = {"deepgemm": 1.0, "cutlass": 0.741, "triton": 0.564}
BLOCK_FP8_KERNEL_SOURCE = (
    "fitted: SGLang bench_fp8_blockwise_gemm tables (sgl-project/sglang PRs 5207, 5820), "
    "bench/fit_block_fp8_kernels.py"
)


def _n_efficiency(
    dm: DeviceModel,
    n: np.ndarray,
    k: np.ndarray | float,
    block_scaled: bool,
    kernel_rate: float = 1.0,
) -> np.ndarray:
    """The token-count factor of the GEMM efficiency, n / (n + sat_mn): the time of n tokens is
    that of n + sat_mn at full rate (sat_mn: the unused part of the tiles). Block-scaled FP8: the
    n useful columns run at block_fp8_k_efficiency(k) of that rate, the unused tile part as
    before, n f / (n + sat_mn f); compute-bound GEMMs lose f, memory-bound (few-token) ones keep
    their time, as the DeepGEMM README's M = 64/128 rows show (weights streamed at 65-80% of
    HBM bandwidth for every K). `kernel_rate`: the block-FP8 kernel's compute rate relative to
    DeepGEMM (BLOCK_FP8_KERNEL_RATE)."""
    if not block_scaled:
        return _sat(n, dm.sat_mn)
    f = block_fp8_k_efficiency(k) * kernel_rate
    n = np.asarray(n, dtype=np.float64)
    return n * f / (n + dm.sat_mn * f)


def grouped_gemm_time(
    dm: DeviceModel,
    m: int,
    k: int,
    n_per_group: np.ndarray,
    groups: np.ndarray,
    weight_bytes: float,
    act_bytes: float,
    compute_dtype: str,
    block_scaled: bool = False,
    tile_rows: np.ndarray | float = WEIGHT_ONLY_TILE_N,
    kernel_rate: float = 1.0,
) -> np.ndarray:
    """Seconds for one grouped (fused MoE) GEMM: `groups` experts, each C[m x n] = W[m x k].X,
    launched as one kernel (vLLM fused_moe, SGLang/TRT-LLM grouped GEMMs). Each expert's tokens
    are padded to the kernel's row tiles (`tile_rows`: 16 by default, PTX mma.m16n8k16; the
    Triton fused-MoE kernel's BLOCK_SIZE_M) and run at the dense GEMM's efficiency for that
    padded width; the kernel streams every active expert's weights once. `block_scaled`: FP8
    with 128x128 block scales (block_fp8_k_efficiency), `kernel_rate` the block-FP8 kernel's
    rate relative to DeepGEMM. Zero where no expert is active."""
    n = np.asarray(n_per_group, dtype=np.float64)
    g = np.asarray(groups, dtype=np.float64)
    tile = np.asarray(tile_rows, dtype=np.float64)
    n_pad = np.ceil(np.maximum(n, 1.0) / tile) * tile
    eta_c = dm.eta_max * _sat(float(m), dm.sat_mn) * _sat(float(k), dm.sat_k)
    eta_c = eta_c * _n_efficiency(dm, n_pad, float(k), block_scaled, kernel_rate)
    peak = dm.peak("half") if compute_dtype == "half" else dm.peak(compute_dtype)
    t_compute = g * 2.0 * m * k * n_pad / (peak * eta_c)
    nbytes = g * (m * k * weight_bytes + (k * n + m * n) * act_bytes)
    t = np.maximum(t_compute, nbytes / (dm.mem_bw * dm.eta_mem)) + dm.t_launch
    return np.where((g > 0) & (n > 0), t, 0.0)


def gemm_time(
    dm: DeviceModel,
    m: int | np.ndarray,
    k: int | np.ndarray,
    n: np.ndarray | int,
    weight_bytes: float,
    act_bytes: float,
    compute_dtype: str,
    block_scaled: bool = False,
    kernel_rate: float = 1.0,
) -> np.ndarray:
    """Seconds for C[m x n] = W[m x k] . X[k x n]; zero where the GEMM is empty.
    `block_scaled`: FP8 with 128x128 block scales (block_fp8_k_efficiency), `kernel_rate` the
    block-FP8 kernel's rate relative to DeepGEMM (BLOCK_FP8_KERNEL_RATE)."""
    m_ = np.asarray(m, dtype=np.float64)
    k_ = np.asarray(k, dtype=np.float64)
    n_ = np.asarray(n, dtype=np.float64)
    empty = (m_ <= 0) | (k_ <= 0) | (n_ <= 0)
    m_, k_, n_ = (np.maximum(a, 1.0) for a in (m_, k_, n_))
    if weight_bytes < act_bytes and compute_dtype in ("half", "float"):
        t = weight_only_gemm_time(dm, m_, k_, n_, weight_bytes, act_bytes)
        return np.where(empty, 0.0, t)
    eta_c = dm.eta_max * _sat(m_, dm.sat_mn) * _sat(k_, dm.sat_k)
    eta_c = eta_c * _n_efficiency(dm, n_, k_, block_scaled, kernel_rate)
    t_compute = 2.0 * m_ * k_ * n_ / (dm.peak(compute_dtype) * eta_c)
    nbytes = m_ * k_ * weight_bytes + (k_ * n_ + m_ * n_) * act_bytes
    t_memory = nbytes / (dm.mem_bw * dm.eta_mem)
    if dm.eta_mem_skinny > 0:
        # skinny GEMMs (2 <= n < SKINNY_MAX_N) stream weights at eta_mem_skinny; wider ones never
        # beat the widest skinny one, which keeps the time monotonic in n
        n_sk = np.minimum(n_, SKINNY_MAX_N - 1)
        b_sk = m_ * k_ * weight_bytes + (k_ * n_sk + m_ * n_sk) * act_bytes
        t_sk = b_sk / (dm.mem_bw * dm.eta_mem_skinny)
        t_memory = np.where(n_ >= 2, np.maximum(t_memory, t_sk), t_memory)
    return np.where(empty, 0.0, np.maximum(t_compute, t_memory) + dm.t_launch)


def mem_time(dm: DeviceModel, nbytes: np.ndarray | float) -> np.ndarray:
    """Seconds for a memory-bound elementwise kernel moving nbytes (read + write), incl. launch."""
    b = np.asarray(nbytes, dtype=np.float64)
    return np.where(b > 0, b / (dm.mem_bw * dm.eta_elem) + dm.t_launch_elem, 0.0)


def attention_compute_dtype(activation_dtype: str) -> str:
    """Dtype the attention kernels compute in: 16 bits whatever the weights (FP8 weights and an
    FP8 KV cache are read as FP8 but Q.K^T and P.V run in BF16/FP16: FlashAttention-2/3 and
    FlashMLA in the engine versions modelled, and the DeepSeek-V3 report, arXiv 2412.19437
    section 3.3.1, keeps attention in BF16 under FP8 training); FP32 only for FP32 models."""
    return "float" if activation_dtype == "float" else "half"


def attn_prefill_time_per_pair(
    dm: DeviceModel, heads: int, head_dim: int, compute_dtype: str
) -> float:
    """Seconds per causal (query, key) pair for `heads` query heads on one device.

    4 * heads * head_dim FLOPs per pair (QK^T and PV) at the flash-attention efficiency.
    """
    return 4.0 * heads * head_dim / (dm.peak(compute_dtype) * dm.eta_attn)


def attn_decode_time_per_token(
    dm: DeviceModel, kv_heads: int, head_dim: int, kv_bytes: float
) -> float:
    """Seconds per context token read by one decode sequence (K and V of kv_heads heads)."""
    return 2.0 * kv_heads * head_dim * kv_bytes / (dm.mem_bw * dm.eta_mem)


def attn_launch_time(dm: DeviceModel) -> float:
    """Fixed seconds per attention layer call (kernel launch and scheduling)."""
    return dm.t_launch_attn


def ring_factor(kind: str, group: int) -> float:
    """Bytes each GPU sends per byte of the collective's buffer (nccl-tests bus factor)."""
    g = float(group)
    if kind == ALL_REDUCE:
        return 2.0 * (g - 1.0) / g
    if kind in (ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL):
        return (g - 1.0) / g
    if kind == SEND_RECV:
        return 1.0
    raise ApexError(f"unknown collective {kind!r}: use one of {', '.join(COLLECTIVES)}")


def busbw(
    dm: DeviceModel, kind: str, nbytes: np.ndarray, group: int, inter_node: bool
) -> np.ndarray:
    """Achieved bus bandwidth in bytes/s (small messages and small groups reach less)."""
    s = np.asarray(nbytes, dtype=np.float64)
    if inter_node:
        link, eff = dm.device.inter_node_gbps * 1e9, dm.busbw_eff_inter
        half = dm.msg_half_bytes_inter
    else:
        # the group's own fabric: NVSwitch, bridge or PCIe beyond it, links of a mesh
        link, eff = dm.device.peer_gbps(group) * 1e9, dm.busbw_eff_intra
        half = dm.msg_half_bytes
    kind_eff = 1.0 if kind == ALL_REDUCE else getattr(dm, f"eff_{kind}")
    g = float(group)
    group_factor = 1.0 if kind == SEND_RECV else g / (g + dm.group_half)
    ramp = 1.0 + (half / s) ** dm.msg_ramp_pow
    return link * eff * kind_eff * group_factor / ramp


def collective_time(
    dm: DeviceModel, kind: str, nbytes: np.ndarray | float, group: int, inter_node: bool
) -> np.ndarray:
    """Seconds for one collective over `group` GPUs; nbytes is the nccl-tests buffer size.

    (all-gather: the gathered output; reduce-scatter: the full input; alltoall: one rank's send
    buffer; sendrecv: the message.) A group of one costs nothing.
    """
    f = ring_factor(kind, max(int(group), 2))
    s = np.asarray(nbytes, dtype=np.float64)
    if group <= 1:
        return np.zeros_like(s)
    hops = _LATENCY_PHASES[kind] * np.log2(group)
    if inter_node:
        alpha = dm.alpha_inter + dm.alpha_log2_inter * hops
    else:
        alpha = dm.alpha_intra + dm.alpha_log2 * hops
    bw = busbw(dm, kind, np.maximum(s, 1.0), group, inter_node)
    return np.where(s > 0, alpha + f * s / bw, 0.0)
