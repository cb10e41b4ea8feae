"""Architecture of one model as the planner sees it, and the counts derived from it.

All counts are parameters (not bytes) and include biases and norm weights where the family has
them. Positional schemes without weights (RoPE, ALiBi) cost nothing; learned position tables are
counted as embeddings.

Multi-head latent attention (DeepSeek MLA, ``kv_lora_rank > 0``) is modelled as follows:
* parameters are exact (q down/up projections with their norm, the joint KV down projection that
  also yields the shared rotary key, the KV up projection, the output projection);
* the KV cache holds the compressed latent plus the rotary key: ``kv_lora_rank + qk_rope_head_dim``
  values per token per layer, shared by all heads;
* attention FLOPs assume the weight-absorbed decode form (scores over the ``kv_lora_rank +
  qk_rope_head_dim`` latent, values over ``kv_lora_rank``), the form serving engines use for
  decode; the projection FLOPs stay 2 x parameters.
``head_dim`` of an MLA model is the query/key head size (nope + rope), ``v_head_dim`` the value one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from apex_fast.models.quant import MixedPrecision

if TYPE_CHECKING:  # the model listing never imports numpy
    import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_type: str
    arch: str  # "decoder" | "encoder-decoder" | "encoder"
    num_layers: int  # decoder layers; for arch "encoder" the encoder layers
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense FFN width (encoder FFN too)
    vocab_size: int  # 0 for models without a token vocabulary (CLIP vision)
    gated_ffn: bool  # 3 FFN GEMMs (SwiGLU / GeGLU) instead of 2; experts use the same form
    tied_embeddings: bool
    attn_bias: bool
    mlp_bias: bool
    learned_pos: int  # rows of the learned position table of the (decoder) input, 0 if none
    max_position_embeddings: int
    num_experts: int = 0
    topk: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    num_dense_layers: int = 0  # decoder layers that use the dense FFN in an MoE model
    encoder_layers: int = 0  # == num_layers for arch "encoder"
    encoder_seq_len: int = 0  # fixed encoder length (whisper 1500, CLIP 257); 0: the prompt
    source: str = ""  # config file this spec was loaded from
    hf_id: str = ""  # Hugging Face repo id the numbers come from, when known
    # details needed for exact counts
    norm_bias: bool = False  # LayerNorm (weight + bias) instead of RMSNorm (weight only)
    norms_per_block: int = 2  # norms of one decoder block (3 with cross-attention)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    attn_out_bias: bool | None = None  # None: same as attn_bias
    attn_k_bias: bool = True  # False: k projection has no bias even if attn_bias (Whisper)
    lm_head_bias: bool = False  # GPT-J
    embed_dim: int = 0  # token embedding width if != hidden (OPT word_embed_proj_dim); 0: hidden
    router_bias: bool = False  # per-expert router bias (DeepSeek e_score_correction_bias)
    extra_params: int = 0  # outside blocks/embeddings/head: final norms, stems, projections
    sliding_window: int = 0  # 0: full attention; else the window (tokens) of the local layers
    # decoder layers that attend only to the last `sliding_window` tokens (Mistral-7B: all of
    # them; Gemma-3: 5 of every 6; gpt-oss: every other layer); the rest keep full history
    num_sliding_layers: int = 0
    # learned per-head softmax sink logit in every attention layer (gpt-oss `self_attn.sinks`):
    # one parameter per head, no KV (the sink is not a cached token)
    attn_sinks: bool = False
    # MXFP4 expert weights as shipped (gpt-oss quantization_config.quant_method "mxfp4")
    native_expert_dtype: str = ""
    # the checkpoint's own weight format when it ships quantised ("float8": DeepSeek-V3/R1's
    # block-scaled FP8, quantization_config.quant_method "fp8"); the default --weight-dtype
    native_weight_dtype: str = ""
    # linears the quantised checkpoint keeps unquantised (quantization_config lists; quant.py)
    mixed_precision: MixedPrecision | None = None
    # multi-head latent attention (DeepSeek); 0 = standard attention
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0  # 0: head_dim

    # ------------------------------------------------------------------ shape helpers
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    def _norm(self) -> int:
        return self.hidden_size * (2 if self.norm_bias else 1)

    def _mlp(self, inter: int) -> int:
        h = self.hidden_size
        weights = (3 if self.gated_ffn else 2) * h * inter
        biases = ((2 if self.gated_ffn else 1) * inter + h) if self.mlp_bias else 0
        return weights + biases

    # ------------------------------------------------------------------ per-layer counts
    def attn_params_per_layer(self) -> int:
        """One (self-)attention cell: projections, their biases and q/k norms."""
        h, nh = self.hidden_size, self.num_heads
        if self.is_mla:
            qk, rope, lat = self.head_dim, self.qk_rope_head_dim, self.kv_lora_rank
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * nh * qk
            else:
                q = h * nh * qk
            kv = h * (lat + rope) + lat + lat * nh * (qk - rope + self.value_head_dim)
            return q + kv + nh * self.value_head_dim * h
        qw = nh * self.head_dim
        kvw = self.num_kv_heads * self.head_dim
        total = 2 * h * qw + 2 * h * kvw
        if self.attn_bias:
            total += qw + kvw + (kvw if self.attn_k_bias else 0)
        out_bias = self.attn_bias if self.attn_out_bias is None else self.attn_out_bias
        if out_bias:
            total += h
        if self.qk_norm:
            total += 2 * self.head_dim
        if self.attn_sinks:
            total += nh
        return total

    def expert_params(self) -> int:
        """One routed expert (an MLP of width moe_intermediate_size); 0 for dense models."""
        return self._mlp(self.moe_intermediate_size) if self.is_moe else 0

    def router_params(self) -> int:
        if not self.is_moe:
            return 0
        return self.hidden_size * self.num_experts + (self.num_experts if self.router_bias else 0)

    def dense_ffn_params(self) -> int:
        """Dense FFN of one layer (the leading dense layers of an MoE model use it too)."""
        return self._mlp(self.intermediate_size)

    def ffn_params_per_layer(self) -> int:
        """Dense FFN, or for MoE one MoE layer: router + all experts + shared experts."""
        if not self.is_moe:
            return self.dense_ffn_params()
        experts = (self.num_experts + self.num_shared_experts) * self.expert_params()
        return self.router_params() + experts

    def ffn_active_params_per_layer(self) -> int:
        """FFN parameters one token touches: router + top-k + shared experts."""
        if not self.is_moe:
            return self.dense_ffn_params()
        used = (self.topk + self.num_shared_experts) * self.expert_params()
        return self.router_params() + used

    def _cross_attn(self) -> int:
        return self.attn_params_per_layer() if self.arch == "encoder-decoder" else 0

    def block_params(self) -> int:
        """One decoder block (MoE block for MoE models): attention (+ cross-attention) + FFN +
        norms. For arch "encoder" this is the encoder block."""
        if self.arch == "encoder":
            return self.encoder_block_params()
        return (
            self.attn_params_per_layer()
            + self._cross_attn()
            + self.ffn_params_per_layer()
            + self.norms_per_block * self._norm()
        )

    def dense_block_params(self) -> int:
        """One decoder block with the dense FFN (the leading dense layers of DeepSeek)."""
        base = self.attn_params_per_layer() + self._cross_attn()
        return base + self.dense_ffn_params() + self.norms_per_block * self._norm()

    def encoder_block_params(self) -> int:
        """One encoder block (bidirectional attention + dense FFN + 2 norms); 0 if no encoder."""
        if self.encoder_layers == 0:
            return 0
        return self.attn_params_per_layer() + self.dense_ffn_params() + 2 * self._norm()

    # ------------------------------------------------------------------ whole model
    def embedding_params(self) -> int:
        """Token embedding + learned position table of the (decoder) input."""
        return self.vocab_size * (self.embed_dim or self.hidden_size) + (
            self.learned_pos * self.hidden_size
        )

    def lm_head_params(self) -> int:
        """Output projection to the vocabulary; 0 when tied to the embedding or absent."""
        if self.tied_embeddings or self.vocab_size == 0 or self.arch == "encoder":
            return 0
        bias = self.vocab_size if self.lm_head_bias else 0
        return self.vocab_size * (self.embed_dim or self.hidden_size) + bias

    def _moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    def decoder_params(self) -> int:
        """All decoder blocks (0 for arch "encoder")."""
        if self.arch == "encoder":
            return 0
        if not self.is_moe:
            return self.num_layers * self.block_params()
        return self._moe_layers() * self.block_params() + (
            self.num_dense_layers * self.dense_block_params()
        )

    def encoder_params(self) -> int:
        """All encoder blocks."""
        return self.encoder_layers * self.encoder_block_params()

    def params_total(self) -> int:
        return (
            self.decoder_params()
            + self.encoder_params()
            + self.embedding_params()
            + self.lm_head_params()
            + self.extra_params
        )

    def params_active(self) -> int:
        """Parameters used per token: as params_total, with MoE layers counting only the router,
        top-k experts and shared experts."""
        if not self.is_moe:
            return self.params_total()
        idle = self.ffn_params_per_layer() - self.ffn_active_params_per_layer()
        return self.params_total() - self._moe_layers() * idle

    # ------------------------------------------------------------------ KV cache and FLOPs
    def kv_bytes_per_token(self, kv_bytes: float) -> float:
        """Decoder self-attention KV cache per token over all decoder layers (0 for encoders),
        sliding-window layers included (see kv_bytes_per_sequence for what a sequence holds).
        MLA caches its latent + rotary key once per layer: kv_lora_rank + qk_rope_head_dim values
        shared by all heads (DeepSeek-V2 paper, arXiv 2405.04434, section 2.1)."""
        if self.arch == "encoder":
            return 0.0
        if self.is_mla:
            per_layer = self.kv_lora_rank + self.qk_rope_head_dim
        else:
            per_layer = self.num_kv_heads * (self.head_dim + self.value_head_dim)
        return float(self.num_layers * per_layer) * kv_bytes

    @property
    def sliding_layers(self) -> int:
        """Decoder layers whose KV is held only for the last `sliding_window` tokens."""
        return min(self.num_sliding_layers, self.num_layers) if self.sliding_window > 0 else 0

    @property
    def kv_full_fraction(self) -> float:
        """Share of the per-token KV bytes kept for the whole history (1.0 without a window;
        every layer caches the same bytes per token)."""
        if self.num_layers == 0:
            return 1.0
        return (self.num_layers - self.sliding_layers) / self.num_layers

    def kv_window_blocks(self, block_size: int) -> int:
        """KV blocks the last `sliding_window` tokens can straddle (ceil((W - 1) / bs) + 1, what a
        sliding-window layer keeps, as vLLM's sliding-window KV manager frees the blocks that
        fall out of the window); 0 without sliding-window layers."""
        if self.sliding_layers == 0:
            return 0
        return -(-(self.sliding_window - 1) // block_size) + 1

    def kv_bytes_per_sequence(self, context_len: float, kv_bytes: float) -> float:
        """KV bytes one sequence of context_len tokens holds: full-attention layers keep every
        token, sliding-window layers at most the last `sliding_window` tokens."""
        per_token = self.kv_bytes_per_token(kv_bytes)
        if self.sliding_layers == 0:
            return per_token * context_len
        f = self.kv_full_fraction
        return per_token * (f * context_len + (1.0 - f) * min(context_len, self.sliding_window))

    def cross_kv_bytes_per_request(self, kv_bytes: float, encoder_len: float = 0) -> float:
        """Encoder-decoder: cross-attention K/V of one request (all decoder layers)."""
        if self.arch != "encoder-decoder":
            return 0.0
        n = encoder_len or self.encoder_seq_len
        per_token = self.num_kv_heads * (self.head_dim + self.value_head_dim)
        return float(self.num_layers * per_token) * n * kv_bytes

    # ------------------------------------------------------------------ FLOPs (the one model)
    def _attn_flops_per_ctx(self) -> float:
        """Attention FLOPs of one layer per (query, context token) as decode runs it: QK^T and
        PV, 2 x heads x (qk head dim + v head dim); MLA in the weight-absorbed form, scores over
        the latent + rotary key and values from the latent (models/mla.py)."""
        if self.is_mla:
            return 2.0 * self.num_heads * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        return 2.0 * self.num_heads * (self.head_dim + self.value_head_dim)

    def _attn_flops_per_pair(self) -> float:
        """Attention FLOPs of one layer per (query, key) pair as prefill runs it: QK^T and PV
        with keys and values expanded per head (MLA too: models/mla.py)."""
        return 2.0 * self.num_heads * (self.head_dim + self.value_head_dim)

    def _cross_kv_params(self) -> int:
        """K and V projection weights of one cross-attention layer (computed once per request,
        over the encoder output)."""
        return 2 * self.hidden_size * self.num_kv_heads * self.head_dim

    def params_by_cell(self, active: bool = False) -> dict[str, int]:
        """Parameters of the stack's blocks by cell kind, over all layers of the stack that runs
        a token (the decoder; the encoder for arch "encoder"). Keys: apex_fast.cells.CellKind
        values "attention" (projections, cross-attention included), "ffn" (dense FFN or MoE) and
        "elementwise" (norm weights). `active`: MoE layers count the router, the top-k and the
        shared experts only."""
        if self.arch == "encoder":
            layers = self.encoder_layers
            return {
                "attention": layers * self.attn_params_per_layer(),
                "ffn": layers * self.dense_ffn_params(),
                "elementwise": layers * 2 * self._norm(),
            }
        moe = self._moe_layers()
        per_moe = self.ffn_active_params_per_layer() if active else self.ffn_params_per_layer()
        return {
            "attention": self.num_layers * (self.attn_params_per_layer() + self._cross_attn()),
            "ffn": moe * per_moe + (self.num_layers - moe) * self.dense_ffn_params(),
            "elementwise": self.num_layers * self.norms_per_block * self._norm(),
        }

    def flops_by_cell(self, cross_kv_layers: int = 0) -> dict[str, float]:
        """Linear-layer FLOPs per token of each cell kind (keys as params_by_cell): a GEMM of an
        m x k weight costs 2 m k FLOPs per token, so 2 x the active weights the token multiplies.
        Encoder-decoder: the cross-attention K/V projections run once per request on the encoder
        output and are charged to the encoder (`cross_kv_layers` decoder layers of them)."""
        p = self.params_by_cell(active=True)
        if self.arch == "encoder":
            p["attention"] += cross_kv_layers * self._cross_kv_params()
        elif self.arch == "encoder-decoder":
            p["attention"] -= self.num_layers * self._cross_kv_params()
        return {k: 2.0 * v for k, v in p.items()}

    def step_flops(self, cross_kv_layers: int = 0) -> StepFlops:
        """Model FLOPs of a forward step by what they scale with (see StepFlops); the one FLOP
        model behind `flops_per_token` and the MFU of a simulated plan. No replicated work: the
        same for every parallel plan."""
        per_token = max(sum(self.flops_by_cell(cross_kv_layers).values()), 0.0)
        if self.arch == "encoder":
            ctx = self.encoder_layers * self._attn_flops_per_ctx()
            # bidirectional: L^2 pairs where the scheduler counts the L(L+1)/2 causal ones
            return StepFlops(per_token, 0.0, 2.0 * ctx, ctx)
        head = 2.0 * self.hidden_size * self.vocab_size
        pair = self.num_layers * self._attn_flops_per_pair()
        return StepFlops(per_token, head, pair, self.num_layers * self._attn_flops_per_ctx())

    def flops_per_token(self, context_len: float, encoder_len: float | None = None) -> float:
        """Forward FLOPs of one generated token attending to context_len tokens:
        2 x active non-embedding decoder parameters + attention scores/values + LM head.

        Encoder-decoder: cross-attention K/V projections are computed once per request, not per
        token (left out); cross-attention scores/values run over encoder_len (default: the
        fixed encoder_seq_len, or context_len when the encoder length is the prompt).
        Arch "encoder": one encoder token attending to context_len tokens, no head.
        """
        f = self.step_flops()
        if self.arch == "encoder":
            return f.per_token + f.per_ctx * context_len
        ctx = context_len
        if self.arch == "encoder-decoder":
            ctx += encoder_len if encoder_len is not None else (self.encoder_seq_len or context_len)
        return f.per_token + f.per_seq + f.per_ctx * ctx

    def encoder_flops_per_token(self, seq_len: float) -> float:
        """Forward FLOPs of one encoder token in a sequence of seq_len tokens (0 if no encoder)."""
        if self.encoder_layers == 0:
            return 0.0
        return replace(self, arch="encoder").flops_per_token(seq_len)


@dataclass(frozen=True)
class StepFlops:
    """Model FLOPs of a forward step (whole model, no replicated work), by what they scale with:
    FLOPs = per_token x tokens + per_seq x sampled sequences + per_pair x prefill (query, key)
    pairs (causal pairs, as the scheduler counts them) + per_ctx x context tokens read by decode.
    """

    per_token: float  # linear layers (ModelSpec.flops_by_cell)
    per_seq: float  # LM head: 2 x hidden x vocab per sampled sequence
    per_pair: float  # prefill attention, all layers
    per_ctx: float  # decode attention, all layers

    def of_steps(
        self,
        count: np.ndarray,
        tokens: np.ndarray,
        sampled: np.ndarray,
        pairs: np.ndarray,
        ctx_total: np.ndarray,
    ) -> np.ndarray:
        """FLOPs of `count` steps of `tokens` tokens, `sampled` sampled sequences and `pairs`
        prefill pairs each, reading `ctx_total` decode context tokens in all (the MFU)."""
        return (
            self.per_token * tokens * count
            + self.per_seq * sampled * count
            + self.per_pair * pairs * count
            + self.per_ctx * ctx_total
        )
