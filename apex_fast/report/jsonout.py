"""JSON report (orjson): {"best": {...}, "plans": [{...}, ...], "infeasible": [...], ...}."""

from __future__ import annotations

import math
from pathlib import Path

import orjson

from apex_fast.engines.describe import engine_json
from apex_fast.search import Evaluated, SearchResult
from apex_fast.validation.bands import band_json, search_band


def _clean(x: object) -> object:
    """NaN and infinities are not JSON: write null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def plan_json(e: Evaluated) -> dict:
    assert e.metrics is not None
    d = {"plan": e.result.plan.to_json(), "label": e.result.plan.label}
    d.update(e.metrics.to_json())
    d["kv_blocks_per_replica"] = e.result.memory.kv_blocks_per_replica
    d["kv_blocks_per_attention_copy"] = e.result.memory.kv_blocks_per_copy
    d["max_num_batched_tokens"] = e.result.budget
    return d


def report_json(sr: SearchResult) -> dict:
    plans = [plan_json(e) for e in sr.ranked]
    o = sr.options
    return _clean(
        {
            "model": sr.model.name,
            "cluster": {
                "gpu": sr.cluster.device.name,
                "num_nodes": sr.cluster.num_nodes,
                "num_gpus_per_node": sr.cluster.gpus_per_node,
                "sm_clock_mhz": o.clock_mhz or sr.cluster.device.boost_clock_mhz,
            },
            "workload": {
                "name": sr.workload.name,
                "num_requests": sr.workload.num_requests,
                "max_concurrency": sr.workload.max_concurrency,
                "notes": list(sr.workload.notes),
            },
            "engine": {
                **engine_json(o),
                "chunked_prefill": o.chunked_prefill,
                "max_num_seqs": o.max_num_seqs,
                "block_size": o.block_size,
                "gpu_memory_utilization": o.gpu_memory_utilization,
            },
            "objective": sr.objective,
            "deployment": {"mode": "agg"},
            "speculative": None if o.speculative is None else o.speculative.to_json(),
            "op_cost_source": getattr(sr.best.result.compiled, "cost_source", "analytic"),
            "accuracy": band_json(
                search_band(sr),
                sr.best.metrics.ttft_mean_s,
                sr.best.metrics.itl_mean_s,
                sr.best.metrics.latency_mean_s,
            ),
            "best": plans[0],
            "plans": plans,
            "infeasible": [{"plan": a, "reason": b} for a, b in sr.infeasible],
        }
    )


def report_json_all(sr: SearchResult) -> dict:
    """The report; for encoder-decoder models the encoder's search sits under "encoder"."""
    data = report_json(sr)
    if getattr(sr, "deployment", None) is not None:  # --mode both
        from apex_fast.report.deployment import deployment_json

        data["deployment"] = deployment_json(sr.deployment)
    if getattr(sr, "encoder", None) is not None:
        data["encoder"] = report_json(sr.encoder)
    return data


def write_json(sr: SearchResult, path: str | Path) -> None:
    if not isinstance(sr, SearchResult):  # --mode disagg: a disaggregated deployment only
        from apex_fast.report.deployment import deployment_json

        rec = _clean({"model": sr.model.name, "deployment": deployment_json(sr)})
        if sr.options.speculative is not None:
            rec["speculative"] = sr.options.speculative.to_json()
    else:
        rec = report_json_all(sr)
    data = orjson.dumps(rec, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    write_atomic(Path(path), data + b"\n")


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename it into place, so that an
    interrupted run never leaves a partial report behind."""
    import os

    from apex_fast.entry import check_interrupted

    check_interrupted()  # no report for a run the user stopped
    import stat
    import tempfile

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        # a device (/dev/stdout, /dev/full), a pipe or a symlink: write through it as given,
        # never replace it with a file
        with open(path, "wb") as f:
            f.write(data)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:32]}.", suffix=".tmp", dir=path.parent)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # the mode a plain open() would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
