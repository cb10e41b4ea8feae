"""Per-cell mappings: the collectives inserted between differently sharded cells, MoE expert
parallelism, memory per device, and the size of the plan space."""

from __future__ import annotations

import pytest

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, build_plan, enumerate_plans
from apex_fast.plans.memory import weight_bytes_per_device

H100 = get_device("H100-SXM-80GB")


def _colls(plan) -> list[tuple[str, int, str]]:
    return [(c.kind, c.group, c.after) for c in plan.collectives]


def test_megatron_dense_all_reduce_after_each_cell() -> None:
    m = load_model("llama3-70b")
    p = build_plan(m, 1, 1, 8, 1, 1, "half", "half", "half")
    assert _colls(p) == [("all_reduce", 8, "attention"), ("all_reduce", 8, "ffn")]


def test_replicated_attention_then_tp_ffn_gathers_and_scatters() -> None:
    """The seed's mixed plan: attention copies with the batch split, a TP SwiGLU between an
    AllGather and a ReduceScatter."""
    m = load_model("llama3-70b")
    p = build_plan(m, 1, 1, 1, 2, 1, "half", "half", "half")
    assert _colls(p) == [("all_gather", 2, "attention"), ("reduce_scatter", 2, "ffn")]
    assert p.label == "DP1 PP1 ATTN-TP1x2 FFN-TP2"


def test_head_parallel_attention_copies_reduce_then_gather() -> None:
    m = load_model("llama3-70b")
    p = build_plan(m, 1, 1, 2, 4, 1, "half", "half", "half")  # 4 copies of TP2 attention
    assert _colls(p) == [
        ("reduce_scatter", 2, "attention"),
        ("all_gather", 8, "attention"),
        ("reduce_scatter", 8, "ffn"),
        ("all_gather", 2, "ffn"),
    ]
    sizes = [c.size_factor for c in p.collectives]
    assert sizes == [0.25, 1.0, 1.0, 0.25]


def test_ffn_copies_behind_tp_attention() -> None:
    m = load_model("llama3-70b")
    p = build_plan(m, 1, 1, 8, 1, 1, "half", "half", "half", ffn_replicas=2)
    assert _colls(p) == [
        ("reduce_scatter", 8, "attention"),
        ("all_gather", 4, "attention"),
        ("reduce_scatter", 4, "ffn"),
        ("all_gather", 8, "ffn"),
    ]


def test_moe_expert_parallel_uses_alltoall_dispatch_and_combine() -> None:
    m = load_model("mixtral-8x7b")
    p = build_plan(m, 1, 1, 8, 1, 8, "half", "half", "half")
    kinds = [c.kind for c in p.collectives]
    assert kinds == ["reduce_scatter", "alltoall", "alltoall", "all_gather"]
    a2a = [c for c in p.collectives if c.kind == "alltoall"]
    assert all(c.group == 8 and c.size_factor == pytest.approx(2 / 8) for c in a2a)


def test_moe_tensor_parallel_experts_move_as_much_as_two_all_reduces() -> None:
    m = load_model("mixtral-8x7b")
    p = build_plan(m, 1, 1, 8, 1, 1, "half", "half", "half")
    kinds = [c.kind for c in p.collectives]
    assert kinds == ["reduce_scatter", "all_gather", "reduce_scatter", "all_gather"]
    assert all(c.group == 8 and c.size_factor == 1.0 for c in p.collectives)


def test_moe_expert_and_tensor_parallel_groups() -> None:
    m = load_model("mixtral-8x7b")
    p = build_plan(m, 1, 1, 8, 1, 2, "half", "half", "half")  # EP2 x ETP4
    assert p.ffn_tp == 4
    assert [(c.kind, c.group) for c in p.collectives] == [
        ("reduce_scatter", 8),
        ("alltoall", 2),
        ("all_gather", 4),
        ("reduce_scatter", 4),
        ("alltoall", 2),
        ("all_gather", 8),
    ]


def test_expert_parallel_memory_falls_with_ep() -> None:
    m = load_model("mixtral-8x7b")
    prev = None
    for ep in (1, 2, 4, 8):
        p = build_plan(m, 1, 1, 8, 1, ep, "half", "half", "half")
        w = weight_bytes_per_device(m, p)
        # experts are spread, not replicated: the per-device share stays ~1/8 of the model
        assert w == pytest.approx(m.params_total() * 2 / 8, rel=0.05)
        if prev is not None:
            assert w == pytest.approx(prev, rel=0.02)
        prev = w


def test_memory_per_device_falls_as_parallelism_grows() -> None:
    m = load_model("mixtral-8x7b")
    sizes = []
    for g in (1, 2, 4, 8):
        p = build_plan(m, 1, 1, g, 1, g, "half", "half", "half")
        sizes.append(weight_bytes_per_device(m, p))
    assert sizes == sorted(sizes, reverse=True)


def test_fp8_weights_halve_parameter_memory_but_the_embedding_and_lm_head() -> None:
    """FP8 halves every quantised weight; the token embedding and LM head stay in bf16."""
    m = load_model("llama3-70b")
    half = weight_bytes_per_device(m, build_plan(m, 1, 1, 2, 1, 1, "half", "half", "half"))
    fp8 = weight_bytes_per_device(m, build_plan(m, 1, 1, 2, 1, 1, "float8", "half", "float8"))
    edges = 2.0 * (m.embedding_params() + m.lm_head_params()) / 2  # bf16, split over TP2
    assert fp8 == pytest.approx((half - edges) / 2 + edges)


@pytest.mark.parametrize(
    ("model", "nodes", "gpn", "at_least"),
    [("llama3-70b", 1, 2, 3), ("llama3-70b", 1, 8, 26), ("llama3-70b", 2, 8, 50)],
)
def test_plan_space_at_least_as_rich_as_the_original(model, nodes, gpn, at_least) -> None:
    plans, _ = enumerate_plans(load_model(model), Cluster(H100, nodes, gpn))
    assert len(plans) >= at_least


def test_moe_plan_space_includes_expert_parallel_plans() -> None:
    plans, _ = enumerate_plans(load_model("mixtral-8x7b"), Cluster(H100, 1, 4))
    assert any(p.ep == 4 for p in plans)
    assert any(c.kind == "alltoall" for p in plans for c in p.collectives)


def test_ep_pin_filters() -> None:
    plans, _ = enumerate_plans(load_model("mixtral-8x7b"), Cluster(H100, 1, 8), Pins(ep=8))
    assert plans and all(p.ep == 8 for p in plans)


def test_fp8_on_a100_falls_back_and_says_so(capsys) -> None:
    from apex_fast.cli import main

    args = ["plan", "--model", "llama-7b", "--gpu", "A100-SXM-80GB", "--num-gpus", "1"]
    args += ["--weight-dtype", "float8", "--activation-dtype", "float8", "--num-requests", "4"]
    assert main([*args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Note:" in out and "FP8" in out


def test_encoder_decoder_report_has_both_sections(capsys) -> None:
    from apex_fast.cli import main

    args = ["plan", "--model", "whisper", "--num-gpus-per-node", "2", "--prompt-len", "16"]
    assert main([*args, "--output-len", "8", "--num-requests", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Optimal schedule for encoder" in out and "Optimal schedule for decoder" in out


def test_encoder_only_model_plans(capsys) -> None:
    from apex_fast.cli import main

    assert (
        main(["plan", "--model", "clip", "--num-gpus", "2", "--num-requests", "8", "--quiet"]) == 0
    )
    out = capsys.readouterr().out
    assert "Optimal schedule for encoder" in out and "decoder" not in out.split("Ranked")[1]
