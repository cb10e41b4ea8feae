"""Replay engines' memory-profiling log lines through the KV-cache memory model.

    .venv/bin/python bench/memory_logs.py

For every row of apex_fast/data/memory_logs.csv: the predicted and the logged KV-cache bytes
per device, the error with the constants fitted on all rows (in-sample) and with constants
fitted without the row's source (leave-one-source-out), and, for the vLLM rows, the error of the
legacy rule (1.9 x live tensors + 1.5 GiB) that sized the free-memory-difference rows until the
profiling step was modelled tensor by tensor. Then the fitted constants (plans/memory.py
SAMPLER_LIVE_COPIES, NON_TORCH_*_BYTES, RESERVED_PER_ALLOCATED), the mean absolute errors per
rule, and the named tensors of each vLLM row's largest phase. docs/memory.md quotes this
output.
"""

from __future__ import annotations

from apex_fast.models import load_model
from apex_fast.plans.memory import (
    GIB,
    PEAK_ALLOCATED,
    PEAK_FREE_MEMORY,
    RUNTIME_RESERVE_BYTES,
    kv_pool_bytes,
    legacy_activation_bytes,
    phase_bytes,
    profile_step_tensors,
)
from apex_fast.validation.memory_logs import (
    OUTSIDE_MODEL,
    Replay,
    fit_constants,
    leave_one_source_out,
    load_rows,
    replay,
    row_plan,
)


def legacy_error(x: Replay) -> float:
    """Relative KV error of the row under the legacy rule (1.9 x live tensors + 1.5 GiB)."""
    r = x.row
    model = load_model(r.model)
    plan = row_plan(model, r)
    budget, seqs = r.max_num_batched_tokens or 0, r.max_num_seqs or 0
    act = legacy_activation_bytes(model, plan, budget, seqs)
    kv = kv_pool_bytes(
        x.capacity,
        x.weights,
        act,
        r.memory_fraction,
        "gpu_memory_utilization",
        RUNTIME_RESERVE_BYTES,
    )
    return (kv - x.logged_kv) / x.logged_kv


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
        gib.setdefault(r.peak_rule, ([], []))
        d_in = (x.predicted_kv - x.logged_kv) / GIB
        d_lo = (lo.predicted_kv - lo.logged_kv) / GIB
        if r.row_id not in OUTSIDE_MODEL:
            errs[0].append(x.error)
            errs[1].append(lo.error)
            gib[r.peak_rule][0].append(d_in)
            gib[r.peak_rule][1].append(d_lo)
        if r.peak_rule in (PEAK_ALLOCATED, PEAK_FREE_MEMORY):
            old = legacy_error(x)
            before = f"{old:+.1%}"
            if r.row_id not in OUTSIDE_MODEL:
                errs[2].append(old)
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
        f"NON_TORCH_GROUP_BYTES = {fitted.group_extra / GIB:.2f} GiB; "
        f"RESERVED_PER_ALLOCATED = {fitted.reserved_ratio:.2f}"
    )
    print(
        "Mean absolute KV error per rule (in-sample | leave-one-source-out | legacy), "
        f"rows outside the model left out ({', '.join(sorted(OUTSIDE_MODEL))}):"
    )
    for rule, (ins, outs, old) in by_rule.items():
        a_in, a_lo = (sum(abs(v) for v in g) / len(g) for g in gib[rule])
        print(
            f"  {rule:24s} {len(ins):2d} rows  {_mae(ins)} | {_mae(outs)} | {_mae(old)}"
            f"   ({a_in:.2f} | {a_lo:.2f} GiB)"
        )
    every = [v for ins, _, _ in by_rule.values() for v in ins]
    every_lo = [v for _, outs, _ in by_rule.values() for v in outs]
    print(f"  {'all rules':24s} {len(every):2d} rows  {_mae(every)} | {_mae(every_lo)}")
    print(
        "legacy = the same rows sized with 1.9 x live tensors + 1.5 GiB, the rule of the "
        "free-memory-difference rows until now"
    )
    print()
    print("Largest phase of each vLLM row's profiling step (allocated bytes per device, GiB):")
    for r in rows:
        if r.peak_rule not in (PEAK_ALLOCATED, PEAK_FREE_MEMORY):
            continue
        model = load_model(r.model)
        plan = row_plan(model, r)
        phases = profile_step_tensors(
            model, plan, r.max_num_batched_tokens or 0, r.max_num_seqs or 0, fitted.sampler_copies
        )
        sizes = phase_bytes(phases)
        top = max(sizes, key=sizes.get)
        terms = ", ".join(f"{t.name} {t.bytes / GIB:.2f}" for t in phases[top])
        print(f"  {r.row_id:38s} {top:13s} {sizes[top] / GIB:6.2f}: {terms}")


if __name__ == "__main__":
    main()
