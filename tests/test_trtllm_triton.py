"""TensorRT-LLM rows served by Triton's tensorrtllm_backend before 1.0 take that backend's
defaults (apex_fast/engines/trtllm.py TRITON_BACKEND_014, apex_fast/validation/published.py)."""

from __future__ import annotations

from apex_fast.data import published_measurements
from apex_fast.engines.trtllm import TRITON_BACKEND_014, TRTLLM, triton_backend_defaults
from apex_fast.hardware.devices import get_device
from apex_fast.validation.published import row_model, row_plan

TRITON = "Triton tensorrtllm_backend (TensorRT engine)"


def test_triton_defaults_only_for_the_tensorrt_backend_before_1_0() -> None:
    assert triton_backend_defaults("0.14.0", TRITON) is TRITON_BACKEND_014
    assert triton_backend_defaults("0.15.0", "triton ensemble") is TRITON_BACKEND_014
    # the PyTorch backend releases, NIM containers and other front ends keep the profile
    assert triton_backend_defaults("1.0 (docs edition)", TRITON) is None
    assert triton_backend_defaults("1.2.0rc1", TRITON) is None
    assert triton_backend_defaults("NIM 1.8.0 (container version)", TRITON) is None
    assert triton_backend_defaults("0.14.0", "trtllm-serve --backend pytorch") is None
    assert triton_backend_defaults("main @ 2025-04-15 (source build)", TRITON) is None


def test_triton_backend_defaults_differ_from_the_pytorch_profile_where_sourced() -> None:
    t = TRITON_BACKEND_014
    # block reuse off at 0.14 (on in the 1.0 LLM API), no CUDA graphs, no host overlap
    assert TRTLLM.prefix_caching_default and not t.kv_block_reuse
    assert TRTLLM.cuda_graphs_default and not t.cuda_graphs
    assert TRTLLM.overlap_scheduler_default and not t.host_overlap
    # the same scheduler policy, chunking default and KV fraction as the profile
    assert t.scheduler_policy == "guaranteed_no_evict"
    assert t.chunked_context == TRTLLM.chunked_prefill_default
    assert t.kv_cache_free_gpu_mem_fraction == TRTLLM.memory_fraction(1)
    assert all(s.startswith("https://github.com/") for s in t.sources)


def _first(pred) -> dict:  # noqa: ANN001 - a row predicate
    return next(r for r in published_measurements("trtllm") if pred(r))


def test_replay_applies_the_backend_defaults_to_triton_rows_only() -> None:
    triton = _first(lambda r: r["engine_version"] == "0.14.0")
    bench = _first(lambda r: r["engine_version"].startswith("1.0"))
    for row, reuse in ((triton, False), (bench, True)):
        built = row_plan(row, row_model(row["model_hf_id"]), get_device(row["gpu"]))
        assert not isinstance(built, str)
        _, _, opts = built
        assert opts.prefix_caching is reuse
        assert opts.engine_chunked_prefill is False
        assert opts.gpu_memory_utilization == 0.9
