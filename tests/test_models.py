"""Model specs: bundled configs vs published parameter counts, name resolution, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apex_fast.errors import ApexError
from apex_fast.models import ModelSpec, list_models, load_model, resolve_model_name
from apex_fast.models.config import spec_from_config
from apex_fast.models.names import model_aliases

B = 1e9
M = 1e6

# name: (published total, rtol, published active or None, rtol active, computed total, computed
# active) -- published figures and the cross-check counts of /work/shared/MODELS.md. Loose
# tolerances only where the published figure is rounded ("20B", "11B", "6B").
PUBLISHED = {
    "llama-7b": (6.7 * B, 0.02, None, 0, 6.738 * B, None),
    "llama-13b": (13.0 * B, 0.02, None, 0, 13.016 * B, None),
    "llama-30b": (32.5 * B, 0.02, None, 0, 32.529 * B, None),
    "llama-65b": (65.2 * B, 0.02, None, 0, 65.286 * B, None),
    "llama3-70b": (70.55 * B, 0.02, None, 0, 70.554 * B, None),
    "llama3.1-70b": (70.55 * B, 0.02, None, 0, 70.554 * B, None),
    "llama3.1-405b": (405 * B, 0.02, None, 0, 405.853 * B, None),
    "llama3.1-405b-fp8": (405 * B, 0.02, None, 0, 405.853 * B, None),
    "mistral-7b": (7.3 * B, 0.02, None, 0, 7.242 * B, None),
    "openhermes-2.5-mistral-7b": (7.3 * B, 0.02, None, 0, 7.242 * B, None),
    "mistral-large-2407": (123 * B, 0.02, None, 0, 122.61 * B, None),
    "mixtral-8x7b": (46.7 * B, 0.02, 12.9 * B, 0.02, 46.70 * B, 12.88 * B),
    "mixtral-8x22b": (141 * B, 0.02, 39 * B, 0.02, 140.62 * B, 39.15 * B),
    "gpt-j": (6.053381344 * B, 0.02, None, 0, 6.051 * B, None),
    "gpt-neox": (20 * B, 0.05, None, 0, 20.555 * B, None),
    "bloom": (176 * B, 0.02, None, 0, 176.247 * B, None),
    "opt": (66 * B, 0.02, None, 0, 65.72 * B, None),
    "gpt2": (124 * M, 0.02, None, 0, 124.4 * M, None),
    "wizardcoder": (15.5 * B, 0.02, None, 0, 15.517 * B, None),
    "whisper": (1550 * M, 0.02, None, 0, 1.543 * B, None),
    "t5": (11 * B, 0.03, None, 0, 11.135 * B, None),
    # vision tower only (+ its projection); MODELS.md has no published vision-only figure, the
    # whole CLIP (with the 123.65M text tower) is published as ~428M
    "clip": (428 * M - 123.65 * M, 0.02, None, 0, 303.97 * M, None),
    "qwen3-moe": (30.5 * B, 0.02, 3.3 * B, 0.02, 30.53 * B, 3.35 * B),
    "qwen3-235b-a22b": (235 * B, 0.02, 22 * B, 0.02, 235.09 * B, 22.19 * B),
    "deepseek-v3": (671 * B, 0.02, 37 * B, 0.02, 671.03 * B, 37.55 * B),
    # batch 2 of MODELS.md: vendor cards / HF safetensors counts, and the exact computed integers
    "llama2-7b": (6.74 * B, 0.02, None, 0, 6_738_415_616, None),  # Meta card "7B"
    "llama2-13b": (13.0 * B, 0.02, None, 0, 13_015_864_320, None),  # Meta card "13B"
    "llama2-70b": (70 * B, 0.02, None, 0, 68_976_648_192, None),  # "70B" is nominal: 68.98B
    "llama3.1-8b": (8.03 * B, 0.02, None, 0, 8_030_261_248, None),
    "llama3.2-1b": (1.23 * B, 0.02, None, 0, 1_235_814_400, None),  # card "1B (1.23B)"
    "llama3.2-3b": (3.21 * B, 0.02, None, 0, 3_212_749_824, None),  # card "3B (3.21B)"
    "llama3.3-70b": (70.55 * B, 0.02, None, 0, 70_553_706_496, None),
    "qwen2.5-7b": (7.61 * B, 0.02, None, 0, 7_615_616_512, None),  # card 7.61B
    "qwen2.5-32b": (32.5 * B, 0.02, None, 0, 32_763_876_352, None),  # card 32.5B
    "qwen2.5-72b": (72.7 * B, 0.02, None, 0, 72_706_203_648, None),  # card 72.7B
    "qwen3-8b": (8.2 * B, 0.02, None, 0, 8_190_735_360, None),  # card 8.2B
    "qwen3-32b": (32.8 * B, 0.02, None, 0, 32_762_123_264, None),  # card 32.8B
    "qwen3-14b": (14.8 * B, 0.02, None, 0, 14_768_307_200, None),  # card 14.8B
    "deepseek-r1": (671 * B, 0.02, 37 * B, 0.02, 671.03 * B, 37.55 * B),  # V3 architecture
    # gpt-oss card (arXiv 2508.10925): 20.9B / 3.6B and 116.8B / 5.1B; the card's active count
    # leaves out the input embedding table (see ACTIVE_WITHOUT_INPUT_EMBEDDING)
    "gpt-oss-20b": (20.9 * B, 0.02, 3.6 * B, 0.02, 20_914_757_184, 3_608_307_264),
    "gpt-oss-120b": (116.8 * B, 0.02, 5.1 * B, 0.02, 116_829_156_672, 5_132_849_472),
    # Gemma 3 report Table 1: 27.4B = text 27.0B + 417M SigLIP vision tower (+ 6.2M projector)
    "gemma-3-27b": (27.4 * B, 0.02, None, 0, 27_432_406_640, None),
    "mistral-small-24b": (23.6 * B, 0.02, None, 0, 23_572_403_200, None),  # HF count 23.6B
    "phi-4": (14.7 * B, 0.02, None, 0, 14_659_507_200, None),  # HF count 14.7B ("14B")
}
ACTIVE_WITHOUT_INPUT_EMBEDDING = {"gpt-oss-20b", "gpt-oss-120b"}

LLAMA_LIKE = {
    "model_type": "llama",
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
}


def _err(config: object) -> str:
    with pytest.raises(ApexError) as info:
        spec_from_config(config, "x", "x.json")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------- parameter counts
def test_every_bundled_model_has_a_published_figure():
    assert sorted(m.name for m in list_models()) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_vs_published(name: str):
    total, rtol, active, artol, computed, computed_active = PUBLISHED[name]
    m = load_model(name)
    assert m.params_total() == pytest.approx(total, rel=rtol)
    assert m.params_total() == pytest.approx(computed, rel=2e-3)
    if active is None:
        assert not m.is_moe
        assert m.params_active() == m.params_total()
    else:
        assert m.is_moe
        got = m.params_active()
        if name in ACTIVE_WITHOUT_INPUT_EMBEDDING:
            got -= m.embedding_params()
        assert got == pytest.approx(active, rel=artol)
        assert got == pytest.approx(computed_active, rel=2e-3)


def test_exact_counts_llama3_70b_and_mixtral():
    m = load_model("llama3-70b")
    assert m.params_total() == 70_553_706_496
    assert m.attn_params_per_layer() == 150_994_944
    assert m.ffn_params_per_layer() == 3 * 8192 * 28672
    assert m.block_params() == 150_994_944 + 3 * 8192 * 28672 + 2 * 8192
    assert m.embedding_params() == m.lm_head_params() == 128256 * 8192
    x = load_model("mixtral-8x7b")
    assert x.expert_params() == 3 * 4096 * 14336
    assert x.ffn_params_per_layer() == 8 * x.expert_params() + 4096 * 8
    assert x.params_total() == 46_702_792_704
    assert x.params_active() == 12_879_925_248


def test_family_details():
    assert load_model("gpt2").lm_head_params() == 0  # tied
    assert load_model("gpt2").learned_pos == 1024
    assert load_model("opt").learned_pos == 2050  # OPT's 2-row offset
    wc = load_model("wizardcoder")
    assert (wc.num_kv_heads, wc.head_dim) == (1, 128)  # multi-query
    gj = load_model("gpt-j")
    assert gj.head_dim == 256 and gj.lm_head_params() == 50400 * 4096 + 50400
    q = load_model("qwen3-moe")
    assert (q.head_dim, q.num_heads * q.head_dim, q.num_experts, q.topk) == (128, 4096, 128, 8)
    t5 = load_model("t5")
    assert t5.gated_ffn and t5.arch == "encoder-decoder" and t5.encoder_layers == 24
    w = load_model("whisper")
    assert (w.arch, w.encoder_seq_len, w.num_layers, w.learned_pos) == (
        "encoder-decoder",
        1500,
        32,
        448,
    )
    # encoder: 0.637B in MODELS.md = 32 blocks + conv stem + position table + final LayerNorm
    stem = 128 * 1280 * 3 + 1280 + 1280 * 1280 * 3 + 1280
    enc = w.encoder_params() + stem + 1500 * 1280 + 2 * 1280
    assert enc == pytest.approx(0.637 * B, rel=2e-3)
    c = load_model("clip")
    assert (c.arch, c.num_layers, c.encoder_layers, c.encoder_seq_len) == ("encoder", 24, 24, 257)
    assert c.lm_head_params() == 0 and c.decoder_params() == 0
    ds = load_model("deepseek-v3")
    assert (ds.num_dense_layers, ds.num_shared_experts, ds.head_dim) == (3, 1, 192)
    assert ds.is_mla and ds.dense_block_params() < ds.block_params()
    assert load_model("llama-65b").max_position_embeddings == 2048  # max_sequence_length
    assert load_model("mistral-7b").sliding_window == 4096
    assert load_model("llama3.1-405b").num_kv_heads == 8
    for m in list_models():
        assert isinstance(m, ModelSpec)
        assert m.hf_id and m.source.endswith(f"{m.name}.json")
        assert m.params_active() <= m.params_total()


def test_bundled_json_cites_source():
    for m in list_models():
        data = json.loads(Path(m.source).read_text())
        assert data["_source"] == m.hf_id and "/" in m.hf_id


# ---------------------------------------------------------------------- KV cache and FLOPs
def test_kv_bytes_per_token():
    assert load_model("llama3-70b").kv_bytes_per_token(2) == 327680
    assert load_model("mistral-7b").kv_bytes_per_token(2) == 131072
    assert load_model("mistral-7b").kv_bytes_per_token(1) == 65536
    assert load_model("mixtral-8x7b").kv_bytes_per_token(2) == 131072
    assert load_model("llama-7b").kv_bytes_per_token(2) == 512 * 1024
    assert load_model("wizardcoder").kv_bytes_per_token(2) == 20 * 1024
    assert load_model("t5").kv_bytes_per_token(2) == 384 * 1024
    assert load_model("deepseek-v3").kv_bytes_per_token(2) == 61 * 576 * 2  # MLA latent
    assert load_model("clip").kv_bytes_per_token(2) == 0
    w = load_model("whisper")
    assert w.kv_bytes_per_token(2) == 160 * 1024
    assert w.cross_kv_bytes_per_request(2) == 1500 * 32 * 1280 * 2 * 2


@pytest.mark.parametrize("name", ["llama3-70b", "llama-7b", "bloom", "opt", "llama3.1-405b"])
def test_flops_about_twice_params(name: str):
    m = load_model(name)
    assert m.flops_per_token(1) == pytest.approx(2 * m.params_total(), rel=0.03)


def test_flops_formula():
    for m in list_models():
        if m.arch != "decoder":
            continue
        body = m.params_active() - m.embedding_params() - m.lm_head_params() - m.extra_params
        expect = 2 * body + 2 * m.hidden_size * m.vocab_size
        assert m.flops_per_token(0) == pytest.approx(expect, rel=1e-12)
    m = load_model("llama3-70b")
    slope = m.flops_per_token(1001) - m.flops_per_token(1)
    assert slope == pytest.approx(4 * 80 * 64 * 128 * 1000)
    assert load_model("mixtral-8x7b").flops_per_token(1) == pytest.approx(2 * 12.9 * B, rel=0.03)
    t5 = load_model("t5")
    assert t5.flops_per_token(100, encoder_len=512) > t5.flops_per_token(100, encoder_len=10)
    assert load_model("clip").flops_per_token(257) == load_model("clip").encoder_flops_per_token(
        257
    )
    assert load_model("clip").encoder_flops_per_token(1) > 2 * 0.3 * B


# ---------------------------------------------------------------------- names and paths
@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("mixtral-8x7b-local", "mixtral-8x7b"),
        ("mixtral-8x22b-local", "mixtral-8x22b"),
        ("mistral-7b-local", "mistral-7b"),
        ("llama3-70b", "llama3-70b"),
        ("LLAMA3.1-70B", "llama3.1-70b"),
        ("opt", "opt"),
        ("meta-llama/Meta-Llama-3-70B", "llama3-70b"),
        ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"),
        ("huggyllama/llama-30b", "llama-30b"),
        ("EleutherAI/gpt-j-6b", "gpt-j"),
        ("bigscience/bloom", "bloom"),
        ("WizardLM/WizardCoder-15B-V1.0", "wizardcoder"),
        ("openai/whisper-large-v3", "whisper"),
        ("google/flan-t5-xxl", "t5"),
        ("openai/clip-vit-large-patch14", "clip"),
        ("Qwen/Qwen3-30B-A3B", "qwen3-moe"),
        ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
        ("teknium/OpenHermes-2.5-Mistral-7B", "openhermes-2.5-mistral-7b"),
        ("  Gpt2 ", "gpt2"),
    ],
)
def test_resolve_aliases(alias: str, name: str):
    assert resolve_model_name(alias) == name
    assert load_model(alias).name == name


def test_every_hf_source_and_alias_resolves():
    for m in list_models():
        assert resolve_model_name(m.hf_id) == m.name
    bundled = {m.name for m in list_models()}
    for alias, name in model_aliases().items():
        assert name in bundled and resolve_model_name(alias) == name


def test_local_paths(tmp_path: Path):
    f = tmp_path / "tiny.json"
    f.write_text(json.dumps(LLAMA_LIKE))
    m = load_model(str(f))
    assert (m.name, m.source, m.num_kv_heads, m.head_dim) == ("tiny", str(f), 2, 32)
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**LLAMA_LIKE, "model_type": "mistral"}))
    assert resolve_model_name(str(d)) == str(d / "config.json")
    m = load_model(str(d))
    assert m.name == "my-model" and m.model_type == "mistral"
    assert m.params_total() == (
        2 * (2 * 256 * 256 + 2 * 256 * 64 + 3 * 256 * 512 + 2 * 256) + 2 * 1000 * 256 + 256
    )


def test_generic_and_moe_configs():
    g = spec_from_config({**LLAMA_LIKE, "model_type": "brand_new"}, "g")
    assert g.arch == "decoder" and g.gated_ffn and g.model_type == "brand_new"
    nomt = {k: v for k, v in LLAMA_LIKE.items() if k != "model_type"}
    assert spec_from_config(nomt, "g").model_type == "generic"
    moe = spec_from_config(
        {**LLAMA_LIKE, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
        "moe",
    )
    assert moe.is_moe and moe.moe_intermediate_size == 512
    assert moe.params_active() < moe.params_total()
    qwen = {**LLAMA_LIKE, "model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 1}
    qwen |= {"num_hidden_layers": 10, "decoder_sparse_step": 2, "mlp_only_layers": [1, 2]}
    assert spec_from_config(qwen, "q").num_dense_layers == 6  # MoE: layers 3, 5, 7, 9
    ds = {**LLAMA_LIKE, "model_type": "deepseek_v3", "n_routed_experts": 4}
    ds |= {"num_experts_per_tok": 2, "num_hidden_layers": 10, "first_k_dense_replace": 3}
    ds |= {"moe_layer_freq": 2, "num_hidden_layers": 2**31 - 1}  # counted without a loop
    # MoE layers: even i >= 4, i.e. 4, 6, ..., 2**31 - 2
    assert spec_from_config(ds, "d").num_dense_layers == 2**31 - 1 - (2**30 - 2)


def test_moe_overrides():
    m = load_model("mixtral-8x7b", num_experts=16, topk=4)
    assert (m.num_experts, m.topk) == (16, 4)
    assert m.params_total() > load_model("mixtral-8x7b").params_total()
    assert load_model("qwen3-moe", topk=2).topk == 2
    assert load_model("mixtral-8x7b").num_experts == 8  # cache not mutated


# ---------------------------------------------------------------------- errors
def test_unknown_model_suggests():
    with pytest.raises(ApexError) as info:
        load_model("lama3-70b")
    msg = str(info.value)
    assert "lama3-70b" in msg and "llama3-70b" in msg and "config.json" in msg
    assert "\n" not in msg
    with pytest.raises(ApexError, match="nope/config.json does not exist"):
        load_model("nope/config.json")
    with pytest.raises(ApexError, match="empty"):
        load_model("  ")


def test_bad_files(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ApexError, match="bad.json.*not valid JSON"):
        load_model(str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ApexError, match="no config.json"):
        load_model(str(empty))
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(ApexError, match="arr.json.*JSON object"):
        load_model(str(arr))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"hidden_size": 0}, "hidden_size = 0"),
        ({"hidden_size": None}, "missing hidden_size"),
        ({"num_attention_heads": 0}, "num_attention_heads = 0"),
        ({"hidden_size": 250}, "not divisible by 8 heads"),
        ({"num_key_value_heads": 3}, "3 KV heads do not divide 8"),
        ({"num_key_value_heads": 16}, "16 KV heads"),
        ({"hidden_size": "256"}, "hidden_size must be an integer"),
        ({"hidden_size": True}, "hidden_size must be an integer"),
        ({"vocab_size": 2**40}, "out of range"),
        ({"tie_word_embeddings": "yes"}, "true or false"),
        ({"model_type": 3}, "model_type must be a string"),
        ({"num_local_experts": 4, "num_experts_per_tok": 5}, "exceeds the 4 experts"),
        ({"num_local_experts": 4}, "no num_experts_per_tok"),
    ],
)
def test_inconsistent_configs(change: dict, needle: str):
    cfg = {**LLAMA_LIKE, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    assert needle in _err(cfg)


def test_explicit_head_dim_allows_indivisible_hidden():
    m = spec_from_config({**LLAMA_LIKE, "hidden_size": 250, "head_dim": 32}, "x")
    assert m.head_dim == 32


def test_unknown_model_type_hints_keys():
    msg = _err({"model_type": "mamba", "d_model": 768})
    assert "unknown model_type 'mamba'" in msg and "num_hidden_layers" in msg
    assert "no model_type" in _err({}) and "vocab_size" in _err({})


def test_family_key_errors():
    assert "missing n_embd" in _err({"model_type": "gpt2"})
    assert "vision_config must be an object" in _err({"model_type": "clip", "vision_config": 3})
    assert "missing d_model" in _err({"model_type": "t5"})


def test_override_errors():
    with pytest.raises(ApexError, match="dense model"):
        load_model("llama-7b", num_experts=8)
    with pytest.raises(ApexError, match="dense model"):
        load_model("gpt2", topk=2)
    with pytest.raises(ApexError, match="topk 9 exceeds the 8 experts"):
        load_model("mixtral-8x7b", topk=9)
    with pytest.raises(ApexError, match="positive integer"):
        load_model("mixtral-8x7b", num_experts=0)


# ---------------------------------------------------------------------- robustness
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
_KEYS = sorted(
    {
        *LLAMA_LIKE,
        "model_type",
        "head_dim",
        "num_local_experts",
        "num_experts_per_tok",
        "kv_lora_rank",
        "n_embd",
        "n_head",
        "n_layer",
        "d_model",
        "vision_config",
        "mlp_only_layers",
        "word_embed_proj_dim",
        "multi_query",
    }
)
_TYPES = st.sampled_from(
    ["llama", "gpt2", "gpt_bigcode", "gptj", "gpt_neox", "bloom", "opt", "whisper", "t5"]
    + ["clip", "clip_vision_model", "qwen3_moe", "deepseek_v3", "mixtral", "other"]
)


def _accepts_or_apex(raw: bytes, folder: Path) -> None:
    path = folder / "config.json"
    path.write_bytes(raw)
    try:
        spec = load_model(str(folder))
    except ApexError as exc:
        assert "\n" not in str(exc)
        return
    assert spec.params_total() >= 0 and spec.kv_bytes_per_token(2) >= 0
    spec.flops_per_token(10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_arbitrary_json_only_apex_error(value, tmp_path_factory):
    _accepts_or_apex(json.dumps(value).encode(), tmp_path_factory.mktemp("j"))


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([m.name for m in list_models()]),
    mt=_TYPES,
    edits=st.dictionaries(st.sampled_from(_KEYS), json_values, max_size=4),
)
def test_mutated_configs_only_apex_error(base, mt, edits, tmp_path_factory):
    cfg = json.loads(Path(load_model(base).source).read_text())
    if mt != "other":
        cfg["model_type"] = mt
    cfg.update(edits)
    _accepts_or_apex(json.dumps(cfg).encode(), tmp_path_factory.mktemp("m"))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_only_apex_error(raw, tmp_path_factory):
    _accepts_or_apex(raw, tmp_path_factory.mktemp("b"))


# ---------------------------------------------------------------------- batch-2 families
def test_batch2_exact_counts_and_shapes():
    """Integer counts of MODELS.md batch 2 (a script summed the tensors of each config)."""
    exact = {
        "llama2-7b": 6_738_415_616,
        "llama2-70b": 68_976_648_192,
        "llama3.2-1b": 1_235_814_400,
        "qwen2.5-7b": 7_615_616_512,  # q/k/v biases, no o bias
        "qwen3-32b": 32_762_123_264,  # q width 8192 > hidden 5120, q/k norms
        "gpt-oss-20b": 20_914_757_184,  # attention/expert/router biases + sinks
        "gpt-oss-120b": 116_829_156_672,
        "gemma-3-27b": 27_432_406_640,  # text 27,009,346,304 + vision 416,866,032 + 6,194,304
        "mistral-small-24b": 23_572_403_200,
        "phi-4": 14_659_507_200,
    }
    for name, count in exact.items():
        assert load_model(name).params_total() == count, name
    g = load_model("gemma-3-27b")
    assert g.params_total() - g.extra_params + g.hidden_size == 27_009_346_304  # text only
    assert (g.num_heads * g.head_dim, g.hidden_size, g.num_kv_heads) == (4096, 5376, 16)
    assert g.lm_head_params() == 0  # tied
    assert (
        load_model("llama3.2-1b").lm_head_params() == 0 and load_model("qwen3-8b").lm_head_params()
    )
    oss = load_model("gpt-oss-120b")
    assert (oss.num_experts, oss.topk, oss.head_dim, oss.attn_sinks) == (128, 4, 64, True)
    assert oss.native_expert_dtype == "mxfp4"
    r1 = load_model("deepseek-r1")
    assert r1.params_total() == load_model("deepseek-v3").params_total()
    assert (r1.num_shared_experts, r1.num_dense_layers) == (1, 3)


def test_sliding_layers_per_family():
    """Local/global layouts: Gemma-3 5 local : 1 global (52 + 10 of 62), gpt-oss alternating
    (12 + 12 / 18 + 18), Mistral-7B every layer, Qwen2.5 none (use_sliding_window false)."""
    g = load_model("gemma-3-27b")
    assert (g.sliding_window, g.sliding_layers, g.num_layers) == (1024, 52, 62)
    assert (
        load_model("gpt-oss-20b").sliding_layers,
        load_model("gpt-oss-120b").sliding_layers,
    ) == (
        12,
        18,
    )
    assert load_model("gpt-oss-20b").sliding_window == 128
    assert load_model("mistral-7b").sliding_layers == 32
    assert (
        load_model("qwen2.5-7b").sliding_layers == 0
        and load_model("qwen2.5-7b").sliding_window == 0
    )
    assert load_model("llama3.1-8b").sliding_layers == 0


def test_sliding_window_model_holds_less_kv_than_full_twin():
    """At long context the window caps the local layers' KV: gpt-oss-20b full layers hold
    24 KiB/token (12 layers x 8 KV heads x 64 x 2 x 2 B), the 12 sliding layers at most 128
    tokens (3 MiB) -- MODELS.md batch 2. A full-attention twin holds 48 KiB/token."""
    from dataclasses import replace

    m = load_model("gpt-oss-20b")
    twin = replace(m, sliding_window=0, num_sliding_layers=0)
    ctx = 32768
    assert twin.kv_bytes_per_sequence(ctx, 2) == ctx * 48 * 1024
    assert m.kv_bytes_per_sequence(ctx, 2) == ctx * 24 * 1024 + 128 * 24 * 1024
    assert m.kv_bytes_per_sequence(ctx, 2) < 0.51 * twin.kv_bytes_per_sequence(ctx, 2)
    assert m.kv_bytes_per_sequence(100, 2) == twin.kv_bytes_per_sequence(100, 2)  # < window
    g = load_model("gemma-3-27b")  # 80 KiB/token global + <= 1024 tokens x 416 KiB local
    assert g.kv_bytes_per_sequence(ctx, 2) == (ctx * 80 + 1024 * 416) * 1024


def test_mla_kv_bytes_match_the_formula():
    """DeepSeek-V3 caches kv_lora_rank + qk_rope_head_dim = 512 + 64 values per token per layer
    over 61 layers: 68.6 KiB/token in BF16 (MODELS.md), whatever the 128 nominal KV heads."""
    ds = load_model("deepseek-v3")
    assert ds.kv_bytes_per_token(2) == 61 * (512 + 64) * 2 == 70272
    assert ds.kv_bytes_per_token(1) == 61 * 576
    assert ds.kv_bytes_per_sequence(1000, 2) == 1000 * 70272


# ---------------------------------------------------------------------- name resolution
@pytest.mark.parametrize(
    ("name", "bundled"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3.1-8b"),
        ("META-LLAMA/LLAMA-2-70B-HF", "llama2-70b"),
        ("Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b"),
        ("qwen/qwen3-30b-a3b", "qwen3-moe"),
        ("openai/gpt-oss-120b", "gpt-oss-120b"),
        ("google/gemma-3-27b-it", "gemma-3-27b"),
        ("mistralai/Mistral-Small-24B-Instruct-2501", "mistral-small-24b"),
        ("microsoft/phi-4", "phi-4"),
        ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
        ("Llama3.2-1B", "llama3.2-1b"),
    ],
)
def test_hf_ids_resolve_case_insensitively(name: str, bundled: str):
    assert resolve_model_name(name) == bundled


def test_every_bundled_model_has_its_hf_id_as_alias():
    aliases = model_aliases()
    for m in list_models():
        assert m.hf_id, m.name
        assert aliases.get(m.hf_id.lower(), m.name) == m.name
        assert resolve_model_name(m.hf_id) == m.name


def test_suggestions_never_cross_sizes():
    with pytest.raises(ApexError) as info:
        resolve_model_name("meta-llama/Meta-Llama-3-8B")
    msg = str(info.value)
    assert "\n" not in msg and "config.json" in msg
    assert "70b" not in msg.split(";")[0] and "llama3.1-8b" in msg
    for unknown in ("Qwen/Qwen2.5-1.5B", "google/gemma-3-12b-it", "meta-llama/Llama-2-34b-hf"):
        with pytest.raises(ApexError) as info:
            resolve_model_name(unknown)
        hint = str(info.value).split(";")[0]
        assert "did you mean" not in hint, hint  # no bundled model of that size
    with pytest.raises(ApexError) as info:
        resolve_model_name("Qwen/Qwen2.5-14B")  # a 14B exists: the suggestion keeps the size
    assert "qwen3-14b" in str(info.value).split(";")[0]


# ---------------------------------------------------------------------- every model plans
def _fitting_cluster(m: ModelSpec) -> tuple[int, int]:
    """(nodes, GPUs per node) of H200s: the smallest power of two whose memory holds the BF16
    weights at 70% (room for activations and KV), up to 8 GPUs per node."""
    g = 1
    while 0.7 * 141e9 * g < m.params_total() * 2:
        g *= 2
    return max(1, g // 8), min(g, 8)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_bundled_model_plans(name: str):
    from apex_fast.planner import PlanRequest, run_plan

    m = load_model(name)
    nodes, gpn = _fitting_cluster(m)
    req = PlanRequest(
        model=name,
        gpus_per_node=gpn,
        num_nodes=nodes,
        gpu="H200",
        num_requests=4,
        prompt_len=256,
        output_len=8,
        dp=1,
        workers=1,
    )
    _, sr = run_plan(req)
    best = sr.best.result
    assert best.feasible and best.plan.num_gpus == nodes * gpn
    assert sr.best.metrics.throughput_tokens_per_s > 0
    if m.arch != "encoder":  # an encoder caches nothing
        assert sr.best.metrics.kv_tokens_per_replica >= 256 + 8


def test_sliding_window_model_uses_fewer_kv_blocks_in_the_engine():
    """Eight 16k-token prompts on one H100: gpt-oss-20b's sliding layers free the blocks that
    leave their 128-token window, so its peak KV blocks are about half of a full-attention twin
    (identical except that every layer keeps full history)."""
    from dataclasses import replace

    from apex_fast.hardware import Cluster, get_device
    from apex_fast.plans.enumerate import enumerate_plans
    from apex_fast.sim.engine import EngineOptions, simulate_plan
    from apex_fast.workload import static_workload

    m = load_model("gpt-oss-20b")
    twin = replace(m, sliding_window=0, num_sliding_layers=0)
    wl = static_workload(8, 16000, 64)
    cl = Cluster(get_device("H100"), 1, 1)
    peak = {}
    for spec in (m, twin):
        plan = enumerate_plans(spec, cl)[0][0]
        res = simulate_plan(spec, cl, plan, wl, EngineOptions())
        assert res.feasible
        peak[spec.sliding_layers] = int(res.streams[0].rec_blocks.max())
    # about 8 x 1000 blocks of 16 tokens for the twin; the windowed model keeps half of them
    # plus, per sequence, half of the 9 blocks a 128-token window straddles (rounded up)
    assert peak[0] >= 8 * 1000
    assert peak[0] / 2 < peak[12] <= peak[0] / 2 + 8 * 5 + 8


# ---------------------------------------------------------------------- MLA costs
def test_mla_projection_gemms_cover_every_weight_once():
    """With a GEMM cost of m*k*n (weights x tokens), one layer's MLA projections on one device
    cost exactly its attention weights (minus the two norm vectors) times the tokens; at TP8
    the down-projections stay whole (replicated) and the rest is split eight ways."""
    from apex_fast.models.mla import mla_projection_time, mla_weights_per_device

    ds = load_model("deepseek-v3")

    def gemm(m: int, k: int, n: np.ndarray) -> np.ndarray:
        return m * k * np.asarray(n, dtype=np.float64)

    n = np.array([0.0, 1.0, 7.0])
    norms = ds.q_lora_rank + ds.kv_lora_rank
    full = ds.attn_params_per_layer() - norms
    assert list(mla_projection_time(gemm, ds, 1, n)) == list(full * n)
    assert mla_weights_per_device(ds, 1) == ds.attn_params_per_layer()
    replicated = 7168 * 1536 + 7168 * 576
    per8 = mla_projection_time(gemm, ds, 8, np.array([1.0]))[0]
    assert per8 == replicated + (full - replicated) / 8
    assert mla_weights_per_device(ds, 8) == replicated + norms + (full - replicated) / 8


def test_mla_decode_attention_is_latent_read_or_absorbed_flops():
    """Per context token: read 576 latent values once for all heads, or compute
    2 x heads x (2 x 512 + 64) FLOPs, whichever is slower. On H100 the 128 heads of TP1 are
    compute-bound (278,528 FLOPs vs 1,152 bytes), the 16 heads of TP8 memory-bound."""
    from apex_fast.models.mla import mla_decode_time_per_token, mla_prefill_time_per_pair
    from apex_fast.profiles.analytic import device_model

    ds = load_model("deepseek-v3")
    dm = device_model("H100")
    read = 576 * 2 / (dm.mem_bw * dm.eta_mem)
    for heads in (128, 16):
        flops = 2 * heads * (2 * 512 + 64)
        compute = flops / (dm.peak("half") * dm.eta_attn)
        assert mla_decode_time_per_token(dm, ds, heads, 2.0, "half") == max(read, compute)
    assert mla_decode_time_per_token(dm, ds, 128, 2.0, "half") > read
    assert mla_decode_time_per_token(dm, ds, 16, 2.0, "half") == read
    # prefill pairs: keys of 192 and values of 128 per head
    pair = mla_prefill_time_per_pair(dm, ds, 16, "half")
    assert pair == 2 * 16 * (192 + 128) / (dm.peak("half") * dm.eta_attn)


# ---------------------------------------------------------------------- MXFP4
def test_mxfp4_is_4_25_bits_and_a_weight_only_dtype():
    from apex_fast.dtypes import DTYPE_BYTES, canonical_dtype, compute_dtype

    assert DTYPE_BYTES["mxfp4"] * 8 == 4.25  # 32 x FP4 E2M1 + one 8-bit scale per block
    assert canonical_dtype("MXFP4", allow_int=True) == "mxfp4"
    with pytest.raises(ApexError, match="mxfp4"):
        canonical_dtype("mxfp4", "--kv-dtype")
    assert compute_dtype("mxfp4", "half") == "half"  # dequantised into BF16 GEMMs


def test_gpt_oss_expert_weights_stay_mxfp4():
    """Checkpoint bytes (MODELS.md batch 2): 19.11B MXFP4 + 1.80B BF16 = 13.8 GB for 20b,
    114.66B MXFP4 + 2.17B BF16 = 65.2 GB for 120b -- 120b fits one 80 GB GPU."""
    from apex_fast.hardware import Cluster, get_device
    from apex_fast.plans.enumerate import enumerate_plans
    from apex_fast.plans.memory import weight_bytes_per_device

    cl = Cluster(get_device("H100"), 1, 1)
    for name, gb in (("gpt-oss-20b", 13.8), ("gpt-oss-120b", 65.2)):
        m = load_model(name)
        plan = enumerate_plans(m, cl)[0][0]
        assert weight_bytes_per_device(m, plan) / 1e9 == pytest.approx(gb, rel=0.01)
    mixtral = load_model("mixtral-8x7b")  # BF16 experts: plan dtype throughout
    plan = enumerate_plans(mixtral, Cluster(get_device("H100"), 1, 2))[0][0]
    assert weight_bytes_per_device(mixtral, plan) == pytest.approx(
        mixtral.params_total() * 2 / 2, rel=0.02
    )


def test_new_family_configs_load_and_fail_in_one_line():
    oss = json.loads(
        (
            Path(__file__).resolve().parents[1] / "apex_fast/models/configs/gpt-oss-20b.json"
        ).read_text()
    )
    assert spec_from_config(oss, "x").sliding_layers == 12
    assert "layer_types must be a list of 24" in _err({**oss, "layer_types": ["full_attention"]})
    assert "text_config must be an object" in _err({"model_type": "gemma3"})
    text = {**LLAMA_LIKE, "model_type": "gemma3_text", "head_dim": 64, "sliding_window": 512}
    text |= {"sliding_window_pattern": 2, "num_hidden_layers": 5}
    g = spec_from_config(text, "g")
    assert (g.sliding_layers, g.norms_per_block, g.qk_norm, g.tied_embeddings) == (3, 4, True, True)
    qwen = {**LLAMA_LIKE, "model_type": "qwen2", "sliding_window": 64, "use_sliding_window": True}
    assert spec_from_config(qwen | {"max_window_layers": 1}, "q").sliding_layers == 1
    assert spec_from_config(qwen | {"use_sliding_window": False}, "q").sliding_window == 0


def test_deepseek_shared_expert_in_memory_and_active_params():
    """DeepSeek-V3: 1 shared expert (2048 wide, SwiGLU) runs on every token of the 58 MoE
    layers next to the top-8 of 256 routed ones: it counts in the active parameters and is
    split over the stage's devices, while EP8 holds 32 routed experts per device."""
    from apex_fast.hardware import Cluster, get_device
    from apex_fast.plans.enumerate import Pins, enumerate_plans
    from apex_fast.plans.memory import ffn_weights_per_device

    ds = load_model("deepseek-v3")
    expert = 3 * 7168 * 2048
    assert ds.expert_params() == expert
    assert ds.ffn_active_params_per_layer() == 7168 * 256 + 256 + 9 * expert  # router + 8 + 1
    plan = enumerate_plans(ds, Cluster(get_device("H200"), 2, 8), Pins(dp=1, pp=2, tp=8, ep=8))[0]
    plan = plan[0]
    assert ffn_weights_per_device(ds, plan) == 32 * expert + expert / 8 + 7168 * 256 + 256


def test_fp8_checkpoint_plans_in_its_own_dtype_by_default() -> None:
    """DeepSeek-V3 ships block-scaled FP8 weights (quantization_config quant_method fp8): without
    --weight-dtype the plan uses them, and an explicit dtype still wins."""
    from apex_fast.planner import PlanRequest, run_plan

    m = load_model("deepseek-v3")
    assert m.native_weight_dtype == "float8"
    assert load_model("llama3-70b").native_weight_dtype == ""
    req = dict(model="deepseek-v3", gpu="H200", gpus_per_node=8, num_requests=4)
    _, sr = run_plan(PlanRequest(**req, prompt_len=256, output_len=8))
    plan = sr.best.result.plan
    assert (plan.weight_dtype, plan.activation_dtype) == ("float8", "float8")
    with pytest.raises(ApexError):  # bf16 weights do not fit one 8x H200 node
        run_plan(PlanRequest(**req, prompt_len=256, output_len=8, weight_dtype="half"))
