"""Speculative decoding: accepted tokens per step, cost transformation, memory, batch effect."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import megatron_plan
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.sim.speculative import (
    Proposer,
    SpeculativeConfig,
    decode_steps,
    speculative_costs,
    speculative_workload,
)
from apex_fast.sim.stream import StepCosts
from apex_fast.workload import static_workload


@pytest.fixture(scope="module")
def setup():
    model = load_model("llama3-70b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 8)
    plan = megatron_plan(model, 1, 1, 8, "half", "half", "half")
    return model, cluster, plan


def _run(setup, n: int, spec: SpeculativeConfig | None, prompt=256, output=129):
    model, cluster, plan = setup
    wl = static_workload(n, prompt, output)
    opts = EngineOptions(speculative=spec)
    res = simulate_plan(model, cluster, plan, wl, opts)
    assert res.feasible, res.reason
    return res, compute_metrics(res, wl, cluster)


def test_expected_tokens_closed_form():
    for a in (0.0, 0.3, 0.8):
        for k in (1, 3, 5):
            spec = SpeculativeConfig("eagle", k, (a,))
            want = k + 1 if a == 1 else (1 - a ** (k + 1)) / (1 - a)
            assert spec.expected_tokens == pytest.approx(want)
    # per-position rates as vLLM reports them: mean acceptance length = 1 + sum
    spec = SpeculativeConfig("ngram", 3, (0.543, 0.357, 0.264))
    assert spec.expected_tokens == pytest.approx(2.164)


def test_decode_steps_with_full_acceptance_is_k_plus_one_tokens_per_step():
    out = np.array([1, 2, 5, 9, 10, 100])
    assert list(decode_steps(out, 4.0)) == [0, 1, 1, 2, 3, 25]
    wl = speculative_workload(static_workload(3, 10, 9), SpeculativeConfig("eagle", 3, (1.0,)))
    assert list(wl.output) == [3, 3, 3]  # first token + 2 steps of 4 tokens


def test_full_acceptance_runs_one_step_per_k_plus_one_tokens(setup):
    k = 3
    res, m = _run(setup, 1, SpeculativeConfig("eagle", k, (1.0,)), output=1 + (k + 1) * 10)
    assert res.streams[0].num_steps == 1 + 10  # one prefill step, then 10 decode steps
    base_res, base = _run(setup, 1, None, output=1 + (k + 1) * 10)
    assert base_res.streams[0].num_steps == 1 + (k + 1) * 10
    assert m.tpot_mean_s < base.tpot_mean_s


@pytest.mark.parametrize("method", ["eagle", "mtp", "ngram", "draft"])
@pytest.mark.parametrize("n", [1, 8, 64])
def test_zero_acceptance_is_never_faster(setup, method, n):
    draft = "llama3.2-1b" if method == "draft" else None
    _, base = _run(setup, n, None)
    _, spec = _run(setup, n, SpeculativeConfig(method, 3, (0.0,), draft))
    assert spec.tpot_mean_s >= base.tpot_mean_s
    assert spec.makespan_s >= base.makespan_s
    assert spec.throughput_tokens_per_s <= base.throughput_tokens_per_s


def test_speedup_falls_with_batch_size(setup):
    spec = SpeculativeConfig("eagle", 4, (0.8,))
    speedups = []
    for n in (1, 32, 256):
        _, base = _run(setup, n, None)
        _, s = _run(setup, n, spec)
        speedups.append(base.tpot_mean_s / s.tpot_mean_s)
    assert speedups[0] > 1.5
    assert speedups[0] > speedups[1] > speedups[2]


def test_decode_only_step_costs_target_at_k_plus_one_tokens_plus_proposals():
    tok = np.linspace(0.0, 1.0, 41) ** 1.5
    seq = np.linspace(0.0, 0.2, 41)
    base = StepCosts(tok_table=tok, seq_table=seq, c_attn=0.0, c_ctx=1e-6, overhead=1e-3)
    prop = Proposer(np.arange(11) * 1e-4, 2e-7, 0.0, 0.0)
    k = 3
    out = speculative_costs(base, prop, k, 10)
    for mseq in range(11):
        step = out.tok_table[mseq] + out.seq_table[mseq]
        want = tok[(k + 1) * mseq] + seq[(k + 1) * mseq] + k * prop.step_table[mseq]
        assert step == pytest.approx(want)
    assert out.c_ctx == pytest.approx(1e-6 + k * 2e-7)


def test_proposer_memory_shrinks_the_kv_cache(setup):
    res0, _ = _run(setup, 4, None)
    res1, _ = _run(setup, 4, SpeculativeConfig("draft", 3, (0.6,), "llama3.1-8b"))
    assert 0 < res1.streams[0].rec_blocks.max()  # ran
    model, cluster, plan = setup
    from apex_fast.sim.speculative import apply_to_plan

    wl = static_workload(4, 256, 129)
    opts = EngineOptions(speculative=SpeculativeConfig("draft", 3, (0.6,), "llama3.1-8b"))
    mem = res0.memory
    _, blocks, _ = apply_to_plan(
        model, cluster, plan, wl, opts, mem.kv_available, mem.kv_bytes_per_token, res0.budget
    )
    assert blocks < mem.kv_blocks_per_replica


def test_context_read_is_exact_in_total():
    # a request of S decode steps reads sum_g (P + E g) context tokens; the kernel reads
    # sum_g (P + x + g) with the extra prefix x
    spec = SpeculativeConfig("eagle", 4, (0.5,))
    e = spec.expected_tokens
    wl = speculative_workload(static_workload(1, 100, 301), spec)
    s = int(wl.output[0]) - 1
    x = int(wl.prefix[0])
    real = sum(100 + e * g for g in range(s))
    sim = sum(100 + x + g for g in range(s))
    assert abs(sim - real) <= s  # floor of x: within one token per step


@pytest.mark.parametrize(
    "spec",
    [
        SpeculativeConfig("medusa", 3, (0.5,)),
        SpeculativeConfig("eagle", 0, (0.5,)),
        SpeculativeConfig("eagle", 3, (1.5,)),
        SpeculativeConfig("eagle", 3, (0.5, 0.4)),
        SpeculativeConfig("eagle", 3, (0.3, 0.5, 0.2)),
        SpeculativeConfig("draft", 3, (0.5,)),
        SpeculativeConfig("eagle", 3, (0.5,), "llama3.2-1b"),
    ],
)
def test_bad_settings_are_rejected(spec):
    with pytest.raises(ApexError):
        dataclasses.replace(EngineOptions(), speculative=spec).validate()


def test_cli_reports_speculative_settings(tmp_path, capsys):
    import json

    from apex_fast.cli import main

    out = tmp_path / "r.json"
    args = [
        "plan", "--model", "llama3.1-8b", "--num-gpus", "1", "--num-requests", "8",
        "--prompt-len", "128", "--output-len", "64", "--quiet", "--json", str(out),
        "--speculative-method", "draft", "--draft-model", "llama3.2-1b",
        "--num-speculative-tokens", "3", "--acceptance-rate", "0.8,0.6,0.4",
    ]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Speculative decoding: draft model llama3.2-1b, K=3" in text
    assert "mean accepted tokens per step 2.80" in text
    spec = json.loads(out.read_text())["speculative"]
    assert spec["method"] == "draft" and spec["num_speculative_tokens"] == 3
    assert spec["mean_accepted_tokens_per_step"] == pytest.approx(2.8)


@pytest.mark.parametrize(
    "extra",
    [
        ["--speculative-method", "draft", "--draft-model", "no-such-model"],
        ["--speculative-method", "draft", "--draft-model", "llama2-7b"],  # other tokenizer
        ["--draft-model", "llama3.2-1b"],
        ["--speculative-method", "eagle", "--acceptance-rate", "0.5,x"],
    ],
)
def test_cli_bad_speculative_input_exits_2(extra, capsys):
    from apex_fast.cli import main

    args = ["plan", "--model", "llama3.1-8b", "--num-gpus", "1", "--num-requests", "4", "--quiet"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_speculation_shortens_disaggregated_decode():
    from apex_fast.disagg.evaluate import evaluate
    from apex_fast.disagg.pools import PoolConfig

    model = load_model("llama3.1-8b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 2)
    plan = megatron_plan(model, 1, 1, 1, "half", "half", "half")
    pool = PoolConfig(plan, 1, 1)
    wl = static_workload(2, 256, 129)
    base = evaluate(model, cluster, wl, EngineOptions(), pool, pool, 1e9, 1e9)
    spec = EngineOptions(speculative=SpeculativeConfig("eagle", 3, (0.8,)))
    fast = evaluate(model, cluster, wl, spec, pool, pool, 1e9, 1e9)
    assert fast.metrics.tpot_mean_s < 0.6 * base.metrics.tpot_mean_s
    # the prefill pool does not speculate
    assert fast.prefill_result.streams[0].num_steps == base.prefill_result.streams[0].num_steps
