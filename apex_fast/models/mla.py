"""Multi-head latent attention (DeepSeek-V2/V3 MLA) costs, modelled layer by layer.

Shapes per layer (DeepSeek-V2 paper, arXiv 2405.04434, section 2.1; DeepSeek-V3 config:
q_lora_rank 1536, kv_lora_rank 512, qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128)
and how vLLM shards them over `tp` devices (vllm/model_executor/models/deepseek_v2.py:
q_a_proj and kv_a_proj_with_mqa replicated, q_b_proj / kv_b_proj column-parallel over heads,
o_proj row-parallel):

* per token, every device: q down-projection h -> q_lora_rank and the joint KV down-projection
  h -> kv_lora_rank + qk_rope_head_dim (replicated); per device for its heads: q up-projection
  q_lora_rank -> heads x (nope + rope), the latent up-projection kv_lora_rank -> heads x
  (nope + v) and the output projection heads x v -> h.
  The latent up-projection costs the same FLOPs and weight bytes whether it expands the new
  tokens' latent into keys and values (prefill) or is absorbed into the query and the output
  (decode: W_UK into q_nope, W_UV after the attention), so one GEMM of that shape models both.
* prefill attention, per (query, key) pair: scores over nope + rope and values over v,
  2 x heads x (nope + rope + v) FLOPs (keys and values expanded per head).
* decode attention, per context token of a sequence (weight-absorbed form, what FlashMLA and
  vLLM's MLA backends run): read the cached latent once for all heads,
  (kv_lora_rank + qk_rope_head_dim) values, and compute 2 x heads x (2 x kv_lora_rank +
  qk_rope_head_dim) FLOPs (scores against latent + rope key, values from the latent); the
  slower of the two bounds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from apex_fast.models.spec import ModelSpec
from apex_fast.profiles.analytic import DeviceModel

GemmFn = Callable[[int, int, np.ndarray], np.ndarray]


def mla_projection_time(gemm: GemmFn, model: ModelSpec, tp: int, n: np.ndarray) -> np.ndarray:
    """Seconds of one layer's MLA projections for n tokens on one device; `gemm(m, k, n)` is the
    plan's GEMM cost (weights m x k)."""
    h, heads = model.hidden_size, model.num_heads // tp
    lat, rope = model.kv_lora_rank, model.qk_rope_head_dim
    nope = model.head_dim - rope
    v = model.value_head_dim
    if model.q_lora_rank:
        q = gemm(model.q_lora_rank, h, n) + gemm(heads * model.head_dim, model.q_lora_rank, n)
    else:
        q = gemm(heads * model.head_dim, h, n)
    kv_down = gemm(lat + rope, h, n)
    kv_up = gemm(heads * (nope + v), lat, n)
    return q + kv_down + kv_up + gemm(h, heads * v, n)


def mla_prefill_time_per_pair(dm: DeviceModel, model: ModelSpec, heads: int, cdt: str) -> float:
    """Seconds per causal (query, key) pair for `heads` heads of one device (keys and values
    expanded per head: qk head dim nope + rope, value head dim v)."""
    flops = 2.0 * heads * (model.head_dim + model.value_head_dim)
    return flops / (dm.peak(cdt) * dm.eta_attn)


def mla_decode_flops_per_token(model: ModelSpec, heads: int) -> float:
    """Absorbed-form decode FLOPs per context token for `heads` heads."""
    return 2.0 * heads * (2 * model.kv_lora_rank + model.qk_rope_head_dim)


def mla_decode_time_per_token(
    dm: DeviceModel, model: ModelSpec, heads: int, kv_bytes: float, cdt: str
) -> float:
    """Seconds per context token of one decoding sequence: the latent read (shared by all heads)
    or the absorbed-form FLOPs of `heads` heads, whichever takes longer."""
    read = (model.kv_lora_rank + model.qk_rope_head_dim) * kv_bytes / (dm.mem_bw * dm.eta_mem)
    compute = mla_decode_flops_per_token(model, heads) / (dm.peak(cdt) * dm.eta_attn)
    return max(read, compute)


def mla_weights_per_device(model: ModelSpec, tp: int) -> float:
    """MLA parameters on one device of a `tp`-way head split: the down-projections and their
    norms are replicated, the per-head up- and output projections split."""
    h, nh = model.hidden_size, model.num_heads
    lat, rope = model.kv_lora_rank, model.qk_rope_head_dim
    replicated = h * (lat + rope) + lat  # joint KV down-projection + latent norm
    split = (
        lat * nh * (model.head_dim - rope + model.value_head_dim) + nh * model.value_head_dim * h
    )
    if model.q_lora_rank:
        replicated += h * model.q_lora_rank + model.q_lora_rank
        split += model.q_lora_rank * nh * model.head_dim
    else:
        split += h * nh * model.head_dim
    return replicated + split / tp
