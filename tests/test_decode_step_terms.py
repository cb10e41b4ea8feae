"""bench/decode_step_terms.py: the decode-step terms of the published SGLang A100 TP8 rows."""

from __future__ import annotations

import numpy as np
import pytest
from common import bench_script

from apex_fast.data import published_measurements


def _script():
    return bench_script("decode_step_terms")


def test_mean_decode_context_closed_form():
    mod = _script()
    # one request, one output token: decoded at context prompt + 1
    assert mod.mean_decode_context(np.array([10]), np.array([1])) == pytest.approx(11.0)
    # 2 tokens at 11, 12 and 4 tokens at 21..24: (23 + 90) / 6
    got = mod.mean_decode_context(np.array([10, 20]), np.array([2, 4]))
    assert got == pytest.approx(113.0 / 6.0)


def test_unknown_rows_are_a_usage_error(capsys):
    mod = _script()
    assert mod.main(["--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_terms_add_up_and_grow_with_batch_and_context():
    mod = _script()
    rows = [
        r
        for r in published_measurements("sglang")
        if r["gpu"] == "A100-SXM-80GB" and "Llama-3.1-70B" in r["model_hf_id"]
    ]
    by = {(int(r["input_len"]), int(r["max_concurrency"])): mod.step_terms(r) for r in rows}
    for t in by.values():
        assert t["model"] == pytest.approx(sum(t[k] for k in mod.TERMS) + t["other"])
    # the same clients at a longer context read more KV, nothing else changes
    short, long_ = by[(1000, 16)], by[(8000, 16)]
    assert long_["kv"] > 4 * short["kv"]
    for k in ("gemm+attn", "ffn", "elem", "allreduce", "lm+sample", "host"):
        assert long_[k] == pytest.approx(short[k])
    # more clients: every batch-dependent term grows
    one, many = by[(1000, 1)], by[(1000, 100)]
    for k in ("gemm+attn", "ffn", "elem", "allreduce", "lm+sample"):
        assert many[k] > one[k]
