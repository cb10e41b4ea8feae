"""Enumerate candidate plans for a model on a cluster.

Dense decoder models: data-parallel replicas x pipeline stages x Megatron tensor parallelism
(attention split by heads, FFN by the intermediate dimension, an AllReduce after each). KV heads
are replicated when there are fewer KV heads than tensor-parallel devices, so GQA models spread
their query heads evenly at any TP degree that divides the query heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from apex_fast import cells as K
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


def attn_tp_problem(model: ModelSpec, tp: int) -> str:
    """Why attention cannot be split over `tp` devices by heads, or ''."""
    if model.num_heads % tp:
        return f"{model.num_heads} attention heads do not split over TP{tp}"
    kv = model.num_kv_heads
    if not model.is_mla and kv % tp and tp % kv:
        return f"{kv} KV heads neither divide nor are divided by TP{tp}"
    return ""


def ffn_width(model: ModelSpec) -> int:
    return model.moe_intermediate_size if model.is_moe else model.intermediate_size


def tp_problem(model: ModelSpec, tp: int) -> str:
    """Why Megatron TP over `tp` devices cannot split this model's cells, or ''."""
    why = attn_tp_problem(model, tp)
    if why:
        return why
    if ffn_width(model) % tp:
        return f"FFN intermediate size {ffn_width(model)} does not split over TP{tp}"
    return ""


def build_plan(
    model: ModelSpec,
    dp: int,
    pp: int,
    tp: int,
    attn_replicas: int,
    ep: int,
    weight: str,
    act: str,
    kv: str,
    capacity_factor: float = 1.0,
    ffn_replicas: int = 1,
) -> Plan:
    """A plan and the collectives that reshape activations between its cells (per block).

    Attention (split over `tp`, `attn_replicas` copies) outputs partial sums of its share of the
    batch. A dense FFN split over all D = tp x attn_replicas devices needs every token on every
    device; a MoE cell takes tokens sharded over the D devices, dispatches them to the experts
    (AllToAll over `ep`), gathers them inside an expert's tensor-parallel group, and sends the
    results back.
    """
    d = tp * attn_replicas
    r = attn_replicas
    colls: list[Collective] = []
    if model.is_moe:
        etp = d // ep
        k = max(model.topk, 1) * capacity_factor
        ffn_cell = CellMapping(K.PLAN_MOE, "ep" if ep > 1 else "tp", ep if ep > 1 else d, 1)
        # attention -> MoE: reduce the head-parallel partial sums, leaving n/D tokens per device
        if tp > 1:
            colls.append(Collective(K.REDUCE_SCATTER, tp, K.PLAN_ATTENTION, 1.0 / r))
        if ep > 1:
            colls.append(Collective(K.ALL_TO_ALL, ep, K.PLAN_MOE, k / d, stride=etp))
        if etp > 1:
            sf = k / ep if ep > 1 else 1.0
            colls.append(Collective(K.ALL_GATHER, etp, K.PLAN_MOE, sf))
            colls.append(Collective(K.REDUCE_SCATTER, etp, K.PLAN_MOE, sf))
        if ep > 1:
            colls.append(Collective(K.ALL_TO_ALL, ep, K.PLAN_MOE, k / d, stride=etp))
        # MoE -> attention: every head-parallel device needs its replica's tokens
        if tp > 1:
            colls.append(Collective(K.ALL_GATHER, tp, K.PLAN_MOE, 1.0 / r))
    else:
        rf = ffn_replicas
        tf = d // rf
        ffn_cell = CellMapping(K.PLAN_FFN, "tp" if tf > 1 or rf == 1 else "replicated", tf, rf)
        if r == 1 and rf == 1:  # Megatron: partial sums over all devices, reduced in place
            colls.append(Collective(K.ALL_REDUCE, d, K.PLAN_ATTENTION))
            colls.append(Collective(K.ALL_REDUCE, d, K.PLAN_FFN))
        else:
            # reduce and shard the attention output, then gather each FFN copy's tokens; and
            # the mirror image after the FFN
            if tp > 1:
                colls.append(Collective(K.REDUCE_SCATTER, tp, K.PLAN_ATTENTION, 1.0 / r))
            if tf > 1:
                colls.append(Collective(K.ALL_GATHER, tf, K.PLAN_ATTENTION, 1.0 / rf))
            if tf > 1:
                colls.append(Collective(K.REDUCE_SCATTER, tf, K.PLAN_FFN, 1.0 / rf))
            if tp > 1:
                colls.append(Collective(K.ALL_GATHER, tp, K.PLAN_FFN, 1.0 / r))
    attn_cell = CellMapping(K.PLAN_ATTENTION, "tp" if tp > 1 else "replicated", tp, r)
    if tp == 1 and r == 1:
        attn_cell = CellMapping(K.PLAN_ATTENTION, "tp", 1, 1)
    return Plan(
        dp=dp,
        pp=pp,
        tp=tp,
        ep=ep,
        cells=(attn_cell, ffn_cell),
        collectives=tuple(colls),
        layers_per_stage=split_layers(model.num_layers, pp),
        weight_dtype=weight,
        activation_dtype=act,
        kv_dtype=kv,
        attn_replicas=r,
        ffn_replicas=1 if model.is_moe else ffn_replicas,
    )


def megatron_plan(
    model: ModelSpec, dp: int, pp: int, tp: int, weight: str, act: str, kv: str
) -> Plan:
    return build_plan(model, dp, pp, tp, 1, 1, weight, act, kv)


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
    capacity_factor: float = 1.0,
) -> tuple[list[Plan], list[tuple[str, str]]]:
    """All structurally valid plans, and (label, reason) for the shapes skipped before memory.

    For each data-parallel degree and pipeline depth, the D devices of a stage are shared by
    attention (heads split over `tp`, D/tp copies serving shares of the batch) and the FFN
    (split over all D; for MoE, experts spread over `ep` and split over D/ep).
    """
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
            d = g // (dp * pp)
            if pp > model.num_layers:
                skipped.append((f"DP{dp} PP{pp}", f"{pp} stages for {model.num_layers} layers"))
                continue
            for tp in sorted(divisors(d), reverse=True):
                if pins.tp is not None and tp != pins.tp:
                    continue
                label = f"DP{dp} PP{pp} TP{tp}" + (f"x{d // tp}" if tp < d else "")
                why = attn_tp_problem(model, tp)
                if why:
                    skipped.append((label, why))
                    continue
                if model.is_moe:
                    shapes = [(e, 1) for e in divisors(d) if model.num_experts % e == 0]
                else:
                    # FFN copies; gcd 1 with the attention copies, else it is model-level DP
                    shapes = [(1, rf) for rf in divisors(d) if math.gcd(rf, d // tp) == 1]
                for ep, rf in shapes:
                    if pins.ep is not None and ep != pins.ep:
                        continue
                    width = ffn_width(model)
                    split = d // ep // rf
                    if width % split:
                        skipped.append(
                            (f"{label} EP{ep}", f"FFN width {width} does not split over {split}")
                        )
                        continue
                    plans.append(
                        build_plan(
                            model, dp, pp, tp, d // tp, ep, weight, act, kv, capacity_factor, rf
                        )
                    )
    return plans, skipped
