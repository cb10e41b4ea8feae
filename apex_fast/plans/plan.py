"""Execution plans: data-parallel replicas x pipeline stages x a per-cell mapping of one block."""

from __future__ import annotations

from dataclasses import dataclass, field


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
            what = {"attention": "heads", "ffn": "intermediate dim", "moe": "inside experts"}
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
    size_factor: float = 1.0  # activation bytes multiplier (e.g. top-k for AllToAll)

    @property
    def title(self) -> str:
        return {
            "all_reduce": "AllReduce",
            "all_gather": "AllGather",
            "reduce_scatter": "ReduceScatter",
            "alltoall": "AllToAll",
            "sendrecv": "SendRecv",
        }[self.kind]


@dataclass(frozen=True)
class Plan:
    """One candidate plan. Blocks repeat, so one block mapping serves every block of a stage."""

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
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def devices_per_stage(self) -> int:
        return self.tp * self.ep if self.ep > 1 and self.tp == 1 else self.tp

    @property
    def num_gpus(self) -> int:
        return self.dp * self.pp * self.devices_per_stage

    @property
    def label(self) -> str:
        s = f"DP{self.dp} PP{self.pp} TP{self.tp}"
        if self.ep > 1:
            s += f" EP{self.ep}"
        return s

    def to_json(self) -> dict:
        return {
            "dp": self.dp,
            "pp": self.pp,
            "tp": self.tp,
            "ep": self.ep,
            "layers_per_stage": list(self.layers_per_stage),
            "cells": [
                {"cell": c.cell, "kind": c.kind, "degree": c.degree, "replicas": c.replicas}
                for c in self.cells
            ],
            "collectives": [
                {"kind": c.kind, "group": c.group, "after": c.after, "size_factor": c.size_factor}
                for c in self.collectives
            ],
            "weight_dtype": self.weight_dtype,
            "activation_dtype": self.activation_dtype,
            "kv_dtype": self.kv_dtype,
        }
