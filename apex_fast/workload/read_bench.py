"""`vllm bench serve --save-result` (or `benchmarks/benchmark_serving.py --save-result`) JSON
files: per-request `input_lens` and `output_lens`, and the run's own arrival settings.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from apex_fast.errors import ApexError
from apex_fast.workload.columns import MAX_JSON_BYTES, Columns, check_request, number


def read_bench_result(path: Path) -> Columns:
    """A `vllm bench serve --save-result` JSON document (one object)."""
    with path.open("rb") as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ApexError(f"{path}: larger than {MAX_JSON_BYTES >> 30} GiB; not a benchmark result")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ApexError(
            f"{path}: not valid JSON (expected a vllm bench serve --save-result file, or JSON "
            "lines with one request per line)"
        ) from None
    del data
    if not isinstance(obj, dict) or "input_lens" not in obj or "output_lens" not in obj:
        raise ApexError(
            f"{path}: a JSON document without 'input_lens' and 'output_lens' (save the "
            "benchmark with --save-result --save-detailed, or give JSON lines)"
        )
    ins, outs = obj["input_lens"], obj["output_lens"]
    if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
        raise ApexError(f"{path}: 'input_lens' and 'output_lens' must be lists of equal length")
    errors = obj.get("errors")
    if not isinstance(errors, list) or len(errors) != len(ins):
        errors = [""] * len(ins)
    g = Columns()
    ps: list[int] = []
    os_: list[int] = []
    failed = 0
    for i, (p, o, e) in enumerate(zip(ins, outs, errors, strict=True)):
        where = f"{path}: request {i}"
        if e:
            failed += 1
            continue
        p = number(p, "input_lens", where, integer=True)
        o = number(o, "output_lens", where, integer=True)
        check_request(where, 0.0, p, o, ("time", "input_lens", "output_lens"))
        ps.append(int(p))
        os_.append(int(o))
    g.extend([0.0] * len(ps), ps, os_)
    rate = obj.get("request_rate", "inf")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ApexError(f"{path}: request_rate {rate!r} is not a number or 'inf'") from None
    if not rate > 0:
        raise ApexError(f"{path}: request_rate must be positive, got {rate}")
    burst = obj.get("burstiness", 1.0)
    if isinstance(burst, bool) or not isinstance(burst, (int, float)) or not burst > 0:
        burst = 1.0
    conc = obj.get("max_concurrency")
    conc = conc if isinstance(conc, int) and not isinstance(conc, bool) and conc > 0 else 0
    g.bench = {"request_rate": rate, "burstiness": float(burst), "max_concurrency": conc}
    if failed:
        g.notes.append(f"{path.name}: {failed} failed requests of the benchmark left out")
    return g
