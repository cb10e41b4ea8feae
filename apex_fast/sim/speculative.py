"""Speculative decoding as a transformation of a plan's step costs and of its requests.

Each decode step of a sequence proposes K draft tokens and verifies them, together with the
token the target would emit anyway, in one target forward pass of K + 1 tokens per sequence; it
accepts on average E = 1 + sum_i p_i tokens, where p_i is the probability that the draft token at
position i (1..K) is accepted (vLLM's "per-position acceptance rate"; with a constant per-token
acceptance rate A, p_i = A^i and E = (1 - A^(K+1)) / (1 - A)).

The batching kernel is left as it is; instead (docs/speculative.md):

- a request of O output tokens needs its first token from prefill, then S = ceil((O - 1) / E)
  decode steps: it is simulated with 1 + S output "tokens" (one per step);
- a step whose m sampling sequences speculate costs the target's tables at (K + 1) m tokens
  (GEMMs, collectives, LM head and sampling over K + 1 positions) plus the proposer's work for
  m sequences: `seq_table'[m] = seq_table[(K+1) m] + tok_table[(K+1) m] - tok_table[m] +
  draft[m]`, so a decode-only step of m sequences costs exactly
  `tok_table[(K+1) m] + seq_table[(K+1) m] + draft[m]` (in a step that also carries prefill
  chunks the extra verification tokens are priced as if the batch held only decodes);
- the verification reads each sequence's KV once (K + 1 queries of one sequence share one pass
  over its context, the decode attention stays memory-bound); the proposer reads its own
  context K times (draft model: its own KV; EAGLE / MTP: one layer of the target's shape;
  n-gram: a CPU scan of the sequence's tokens);
- a sequence's context grows by E tokens per step, not 1: each request carries
  x = (E - 1)(S - 1) / 2 extra KV tokens from admission (the kernel's `prefix`), which makes its
  total context read over its S steps exact; its KV blocks are right on average over its life
  (x too many at the start, x too few at the end);
- the draft's weights and KV share the device memory: the KV blocks shrink accordingly.

Per-token timing within a step is spread evenly: TPOT = (finish - first token) / (O - 1) is exact
in expectation, while the time-between-tokens percentiles are times between steps (a streaming
client receives the accepted tokens of a step together).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from apex_fast import cells as names
from apex_fast.dtypes import DTYPE_BYTES
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.memo import put_bounded
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.memory import (
    kv_bytes_per_token_per_device,
    weight_bytes_per_device,
)
from apex_fast.plans.plan import Plan
from apex_fast.sim.stream import StepCosts
from apex_fast.workload import Workload

METHODS = ("draft", "eagle", "ngram", "mtp")

# CPU time of vLLM's n-gram proposer per context token scanned per sequence and step, single
# thread: 70.28 ms for a batch of 512 x 129536 tokens (66.3 M tokens per step) on the leader
# thread of vLLM main (vllm-project/vllm PR #56732, "Microbenchmark" table, 4x H100 host).
NGRAM_SCAN_S_PER_TOKEN = 70.28e-3 / 66.3e6


@dataclass(frozen=True)
class SpeculativeConfig:
    """--speculative-method, --num-speculative-tokens, --acceptance-rate, --draft-model."""

    method: str
    num_tokens: int  # K, draft tokens proposed per step
    # per-position acceptance rates p_1..p_K (probability that draft token i is accepted);
    # one value A means p_i = A^i
    acceptance: tuple[float, ...]
    draft_model: str | None = None

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ApexError(
                f"--speculative-method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.num_tokens < 1:
            raise ApexError(f"--num-speculative-tokens must be at least 1, got {self.num_tokens}")
        if self.num_tokens > 16:
            raise ApexError(f"--num-speculative-tokens must be at most 16, got {self.num_tokens}")
        if len(self.acceptance) not in (1, self.num_tokens):
            raise ApexError(
                f"--acceptance-rate needs 1 or {self.num_tokens} values (one per speculative "
                f"position), got {len(self.acceptance)}"
            )
        for a in self.acceptance:
            if not (0.0 <= a <= 1.0):
                raise ApexError(f"--acceptance-rate values must be in [0, 1], got {a}")
        p = self.per_position()
        if any(b > a + 1e-12 for a, b in zip(p, p[1:], strict=False)):
            raise ApexError(
                "--acceptance-rate per position must not increase (a draft token is accepted "
                "only if every earlier one was)"
            )
        if self.method == "draft" and not self.draft_model:
            raise ApexError("--speculative-method draft needs --draft-model NAME")
        if self.method != "draft" and self.draft_model:
            raise ApexError("--draft-model is only used with --speculative-method draft")

    def per_position(self) -> tuple[float, ...]:
        if len(self.acceptance) == 1:
            a = self.acceptance[0]
            return tuple(a ** (i + 1) for i in range(self.num_tokens))
        return tuple(self.acceptance)

    @property
    def expected_tokens(self) -> float:
        """E: tokens emitted per decode step of one sequence (accepted drafts + 1)."""
        return 1.0 + sum(self.per_position())

    def describe(self) -> str:
        acc = ", ".join(f"{a:g}" for a in self.acceptance)
        what = f"draft model {self.draft_model}" if self.method == "draft" else self.method
        return f"{what}, K={self.num_tokens}, acceptance {acc}"

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "num_speculative_tokens": self.num_tokens,
            "acceptance_rate": list(self.acceptance),
            "per_position_acceptance": list(self.per_position()),
            "draft_model": self.draft_model,
            "mean_accepted_tokens_per_step": self.expected_tokens,
        }


def parse_acceptance(text: str) -> tuple[float, ...]:
    """'0.7' or '0.8,0.6,0.4' -> floats (exit-2 error on bad input)."""
    out = []
    for part in text.replace(",", " ").split():
        try:
            out.append(float(part))
        except ValueError:
            raise ApexError(f"--acceptance-rate: {part!r} is not a number") from None
    if not out:
        raise ApexError("--acceptance-rate needs at least one value")
    return tuple(out)


def decode_steps(output: np.ndarray, expected: float) -> np.ndarray:
    """Decode steps a request of `output` tokens needs: ceil((output - 1) / E)."""
    rest = np.maximum(np.asarray(output, np.int64) - 1, 0)
    # a tiny tolerance keeps E = K + 1 exact (e.g. 8 tokens at E = 4.0000000001 is 2 steps)
    return np.ceil(rest / expected - 1e-9).astype(np.int64)


def speculative_workload(workload: Workload, spec: SpeculativeConfig) -> Workload:
    """The workload the kernel simulates: one output "token" per step and the extra context."""
    e = spec.expected_tokens
    steps = decode_steps(workload.output, e)
    extra = np.floor((e - 1.0) * np.maximum(steps - 1, 0) / 2.0).astype(np.int64)
    prefix = extra if workload.prefix is None else workload.prefix + extra
    return dataclasses.replace(workload, output=1 + steps, prefix=prefix)


@dataclass(frozen=True)
class Proposer:
    """What proposing K tokens for m sequences costs, and what the proposer holds in memory."""

    step_table: np.ndarray  # s, one proposal step for m sequences (index m)
    c_ctx: float  # s per context token per proposal step
    weight_bytes: float  # per device
    kv_bytes_per_token: float  # per device


def check_draft_vocab(model: ModelSpec, draft: ModelSpec) -> bool:
    """True when the draft's vocabulary is clearly not the target's (more than 5% apart; padded
    vocabularies of one tokenizer differ by less)."""
    a, b = model.vocab_size, draft.vocab_size
    return bool(a and b and abs(a - b) > 0.05 * max(a, b))


def draft_plan(draft: ModelSpec, target_plan: Plan) -> Plan:
    """The draft runs with the target's tensor parallelism where its heads allow (vLLM's
    default), else on one device per attention group."""
    from apex_fast.plans.enumerate import attn_tp_problem, ffn_width, megatron_plan

    tp = target_plan.tp
    while tp > 1 and (attn_tp_problem(draft, tp) or ffn_width(draft) % tp):
        tp //= 2
    return megatron_plan(
        draft,
        1,
        1,
        max(tp, 1),
        target_plan.weight_dtype,
        target_plan.activation_dtype,
        target_plan.kv_dtype,
    )


def proposer(
    spec: SpeculativeConfig,
    model: ModelSpec,
    cluster: Cluster,
    plan: Plan,
    costs: StepCosts,
    max_seqs: int,
    compile_fn,
) -> Proposer:
    """Per-step proposal cost. `compile_fn(model, plan, max_tokens, max_seqs)` compiles a model's
    step costs like the target's."""
    m = np.arange(max_seqs + 1)
    if spec.method == "ngram":
        return Proposer(np.zeros(max_seqs + 1), NGRAM_SCAN_S_PER_TOKEN, 0.0, 0.0)
    if spec.method == "draft":
        from apex_fast.models import load_model

        draft = load_model(spec.draft_model or "")
        if check_draft_vocab(model, draft):
            raise ApexError(
                f"--draft-model {draft.name} has a vocabulary of {draft.vocab_size} tokens, "
                f"the target {model.name} {model.vocab_size}: they must share a tokenizer"
            )
        dplan = draft_plan(draft, plan)
        dc = compile_fn(draft, dplan, max_seqs, max_seqs)
        table = dc.costs.tok_table[m] + dc.costs.seq_table[m]
        # a draft run on fewer devices than the target occupies those devices only: its time is
        # on the critical path all the same
        return Proposer(
            table,
            dc.costs.c_ctx,
            weight_bytes_per_device(draft, dplan),
            kv_bytes_per_token_per_device(draft, dplan),
        )
    # eagle / mtp: one decoder layer of the target's shape plus the shared LM head per proposal
    lx = plan.pp * max(plan.layers_per_stage)
    layers_dev = max(plan.layers_per_stage)
    table = costs.tok_table[m] / lx + costs.seq_table[m]
    wb = DTYPE_BYTES[plan.weight_dtype]
    # one block's weights on a device plus EAGLE's fusion layer (2h -> h), split like the block
    block = weight_bytes_per_device(model, plan) / max(layers_dev, 1)
    fuse = 2 * model.hidden_size * model.hidden_size * wb / plan.devices_per_stage
    return Proposer(
        table,
        costs.c_ctx / lx,
        block + fuse,
        kv_bytes_per_token_per_device(model, plan) / max(layers_dev, 1),
    )


def speculative_costs(costs: StepCosts, prop: Proposer, k: int, max_seqs: int) -> StepCosts:
    """Step costs with verification of K + 1 tokens per sampling sequence and K proposals.
    `costs` must have tables of at least (K + 1) x max_seqs + 1 entries."""
    m = np.arange(max_seqs + 1)
    big = (k + 1) * m
    if costs.tok_table.size <= big[-1] or costs.seq_table.size <= big[-1]:
        raise ApexError("step cost tables too short for speculative verification")
    seq = costs.seq_table[big] + costs.tok_table[big] - costs.tok_table[m] + k * prop.step_table
    return dataclasses.replace(
        costs,
        seq_table=seq,
        c_ctx=costs.c_ctx + k * prop.c_ctx,
    )


def speculative_seq_ops(
    seq_ops: dict[str, np.ndarray],
    tok_table: np.ndarray,
    prop: Proposer,
    k: int,
    max_seqs: int,
) -> dict[str, np.ndarray]:
    """The per-operator split of the transformed seq_table (for the time breakdown)."""
    m = np.arange(max_seqs + 1)
    big = (k + 1) * m
    out = {name: t[big] for name, t in seq_ops.items()}
    out[names.SPEC_VERIFY] = tok_table[big] - tok_table[m]
    if np.any(prop.step_table > 0):
        out[names.SPEC_PROPOSALS] = k * prop.step_table
    return out


def kv_blocks(
    kv_available: float,
    kv_bytes_per_token: float,
    prop: Proposer,
    block_size: int,
    attn_replicas: int,
) -> int:
    """KV blocks per replica once the proposer's weights and KV share the memory."""
    room = kv_available - prop.weight_bytes
    per_tok = kv_bytes_per_token + prop.kv_bytes_per_token
    if room <= 0 or per_tok <= 0:
        return 0
    return int(room // (per_tok * block_size)) * attn_replicas


def table_sizes(spec: SpeculativeConfig, budget: int, max_seqs: int) -> int:
    """Token-table length the target must be compiled with."""
    return max(budget, (spec.num_tokens + 1) * max_seqs)


__all__ = [
    "METHODS",
    "NGRAM_SCAN_S_PER_TOKEN",
    "SpeculativeConfig",
    "decode_steps",
    "kv_blocks",
    "parse_acceptance",
    "proposer",
    "speculative_costs",
    "speculative_seq_ops",
    "speculative_workload",
]


# Compiled, transformed step costs of a plan (plans differing only in DP share them)
_CACHE: dict[tuple, tuple] = {}
_CACHE_MAX = 32


def apply_to_plan(
    model: ModelSpec,
    cluster: Cluster,
    plan: Plan,
    workload: Workload,
    opts,
    kv_available: float,
    kv_bytes_per_token: float,
    budget: int,
):
    """(compiled costs, KV blocks per replica, simulated workload) of `plan` with speculative
    decoding `opts.speculative` (an EngineOptions)."""
    from apex_fast.sim.engine import costs_for_options

    spec: SpeculativeConfig = opts.speculative
    seqs = opts.max_num_seqs
    k = spec.num_tokens
    key = (model, cluster, dataclasses.replace(plan, dp=1), budget, opts)
    hit = _CACHE.get(key)
    if hit is None:

        def compile_fn(m: ModelSpec, p: Plan, max_tokens: int, max_seqs: int):
            return costs_for_options(m, cluster, p, max_tokens, max_seqs, opts, cross_kv_layers=0)

        big = compile_fn(model, plan, table_sizes(spec, budget, seqs), (k + 1) * seqs)
        prop = proposer(spec, model, cluster, plan, big.costs, seqs, compile_fn)
        costs = speculative_costs(big.costs, prop, k, seqs)
        seq_ops = speculative_seq_ops(big.seq_ops, big.costs.tok_table, prop, k, seqs)
        compiled = dataclasses.replace(big, costs=costs, seq_ops=seq_ops)
        compiled.provenance[names.SPEC_VERIFY] = f"target tables at {k + 1} tokens per sequence"
        compiled.provenance[names.SPEC_PROPOSALS] = f"{spec.method} proposer, {k} per step"
        hit = put_bounded(_CACHE, key, (compiled, prop), _CACHE_MAX)
    compiled, prop = hit
    blocks = kv_blocks(kv_available, kv_bytes_per_token, prop, opts.block_size, plan.attn_replicas)
    return compiled, blocks // plan.pp, speculative_workload(workload, spec)
