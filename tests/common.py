"""Shared by several test files: running the CLI in-process, a tiny model config, a random
workload and a comparable summary of a search. Imported as `common` (pytest puts tests/ on
sys.path, as for `oracle`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from apex_fast.cli import main
from apex_fast.workload import Workload

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_script(name: str) -> ModuleType:
    """The script bench/<name>.py loaded as a module named `name` (registered in sys.modules:
    dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


# a key given this value is left out of the config
DROP = object()

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 100,
}


def run(capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command line."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad(capsys, *args: str, needle: str) -> None:
    """The command line fails as bad input: exit code 2, one `error:` line naming `needle`."""
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert needle in err, err


def tiny_config(tmp_path: Path, name: str = "config.json", raw: bytes | None = None, **over) -> str:
    """Path of a tiny llama config.json with `over` applied (DROP removes a key); `raw` gives
    the file's bytes instead. Written with json (any integer size)."""
    cfg: dict = dict(TINY_LLAMA)
    for k, v in over.items():
        if v is DROP:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p = tmp_path / name
    p.write_bytes(raw if raw is not None else json.dumps(cfg).encode())
    return str(p)


def random_workload(seed: int, n: int, span_s: float, max_prompt: int, max_output: int):
    """n requests arriving uniformly over span_s seconds with uniform random lengths."""
    rng = np.random.default_rng(seed)
    return Workload(
        arrival=np.sort(rng.uniform(0, span_s, n)),
        prompt=rng.integers(16, max_prompt, n).astype(np.int64),
        output=rng.integers(1, max_output, n).astype(np.int64),
        name="random",
    )


def search_summary(sr) -> tuple:
    """What two searches over the same inputs must agree on: per ranked plan its label, main
    metrics and every request's first-token and finish time; the infeasible list; the count."""
    rows = []
    for e in sr.ranked:
        m = e.metrics
        streams = e.result.streams
        rows.append(
            (
                e.result.plan.label,
                m.ttft_mean_s,
                m.tpot_mean_s,
                m.latency_mean_s,
                m.latency_p95_s,
                m.tbt_p95_s,
                m.energy_kj,
                m.num_steps,
                tuple(np.concatenate([s.first_token for s in streams]).tolist()),
                tuple(np.concatenate([s.finish for s in streams]).tolist()),
            )
        )
    return rows, sr.infeasible, sr.num_candidates
