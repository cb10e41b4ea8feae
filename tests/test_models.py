"""Model specs: bundled configs vs published parameter counts, name resolution, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apex_fast.errors import ApexError
from apex_fast.models import ModelSpec, list_models, load_model, resolve_model_name
from apex_fast.models.loader import model_aliases, spec_from_config

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
}

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
        assert m.params_active() == pytest.approx(active, rel=artol)
        assert m.params_active() == pytest.approx(computed_active, rel=2e-3)


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
    assert "lama3-70b" in msg and "llama3-70b" in msg and "known models" in msg
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
