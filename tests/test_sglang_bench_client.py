"""SGLang bench_serving's radix-cache state at the start of a run (validation/published.py):
the warm-up request and earlier runs of the same client draw on one server."""

from __future__ import annotations

import numpy as np

from apex_fast.data import published_measurements
from apex_fast.validation.published import (
    ONE_SERVER_SOURCES,
    _sglang_random_lengths,
    sglang_bench_cached,
)

BIG = 10**12  # a KV pool nothing is evicted from


def _cookbook(input_len: int, num_prompts: int) -> dict:
    rows = [
        r
        for r in published_measurements("sglang")
        if r["source_url"] in ONE_SERVER_SOURCES
        and r["input_len"] == input_len
        and r["num_prompts"] == num_prompts
    ]
    assert len(rows) == 1
    return rows[0]


def _lens(row: dict) -> tuple[np.ndarray, np.ndarray]:
    return _sglang_random_lengths(row, int(row["num_prompts"]))


def test_warmup_caches_request_0_only_on_a_fresh_server():
    """The first run of the page: the warm-up request sent request 0's prompt, nothing else is
    cached; SGLang still computes the last prompt token."""
    row = _cookbook(1000, 10)
    p, o = _lens(row)
    cached = sglang_bench_cached(row, p, o, BIG)
    assert cached[0] == p[0] - 1
    assert not cached[1:].any()


def test_a_row_of_another_source_has_only_the_warmup_hit():
    row = {**_cookbook(1000, 500), "source_url": "https://example.org/elsewhere"}
    p, o = _lens(row)
    cached = sglang_bench_cached(row, p, o, BIG)
    assert cached[0] == p[0] - 1 and not cached[1:].any()


def test_earlier_run_with_the_same_draw_caches_its_prompts():
    """Same seed and input length: request i of the 80-prompt run is request i of the
    500-prompt run (the first draws of one generator), so its whole prompt is cached."""
    row = _cookbook(1000, 500)
    p, o = _lens(row)
    p80, _ = _lens(_cookbook(1000, 80))
    assert np.array_equal(p[:80], p80)  # the client's draw is a prefix of the longer one
    cached = sglang_bench_cached(row, p, o, BIG)
    assert np.array_equal(cached[:80], p[:80] - 1)
    assert not cached[80:].any()


def test_other_input_length_shares_the_shorter_cut_of_the_same_conversation():
    """The 8000-token runs cut the same ShareGPT conversations longer: request i shares
    min(L_i, L'_i) tokens with request i of the earlier 1000-token runs."""
    row = _cookbook(8000, 10)
    p, o = _lens(row)
    p1000, _ = _lens(_cookbook(1000, 500))
    cached = sglang_bench_cached(row, p, o, BIG)
    want = np.minimum(p, p1000[:10])
    want[0] = p[0]
    assert np.array_equal(cached, np.minimum(want, p - 1))


def test_a_full_pool_evicts_the_earlier_runs():
    """With a KV pool too small for the runs in between, the earlier prompts are gone (LRU);
    the warm-up's prompt, sent just before the run, stays."""
    row = _cookbook(1000, 500)
    p, o = _lens(row)
    cached = sglang_bench_cached(row, p, o, 0)
    assert cached[0] == p[0] - 1 and not cached[1:].any()
    # a pool that holds the earlier run but fills during this one: early requests hit, and no
    # request hits once the tokens of this run's earlier requests exceed the pool
    cap = int(p[:40].sum() + o[:40].sum())
    cached = sglang_bench_cached(row, p, o, cap)
    assert np.array_equal(cached[:40], p[:40] - 1)
    assert not cached[40:].any()


def test_replay_gives_the_cached_tokens_to_the_simulation():
    from apex_fast.validation.published import replay_row

    row = _cookbook(1000, 500)
    p, _ = _lens(row)
    out = replay_row(row)
    assert "skipped" not in out
    assert out["cached_prompt_tokens"] == int((p[:80] - 1).sum())


def test_one_server_rows_keep_the_page_order():
    """The replay takes the CSV order of a one-server source as the order of its runs: the
    cookbook's rows stay in the page's order (each scenario low, medium, high concurrency;
    the 1000-token scenario first)."""
    rows = [r for r in published_measurements("sglang") if r["source_url"] in ONE_SERVER_SOURCES]
    got = [(int(r["input_len"]), int(r["max_concurrency"]), int(r["num_prompts"])) for r in rows]
    assert got == [
        (1000, 1, 10),
        (1000, 16, 80),
        (1000, 100, 500),
        (8000, 1, 10),
        (8000, 16, 80),
        (8000, 64, 320),
    ]
