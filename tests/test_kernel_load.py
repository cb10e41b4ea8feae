"""The batching kernel loaded from Numba's cache without the compiler's registries
(apex_fast/sim/kernel_load.py): the lookup really skips them, and the loaded code gives the
oracle's answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from oracle import simulate

from apex_fast.sim.kernel_load import batching_kernel, fast_cache_lookup
from apex_fast.sim.stream import SchedulerConfig, StepCosts

TESTS = Path(__file__).resolve().parent

# a small stream that preempts (few blocks), chunks prompts and skips decode runs
ARRIVAL = [0.0, 0.0, 0.001, 0.004, 0.01, 0.02, 0.02, 0.05]
PROMPT = [40, 300, 17, 64, 129, 5, 512, 33]
OUTPUT = [120, 70, 160, 1, 133, 190, 112, 145]
CFG = dict(num_blocks=40, block_size=16, max_num_seqs=4, budget=256, chunked=True)


def _costs() -> StepCosts:
    tok = np.concatenate([[0.0], np.cumsum(np.full(CFG["budget"], 1e-5))])
    seq = np.concatenate([[0.0], np.cumsum(np.full(CFG["max_num_seqs"], 1e-4))])
    return StepCosts(tok, seq, c_attn=1e-7, c_ctx=1e-6, overhead=2e-3)


# a fresh interpreter: run one stream, say whether Numba's lowering registries were loaded
# (numba.np.linalg is imported only by the target context's refresh) and print the times
CHILD = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(TESTS)!r})
from test_kernel_load import ARRIVAL, PROMPT, OUTPUT, CFG, _costs
from apex_fast.sim.stream import SchedulerConfig, run_stream
r = run_stream(np.array(ARRIVAL), np.array(PROMPT), np.array(OUTPUT), SchedulerConfig(**CFG),
               _costs())
print(json.dumps({{"registries": "numba.np.linalg" in sys.modules,
                  "first": r.first_token.tolist(), "finish": r.finish.tolist(),
                  "preemptions": r.preemptions.tolist(), "steps": int(r.rec_count.sum())}}))
"""


def _child() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, cwd=TESTS
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_cached_kernel_runs_without_the_registries_and_matches_the_oracle():
    _child()  # fills the cache if this checkout has none yet (that run compiles)
    got = _child()
    assert got["registries"] is False  # the cache lookup did not refresh the target context
    want = simulate(ARRIVAL, PROMPT, OUTPUT, SchedulerConfig(**CFG), _costs())
    assert got["steps"] == want.num_steps
    assert sum(got["preemptions"]) > 0  # the case exercises preemption
    np.testing.assert_allclose(got["first"], want.first_token, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["finish"], want.finish, rtol=1e-9, atol=1e-12)
    assert got["preemptions"] == list(want.preemptions)


def test_hook_is_on_the_kernel_and_absent_without_numba_cache_methods():
    kernel = batching_kernel()
    assert kernel is batching_kernel()  # hooked once per process
    assert "load_overload" in vars(kernel._cache)  # the instance's own lookup
    assert fast_cache_lookup(object()) is False  # nothing to hook: left as it is
