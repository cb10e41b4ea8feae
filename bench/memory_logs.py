"""Replay engines' memory-profiling log lines through the KV-cache memory model.

    .venv/bin/python bench/memory_logs.py

For every row of apex_fast/data/memory_logs.csv: the predicted and the logged KV-cache bytes
per device, the error with the constants fitted on all rows (in-sample) and with constants
fitted without the row's source (leave-one-source-out), and, for the vLLM allocated-peak rows,
the error of the free-memory-difference rule those rows were sized with before. Then the fitted
constants (plans/memory.py SAMPLER_LIVE_COPIES, NON_TORCH_GROUP_BYTES) and the mean absolute
errors per rule. docs/memory.md quotes this output.
"""

from __future__ import annotations

import dataclasses

from apex_fast.plans.memory import GIB, PEAK_ALLOCATED, PEAK_FREE_MEMORY
from apex_fast.validation.memory_logs import (
    fit_constants,
    leave_one_source_out,
    load_rows,
    replay,
)


def _mae(errs: list[float]) -> str:
    return f"{sum(abs(e) for e in errs) / len(errs):.1%}" if errs else "-"


def main() -> None:
    rows = load_rows()
    fitted = fit_constants(rows)
    loso = leave_one_source_out(rows)
    head = (
        f"{'row':38s} {'rule':24s} {'TP':>2s} {'weights':>7s} {'act':>5s} {'rt':>5s} "
        f"{'pred KV':>7s} {'log KV':>7s} {'in':>7s} {'in GiB':>7s} {'LOSO':>7s} {'LOSO GiB':>8s} "
        f"{'before':>7s}"
    )
    print("KV-cache bytes per device (GiB): predicted vs logged by the engine")
    print("-" * len(head))
    print(head)
    print("-" * len(head))
    by_rule: dict[str, tuple[list[float], list[float], list[float]]] = {}
    gib: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        x = replay(r, constants=fitted)
        lo = loso[r.row_id]
        before = ""
        errs = by_rule.setdefault(r.peak_rule, ([], [], []))
        errs[0].append(x.error)
        errs[1].append(lo.error)
        d_in = (x.predicted_kv - x.logged_kv) / GIB
        d_lo = (lo.predicted_kv - lo.logged_kv) / GIB
        gib.setdefault(r.peak_rule, ([], []))[0].append(d_in)
        gib[r.peak_rule][1].append(d_lo)
        if r.peak_rule == PEAK_ALLOCATED:
            old = replay(dataclasses.replace(r, peak_rule=PEAK_FREE_MEMORY))
            before = f"{old.error:+.1%}"
            errs[2].append(old.error)
        print(
            f"{r.row_id:38s} {r.peak_rule:24s} {r.tp:>2d} {x.weights / GIB:7.2f} "
            f"{x.activation / GIB:5.2f} {x.runtime / GIB:5.2f} {x.predicted_kv / GIB:7.2f} "
            f"{x.logged_kv / GIB:7.2f} {x.error:+7.1%} {d_in:+7.2f} {lo.error:+7.1%} {d_lo:+8.2f} "
            f"{before:>7s}"
        )
    print("-" * len(head))
    print(
        f"Fitted on all rows: SAMPLER_LIVE_COPIES = {fitted.sampler_copies:.2f} FP32 "
        f"[max_num_seqs, vocab] arrays; NON_TORCH_BASE_BYTES = {fitted.base / GIB:.2f} GiB; "
        f"NON_TORCH_GROUP_BYTES = {fitted.group_extra / GIB:.2f} GiB"
    )
    print("Mean absolute KV error per rule (in-sample | leave-one-source-out | before):")
    for rule, (ins, outs, old) in by_rule.items():
        a_in, a_lo = (sum(abs(v) for v in g) / len(g) for g in gib[rule])
        print(
            f"  {rule:24s} {len(ins):2d} rows  {_mae(ins)} | {_mae(outs)} | {_mae(old)}"
            f"   ({a_in:.2f} | {a_lo:.2f} GiB)"
        )
    print(
        "before = the same rows sized with the free-memory-difference rule "
        "(1.9 x live tensors + 1.5 GiB), which vllm-v1 used until now"
    )


if __name__ == "__main__":
    main()
