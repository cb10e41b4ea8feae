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
    assert _base_model_id("nvidia/Llama-3.1-8B-Instruct-FP8") == "meta-llama/Llama-3.1-8B-Instruct"
