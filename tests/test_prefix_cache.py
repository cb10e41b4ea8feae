"""Prefix caching end to end: the multi-turn trace generator, hash ids through the trace
readers, the engine's block keys, DP routing, and the reported hit rate (docs/scheduler.md,
"Prefix cache"; docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from common import assert_bad, run

from apex_fast.cli import main
from apex_fast.sim.prefix import block_keys, prefix_split
from apex_fast.workload import Workload, load_trace
from apex_fast.workload.multiturn import multiturn_trace
from apex_fast.workload.writers import write_multiturn

BASE = ["plan", "--model", "llama-7b", "--num-gpus-per-node", "1", "--tp", "1", "--quiet"]


def _multiturn_file(tmp_path: Path, n: int = 200, rate: float = 4.0, think: float = 5.0) -> Path:
    out = tmp_path / "mt.jsonl"
    code = main(
        ["trace", "--kind", "multiturn", "--rate", str(rate), "--num-requests", str(n),
         "--seed", "3", "--think-time", str(think), "--turns", "4", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return out


def _plan_json(capsys, tmp_path: Path, *args: str) -> dict:
    js = tmp_path / "r.json"
    code, _, err = run(capsys, *BASE, *args, "--json", str(js))
    assert code == 0, err
    return orjson.loads(js.read_bytes())


# --------------------------------------------------------------------------- generator


def test_multiturn_turns_carry_the_conversation_so_far() -> None:
    tr = multiturn_trace(rate=3.0, num_requests=400, seed=5, turns=3.0, think_time=10.0)
    assert tr.arrival.size == 400 and (np.diff(tr.arrival) >= 0).all()
    off = tr.hash_offsets
    H = tr.hash_block
    checked = 0
    for c in np.unique(tr.conversation):
        idx = np.flatnonzero(tr.conversation == c)  # in arrival order = turn order
        for a, b in zip(idx[:-1], idx[1:], strict=True):
            # the next turn's prompt = this prompt + this answer + a new message (>= 2 tokens)
            assert tr.prompt[b] >= tr.prompt[a] + tr.output[a] + 2
            full = int(tr.prompt[a]) // H
            ia = tr.hash_ids[off[a] : off[a + 1]]
            ib = tr.hash_ids[off[b] : off[b + 1]]
            assert np.array_equal(ia[:full], ib[:full])  # the shared prefix has the same ids
            if tr.prompt[a] % H:
                assert ia[full] not in ib  # a partial block is not the later turn's full one
            checked += 1
    assert checked > 100
    # ids per request: ceil(prompt / H); ids of different conversations never collide
    assert np.array_equal(np.diff(off), -(-tr.prompt // H))
    owner: dict[int, int] = {}
    for i in range(400):
        for h in tr.hash_ids[off[i] : off[i + 1]].tolist():
            assert owner.setdefault(h, int(tr.conversation[i])) == tr.conversation[i]
    # mean turns per conversation near the asked 3 (geometric, 400 requests)
    conv = np.bincount(tr.conversation)
    assert 2.3 < conv[:-1].mean() < 3.8


def test_multiturn_is_deterministic_and_readable(tmp_path: Path) -> None:
    a = multiturn_trace(2.0, 50, seed=1)
    b = multiturn_trace(2.0, 50, seed=1)
    assert np.array_equal(a.hash_ids, b.hash_ids) and np.array_equal(a.arrival, b.arrival)
    write_multiturn(tmp_path / "m.jsonl", a)
    w = load_trace(tmp_path / "m.jsonl")
    assert w.hash_block == a.hash_block == 16
    assert np.array_equal(w.prompt, a.prompt) and np.array_equal(w.output, a.output)
    assert np.array_equal(w.hash_ids, a.hash_ids)
    assert np.array_equal(w.hash_offsets, a.hash_offsets)


def test_trace_reader_reorders_hash_ids_with_the_rows(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 30, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]},
        {"timestamp": 10, "input_length": 100, "output_length": 5},
        {"timestamp": 20, "input_length": 1100, "output_length": 5, "hash_ids": [1, 2, 3]},
    ]
    p.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    w = load_trace(p)
    assert list(w.prompt) == [100, 1100, 600]
    assert list(w.hash_ids) == [1, 2, 3, 1, 2] and list(w.hash_offsets) == [0, 0, 3, 5]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"hash_ids": [1, -2]}, "'hash_ids' must be a list of whole numbers"),
        ({"hash_ids": "abc"}, "'hash_ids' must be a list of whole numbers"),
        ({"hash_ids": [1, 2.5]}, "'hash_ids' must be a list of whole numbers"),
        ({"hash_ids": [1 << 32]}, "'hash_ids' must be a list of whole numbers"),
        ({"hash_ids": [1], "hash_block_size": 0}, "'hash_block_size' must be a positive"),
        ({"hash_ids": [1], "hash_block_size": 1 << 21}, "'hash_block_size' must be a positive"),
    ],
)
def test_bad_hash_ids_in_a_trace(capsys, tmp_path: Path, extra: dict, needle: str) -> None:
    p = tmp_path / "t.jsonl"
    row = {"StartTimeOffset": 0, "ContextTokens": 40, "GeneratedTokens": 4}
    p.write_bytes(orjson.dumps({**row, **extra}) + b"\n")
    assert_bad(capsys, *BASE, "--trace-file", str(p), needle=needle)


def test_hash_block_size_must_not_change_within_a_file(capsys, tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    row = {"StartTimeOffset": 0, "ContextTokens": 40, "GeneratedTokens": 4, "hash_ids": [1]}
    p.write_bytes(
        orjson.dumps({**row, "hash_block_size": 16})
        + b"\n"
        + orjson.dumps({**row, "hash_block_size": 32})
        + b"\n"
    )
    assert_bad(capsys, *BASE, "--trace-file", str(p), needle="differs from 16")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kind", "multiturn", "--turns", "0.5"], "--turns must be >= 1"),
        (["--kind", "multiturn", "--turns", "nan"], "--turns must be"),
        (
            ["--kind", "multiturn", "--think-time", "-1"],
            "--think-time must be >= 0",
        ),
        (
            ["--kind", "multiturn", "--hash-block-size", "0"],
            "--hash-block-size must be",
        ),
        (["--kind", "lmsys", "--turns", "3"], "--turns applies to --kind multiturn"),
        (["--kind", "fixed", "--think-time", "3"], "--think-time applies to --kind multiturn"),
        (["--kind", "lmsys", "--hash-block-size", "8"], "--hash-block-size applies to --kind"),
        (["--kind", "multiturn", "--random-range-ratio", "0.3"], "--random-range-ratio"),
    ],
)
def test_multiturn_bad_input(capsys, tmp_path: Path, args: list[str], needle: str) -> None:
    base = ["trace", "--rate", "2", "--num-requests", "5", "--out", str(tmp_path / "t.jsonl")]
    assert_bad(capsys, *base, *args, needle=needle)


# --------------------------------------------------------------------------- block keys


def _wl(prompt: list[int], ids: list[list[int]], hash_block: int) -> Workload:
    n = len(prompt)
    off = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
    return Workload(
        arrival=np.zeros(n),
        prompt=np.asarray(prompt, np.int64),
        output=np.ones(n, np.int64),
        hash_ids=np.asarray([h for x in ids for h in x], np.int64),
        hash_offsets=off,
        hash_block=hash_block,
    )


def test_block_keys_map_mooncake_blocks_onto_engine_blocks() -> None:
    """512-token hash blocks, engine blocks of 16: prompt 700 with ids [7, 9] has 43 full
    engine blocks; the first 32 lie in hash block 7, the next 11 in hash block 9; the key of
    block j is (id of the hash block holding its last token, that token's offset)."""
    wl = _wl([700, 700, 300], [[7, 9], [7, 8], [7]], 512)
    keys, off = block_keys(wl, np.arange(3), 16)
    assert list(off) == [0, 43, 86, 104]
    k0 = keys[:43]
    assert k0[0] == 7 * 512 + 15 and k0[31] == 7 * 512 + 511 and k0[32] == 9 * 512 + 15
    assert np.array_equal(keys[43 : 43 + 32], k0[:32])  # same first hash block: same keys
    assert not set(keys[43 + 32 : 86]) & set(k0[32:])  # different second block: none shared
    assert np.array_equal(keys[86:], k0[:18])  # 300 tokens: 18 full engine blocks


def test_block_keys_with_engine_blocks_larger_than_hash_blocks() -> None:
    """Hash blocks of 16, engine blocks of 32: engine block j is keyed by hash block 2j + 1;
    fewer ids than the prompt needs end the keys where the ids end."""
    wl = _wl([100, 100], [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3]], 16)
    keys, off = block_keys(wl, np.arange(2), 32)
    assert list(off) == [0, 3, 4]  # 100 // 32 = 3 blocks; 3 ids cover 48 tokens: 1 block
    assert list(keys[:3]) == [2 * 16 + 15, 4 * 16 + 15, 6 * 16 + 15]
    assert keys[3] == keys[0]


def test_prefix_router_keeps_conversations_together() -> None:
    tr = multiturn_trace(4.0, 300, seed=2, turns=4.0, think_time=5.0)
    wl = Workload(
        tr.arrival, tr.prompt, tr.output, hash_ids=tr.hash_ids,
        hash_offsets=tr.hash_offsets, hash_block=tr.hash_block,
    )  # fmt: skip
    streams, tags = prefix_split(wl, 4, 1, 16)
    assert (tags == 0).all()
    assert sorted(np.concatenate(streams).tolist()) == list(range(300))
    where = np.empty(300, np.int64)
    for s, ids in enumerate(streams):
        where[ids] = s
    for c in np.unique(tr.conversation):  # every later turn follows the first (>= 1 block)
        idx = np.flatnonzero(tr.conversation == c)
        full = tr.prompt[idx[0]] >= 16
        assert not full or (where[idx] == where[idx[0]]).all()
    loads = np.bincount(where, minlength=4)
    assert loads.min() > 40  # new conversations spread by load


# --------------------------------------------------------------------------- end to end


def test_multiturn_prefix_caching_hits_and_lowers_ttft(capsys, tmp_path: Path) -> None:
    trace = _multiturn_file(tmp_path)
    req = tmp_path / "req.parquet"
    on = _plan_json(capsys, tmp_path, "--trace-file", str(trace), "--enable-prefix-caching",
                    "--requests-out", str(req))  # fmt: skip
    off = _plan_json(capsys, tmp_path, "--trace-file", str(trace), "--no-enable-prefix-caching")
    b_on, b_off = on["best"], off["best"]
    assert b_on["prefix_cache"] == "on" and b_off["prefix_cache"] == "off"
    assert 0.2 < b_on["prefix_cache_hit_rate"] < 1.0
    assert b_off["prefix_cache_hit_rate"] == 0.0 and b_off["cached_prompt_tokens"] == 0
    assert b_on["ttft_mean_s"] < b_off["ttft_mean_s"]
    df = pl.read_parquet(req)
    cached = df["cached_prompt_tokens"].to_numpy()
    assert cached.sum() == b_on["cached_prompt_tokens"] > 0
    assert (cached < df["prompt_tokens"].to_numpy()).all() and (cached % 16 == 0).all()
    assert on["engine"]["prefix_caching_simulated"] is True


def test_prefix_cache_hit_rate_in_the_text_report(capsys, tmp_path: Path) -> None:
    trace = _multiturn_file(tmp_path, n=60)
    code, out, err = run(capsys, *BASE, "--trace-file", str(trace), "--enable-prefix-caching")
    assert code == 0, err
    assert "Prefix cache hit rate" in out and "Cached prompt tokens" in out
    code, out, err = run(capsys, *BASE, "--trace-file", str(trace), "--no-enable-prefix-caching")
    assert code == 0 and "Prefix cache hit rate" not in out


def test_no_shared_prefixes_changes_nothing(capsys, tmp_path: Path) -> None:
    """Every request has ids of its own (and a trace without ids): prefix caching on gives the
    same report, number for number, as off."""
    rng = np.random.default_rng(0)
    p = tmp_path / "u.jsonl"
    nxt = 0
    lines = []
    for i in range(80):
        n_in = int(rng.integers(20, 900))
        ids = list(range(nxt, nxt + -(-n_in // 512)))
        nxt += len(ids)
        lines.append(orjson.dumps({"timestamp": 250 * i, "input_length": n_in,
                                   "output_length": int(rng.integers(1, 200)), "hash_ids": ids}))  # fmt: skip
    p.write_bytes(b"\n".join(lines) + b"\n")
    on = _plan_json(capsys, tmp_path, "--trace-file", str(p), "--enable-prefix-caching")["best"]
    off = _plan_json(capsys, tmp_path, "--trace-file", str(p), "--no-enable-prefix-caching")
    off = off["best"]
    assert on["preemptions"] == 0 and on["prefix_cache_hit_rate"] == 0.0
    for k in ("prefix_cache", "prefix_cache_hit_rate", "cached_prompt_tokens"):
        on.pop(k), off.pop(k)
    assert on == off
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(f"{{\"StartTimeOffset\": {i * 10**8}, \"ContextTokens\": {50 + i}, "
                             f"\"GeneratedTokens\": 9}}\n" for i in range(30)))  # fmt: skip
    a = _plan_json(capsys, tmp_path, "--trace-file", str(plain), "--enable-prefix-caching")
    b = _plan_json(capsys, tmp_path, "--trace-file", str(plain), "--no-enable-prefix-caching")
    a, b = a["best"], b["best"]
    assert a.pop("prefix_cache") == "on" and b.pop("prefix_cache") == "off"
    assert a == b


def test_prefix_router_beats_round_robin_on_multiturn(capsys, tmp_path: Path) -> None:
    trace = _multiturn_file(tmp_path, n=240)
    args = ["plan", "--model", "llama-7b", "--num-gpus-per-node", "4", "--tp", "1", "--dp", "4",
            "--quiet", "--trace-file", str(trace), "--enable-prefix-caching"]  # fmt: skip
    rates = {}
    for router in ("round-robin", "prefix"):
        js = tmp_path / f"{router}.json"
        code, _, err = run(capsys, *args, "--router", router, "--json", str(js))
        assert code == 0, err
        data = orjson.loads(js.read_bytes())
        assert data["engine"]["router"] == router
        rates[router] = data["best"]["prefix_cache_hit_rate"]
    assert rates["prefix"] > rates["round-robin"] + 0.1


def test_router_bad_input(capsys, tmp_path: Path) -> None:
    assert_bad(capsys, *BASE, "--num-requests", "4", "--router", "random",
               needle="--router: 'random' is not one of")  # fmt: skip
    assert_bad(capsys, *BASE, "--num-requests", "4", "--router", "prefix",
               "--max-concurrency", "2", needle="--router prefix is not modelled with")  # fmt: skip


def test_attention_copies_keep_caches_of_their_own() -> None:
    """Keys are tagged with the attention copy: two requests with the same prompt share keys
    only on the same copy; the prefix router spreads over streams x copies."""
    wl = _wl([64, 64, 64], [[1, 2, 3, 4]] * 3, 16)
    copy = np.array([0, 1, 0])
    keys, off = block_keys(wl, np.arange(3), 16, copy, 2)
    k = [keys[off[i] : off[i + 1]] for i in range(3)]
    assert np.array_equal(k[0], k[2]) and not set(k[0]) & set(k[1])
    tr = multiturn_trace(4.0, 200, seed=2, turns=4.0, think_time=5.0)
    wl = Workload(
        tr.arrival, tr.prompt, tr.output, hash_ids=tr.hash_ids,
        hash_offsets=tr.hash_offsets, hash_block=tr.hash_block,
    )  # fmt: skip
    streams, tags = prefix_split(wl, 2, 1, 16, copies=2)
    assert len(streams) == 2 and set(tags.tolist()) == {0, 1}
    for c in np.unique(tr.conversation):  # a conversation stays on one stream and copy
        idx = np.flatnonzero(tr.conversation == c)
        if tr.prompt[idx[0]] >= 16:
            unit = {(int(np.flatnonzero([i in s for s in streams])[0]), int(tags[i])) for i in idx}
            assert len(unit) == 1
