"""Engine registry: completeness, sources, defaults per engine, flag/engine compatibility."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pytest
from apex_fast.kernels.params import ADMIT_TOKEN_RATIO

from apex_fast.cli import main
from apex_fast.engines import (
    DEFAULT_ENGINE,
    ENGINE_NAMES,
    ENGINES,
    KNOWN_FLAGS,
    check_flags,
    get_engine,
)
from apex_fast.engines.options import LaunchSettings, engine_option_fields
from apex_fast.errors import ApexError
from apex_fast.sim.engine import EngineOptions
from apex_fast.workload import static_workload

ROOT = Path(__file__).resolve().parents[1]
H100 = ("H100-SXM-80GB", 80e9 / 2**30)
A100 = ("A100-SXM-80GB", 80e9 / 2**30)


def fields(engine: str, device=H100, model_max_len=None, tp=None, **given) -> dict:
    return engine_option_fields(
        LaunchSettings(engine=engine, **given), device[0], device[1], model_max_len, tp
    )


# --- registry completeness ---------------------------------------------------------------


def test_names_are_the_five_of_the_issue():
    assert ENGINE_NAMES == ("vllm-0.5", "vllm-0.6", "vllm-v1", "sglang", "trtllm")
    assert DEFAULT_ENGINE == "vllm-0.6"
    for name, p in ENGINES.items():
        assert p.name == name


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_profile_field_is_set(name):
    p = ENGINES[name]
    optional = {
        "chunked_auto_above_max_model_len",
        "max_num_seqs_default",
        "cuda_graph_max_seq_len",
    }
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if f.name in optional:
            continue
        assert v is not None, f.name
        if isinstance(v, str | tuple | frozenset):
            if f.name == "device_defaults" or (f.name == "flag_spelling" and name != "sglang"):
                continue  # may be empty: no per-device defaults / flags spelled as ours
            assert len(v) > 0, f.name


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_profile_cites_sources(name):
    p = ENGINES[name]
    assert len(p.sources) >= 3
    for src in p.sources:
        assert src.startswith("https://"), src
        assert "/" in src.removeprefix("https://")
    # source files of a release are pinned to a tag (TensorRT-LLM: docs pages + main copy)
    if name.startswith("vllm"):
        assert all("/blob/v0." in s for s in p.sources if "github.com" in s)
    if name == "sglang":
        assert all("/blob/v0.4.6.post5/" in s for s in p.sources if "github.com" in s)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_module_comments_name_sources(name):
    """Every engine module keeps its source list in the module docstring."""
    module = {
        "vllm-0.5": "vllm_05",
        "vllm-0.6": "vllm_06",
        "vllm-v1": "vllm_v1",
        "sglang": "sglang",
        "trtllm": "trtllm",
    }[name]
    text = (ROOT / "apex_fast" / "engines" / f"{module}.py").read_text()
    assert text.count("https://") >= 3


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_flags_are_known_and_spellings_cover_only_own_flags(name):
    p = ENGINES[name]
    assert p.flags <= KNOWN_FLAGS
    assert {k for k, _ in p.flag_spelling} <= p.flags
    assert {"half", "float8"} <= {k for k, _ in p.attention_backend}


def test_profile_rules_are_consistent():
    for p in ENGINES.values():
        # an engine that cannot turn chunking off has no --no-chunked-prefill
        assert ("--no-chunked-prefill" in p.flags) == p.chunked_prefill_can_be_disabled
        assert ("--num-scheduler-steps" in p.flags) == p.multi_step_supported
        assert p.graphs_prefill == (p.graphed_prefill_max_tokens > 0)
        assert list(p.cuda_graph_decode_sizes) == sorted(set(p.cuda_graph_decode_sizes))


# --- engine facts that the simulation relies on ---------------------------------------------


def test_graph_and_backend_facts():
    v06, v1, sg, trt = (ENGINES[n] for n in ("vllm-0.6", "vllm-v1", "sglang", "trtllm"))
    assert v06.max_graphed_decode_batch == 256 and not v06.graphs_prefill
    assert v06.cuda_graph_max_seq_len == 8192
    assert v1.graphs_prefill and v1.graphed_prefill_max_tokens == 512
    assert v1.max_graphed_decode_batch == 512
    assert sg.max_graphed_decode_batch == 160 and not sg.graphs_prefill
    assert trt.max_graphed_decode_batch == 128
    # vLLM 0.6 with an FP8 KV cache leaves FlashAttention for xFormers + PagedAttention
    assert "XFORMERS" in v06.backend_for("float8")
    assert "FLASH_ATTN" in v06.backend_for("half")
    assert ENGINES["vllm-0.5"].multi_step_supported is False
    assert v06.multi_step_supported and not v06.multi_step_with_chunked_prefill


def test_kernel_modes():
    assert ENGINES["vllm-0.6"].kernel_mode(False) == "prefill-first"
    assert ENGINES["vllm-0.6"].kernel_mode(True) == "chunked-mixed"
    assert ENGINES["vllm-v1"].kernel_mode(True) == "chunked-mixed"
    assert ENGINES["sglang"].kernel_mode(True) == "prefill-first"
    assert ENGINES["trtllm"].kernel_mode(False) == "chunked-mixed"


# --- defaults per engine ----------------------------------------------------------------------


def test_vllm06_default_is_the_calibrated_behaviour():
    """--engine vllm-0.6 without flags gives exactly the options the tool always used."""
    opts = EngineOptions(**fields("vllm-0.6"))
    legacy = EngineOptions()
    for f in ("block_size", "max_num_seqs", "max_num_batched_tokens", "chunked_prefill"):
        assert getattr(opts, f) == getattr(legacy, f), f
    assert opts.gpu_memory_utilization == legacy.gpu_memory_utilization
    assert opts.custom_all_reduce and opts.num_scheduler_steps == 1 and not opts.enforce_eager
    assert opts.prefix_caching is False


def test_vllm05_chunking_follows_max_model_len():
    long = fields("vllm-0.5", model_max_len=131072)
    assert long["chunked_prefill"] is True and long["max_num_batched_tokens"] == 512
    short = fields("vllm-0.5", model_max_len=8192)
    assert short["chunked_prefill"] is False and short["max_num_batched_tokens"] is None
    # --max-model-len overrides the model's own length
    assert fields("vllm-0.5", model_max_len=131072, max_model_len=4096)["chunked_prefill"] is False


def test_vllm_v1_defaults_depend_on_the_gpu():
    h = fields("vllm-v1", device=H100)
    assert (h["max_num_batched_tokens"], h["max_num_seqs"]) == (8192, 1024)
    a = fields("vllm-v1", device=A100)
    assert (a["max_num_batched_tokens"], a["max_num_seqs"]) == (2048, 256)
    assert h["chunked_prefill"] is True and h["prefix_caching"] is True
    # sequences never exceed the budget the user sets
    assert fields("vllm-v1", max_num_batched_tokens=512)["max_num_seqs"] == 512


def test_sglang_defaults():
    f = fields("sglang", tp=8)
    assert f["gpu_memory_utilization"] == 0.81
    assert fields("sglang")["gpu_memory_utilization"] == 0.88
    assert fields("sglang", tp=2)["gpu_memory_utilization"] == 0.87
    assert f["chunked_prefill"] is False  # prefill-only steps: the kernel's prefill-first mode
    assert f["engine_chunked_prefill"] is True
    assert f["unchunked_budget_floor"] == 8192
    assert f["prefill_chunk"] == 8192  # prompt tokens per prefill-only step (chunked_prefill_size)
    assert f["block_size"] == 1 and f["prefix_caching"] is True
    small = fields("sglang", device=("small", 16.0))
    assert small["unchunked_budget_floor"] == 4096  # chunk 2048, floor raised to max_num_seqs
    assert small["prefill_chunk"] == 2048
    off = fields("sglang", chunked_prefill=False, max_num_seqs=64)
    assert off["unchunked_budget_floor"] == 16384  # max_prefill_tokens
    assert off["prefill_chunk"] == 0  # prompts never split
    assert get_engine("sglang").admission_policy == ADMIT_TOKEN_RATIO


def test_trtllm_defaults():
    f = fields("trtllm")
    assert f["chunked_prefill"] is True and f["engine_chunked_prefill"] is False
    assert (f["max_num_batched_tokens"], f["max_num_seqs"], f["block_size"]) == (8192, 2048, 32)


def test_common_flags_are_recorded():
    f = fields(
        "vllm-0.6",
        enforce_eager=True,
        disable_custom_all_reduce=True,
        max_model_len=4096,
        prefix_caching=True,
    )
    assert f["enforce_eager"] and not f["custom_all_reduce"]
    assert f["max_model_len"] == 4096 and f["prefix_caching"] is True
    steps = fields("vllm-0.6", num_scheduler_steps=8)
    assert steps["num_scheduler_steps"] == 8 and steps["chunked_prefill"] is False


def test_budget_uses_floor_and_max_model_len():
    wl = static_workload(4, 3000, 100)
    base = EngineOptions(chunked_prefill=False)
    assert base.budget(wl) == 3100  # longest request
    assert dataclasses.replace(base, max_model_len=8192).budget(wl) == 8192
    assert dataclasses.replace(base, unchunked_budget_floor=8192).budget(wl) == 8192
    wl_long = static_workload(2, 20000, 10)
    assert dataclasses.replace(base, unchunked_budget_floor=8192).budget(wl_long) == 20010
    assert int(np.max(wl.prompt)) == 3000


# --- flag / engine compatibility -------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "given", "flag"),
    [
        ("sglang", dict(num_scheduler_steps=4), "--num-scheduler-steps"),
        ("trtllm", dict(num_scheduler_steps=2), "--num-scheduler-steps"),
        ("vllm-v1", dict(num_scheduler_steps=2), "--num-scheduler-steps"),
        ("vllm-0.5", dict(num_scheduler_steps=2), "--num-scheduler-steps"),
        ("vllm-v1", dict(chunked_prefill=False), "--no-chunked-prefill"),
    ],
)
def test_flag_the_engine_lacks_is_an_error(engine, given, flag):
    with pytest.raises(ApexError) as e:
        fields(engine, **given)
    msg = str(e.value)
    assert flag in msg and engine in msg and "\n" not in msg


def test_check_flags_accepts_own_flags():
    for p in ENGINES.values():
        check_flags(p, sorted(p.flags))


def test_unknown_engine_lists_names():
    with pytest.raises(ApexError) as e:
        get_engine("vllm-9")
    assert all(n in str(e.value) for n in ENGINE_NAMES)


def test_multi_step_with_explicit_chunked_prefill_is_refused():
    with pytest.raises(ApexError, match="chunked prefill"):
        fields("vllm-0.6", num_scheduler_steps=4, chunked_prefill=True)


def test_bad_values():
    with pytest.raises(ApexError, match="--num-scheduler-steps"):
        fields("vllm-0.6", num_scheduler_steps=0)
    with pytest.raises(ApexError, match="--max-model-len"):
        fields("vllm-0.6", max_model_len=0)


PLAN = ["plan", "--model", "llama-7b", "--num-gpus-per-node", "1", "--num-requests", "8",
        "--prompt-len", "64", "--output-len", "8", "--quiet"]  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        ["--engine", "sglang", "--num-scheduler-steps", "4"],
        ["--engine", "vllm-v1", "--no-chunked-prefill"],
        ["--engine", "nope"],
        ["--engine", "vllm-0.6", "--num-scheduler-steps", "4", "--chunked-prefill"],
        ["--max-model-len", "0"],
    ],
)
def test_cli_incompatible_flag_exits_2_with_one_line(extra, capsys):
    assert main([*PLAN, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_cli_help_lists_engines(capsys):
    assert main(["plan", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ENGINE_NAMES:
        assert name in out


def test_cli_json_names_engine_and_records_flags(tmp_path, capsys):
    js = tmp_path / "r.json"
    argv = [*PLAN, "--engine", "vllm-0.6", "--disable-cuda-graph", "--num-scheduler-steps", "8",
            "--enable-prefix-caching", "--json", str(js)]  # fmt: skip
    assert main(argv) == 0
    eng = orjson.loads(js.read_bytes())["engine"]
    assert eng["name"] == "vllm-0.6" and eng["version"] == "0.6.0"
    assert eng["enforce_eager"] is True and eng["num_scheduler_steps"] == 8
    assert eng["prefix_caching"] is True and eng["prefix_caching_simulated"] is True
    assert eng["chunked_prefill"] is False  # multi-step runs without chunked prefill in 0.6.0
    assert "vLLM 0.6" in capsys.readouterr().out


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_cli_plans_with_every_engine(engine, tmp_path):
    js = tmp_path / "r.json"
    assert main([*PLAN, "--engine", engine, "--json", str(js)]) == 0
    data = orjson.loads(js.read_bytes())
    assert data["engine"]["name"] == engine
    assert data["engine"]["version"] == ENGINES[engine].version
    assert data["best"]["ttft_mean_s"] > 0
