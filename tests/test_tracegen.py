import numpy as np
import pytest

from apex_fast.errors import ApexError
from apex_fast.workload import load_trace
from apex_fast.workload.generators import KINDS, generate
from apex_fast.workload.writers import write_trace


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_roundtrip_and_stats(tmp_path, kind):
    t, p, o = generate(kind, rate=2.0, num_requests=4000, seed=1)
    k = KINDS[kind]
    assert p.min() >= k.prompt_range[0] and p.max() <= k.prompt_range[1]
    assert o.min() >= k.output_range[0] and o.max() <= k.output_range[1]
    assert np.median(np.log(o)) == pytest.approx(k.mu_o, abs=0.1)
    assert (len(t) - 1) / t[-1] == pytest.approx(2.0, rel=0.08)
    write_trace(tmp_path / "t.jsonl", t, p, o)
    w = load_trace(tmp_path / "t.jsonl")
    assert w.num_requests == 4000 and np.array_equal(w.prompt, p)


def test_seed_reproducible_and_burstiness():
    a = generate("lmsys", 1.0, 500, seed=7)
    b = generate("lmsys", 1.0, 500, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    gaps = np.diff(generate("lmsys", 1.0, 20000, seed=3, burstiness=0.25)[0])
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.1)  # CV = 1/sqrt(shape)


def test_bad_input():
    with pytest.raises(ApexError):
        generate("poetry", 1.0, 10)
    with pytest.raises(ApexError):
        generate("lmsys", 0.0, 10)


@pytest.mark.parametrize("path", ["traces/lmsys_r2_n300.jsonl", "traces/creation_r1_n200.jsonl"])
def test_shipped_traces_load(path):
    assert load_trace(path).num_requests >= 200
