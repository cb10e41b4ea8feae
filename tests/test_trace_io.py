"""Trace parsing: good files, every malformed case with its line number, and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apex_fast.errors import ApexError
from apex_fast.workload import load_trace

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def _write(tmp_path: Path, lines: list[str], name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def _line(t: int, p: int, o: int) -> str:
    return orjson.dumps({"StartTimeOffset": t, "ContextTokens": p, "GeneratedTokens": o}).decode()


def test_parses_and_sorts(tmp_path: Path) -> None:
    p = _write(tmp_path, [_line(2_000_000_000, 5, 6), _line(500_000_000, 7, 8), ""])
    w = load_trace(p)
    assert w.num_requests == 2
    np.testing.assert_allclose(w.arrival, [0.0, 1.5])
    assert list(w.prompt) == [7, 5]
    assert list(w.output) == [8, 6]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"StartTimeOffset": 1, "ContextTokens": 3}', "line 2: missing field 'GeneratedTokens'"),
        ('{"StartTimeOffset": 1, "ContextTokens": "x", "GeneratedTokens": 3}', "must be a number"),
        ('{"StartTimeOffset": 1, "ContextTokens": -3, "GeneratedTokens": 3}', "at least 1"),
        ('{"StartTimeOffset": 1, "ContextTokens": 3, "GeneratedTokens": -1}', "at least 0"),
        ('{"StartTimeOffset": -1, "ContextTokens": 3, "GeneratedTokens": 2}', "negative"),
        ('{"StartTimeOffset": 1, "ContextTokens": 2.5, "GeneratedTokens": 2}', "whole number"),
        ('{"StartTimeOffset": 1, "ContextTokens": 1e30, "GeneratedTokens": 2}', "not plausible"),
        (
            '{"StartTimeOffset": 1, "ContextTokens": 99999999999999999999999, "GeneratedTokens": 2}',
            "not plausible",
        ),
    ],
)
def test_malformed_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    p = _write(tmp_path, [_line(0, 1, 1), line])
    with pytest.raises(ApexError) as e:
        load_trace(p)
    assert message.split(": ")[-1] in str(e.value)
    assert f"{p}:2" in str(e.value)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ApexError, match="does not exist"):
        load_trace(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(ApexError, match="no requests"):
        load_trace(tmp_path / "e.jsonl")


def test_csv_azure_layout(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
    )
    w = load_trace(p)
    assert list(w.prompt) == [374, 396]
    assert w.arrival[1] == pytest.approx(4.314579, abs=1e-5)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_apex_error(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fuzz.jsonl"
    p.write_bytes(data)
    try:
        w = load_trace(p)
    except ApexError:
        return
    assert w.num_requests >= 1
    assert np.all(w.prompt >= 1) and np.all(w.output >= 1) and np.all(np.diff(w.arrival) >= 0)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=16), c, max_size=4),
    max_leaves=8,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        _json
        | st.fixed_dictionaries(
            {"StartTimeOffset": _json, "ContextTokens": _json, "GeneratedTokens": _json}
        ),
        max_size=4,
    )
)
def test_arbitrary_json_only_raises_apex_error(tmp_path: Path, objs: list) -> None:
    p = tmp_path / "fuzz.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in objs))
    try:
        load_trace(p)
    except ApexError:
        pass


@pytest.mark.skipif(not REF.exists(), reason="../shared/reference not present")
def test_reference_trace_loads() -> None:
    w = load_trace(REF / "traces" / "llama" / "lmsys_05.jsonl")
    assert w.num_requests > 100
    assert w.arrival[0] == 0.0
    # Poisson arrivals at 0.5 req/s
    rate = (w.num_requests - 1) / w.arrival[-1]
    assert 0.4 < rate < 0.6
