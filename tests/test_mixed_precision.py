"""Checkpoints that keep some linears unquantised (models/quant.py): the quantization_config
lists, weight bytes per device, cost rows, launches, MBU bytes and the report's dtype line."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from apex_fast import cells as names
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model, spec_from_config
from apex_fast.models.quant import weight_dtype_label
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.memory import unquantised_extra_bytes, weight_bytes_per_device
from apex_fast.sim.costs import compile_costs
from apex_fast.sim.step_time import K_FP8_ACT_QUANT

H100 = "H100-SXM-80GB"
FFN = names.ffn_name(False, True)

# Llama-3.1-405B (meta-llama config.json): the numbers the closed forms below count with
H, HEADS, KV, HD, INTER, VOCAB, LAYERS = 16384, 128, 8, 128, 53248, 128256, 126


def _plan(model, tp: int, pp: int = 1, weight: str = "float8", act: str = "float8"):
    cl = Cluster(get_device(H100), 1, tp * pp)
    plans, _ = enumerate_plans(
        model, cl, Pins(dp=1, pp=pp, tp=tp), weight=weight, act=act, kv="half"
    )
    plan = next(p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1)
    return cl, plan


def _tiny(quant: dict | None, layers: int = 4, **extra) -> dict:
    cfg = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "num_hidden_layers": layers,
        "vocab_size": 1000,
        "torch_dtype": "bfloat16",
        **extra,
    }
    if quant is not None:
        cfg["quantization_config"] = quant
    return cfg


# ---------------------------------------------------------------------- the bundled checkpoint
def test_405b_fp8_checkpoint_resolves_and_reads_its_module_list() -> None:
    for hf_id in ("meta-llama/Llama-3.1-405B-FP8", "meta-llama/Llama-3.1-405B-Instruct-FP8"):
        m = load_model(hf_id)
        assert m.name == "llama3.1-405b-fp8"
    mp = m.mixed_precision
    assert m.native_weight_dtype == "float8"
    assert mp is not None and mp.method == "fbgemm_fp8"
    assert (mp.weight_dtype, mp.dtype) == ("float8", "half")
    assert mp.attention_layers == tuple(range(LAYERS))
    assert mp.ffn_layers == (0, LAYERS - 1)
    assert mp.lm_head and mp.notes == ()
    # same architecture as the bf16 model
    assert m.params_total() == load_model("llama3.1-405b").params_total()


def test_405b_fp8_weight_bytes_closed_form_tp8() -> None:
    """Parameters counted per module kind by hand: 1 byte for FP8 linears and (as for every
    FP8 plan) norms, 2 bytes for the bf16 attention, layers 0/125 MLP, and the embedding and LM
    head (never quantised by the engines)."""
    m = load_model("llama3.1-405b-fp8")
    _, plan = _plan(m, tp=8)
    attn = 2 * H * HEADS * HD + 2 * H * KV * HD  # q, o + k, v (no biases)
    mlp = 3 * H * INTER  # gate, up, down
    head = emb = VOCAB * H
    norms = 2 * H  # two RMSNorms per layer, on every device
    fp8 = LAYERS * norms + H / 8 + (LAYERS - 2) * mlp / 8
    bf16 = LAYERS * attn / 8 + 2 * mlp / 8 + head / 8 + emb / 8
    expected = 1.0 * fp8 + 2.0 * bf16
    assert weight_bytes_per_device(m, plan) == pytest.approx(expected, rel=1e-12)
    # ~60.9 GB, where the FP8 plan of the bf16 model (all linears FP8) takes ~51 GB
    base = load_model("llama3.1-405b")
    _, bplan = _plan(base, tp=8)
    extra = weight_bytes_per_device(m, plan) - weight_bytes_per_device(base, bplan)
    assert extra == pytest.approx((LAYERS * attn + 2 * mlp) / 8, rel=1e-12)
    assert 60e9 < weight_bytes_per_device(m, plan) < 61e9


def test_unquantised_modules_apply_only_to_the_checkpoint_format() -> None:
    m = load_model("llama3.1-405b-fp8")
    base = load_model("llama3.1-405b")
    for w, a in (("half", "half"), ("int4", "half")):
        _, plan = _plan(m, tp=8, weight=w, act=a)
        _, bplan = _plan(base, tp=8, weight=w, act=a)
        assert weight_bytes_per_device(m, plan) == weight_bytes_per_device(base, bplan)
        assert weight_dtype_label(m.mixed_precision, w, m.num_layers) == w


def test_pipeline_stages_take_the_most_loaded_stage() -> None:
    """4 layers over 2 stages: stage 0 holds layer 0 (attention and MLP unquantised), stage 1
    the LM head; the extra bytes are the larger of the two."""
    cfg = _tiny(
        {"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["model.layers.0", "lm_head"]}
    )
    m = spec_from_config(cfg, "tiny")
    _, plan = _plan(m, tp=1, pp=2)
    assert plan.layers_per_stage == (2, 2)
    h, q, kv, hd, inter = 256, 4, 2, 64, 512
    stage0 = 2 * h * q * hd + 2 * h * kv * hd + 3 * h * inter
    stage1 = 1000 * h
    assert unquantised_extra_bytes(m, plan) == pytest.approx(1.0 * max(stage0, stage1))


# ---------------------------------------------------------------------- cost tables
def _costs(model, weight: str = "float8", act: str = "float8"):
    cl, plan = _plan(model, tp=8, weight=weight, act=act)
    return compile_costs(model, cl, plan, 512, 64)


def test_cost_tables_differ_only_in_the_unquantised_cells() -> None:
    mixed, fp8 = _costs(load_model("llama3.1-405b-fp8")), _costs(load_model("llama3.1-405b"))
    half = _costs(load_model("llama3.1-405b"), "half", "half")
    assert mixed.tok_ops.keys() == fp8.tok_ops.keys()
    for op in mixed.tok_ops:
        if op not in (names.ATTENTION, FFN):
            np.testing.assert_array_equal(mixed.tok_ops[op], fp8.tok_ops[op], err_msg=op)
    # every layer's attention projections are bf16 GEMMs without FP8 input quantisation: the
    # row of a bf16 plan
    np.testing.assert_allclose(mixed.tok_ops[names.ATTENTION], half.tok_ops[names.ATTENTION])
    assert not np.allclose(mixed.tok_ops[names.ATTENTION], fp8.tok_ops[names.ATTENTION])
    # 2 of the 126 MLPs in bf16
    blend = (124 * fp8.tok_ops[FFN] + 2 * half.tok_ops[FFN]) / 126
    np.testing.assert_allclose(mixed.tok_ops[FFN], blend, rtol=1e-12)
    np.testing.assert_allclose(mixed.seq_ops[names.LM_HEAD], half.seq_ops[names.LM_HEAD])
    # the attention kernels themselves do not change
    assert (mixed.costs.c_attn, mixed.costs.c_ctx) == (fp8.costs.c_attn, fp8.costs.c_ctx)


def test_lm_head_only_checkpoint_is_the_plain_fp8_plan() -> None:
    """A checkpoint that leaves only its LM head unquantised costs what any FP8 plan costs: the
    engines never quantise the LM head, listed or not."""
    quant = {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"weights": {"type": "float", "num_bits": 8}}},
        "ignore": ["lm_head"],
    }
    cfg = _tiny(quant)
    mixed = spec_from_config(cfg, "ct")
    plain = spec_from_config(_tiny(None), "plain")
    a, b = _costs_tp1(mixed), _costs_tp1(plain)
    for op in a.tok_ops:
        np.testing.assert_array_equal(a.tok_ops[op], b.tok_ops[op], err_msg=op)
    np.testing.assert_array_equal(a.seq_ops[names.LM_HEAD], b.seq_ops[names.LM_HEAD])
    assert a.bytes_per_step == b.bytes_per_step


def test_quantised_plans_keep_the_lm_head_and_embedding_in_bf16() -> None:
    """An FP8 plan's LM head row is the bf16 plan's (a bf16 GEMM), its FFN rows are not; the
    weight bytes of a step count the embedding and LM head at 2 bytes (tiny model: vocabulary
    1000, hidden 256, untied)."""
    model = spec_from_config(_tiny(None), "plain")
    cl, p8 = _plan(model, tp=1)
    _, p16 = _plan(model, tp=1, weight="half", act="half")
    c8, c16 = compile_costs(model, cl, p8, 64, 8), compile_costs(model, cl, p16, 64, 8)
    np.testing.assert_array_equal(c8.seq_ops[names.LM_HEAD], c16.seq_ops[names.LM_HEAD])
    assert not np.array_equal(c8.tok_ops["SwiGLU"], c16.tok_ops["SwiGLU"])
    edges = model.embedding_params() + model.lm_head_params()
    assert edges == 2 * 1000 * 256
    assert c16.bytes_per_step - c8.bytes_per_step == pytest.approx(
        (model.params_total() - edges) * 1.0
    )


def _costs_tp1(model):
    cl, plan = _plan(model, tp=1)
    return compile_costs(model, cl, plan, 64, 8)


def test_launches_and_mbu_bytes_of_the_unquantised_linears() -> None:
    mixed, fp8 = _costs(load_model("llama3.1-405b-fp8")), _costs(load_model("llama3.1-405b"))
    saved = fp8.step_host.launch.total - mixed.step_host.launch.total
    # 2 attention linears in every layer, 2 MLP linears in layers 0 and 125
    assert saved == K_FP8_ACT_QUANT * (2 * LAYERS + 2 * 2)
    attn = 2 * H * HEADS * HD + 2 * H * KV * HD
    extra = LAYERS * attn + 2 * 3 * H * INTER  # LM head: bf16 in both
    assert mixed.bytes_per_step - fp8.bytes_per_step == pytest.approx(extra * 1.0)
    # W8A16 (no FP8 input quantisation at all): nothing to save
    w8a16 = _costs(load_model("llama3.1-405b-fp8"), "float8", "half")
    base16 = _costs(load_model("llama3.1-405b"), "float8", "half")
    assert w8a16.step_host.launch.total == base16.step_host.launch.total


# ---------------------------------------------------------------------- parsing
def _mp(quant: dict, **extra):
    return spec_from_config(_tiny(quant, **extra), "t").mixed_precision


def test_fbgemm_module_level_names_as_the_conversion_script_writes_them() -> None:
    names_ = ["model.layers.0", "model.layers.3", "lm_head"]
    names_ += [f"model.layers.{i}.self_attn" for i in (1, 2)]
    mp = _mp({"quant_method": "fbgemm_fp8", "modules_to_not_convert": names_})
    assert mp.attention_layers == (0, 1, 2, 3) and mp.ffn_layers == (0, 3) and mp.lm_head
    assert mp.describe(4) == "attention, LM head and layers 0/3 MLP in half"


def test_each_list_form_is_read() -> None:
    ct = {"group_0": {"weights": {"type": "float", "num_bits": 8}}}
    cases = [
        ({"quant_method": "compressed-tensors", "config_groups": ct, "ignore": ["re:.*lm_head"]},
         (), (), True, "float8"),
        ({"quant_method": "fp8", "ignored_layers": ["model.layers.1.self_attn.qkv_proj",
                                                    "model.layers.1.self_attn.o_proj"]},
         (1,), (), False, "float8"),
        ({"quant_method": "modelopt", "quant_algo": "FP8", "exclude_modules": ["lm_head"]},
         (), (), True, "float8"),
        ({"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["model.layers.*.self_attn"]},
         (0, 1, 2, 3), (), False, "float8"),
        ({"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["lm_head.weight"]},
         (), (), True, "float8"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True,
          "llm_int8_skip_modules": ["model.layers.2.mlp"]},
         (), (2,), False, "int8"),
        ({"quant_method": "awq", "bits": 4, "modules_to_not_convert": ["model.layers.0.mlp.gate_up_proj",
                                                                       "model.layers.0.mlp.down_proj"]},
         (), (0,), False, "int4"),
    ]  # fmt: skip
    for quant, attn, ffn, head, fmt in cases:
        mp = _mp(quant)
        assert (mp.attention_layers, mp.ffn_layers, mp.lm_head) == (attn, ffn, head), quant
        assert mp.weight_dtype == fmt and mp.notes == ()


def test_only_fp8_formats_set_the_default_weight_dtype() -> None:
    fp8 = spec_from_config(_tiny({"quant_method": "fbgemm_fp8"}), "a")
    assert fp8.native_weight_dtype == "float8" and fp8.mixed_precision is None
    bnb = {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "llm_int8_skip_modules": ["lm_head"],
    }
    m = spec_from_config(_tiny(bnb), "b")
    assert m.native_weight_dtype == "" and m.mixed_precision.weight_dtype == "int4"


def test_moe_and_mla_cells() -> None:
    ds = load_model("deepseek-v3")
    cfg = {**_deepseek_config(ds), "quantization_config": {
        "quant_method": "fp8", "modules_to_not_convert": ["model.layers.0.self_attn",
                                                          "model.layers.5.mlp", "lm_head"]}}  # fmt: skip
    mp = spec_from_config(cfg, "ds").mixed_precision
    assert mp.attention_layers == (0,) and mp.ffn_layers == (5,) and mp.lm_head
    assert mp.describe(61, moe=True) == "layer 0 attention, LM head and layer 5 experts in half"


def _deepseek_config(ds) -> dict:
    import orjson

    with open(ds.source, "rb") as f:
        return copy.deepcopy(orjson.loads(f.read()))


def test_unknown_and_partial_names_are_ignored_with_a_note() -> None:
    """Decision: names that match no linear of the model are ignored with a note (engines load
    such checkpoints regardless); a cell with only some projections named stays quantised."""
    quant = {
        "quant_method": "fbgemm_fp8",
        "modules_to_not_convert": [
            "vision_tower.blocks.0.attn",  # no such module here
            "model.layers.2.self_attn.k_proj",  # one of four projections
            "model.embed_tokens",  # never quantised anyway: accepted silently
            "model.layers.1.mlp.gate",  # a router name: accepted silently
            "model.layers.3.mlp",
        ],
    }
    mp = _mp(quant)
    assert mp.attention_layers == () and mp.ffn_layers == (3,)
    assert len(mp.notes) == 2
    assert "layer 2 attention (self_attn.k_proj)" in mp.notes[0]
    assert mp.notes[1].startswith("1 unquantised module name matches no linear layer")
    assert "vision_tower.blocks.0.attn" in mp.notes[1]
    # the note reaches the plan's notes
    cc = _costs_tp1(spec_from_config(_tiny(quant), "t"))
    assert any("matches no linear" in n for n in cc.notes)


def test_nothing_recognised_leaves_an_all_quantised_model() -> None:
    mp = _mp({"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["foo.bar"]})
    assert not mp.any and len(mp.notes) == 1
    m = spec_from_config(
        _tiny({"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["foo"]}), "t"
    )
    _, plan = _plan(m, tp=1)
    assert unquantised_extra_bytes(m, plan) == 0.0


@pytest.mark.parametrize(
    "quant",
    [
        {"quant_method": "fbgemm_fp8", "modules_to_not_convert": "lm_head"},
        {"quant_method": "fbgemm_fp8", "modules_to_not_convert": [1, 2]},
        {"quant_method": "compressed-tensors", "ignore": ["re:("],
         "config_groups": {"g": {"weights": {"type": "float", "num_bits": 8}}}},
        "fp8",
    ],
)  # fmt: skip
def test_bad_lists_are_one_line_errors(quant) -> None:
    with pytest.raises(ApexError) as err:
        spec_from_config(_tiny(quant), "bad")
    assert "\n" not in str(err.value) and "quantization_config" in str(err.value)


def test_tied_lm_head_is_not_counted() -> None:
    quant = {"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["lm_head"]}
    assert not _mp(quant, tie_word_embeddings=True).lm_head


def test_mxfp4_keeps_its_expert_only_model() -> None:
    oss = load_model("gpt-oss-20b")
    assert oss.mixed_precision is None and oss.native_weight_dtype == ""


# ---------------------------------------------------------------------- report and replay
def test_report_dtype_line() -> None:
    m = load_model("llama3.1-405b-fp8")
    assert weight_dtype_label(m.mixed_precision, "float8", m.num_layers) == (
        "float8 (attention, LM head and layers 0/125 MLP in half, from the checkpoint)"
    )


def test_published_rows_of_the_checkpoint_use_its_own_config() -> None:
    from apex_fast.validation.published import _base_model_id

    assert _base_model_id("meta-llama/Llama-3.1-405B-FP8") == "meta-llama/Llama-3.1-405B-FP8"
    assert load_model(_base_model_id("meta-llama/Llama-3.1-405B-FP8")).mixed_precision
    # checkpoints without a bundled config still use their base model
    assert _base_model_id("meta-llama/Llama-3.1-70B-Instruct-FP8") == (
        "meta-llama/Llama-3.1-70B-Instruct"
    )
