"""Enumerate candidate plans for a model on a cluster.

Dense decoder models: data-parallel replicas x pipeline stages x Megatron tensor parallelism
(attention split by heads, FFN by the intermediate dimension, an AllReduce after each). KV heads
are replicated when there are fewer KV heads than tensor-parallel devices, so GQA models spread
their query heads evenly at any TP degree that divides the query heads.
"""

from __future__ import annotations

from dataclasses import dataclass

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.plan import CellMapping, Collective, Plan


def divisors(x: int) -> list[int]:
    return [i for i in range(1, x + 1) if x % i == 0]


def split_layers(num_layers: int, pp: int) -> tuple[int, ...]:
    """As even as possible; the first stages take the remainder (like vLLM's partition)."""
    base, rem = divmod(num_layers, pp)
    return tuple(base + (1 if i < rem else 0) for i in range(pp))


@dataclass(frozen=True)
class Pins:
    """Parts of the plan the user fixed with --dp/--pp/--tp/--ep (None = free)."""

    dp: int | None = None
    pp: int | None = None
    tp: int | None = None
    ep: int | None = None


def tp_problem(model: ModelSpec, tp: int) -> str:
    """Why `tp` cannot split this model's cells, or '' if it can."""
    if model.num_heads % tp:
        return f"{model.num_heads} attention heads do not split over TP{tp}"
    kv = model.num_kv_heads
    if kv % tp and tp % kv:
        return f"{kv} KV heads neither divide nor are divided by TP{tp}"
    inter = model.moe_intermediate_size if model.is_moe else model.intermediate_size
    if inter % tp:
        return f"FFN intermediate size {inter} does not split over TP{tp}"
    return ""


def megatron_plan(
    model: ModelSpec, dp: int, pp: int, tp: int, weight: str, act: str, kv: str
) -> Plan:
    cells = (
        CellMapping("attention", "tp", tp, 1),
        CellMapping("moe" if model.is_moe else "ffn", "tp", tp, 1),
    )
    colls = (
        Collective("all_reduce", tp, "attention"),
        Collective("all_reduce", tp, cells[1].cell),
    )
    return Plan(
        dp=dp,
        pp=pp,
        tp=tp,
        ep=1,
        cells=cells,
        collectives=colls,
        layers_per_stage=split_layers(model.num_layers, pp),
        weight_dtype=weight,
        activation_dtype=act,
        kv_dtype=kv,
    )


def check_pins(model: ModelSpec, cluster: Cluster, pins: Pins) -> None:
    g = cluster.num_gpus
    for name in ("dp", "pp", "tp", "ep"):
        v = getattr(pins, name)
        if v is None:
            continue
        if v < 1:
            raise ApexError(f"--{name} must be at least 1, got {v}")
        if g % v:
            raise ApexError(f"--{name} {v} does not divide the cluster's {g} GPUs")
    if pins.pp is not None and pins.pp > model.num_layers:
        raise ApexError(f"--pp {pins.pp} exceeds the model's {model.num_layers} layers")
    if pins.tp is not None:
        why = tp_problem(model, pins.tp)
        if why:
            raise ApexError(f"--tp {pins.tp} does not fit {model.name}: {why}")
    prod = 1
    for v in (pins.dp, pins.pp, pins.tp):
        prod *= v or 1
    if prod > g or g % prod:
        raise ApexError(f"--dp x --pp x --tp = {prod} does not divide the cluster's {g} GPUs")
    if pins.ep not in (None, 1) and not model.is_moe:
        raise ApexError(f"--ep {pins.ep} needs a mixture-of-experts model; {model.name} is dense")


def enumerate_plans(
    model: ModelSpec,
    cluster: Cluster,
    pins: Pins | None = None,
    weight: str = "half",
    act: str = "half",
    kv: str = "half",
) -> tuple[list[Plan], list[tuple[str, str]]]:
    """All structurally valid plans, and (label, reason) for the shapes skipped before memory."""
    pins = pins or Pins()
    check_pins(model, cluster, pins)
    g = cluster.num_gpus
    plans: list[Plan] = []
    skipped: list[tuple[str, str]] = []
    for dp in divisors(g):
        if pins.dp is not None and dp != pins.dp:
            continue
        for pp in divisors(g // dp):
            if pins.pp is not None and pp != pins.pp:
                continue
            tp = g // (dp * pp)
            if pins.tp is not None and tp != pins.tp:
                continue
            label = f"DP{dp} PP{pp} TP{tp}"
            if pp > model.num_layers:
                skipped.append((label, f"{pp} stages for {model.num_layers} layers"))
                continue
            why = tp_problem(model, tp)
            if why:
                skipped.append((label, why))
                continue
            plans.append(megatron_plan(model, dp, pp, tp, weight, act, kv))
    return plans, skipped
