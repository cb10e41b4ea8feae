"""Names of the cells of a transformer block, of the collectives between them and of the rows of
the time breakdown: one place, used by the plans, the cost tables, the breakdown and its Source
column, and the report's plan table.

Three vocabularies:
* `CellKind`: what a cost builder computes (apex_fast/sim/costs/cells.py keys its registry by it);
* plan cells (`PLAN_ATTENTION`, `PLAN_FFN`, `PLAN_MOE`): how a plan's `CellMapping.cell` names the
  cell it maps;
* display names: the operator rows of the time breakdown ("Attention", "SwiGLU", "AllReduce", ...).
"""

from __future__ import annotations

from enum import Enum


class CellKind(str, Enum):
    """One kind of cost builder (apex_fast/sim/costs/cells.py)."""

    ATTENTION = "attention"
    MLA = "mla"  # multi-head latent attention (DeepSeek)
    FFN = "ffn"  # dense FFN (MLP or gated)
    MOE = "moe"  # routed experts (grouped GEMMs) + shared experts + router
    ELEMENTWISE = "elementwise"  # norms, rotary, activations
    EMBEDDING = "embedding"  # token embedding lookup
    COLLECTIVE = "collective"  # the collectives a plan inserts after its cells
    EMBEDDING_ALL_REDUCE = "embedding_all_reduce"  # vocabulary-parallel embedding
    PIPELINE_SEND = "pipeline_send"  # activations between pipeline stages
    LM_HEAD = "lm_head"  # LM head, logits gather and sampling


# how a plan's CellMapping.cell names its cells (apex_fast/plans/)
PLAN_ATTENTION = "attention"
PLAN_FFN = "ffn"
PLAN_MOE = "moe"

# collective kinds (nccl-tests names, the comm tables' file names) and their display titles
ALL_REDUCE = "all_reduce"
ALL_GATHER = "all_gather"
REDUCE_SCATTER = "reduce_scatter"
ALL_TO_ALL = "alltoall"
SEND_RECV = "sendrecv"
COLLECTIVE_TITLES = {
    ALL_REDUCE: "AllReduce",
    ALL_GATHER: "AllGather",
    REDUCE_SCATTER: "ReduceScatter",
    ALL_TO_ALL: "AllToAll",
    SEND_RECV: "SendRecv",
}

# rows of the time breakdown (display names)
ATTENTION = "Attention"
MOE = "MoE"
SWIGLU = "SwiGLU"
MLP = "MLP"
ELEMENTWISE = "Norms & elementwise"
LM_HEAD = "LM head & sampling"
STEP_OVERHEAD = "Engine step overhead"
SEQ_OVERHEAD = "Engine per-sequence overhead"
LAUNCH_FLOOR = "Eager-mode launch floor"
SPEC_VERIFY = "Speculative verification"
SPEC_PROPOSALS = "Speculative proposals"
IDLE = "Idle"
TOTAL = "Total"
# attention cell names in the plan table
MHA = "MHA"
MQA = "MQA"
MLA_NAME = "MLA"


def ffn_name(is_moe: bool, gated: bool) -> str:
    """Display name of a model's FFN cell."""
    if is_moe:
        return MOE
    return SWIGLU if gated else MLP


def attention_name(num_heads: int, num_kv_heads: int) -> str:
    """Display name of a (non-latent) attention cell in the plan table."""
    return MQA if num_kv_heads < num_heads else MHA
