"""The two workloads of an encoder-decoder model (apex_fast/encdec.py): the encoder's, one
single-step request per input, and the decoder's, whose requests arrive when their encoder pass
completes and carry their cross-attention KV as a per-request prefix.
"""

from __future__ import annotations

import numpy as np

from apex_fast.models.spec import ModelSpec
from apex_fast.workload.types import Workload


def encoder_lengths(model: ModelSpec, workload: Workload) -> np.ndarray:
    """Encoder input tokens per request: fixed for audio/vision encoders, else the prompt."""
    if model.encoder_seq_len:
        return np.full(workload.num_requests, model.encoder_seq_len, np.int64)
    return workload.prompt.astype(np.int64)


def encoder_workload(model: ModelSpec, workload: Workload) -> Workload:
    return Workload(
        arrival=workload.arrival,
        prompt=encoder_lengths(model, workload),
        output=np.ones(workload.num_requests, np.int64),
        name=f"{workload.name} (encoder)",
    )


def decoder_workload(model: ModelSpec, workload: Workload, enc_finish: np.ndarray) -> Workload:
    """Decoder requests arrive when their encoder pass completes.

    Whisper's decoder starts from the given prompt (the task/language tokens and any text
    prompt); T5's decoder starts from one start token and its input went to the encoder.
    """
    enc_len = encoder_lengths(model, workload)
    prompt = workload.prompt if model.encoder_seq_len else np.ones(workload.num_requests, np.int64)
    order = np.argsort(enc_finish, kind="stable")
    return Workload(
        arrival=np.ascontiguousarray(enc_finish[order]),
        prompt=np.ascontiguousarray(prompt[order]),
        output=np.ascontiguousarray(workload.output[order]),
        name=f"{workload.name} (decoder, after the encoder)",
        prefix=np.ascontiguousarray(enc_len[order]),
    )
