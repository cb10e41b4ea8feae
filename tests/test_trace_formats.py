"""Trace formats users have (Mooncake, vLLM benchmark results, Azure CSV), rows out of time
order, empty completions, bounded reads, and the streamed trace writer."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import orjson
import pytest

from apex_fast.errors import ApexError
from apex_fast.workload import MAX_LINE_BYTES, WorkloadOptions, build_workload, load_trace
from apex_fast.workload.generators import generate
from apex_fast.workload.writers import write_trace


def _jsonl(tmp_path: Path, objs: list[dict], name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs))
    return p


def test_mooncake_trace(tmp_path: Path) -> None:
    p = _jsonl(
        tmp_path,
        [
            {"timestamp": 0, "input_length": 655, "output_length": 52, "hash_ids": [46, 47]},
            {"timestamp": 10535, "input_length": 672, "output_length": 26, "hash_ids": [46, 47]},
            {"timestamp": 27482, "input_length": 655, "output_length": 0, "hash_ids": [46]},
        ],
    )
    w = load_trace(p)
    np.testing.assert_allclose(w.arrival, [0.0, 10.535, 27.482])  # milliseconds
    assert list(w.prompt) == [655, 672, 655]
    assert list(w.output) == [52, 26, 1]  # an empty completion ends after its first token
    assert "Mooncake" in w.name
    # the hash ids are kept (one per 512-token block) for the prefix cache
    assert w.hash_block == 512
    assert list(w.hash_ids) == [46, 47, 46, 47, 46] and list(w.hash_offsets) == [0, 2, 4, 5]
    assert any("1 requests with 0 output tokens" in n for n in w.notes)


def test_mooncake_bad_line_names_the_field(tmp_path: Path) -> None:
    p = _jsonl(
        tmp_path,
        [
            {"timestamp": 0, "input_length": 5, "output_length": 2},
            {"timestamp": 1, "input_length": 0, "output_length": 2},
        ],
    )
    with pytest.raises(ApexError, match=r":2: input_length must be at least 1, got 0"):
        load_trace(p)


def _bench_result(**over) -> dict:
    d = {
        "date": "20250101-000000",
        "backend": "vllm",
        "num_prompts": 4,
        "request_rate": 2.5,
        "burstiness": 1.0,
        "max_concurrency": 3,
        "duration": 10.0,
        "input_lens": [100, 200, 300, 400],
        "output_lens": [10, 0, 30, 0],
        "ttfts": [0.1, 0.2, 0.0, 0.3],
        "errors": ["", "", "", "Timeout"],
    }
    d.update(over)
    return d


def test_vllm_bench_result(tmp_path: Path) -> None:
    p = tmp_path / "vllm-2.5qps.json"
    p.write_bytes(orjson.dumps(_bench_result()))
    w = load_trace(p)
    assert list(w.prompt) == [100, 200, 300]  # the failed request is left out
    assert list(w.output) == [10, 1, 30]
    assert w.bench_settings == {"request_rate": 2.5, "burstiness": 1.0, "max_concurrency": 3}
    assert any("1 failed requests" in n for n in w.notes)
    # replayed as it was run: Poisson at 2.5 req/s behind 3 clients
    wl = build_workload(WorkloadOptions(trace_file=p, seed=1))
    assert wl.max_concurrency == 3 and wl.arrival[-1] > 0
    assert any("as it was run" in n for n in wl.notes)
    # the user's own settings win
    wl = build_workload(WorkloadOptions(trace_file=p, request_rate=float("inf")))
    assert (wl.arrival == 0).all() and wl.max_concurrency == 0


def test_vllm_bench_result_infinite_rate_and_indented(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_bytes(
        orjson.dumps(_bench_result(request_rate="inf", max_concurrency=None, errors=None),
                     option=orjson.OPT_INDENT_2)
    )  # fmt: skip
    w = load_trace(p)
    assert w.num_requests == 4
    wl = build_workload(WorkloadOptions(trace_file=p))
    assert (wl.arrival == 0).all()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"[1, 2]", "without 'input_lens'"),
        (b"{oops", "not valid JSON"),
        (orjson.dumps(_bench_result(input_lens=[1, 2])), "equal length"),
        (orjson.dumps(_bench_result(request_rate="fast")), "request_rate 'fast'"),
        (orjson.dumps(_bench_result(request_rate=-1)), "request_rate must be positive"),
        (orjson.dumps(_bench_result(input_lens=[1, 2, "x", 4])), "request 2"),
    ],
)
def test_vllm_bench_result_malformed(tmp_path: Path, doc: bytes, message: str) -> None:
    p = tmp_path / "r.json"
    p.write_bytes(doc)
    with pytest.raises(ApexError) as e:
        load_trace(p)
    assert message in str(e.value)


def test_csv_out_of_time_order_is_sorted_and_said(tmp_path: Path) -> None:
    """Before: the first row's time was subtracted and negatives clipped to 0, so rows earlier
    than the first collapsed onto t = 0."""
    p = tmp_path / "a.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:50.0000000,396,109\n"
        "2023-11-16 18:15:46.0000000,374,44\n"
        "2023-11-16 18:15:48.5000000,10,0\n"
    )
    w = load_trace(p)
    np.testing.assert_allclose(w.arrival, [0.0, 2.5, 4.0])
    assert list(w.prompt) == [374, 10, 396]
    assert list(w.output) == [44, 1, 109]
    assert any("1 of 3 rows are earlier than the row before them" in n for n in w.notes)


def test_csv_numeric_seconds_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_bytes(
        "\ufeffTIMESTAMP,ContextTokens,GeneratedTokens\r\n5.5,3,4\r\n1.5,2,2\r\n".encode()
    )
    w = load_trace(p)
    np.testing.assert_allclose(w.arrival, [0.0, 4.0])


CSV_ROWS = (
    "TIMESTAMP,ContextTokens,GeneratedTokens,Extra\r\n"
    "2023-11-16 18:15:50.0000000,396,109,a\r\n"
    "\r\n"
    "2023-11-16 18:15:46.1234567,374,44,b,c,d\r\n"
    "   \r\n"
    "2023-11-16 18:15:48.5,10,0,\r\n"
    "1700158549.25,7,3,x\r\n"
    "2023-11-16T18:15:51,1_000,\u0663,y\r\n"
    "2023-11-16 18:15:52, 12 ,\t5\t,z"
)


@pytest.mark.parametrize("chunk", [7, 64, 4 << 20])
def test_csv_blocks_give_the_same_rows(tmp_path: Path, monkeypatch, chunk: int) -> None:
    """Blank lines, extra and empty columns, CRLF, mixed seconds and date-times, a missing final
    newline; spellings Polars does not convert (T separator, 1_000, a non-ASCII digit) are read
    as Python reads them; the answer does not depend on where the blocks are cut."""
    from apex_fast.workload import read_csv

    monkeypatch.setattr(read_csv, "CSV_CHUNK", chunk)
    p = tmp_path / "a.csv"
    p.write_bytes(CSV_ROWS.encode())
    w = load_trace(p)
    assert list(w.prompt) == [374, 10, 7, 396, 1000, 12]
    assert list(w.output) == [44, 1, 3, 109, 3, 5]
    # the earliest row is 46.123456 s (a 7th fractional digit is dropped, as datetime does)
    expected = [0.0, 2.376544, 3.126544, 3.876544, 4.876544, 5.876544]
    np.testing.assert_allclose(w.arrival, expected, atol=1e-9)


@pytest.mark.parametrize("chunk", [16, 4 << 20])
@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2023-11-16 18:15:52,5", "t.csv:5: expected 3 columns, got 2"),
        ("2023-11-16 18:15:52,5,x", "t.csv:5: token counts must be numbers"),
        ("2023-11-16 18:15:52,5,2.5", "t.csv:5: token counts must be whole numbers"),
        ("2023-11-16 18:15:60,5,2", "t.csv:5: TIMESTAMP '2023-11-16 18:15:60' is neither"),
        ("1e13,5,2", "t.csv:5: time '1e13' is not plausible"),
        ("2023-11-16 18:15:52,0,2", "t.csv:5: ContextTokens must be at least 1, got 0"),
    ],
)
def test_csv_errors_name_the_first_bad_line(
    tmp_path: Path, monkeypatch, chunk: int, row: str, message: str
) -> None:
    from apex_fast.workload import read_csv

    monkeypatch.setattr(read_csv, "CSV_CHUNK", chunk)
    good = "2023-11-16 18:15:50,3,4\n"
    p = tmp_path / "t.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + good + "\n" + good + row + "\n" + row
    )
    with pytest.raises(ApexError) as e:
        load_trace(p)
    assert message in str(e.value)


@pytest.mark.parametrize("newline", [b"", b"\n1,2,3\n"])
def test_csv_long_line_is_refused_with_its_number(tmp_path: Path, newline: bytes) -> None:
    """A 3 MiB line after the header: refused as line 3 after reading a few MiB at most."""
    p = tmp_path / "t.csv"
    head = b"StartTimeOffset,ContextTokens,GeneratedTokens\n0,3,4\n"
    p.write_bytes(head + b"7" * (3 * MAX_LINE_BYTES) + newline)
    tracemalloc.start()
    try:
        with pytest.raises(ApexError, match=r"t.csv:3: line longer than 1 MiB"):
            load_trace(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MAX_LINE_BYTES


def test_jsonl_out_of_order_is_said(tmp_path: Path) -> None:
    objs = [{"StartTimeOffset": t, "ContextTokens": 3, "GeneratedTokens": 2} for t in (5, 1, 9)]
    w = load_trace(_jsonl(tmp_path, objs))
    assert any("1 of 3 rows" in n for n in w.notes)
    objs.sort(key=lambda o: o["StartTimeOffset"])
    assert load_trace(_jsonl(tmp_path, objs, "s.jsonl")).notes == ()


@pytest.mark.parametrize("name", ["big.jsonl", "big.csv", "big.json", "big"])
def test_a_file_without_newlines_is_refused(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(b"{" + b" " * (MAX_LINE_BYTES + 10))
    with pytest.raises(ApexError) as e:
        load_trace(p)
    msg = str(e.value)
    assert "longer than 1 MiB" in msg or "not valid JSON" in msg


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_with_bounded_memory() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ApexError, match="longer than 1 MiB"):
            load_trace("/dev/zero")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MAX_LINE_BYTES


def test_trace_writer_streams(tmp_path: Path) -> None:
    """`trace` keeps the three columns and one block of text, not every line (1 M requests
    peaked at 4.4 GB before)."""
    n = 400_000
    t, p, o = generate("lmsys", 100.0, n, seed=1)
    path = tmp_path / "big.jsonl"
    tracemalloc.start()
    try:
        write_trace(path, t, p, o)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a bound independent of n (the whole text alone is ~95 bytes per request, 38 MB here)
    assert peak < 12_000_000
    w = load_trace(path)
    assert w.num_requests == n
    np.testing.assert_array_equal(w.prompt, p)
    np.testing.assert_allclose(w.arrival, t, atol=1e-9)
