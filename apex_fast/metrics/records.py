"""Sums over the step records of a simulated plan (busy time, per-operator time, FLOPs, bytes,
energy), computed over bounded chunks of records so huge traces never hold per-record arrays
for the whole plan.

A record is `count` consecutive steps of the same shape (kernels/batching.py). Every metric that
depends on records is a sum over records, so the records can be reduced chunk by chunk and the
partial sums added. When all records of a plan fit in one chunk (RECORD_CHUNK), the sums are
taken over the concatenation of all streams exactly as before, so small and medium runs give
bit-identical figures; above it, the partial sums of chunks are added in stream order, which can
change the last digit of a sum (rounding), nothing else.

A stream with more than COMPACT_RECORDS (2^18) records is reduced to its sums as soon as it has been
simulated (`compact_stream`), and its record arrays are dropped: the 10-million-request run
(bench/bigtrace.py) then never holds more than one stream's records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from apex_fast.dtypes import compute_dtype
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import peak_flops
from apex_fast.metrics.energy import step_power_w
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.memory import moe_step_weight_bytes
from apex_fast.plans.plan import Plan
from apex_fast.sim import records as rec
from apex_fast.sim.costs import CompiledCosts
from apex_fast.sim.stream import StreamResult

RECORD_CHUNK = 1 << 20  # records reduced at once (about 100 MB of temporaries)
COMPACT_RECORDS = 1 << 18  # a stream with more records keeps only their sums
_COLUMNS = {
    "cnt": "rec_count",
    "d0": "rec_d0",
    "dd": "rec_dd",
    "pf": "rec_pf_tok",
    "dec": "rec_dec",
    "samp": "rec_samp",
    "ctx0": "rec_ctx0",
    "work": "rec_work",
    "nsched": "rec_sched",
    "blocks": "rec_blocks",
}


@dataclass(frozen=True)
class SumInputs:
    """What the sums read besides the records: the plan's compiled step costs, its cluster, the
    plan, the clock factor (fraction of the boost clock, for power) and the model (None: the
    weights are read whole every step, as for a dense model)."""

    cc: CompiledCosts
    cluster: Cluster
    plan: Plan
    clock_factor: float
    model: ModelSpec | None = None


def record_sums(r: dict[str, np.ndarray], at: SumInputs) -> dict[str, float]:
    """Sums over one chunk of records (columns as in _COLUMNS; run arithmetic in
    apex_fast/sim/records.py). Keys: `records`, `dur` (busy seconds of a stream), `cnt`
    (steps), `blocks_peak` (most KV blocks in use at once), `cnt_ntok`, `cnt_nsched`,
    `cnt_work`, `ctx`, `stretch`, `flops`,
    `bytes`, `gpu_busy`, `energy` (J) and `tok:NAME` / `seq:NAME` per operator."""
    cc, plan, model = at.cc, at.plan, at.model
    costs = cc.costs
    dev = at.cluster.device
    cnt = r["cnt"].astype(np.float64)
    dur = rec.run_duration(cnt, r["d0"], r["dd"])  # seconds per record
    ntok = r["pf"] + r["dec"]  # tokens per step
    ctx_total = rec.run_ctx(cnt, r["ctx0"], r["dec"])
    out: dict[str, float] = {
        "records": float(cnt.size),
        "dur": float(dur.sum()),
        "cnt": float(cnt.sum()),
        "blocks_peak": float(r["blocks"].max()) if r["blocks"].size else 0.0,
    }
    for name, table in cc.tok_ops.items():
        out["tok:" + name] = float(np.sum(cnt * table[ntok]))
    for name, table in cc.seq_ops.items():
        out["seq:" + name] = float(np.sum(cnt * table[r["samp"]]))
    out["cnt_work"] = float(np.sum(cnt * r["work"]))
    out["ctx"] = float(ctx_total.sum())
    out["cnt_nsched"] = float(np.sum(cnt * r["nsched"]))
    out["cnt_ntok"] = float(np.sum(rec.run_tokens(cnt, r["pf"], r["dec"])))
    # launch-floor time: what the steps lasted beyond their host and GPU time (a step lasts
    # host + max(gpu, floor), sim/stream.StepCosts), read off the records rather than
    # re-deriving the kernel's graph rules; clipped at 0 per record against rounding
    host = cnt * (costs.overhead + costs.host_seq * r["nsched"])
    gpu = (
        cnt * (costs.tok_table[ntok] + costs.seq_table[r["samp"]] + costs.c_attn * r["work"])
        + costs.c_ctx * ctx_total
    )
    out["stretch"] = float(np.sum(np.maximum(dur - host - gpu, 0.0)))
    flops = cc.flops.of_steps(cnt, ntok, r["samp"], r["work"], ctx_total)
    # weights read per step: a MoE step reads only the experts its tokens are routed to
    w_step = (
        moe_step_weight_bytes(model, plan, cc.bytes_per_step, ntok)
        if model is not None and model.is_moe
        else cc.bytes_per_step
    )
    nbytes = w_step * cnt + cc.bytes_per_token * ntok * cnt + cc.bytes_per_ctx * ctx_total
    peak, _ = peak_flops(dev, compute_dtype(plan.weight_dtype, plan.activation_dtype))
    bw = dev.hbm_tbps * 1e12
    gpu_busy = cc.gpus_per_stream * dur
    with np.errstate(divide="ignore", invalid="ignore"):
        u_c = np.where(gpu_busy > 0, flops / (peak * gpu_busy), 0.0)
        u_m = np.where(gpu_busy > 0, nbytes / (bw * gpu_busy), 0.0)
    power = step_power_w(dev, u_c, at.clock_factor, u_m)
    out["flops"] = float(flops.sum())
    out["bytes"] = float(nbytes.sum())
    out["gpu_busy"] = float(gpu_busy.sum())
    out["energy"] = float(np.sum(power * gpu_busy))
    return out


def add_sums(parts: Iterable[dict[str, float]]) -> dict[str, float]:
    """Key-wise sum, in order (the first part's keys first); `blocks_peak` (KV blocks in use at
    the busiest step of any stream) takes the largest."""
    total: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            if k not in total:
                total[k] = v
            elif k == "blocks_peak":
                total[k] = max(total[k], v)
            else:
                total[k] = total[k] + v
    return total


def _chunks(streams: list[StreamResult]) -> Iterable[dict[str, np.ndarray]]:
    for s in streams:
        n = s.rec_count.size
        for a in range(0, n, RECORD_CHUNK):
            yield {k: getattr(s, attr)[a : a + RECORD_CHUNK] for k, attr in _COLUMNS.items()}


def stream_sums(s: StreamResult, at: SumInputs) -> dict[str, float]:
    """Sums over one stream's records (its stored sums once it has been compacted)."""
    if s.rec_sums is not None:
        return s.rec_sums
    return add_sums(record_sums(r, at) for r in _chunks([s]))


def plan_sums(streams: list[StreamResult], at: SumInputs) -> dict[str, float]:
    """Sums over the records of every stream of a plan."""
    total = sum(s.rec_count.size for s in streams)
    if total <= RECORD_CHUNK and all(s.rec_sums is None for s in streams):
        # one chunk: the concatenated records, as the metrics have always been computed
        r = {k: np.concatenate([getattr(s, attr) for s in streams]) for k, attr in _COLUMNS.items()}
        return record_sums(r, at)
    return add_sums(stream_sums(s, at) for s in streams)


def compact_stream(
    s: StreamResult,
    cc: CompiledCosts,
    cluster: Cluster,
    plan: Plan,
    clock_factor: float,
    model: ModelSpec | None = None,
) -> StreamResult:
    """Past COMPACT_RECORDS records: keep the stream's record sums, drop its record arrays."""
    if s.rec_sums is not None or s.rec_count.size <= COMPACT_RECORDS:
        return s
    s.rec_sums = stream_sums(s, SumInputs(cc, cluster, plan, clock_factor, model))
    s.rec_steps = int(s.rec_count.sum())
    for attr in (*_COLUMNS.values(), "rec_start"):
        a = getattr(s, attr)
        setattr(s, attr, a[:0].copy())
    return s
