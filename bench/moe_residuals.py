"""Residuals of the MoE rows of the published measurements, with the predicted time split.

For every MoE row of apex_fast/data/published_measurements.csv: measured vs predicted TTFT, TPOT
and output throughput (the replay of `python apex.py validate`), then the plan's step costs
split by cell:

* prefill: one prompt of the row's input length run in chunks of the engine's token budget
  (each chunk alone in its step), in ms per 1k prompt tokens: every token-linear row summed
  over the chunks, the attention kernels' (query, key) pairs at their per-pair cost, the host
  time and the launch floor the kernel charges such a step;
* decode: one decode-only step at the row's batch (min(prompts, max-num-seqs) sequences, each
  at the mean context input + output / 2), in ms by cell.

    .venv/bin/python bench/moe_residuals.py [--engine vllm-v1] [--split-only]

Nothing here is fitted; the rows are out-of-sample evidence (docs/validation.md).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from apex_fast import cells as names
from apex_fast.data import published_measurements
from apex_fast.engines import get_engine
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.sim.costs import CompiledCosts
from apex_fast.sim.engine import costs_for_options
from apex_fast.validation.published import _base_model_id, _workload, replay_row, row_plan


def _plan_and_costs(row: dict) -> tuple[CompiledCosts, int, int] | None:
    """The replayed plan's compiled costs, its token budget and max-num-seqs (as replay_row)."""
    model = load_model(_base_model_id(row["model_hf_id"]))
    device = get_device(row["gpu"])
    built_plan = row_plan(row, model, device)
    if isinstance(built_plan, str):
        return None
    cluster, plan, opts = built_plan
    built = _workload(row)
    if isinstance(built, str):
        return None
    budget = opts.budget(built[0])
    cc = costs_for_options(model, cluster, plan, budget, opts.max_num_seqs, opts)
    return cc, budget, opts.max_num_seqs


def _floor(cc: CompiledCosts, tokens: int, decode_only: bool, seqs: int) -> float:
    """Launch floor the kernel charges a step (kernels/batching.py: graph replay, piecewise)."""
    c = cc.costs
    if decode_only and seqs <= c.graph_max_seqs:
        return 0.0
    if c.piecewise_tokens and tokens <= c.piecewise_tokens:
        return c.piecewise_floor
    return c.eager_floor


def prefill_split(cc: CompiledCosts, prompt: int, budget: int) -> dict[str, float]:
    """ms per 1k prompt tokens by row for one prompt run alone in budget-sized chunks."""
    out: dict[str, float] = {}
    done, gpu_host = 0, {"host": 0.0, "gpu": 0.0, "floor": 0.0}
    while done < prompt:
        c = min(budget, prompt - done)
        for name, t in cc.tok_ops.items():
            out[name] = out.get(name, 0.0) + float(t[c])
        pairs = c * (done + (c + 1) / 2.0)
        out[names.ATTENTION] = out.get(names.ATTENTION, 0.0) + cc.costs.c_attn * pairs
        last = done + c >= prompt
        samp = float(cc.seq_ops[names.LM_HEAD][1]) if last else 0.0
        out[names.LM_HEAD] = out.get(names.LM_HEAD, 0.0) + samp
        gpu = sum(float(t[c]) for t in cc.tok_ops.values()) + cc.costs.c_attn * pairs + samp
        host = cc.costs.overhead + cc.costs.host_seq
        floor = _floor(cc, c, False, 1)
        gpu_host["host"] += host
        gpu_host["floor"] += max(floor - gpu, 0.0)
        done += c
    out["host (exposed)"] = gpu_host["host"]
    out["launch floor above GPU"] = gpu_host["floor"]
    return {k: 1e6 * v / prompt for k, v in out.items()}  # s per prompt -> ms per 1k tokens


def decode_split(cc: CompiledCosts, batch: int, ctx: float) -> dict[str, float]:
    """ms by row of one decode-only step of `batch` sequences at context `ctx` each."""
    b = min(batch, len(cc.costs.tok_table) - 1)
    out = {name: 1e3 * float(t[b]) for name, t in cc.tok_ops.items()}
    out[names.ATTENTION] += 1e3 * cc.costs.c_ctx * batch * ctx
    for name, t in cc.seq_ops.items():
        out[name] = out.get(name, 0.0) + 1e3 * float(t[min(batch, len(t) - 1)])
    gpu = sum(out.values()) / 1e3
    out["host (exposed)"] = 1e3 * (cc.costs.overhead + cc.costs.host_seq * batch)
    out["launch floor above GPU"] = 1e3 * max(_floor(cc, b, True, batch) - gpu, 0.0)
    return out


def _fmt(d: dict[str, float]) -> str:
    total = sum(d.values())
    parts = [f"{k} {v:.1f}" for k, v in d.items() if v >= 0.05]
    return f"total {total:.1f} = " + ", ".join(parts)


def _label(row: dict) -> str:
    ep = f" EP{int(row['ep'])}" if row["ep"] else ""
    shape = (
        f"{int(row['input_len'])}/{int(row['output_len'])}"
        if row["input_len"] is not None
        else row["dataset"].split()[0]
    )
    host = "nebius" if "nebius" in row["source_url"] else "dgx"
    return f"{row['engine_profile']} TP{int(row['tp'])}{ep} {shape} @{row['request_rate']} ({host})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default=None, help="only this engine profile (e.g. vllm-v1)")
    ap.add_argument("--split-only", action="store_true", help="skip the replays (fast)")
    args = ap.parse_args()
    rows = [r for r in published_measurements(args.engine)]
    cols = (("ttft_mean_ms", "TTFT ms"), ("tpot_mean_ms", "TPOT ms"), ("output_tok_s", "out tok/s"))
    errs: dict[str, list[float]] = {c: [] for c, _ in cols}
    seen_splits: set[tuple] = set()
    for row in rows:
        model = load_model(_base_model_id(row["model_hf_id"]))
        if not model.is_moe:
            continue
        print(_label(row))
        prof = get_engine(row["engine_profile"])
        ep_map = ", EP by expert map" if prof.moe_ep_expert_map and row["ep"] else ""
        print(
            f"  kernels: block-FP8 dense {prof.block_fp8_dense_kernel}, "
            f"fused MoE {prof.fused_moe_kernel}{ep_map}"
        )
        if not args.split_only:
            res = replay_row(row)
            if "skipped" in res:
                print(f"  skipped: {res['skipped']}")
                continue
            line = []
            for c, title in cols:
                if f"{c}_meas" in res:
                    meas, pred = res[f"{c}_meas"], res[f"{c}_pred"]
                    errs[c].append(abs(pred / meas - 1.0))
                    line.append(f"{title} meas {meas:.1f} pred {pred:.1f} ({meas / pred:.2f}x)")
            print("  " + "; ".join(line) + "   (x = measured / predicted)")
        built = _plan_and_costs(row)
        if built is None:
            continue
        cc, budget, max_seqs = built
        wl = _workload(row)[0]  # type: ignore[index]
        prompt, output = int(wl.prompt.mean()), int(wl.output.mean())
        key = (row["engine_profile"], row["ep"], prompt, output, wl.num_requests)
        if key in seen_splits:
            print("  (split as above)")
            continue
        seen_splits.add(key)
        print(
            f"  prefill ms/1k tok (chunks of {budget}): {_fmt(prefill_split(cc, prompt, budget))}"
        )
        batch = min(wl.num_requests, max_seqs)
        ctx = prompt + output / 2.0
        print(
            f"  decode step ms (batch {batch}, ctx {ctx:.0f}): {_fmt(decode_split(cc, batch, ctx))}"
        )
    if not args.split_only:
        summary = ", ".join(
            f"{title} {100 * float(np.mean(errs[c])):.1f}%"
            for c, title in cols
            if errs[c] and not math.isnan(float(np.mean(errs[c])))
        )
        print(f"MAE over the MoE rows: {summary}")


if __name__ == "__main__":
    main()
