"""Execution plans: data-parallel replicas x pipeline stages x a per-cell mapping of one block."""

from __future__ import annotations

from dataclasses import dataclass, field

from apex_fast.cells import COLLECTIVE_TITLES, PLAN_ATTENTION, PLAN_FFN, PLAN_MOE


@dataclass(frozen=True)
class CellMapping:
    """How one cell of a transformer block is spread over the `devices` of a pipeline stage.

    kind: "tp" splits the cell (attention by heads, FFN by the intermediate dimension, MoE inside
    every expert), "ep" spreads whole experts, "replicated" keeps a full copy per device and splits
    the batch instead. `degree` is the number of devices one copy is split over; `replicas` the
    number of copies inside the stage (degree * replicas = devices of the stage).
    """

    cell: str
    kind: str
    degree: int
    replicas: int = 1

    def describe(self) -> str:
        if self.kind == "tp" and self.degree > 1:
            what = {
                PLAN_ATTENTION: "heads",
                PLAN_FFN: "intermediate dim",
                PLAN_MOE: "inside experts",
            }
            return f"{self.replicas} replicas, tensor parallel over {what.get(self.cell, 'tasks')} x{self.degree}"
        if self.kind == "ep":
            return f"{self.replicas} replicas, expert parallel x{self.degree}"
        if self.kind == "replicated":
            return f"{self.replicas} replicas (batch split), x1"
        return f"{self.replicas} replicas, x{self.degree}"


@dataclass(frozen=True)
class Collective:
    """A collective inserted after a cell (per block), e.g. AllReduce over the TP group."""

    kind: str  # all_reduce | all_gather | reduce_scatter | alltoall | sendrecv
    group: int
    after: str  # the cell it follows
    # message bytes (nccl-tests convention) = size_factor x step tokens x hidden x activation bytes
    size_factor: float = 1.0
    stride: int = 1  # distance between the group's members in device order (node spanning)

    @property
    def title(self) -> str:
        return COLLECTIVE_TITLES[self.kind]


@dataclass(frozen=True)
class Plan:
    """One candidate plan. Blocks repeat, so one block mapping serves every block of a stage.

    A stage has `tp * attn_replicas` devices. Attention is split by heads over `tp` devices and
    copied `attn_replicas` times (each copy serves a share of the batch). The dense FFN is split
    by its intermediate dimension over all devices of the stage; a MoE cell spreads its experts
    over `ep` devices and splits each expert over the remaining `devices_per_stage / ep`.
    """

    dp: int
    pp: int
    tp: int
    ep: int
    cells: tuple[CellMapping, ...]
    collectives: tuple[Collective, ...]
    layers_per_stage: tuple[int, ...]
    weight_dtype: str = "half"
    activation_dtype: str = "half"
    kv_dtype: str = "half"
    attn_replicas: int = 1
    ffn_replicas: int = 1  # dense FFN copies, each serving a share of the batch
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def devices_per_stage(self) -> int:
        return self.tp * self.attn_replicas

    @property
    def ffn_tp(self) -> int:
        """Devices one FFN (or one expert) is split over."""
        return self.devices_per_stage // max(self.ep, 1) // self.ffn_replicas

    @property
    def num_gpus(self) -> int:
        return self.dp * self.pp * self.devices_per_stage

    @property
    def is_moe(self) -> bool:
        return any(c.cell == PLAN_MOE for c in self.cells)

    @property
    def label(self) -> str:
        parts = [f"DP{self.dp}", f"PP{self.pp}"]
        if self.attn_replicas == 1 and self.ffn_replicas == 1:
            parts.append(f"TP{self.tp}")
        else:
            parts.append(
                f"ATTN-TP{self.tp}" + (f"x{self.attn_replicas}" if self.attn_replicas > 1 else "")
            )
        if self.ep > 1:
            parts.append(f"EP{self.ep}" + (f" ETP{self.ffn_tp}" if self.ffn_tp > 1 else ""))
        elif self.attn_replicas > 1 or self.ffn_replicas > 1:
            reps = f"x{self.ffn_replicas}" if self.ffn_replicas > 1 else ""
            parts.append(f"FFN-TP{self.ffn_tp}{reps}")
        return " ".join(parts)

    def to_json(self) -> dict:
        return {
            "dp": self.dp,
            "pp": self.pp,
            "tp": self.tp,
            "ep": self.ep,
            "attn_replicas": self.attn_replicas,
            "ffn_replicas": self.ffn_replicas,
            "ffn_tp": self.ffn_tp,
            "layers_per_stage": list(self.layers_per_stage),
            "cells": [
                {"cell": c.cell, "kind": c.kind, "degree": c.degree, "replicas": c.replicas}
                for c in self.cells
            ],
            "collectives": [
                {
                    "kind": c.kind,
                    "group": c.group,
                    "after": c.after,
                    "size_factor": c.size_factor,
                }
                for c in self.collectives
            ],
            "weight_dtype": self.weight_dtype,
            "activation_dtype": self.activation_dtype,
            "kv_dtype": self.kv_dtype,
        }
