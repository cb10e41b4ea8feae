"""Schema of the bundled published measurements (apex_fast/data/published_measurements.csv)."""

from __future__ import annotations

import csv
import math

import pytest

from apex_fast.data import MEASURED_COLUMNS, published_measurements_path

PROFILES = {"vllm-0.5", "vllm-0.6", "vllm-v1", "sglang", "trtllm"}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with published_measurements_path().open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_row_names_source_engine_model_gpu(rows):
    assert len(rows) > 0
    for i, r in enumerate(rows):
        assert r["source_url"].startswith("https://"), i
        assert r["source_detail"], i
        assert r["engine"] in {"vllm", "sglang", "trtllm"}, i
        assert r["engine_version"], i
        assert r["engine_profile"] in PROFILES, i
        assert "/" in r["model_hf_id"], i
        assert r["gpu"], i


def test_every_row_has_a_measured_figure_and_numbers_parse(rows):
    for i, r in enumerate(rows):
        present = [c for c in MEASURED_COLUMNS if r[c] != ""]
        assert present, f"row {i} has no measured figure"
        for c in present:
            v = float(r[c])
            assert math.isfinite(v) and v > 0, (i, c)


def test_parallelism_is_consistent(rows):
    for i, r in enumerate(rows):
        n, tp = int(r["num_gpus"]), int(r["tp"])
        pp = int(r["pp"] or 1)
        assert tp >= 1 and pp >= 1 and n >= 1, i
        # a server spans tp*pp GPUs; DP attention (SGLang) runs inside the TP group
        assert n == tp * pp, i


def test_workload_is_described(rows):
    for i, r in enumerate(rows):
        assert r["dataset"], i
        # a run is described by its request count or by its client concurrency
        assert r["num_prompts"] or r["max_concurrency"], i
        if r["num_prompts"]:
            assert int(r["num_prompts"]) > 0, i
        rate = r["request_rate"]
        assert rate == "inf" or float(rate) > 0, i
        if r["input_len"]:
            assert int(r["input_len"]) > 0 and int(r["output_len"]) > 0, i


def test_loader_parses_numbers_and_filters_by_engine():
    from apex_fast.data import published_measurements
    from apex_fast.engines import ENGINE_NAMES

    rows = published_measurements()
    assert {r["engine_profile"] for r in rows} <= set(ENGINE_NAMES)
    v1 = published_measurements("vllm-v1")
    assert v1 and all(r["engine_profile"] == "vllm-v1" for r in v1)
    assert len(v1) < len(rows)
    # a row read from the vLLM team's saved result (DGX H200, 1000/2000 tokens)
    hit = [
        r
        for r in v1
        if r["input_len"] == 1000
        and r["output_len"] == 2000
        and r["ep"] is None
        and "DGX" in r["notes"]
    ]
    assert len(hit) == 1 and hit[0]["output_tok_s"] == 1145.36


def test_every_row_model_and_gpu_are_bundled(rows):
    """The replay loads each row's model (quantised checkpoints through their base model) and
    GPU; a row naming one the tool does not bundle could not be replayed."""
    from apex_fast.hardware.devices import get_device
    from apex_fast.models import load_model
    from apex_fast.validation.published import _base_model_id

    for r in rows:
        load_model(_base_model_id(r["model_hf_id"]))
        get_device(r["gpu"])
    assert _base_model_id("Qwen/Qwen3-32B-FP8") == "Qwen/Qwen3-32B"
    assert (
        _base_model_id("meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    )
    assert _base_model_id("nvidia/Llama-3.1-8B-Instruct-FP8") == "meta-llama/Llama-3.1-8B-Instruct"


LENGTH_KINDS = {"fixed", "sglang-random", "dataset", "sonnet"}


def test_lengths_column_matches_the_row(rows):
    for i, r in enumerate(rows):
        kind = r["lengths"]
        assert kind in LENGTH_KINDS, i
        if kind in ("fixed", "sonnet"):
            assert r["input_len"] and r["output_len"], i
        if kind == "sglang-random":
            # a seeded uniform draw is replayed only against the totals the client printed
            assert r["input_len"] and r["output_len"] and r["client_seed"], i
            assert r["total_input_tokens"] and r["total_output_tokens"], i
            assert 0.0 <= float(r["random_range_ratio"] or 0) <= 1.0, i
        if kind == "dataset":
            assert not r["input_len"] and not r["output_len"], i
        if r["total_input_tokens"]:
            assert int(r["total_input_tokens"]) > 0 and int(r["total_output_tokens"]) > 0, i


def test_sglang_random_rows_reproduce_the_printed_totals():
    """Each row marked sglang-random is replayed with the client's own draw; the draw must give
    exactly the token totals the source printed, and a different seed must not."""
    from apex_fast.data import published_measurements
    from apex_fast.validation.published import _lengths

    rows = [r for r in published_measurements() if r["lengths"] == "sglang-random"]
    assert len(rows) >= 6
    for r in rows:
        n = int(r["num_prompts"])
        got = _lengths(r, n)
        assert not isinstance(got, str), got
        p, o, approx = got
        assert not approx and p.size == o.size == n
        assert int(p.sum()) == r["total_input_tokens"] and int(o.sum()) == r["total_output_tokens"]
        assert 1 <= p.min() and p.max() <= r["input_len"] and o.max() <= r["output_len"]
        other = _lengths({**r, "client_seed": r["client_seed"] + 1}, n)
        assert other == "random draw does not reproduce the printed token totals"


def test_dataset_rows_use_the_printed_mean_lengths_and_say_so():
    from apex_fast.validation.published import _lengths, _workload

    row = {
        "lengths": "dataset",
        "input_len": None,
        "output_len": None,
        "num_prompts": 100.0,
        "max_concurrency": 4.0,
        "request_rate": "inf",
        "total_input_tokens": 23260.0,
        "total_output_tokens": 22061.0,
    }
    wl, approx = _workload(row)
    assert approx and wl.max_concurrency == 4 and wl.prompt.size == 100
    assert set(wl.prompt.tolist()) == {233} and set(wl.output.tolist()) == {221}
    assert wl.name.startswith("mean 233/221")
    # without the printed totals the row cannot be rebuilt
    bare = {**row, "total_input_tokens": None, "total_output_tokens": None}
    assert _lengths(bare, 100) == "lengths come from a dataset"
    # an empty lengths cell keeps the old meaning: fixed when input_len is given
    fixed = {**bare, "lengths": "", "input_len": 128.0, "output_len": 4.0}
    p, o, approx = _lengths(fixed, 3)
    assert not approx and p.tolist() == [128] * 3 and o.tolist() == [4] * 3


def test_approximated_rows_are_summarised_on_their_own_line():
    from apex_fast.validation.published import APPROX_LENGTHS, per_engine_summary

    rows = [
        {"engine": "sglang", "class": "dense", "ttft_mean_ms_err": 0.1},
        {"engine": "sglang", "class": f"dense, {APPROX_LENGTHS}", "ttft_mean_ms_err": 0.5},
        {"engine": "sglang", "skipped": "lengths come from a dataset"},
    ]
    summ = per_engine_summary(rows)
    assert summ["sglang (dense)"]["ttft_mae"] == pytest.approx(0.1)
    assert summ[f"sglang (dense, {APPROX_LENGTHS})"]["ttft_mae"] == pytest.approx(0.5)
    assert summ["sglang (not replayed)"]["skipped"] == {"lengths come from a dataset": 1}


def test_offline_rows_compare_request_throughput():
    """Offline benchmark_throughput rows print requests/s but no output tokens/s; their
    throughput error is the requests/s error."""
    from apex_fast.data import published_measurements
    from apex_fast.validation.published import per_engine_summary, replay_row

    offline = [
        r
        for r in published_measurements("vllm-0.6")
        if r["output_tok_s"] is None and r["request_s"] is not None
    ]
    assert len(offline) >= 8
    row = min(offline, key=lambda r: r["num_prompts"] * (r["input_len"] + r["output_len"]))
    out = replay_row(row)
    assert "skipped" not in out and "output_tok_s_err" not in out
    assert out["request_s_meas"] == row["request_s"] and out["request_s_pred"] > 0
    summ = per_engine_summary([out])
    assert summ["vllm-0.6 (dense)"]["throughput_n"] == 1


def test_fixed_rows_with_totals_agree_with_their_lengths_and_rates(rows):
    """A fixed-length row whose client printed its token totals: the totals are within 5% of
    prompts x lengths (the client counts the random prompt without the chat template and may
    re-tokenise a few tokens away; a few requests may stop at end-of-sequence), and output
    tokens/s / requests/s is the mean output per request, up to the printed rounding (two
    decimals). A mistyped cell breaks one of these."""
    checked = 0
    for i, r in enumerate(rows):
        if r["lengths"] != "fixed" or not r["total_output_tokens"]:
            continue
        n = int(r["num_prompts"])
        tin, tout = int(r["total_input_tokens"]), int(r["total_output_tokens"])
        assert 0.95 <= tout / (n * int(r["output_len"])) <= 1.0, i
        assert 0.95 <= tin / (n * int(r["input_len"])) <= 1.05, i
        if r["output_tok_s"] and r["request_s"]:
            per_req = tout / n
            want = float(r["request_s"]) * per_req
            assert abs(float(r["output_tok_s"]) - want) <= 0.005 * per_req + 0.005, i
        checked += 1
    assert checked >= 8  # the GPUStack Qwen3-14B rows print their totals


def test_sonnet_rows_use_the_printed_mean_prompt_and_the_stated_output():
    """vLLM's sonnet sampler: prompts a few tokens around their mean, max_tokens outputs. With
    the printed totals the replay takes the mean prompt (and the mean output only when the output
    total says requests stopped early); without totals the stated lengths."""
    from apex_fast.validation.published import _lengths, _workload

    row = {
        "lengths": "sonnet",
        "input_len": 1024.0,
        "output_len": 512.0,
        "num_prompts": 200.0,
        "max_concurrency": None,
        "request_rate": "10",
        "total_input_tokens": 191053.0,
        "total_output_tokens": 102400.0,
    }
    p, o, approx = _lengths(row, 200)
    assert not approx and set(p.tolist()) == {955} and set(o.tolist()) == {512}
    wl, approx = _workload(row)
    assert not approx and wl.prompt.size == 200 and wl.name.startswith("955/512 at 10")
    short = {**row, "total_output_tokens": 90000.0}
    assert set(_lengths(short, 4)[1].tolist()) == {450}
    bare = {**row, "total_input_tokens": None, "total_output_tokens": None}
    p, o, _ = _lengths(bare, 3)
    assert p.tolist() == [1024] * 3 and o.tolist() == [512] * 3
    assert _lengths({**bare, "input_len": None}, 3) == "sonnet lengths not given"


def test_shorter_context_checkpoint_replays_with_its_own_context():
    """Meta-Llama-3-8B is replayed as the bundled Llama-3.1-8B with its own 8192 positions: the
    context decides vLLM V0's chunking default (on above 32768) and its unchunked step budget."""
    from apex_fast.hardware.devices import get_device
    from apex_fast.models import load_model
    from apex_fast.validation.published import _base_model_id, row_model, row_plan

    hf = "meta-llama/Meta-Llama-3-8B-Instruct"
    assert load_model(_base_model_id(hf)).max_position_embeddings == 131072
    assert row_model(hf).max_position_embeddings == 8192
    assert row_model("meta-llama/Llama-3.1-8B-Instruct").max_position_embeddings == 131072
    row = {
        "engine_profile": "vllm-0.6",
        "engine_flags": "",
        "source_detail": "serving run",
        "tp": 1.0,
        "ep": None,
        "weight_dtype": "bf16",
        "kv_dtype": "bf16",
        "model_hf_id": hf,
    }
    device = get_device("H100-SXM-80GB")
    _, _, own = row_plan(row, row_model(hf), device)
    _, _, long = row_plan(row, load_model(_base_model_id(hf)), device)
    assert own.chunked_prefill is False and long.chunked_prefill is True
    assert long.max_num_batched_tokens == 512


def test_vllm_05_rows_replay_with_ttft_and_tpot():
    """The vLLM 0.5 rows (PR 6883's `main` column: 0.5.x with the API server in the engine's
    process) replay with the vllm-0.5 profile and compare TTFT and TPOT."""
    from apex_fast.data import published_measurements
    from apex_fast.validation.published import per_engine_summary, replay_row

    rows = published_measurements("vllm-0.5")
    assert rows and all(r["engine_version"].startswith("0.5") for r in rows)
    out = [replay_row(r) for r in rows]
    summ = per_engine_summary(out)["vllm-0.5 (dense)"]
    assert summ["replayed"] == len(rows)
    assert summ["ttft_n"] >= 1 and summ["tpot_itl_n"] >= 1
