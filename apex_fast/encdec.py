"""Encoder-decoder (Whisper, T5) and encoder-only (CLIP) models.

The encoder is planned and simulated first, over the same cluster, as a stream of one-step
requests (bidirectional attention over the whole input, no KV cache, no sampling). Each
request's encoder completion time becomes its arrival at the decoder, which is planned and
simulated as usual; its cross-attention KV (encoder length tokens per layer) rides along as a
per-request prefix that occupies KV blocks and is read by every decode step but costs no
prefill compute (its K/V projections are charged to the encoder). Approximation: encoder and
decoder are simulated one after the other on the same devices, so their interference (sharing
GPUs in the same engine steps) is not modelled. The encoder's and decoder's workloads are built
in apex_fast/workload/encoder_decoder.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from apex_fast.models.spec import ModelSpec
from apex_fast.sim.engine import EngineOptions


def encoder_view(model: ModelSpec) -> ModelSpec:
    """The encoder stack of `model` as a model of its own (no vocabulary, no KV cache)."""
    layers = model.encoder_layers or model.num_layers
    return dataclasses.replace(
        model,
        name=f"{model.name} encoder",
        arch="encoder",
        num_layers=layers,
        encoder_layers=layers,
        vocab_size=0,
        learned_pos=0,
        num_experts=0,
        topk=0,
        extra_params=0,
    )


def encoder_options(opts: EngineOptions, enc_len: np.ndarray) -> EngineOptions:
    """Encoders run whole inputs (no chunking); the budget fits the longest input."""
    budget = max(opts.max_num_batched_tokens or 0, 8192, int(enc_len.max()), opts.max_num_seqs)
    return dataclasses.replace(opts, chunked_prefill=False, max_num_batched_tokens=budget)


def request_finish(result) -> np.ndarray:  # noqa: ANN001 (PlanResult)
    """Per-request finish times of a simulated plan, indexed by request id."""
    n = int(sum(ids.size for ids in result.stream_index))
    out = np.full(n, np.nan)
    for s, ids in zip(result.streams, result.stream_index, strict=True):
        out[ids] = s.finish
    return out
