"""Checkpoints that keep some linear layers unquantised (mixed precision), from the config's
`quantization_config`.

Quantised checkpoints are rarely quantised everywhere. Meta's `Llama-3.1-405B-FP8`
(`quant_method` "fbgemm_fp8") keeps every attention projection, the MLPs of the first and the
last layer and the LM head in bf16; llm-compressor "FP8-dynamic" checkpoints
(`compressed-tensors`) keep the LM head in bf16. The config says which modules, in one of these
lists (all read the same way):

- `modules_to_not_convert` (fbgemm_fp8, fp8, AWQ/GPTQ in transformers),
- `ignore` (compressed-tensors; entries may be `re:` regular expressions),
- `ignored_layers` (vLLM's fp8 checkpoints), `exclude_modules` (NVIDIA ModelOpt),
- `llm_int8_skip_modules` (bitsandbytes).

An entry names a module by its Hugging Face path (`model.layers.3.self_attn.q_proj`), or a parent
of it (`model.layers.0`, `model.layers.7.self_attn`, `lm_head`); a trailing `.weight` is
dropped, `*` globs and `re:` expressions match too. A name matches a module or its parents but
not any substring (transformers tests substrings, so `model.layers.1` would also cover layer 12;
vLLM compares whole projection names, which the per-projection lists of published checkpoints
such as Llama-3.1-405B-FP8 satisfy either way). The names are matched against the linear layers of a Llama-style decoder (`model.layers.{i}.self_attn.*`,
`model.layers.{i}.mlp.*`, MoE experts, `lm_head`) and reduced to what the cost and memory models
need: which layers keep their attention projections and which their FFN (dense MLP or all
experts) unquantised, and whether the LM head is. A cell with only some of its projections named
is modelled as quantised (said in a note); names that match no linear layer of the model
(vision towers, other naming schemes) are ignored with a note, since the engine loads the
checkpoint regardless. Embeddings, norms and MoE routers are never quantised by these methods
and are not modelled as quantised linears (names of them are accepted silently).

The unquantised modules apply when a plan runs the checkpoint's own weight format (its
`weight_dtype`); a plan in another weight dtype models another checkpoint.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from apex_fast.errors import ApexError

# lists of module names kept unquantised, by the key each quantisation tool writes
LIST_KEYS = (
    "modules_to_not_convert",
    "ignore",
    "ignored_layers",
    "exclude_modules",
    "llm_int8_skip_modules",
)
# quant_method -> the format of its quantised linear weights (None: read from the config)
_FP8_METHODS = ("fbgemm_fp8", "fp8", "modelopt")
# module names that are never quantised linears here (accepted silently)
_NOT_LINEAR = re.compile(r"(^|\.)(embed_tokens|wte|wpe|[a-z_]*norm[a-z_]*|rotary_emb|gate)$")


@dataclass(frozen=True)
class MixedPrecision:
    """Which linear layers of a quantised checkpoint stay in `dtype` (all others are in
    `weight_dtype`). Layer indices count decoder layers from 0."""

    method: str  # quant_method of the checkpoint
    weight_dtype: str  # format of the quantised linears ("float8", "int8", "int4")
    dtype: str  # format of the unquantised linears ("half" for bf16/fp16 checkpoints)
    attention_layers: tuple[int, ...] = ()  # layers whose attention projections stay in dtype
    ffn_layers: tuple[int, ...] = ()  # layers whose FFN (dense MLP or all experts) stays in dtype
    lm_head: bool = False
    notes: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.attention_layers or self.ffn_layers or self.lm_head)

    def layers_in(self, kind: str, start: int, stop: int) -> int:
        """Unquantised cells of `kind` ("attention" or "ffn") among layers [start, stop)."""
        layers = self.attention_layers if kind == "attention" else self.ffn_layers
        return sum(1 for i in layers if start <= i < stop)

    def describe(self, num_layers: int, moe: bool = False) -> str:
        """'attention, LM head and layers 0/125 MLP in half'."""
        ffn = "experts" if moe else "MLP"
        parts = []
        for layers, what in ((self.attention_layers, "attention"), (self.ffn_layers, ffn)):
            if len(layers) == num_layers:
                parts.append(what)
            elif layers:
                parts.append(f"layer{'s' if len(layers) > 1 else ''} {_layer_list(layers)} {what}")
        if self.lm_head:
            parts.insert(min(1, len(parts)), "LM head")
        text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{text} in {self.dtype}"


def _layer_list(layers: tuple[int, ...]) -> str:
    """'0/125', '0-3/60' (runs of consecutive layers as ranges)."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return "/".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def active(mixed: MixedPrecision | None, weight_dtype: str) -> MixedPrecision | None:
    """The checkpoint's unquantised modules if a plan in `weight_dtype` runs its weights as
    shipped (same quantised format) and some linear stays unquantised; else None."""
    if mixed is None or not mixed.any or weight_dtype != mixed.weight_dtype:
        return None
    return mixed


def weight_dtype_label(
    mixed: MixedPrecision | None, weight_dtype: str, num_layers: int, moe: bool = False
) -> str:
    """The weights part of a plan's dtype line: 'float8 (attention, LM head and layers 0/125
    MLP in half, from the checkpoint)', or just the dtype."""
    m = active(mixed, weight_dtype)
    if m is None:
        return weight_dtype
    return f"{weight_dtype} ({m.describe(num_layers, moe)}, from the checkpoint)"


# ---------------------------------------------------------------------- parsing
def _fail(where: str, msg: str) -> ApexError:
    return ApexError(f"model config {where}: {msg}")


def _format(q: dict, method: str) -> str | None:
    """The dtype of the quantised linears of a quantization_config, None if not modelled."""
    if method in _FP8_METHODS:
        algo = q.get("quant_algo")
        if method == "modelopt" and isinstance(algo, str) and algo.upper() != "FP8":
            return None  # NVFP4 / mixed ModelOpt formats are not modelled
        return "float8"
    if method == "compressed-tensors":
        groups = q.get("config_groups")
        if not isinstance(groups, dict):
            return None
        kinds = set()
        for g in groups.values():
            w = g.get("weights") if isinstance(g, dict) else None
            if isinstance(w, dict):
                kinds.add((w.get("type"), w.get("num_bits")))
        if kinds == {("float", 8)}:
            return "float8"
        if kinds == {("int", 8)}:
            return "int8"
        if kinds == {("int", 4)}:
            return "int4"
        return None
    if method in ("awq", "gptq"):
        bits = q.get("bits", q.get("w_bit"))
        return {4: "int4", 8: "int8"}.get(bits) if isinstance(bits, int) else None
    if method == "bitsandbytes":
        if q.get("load_in_4bit") is True:
            return "int4"
        if q.get("load_in_8bit") is True:
            return "int8"
    return None


def _names(q: dict, where: str) -> list[str]:
    out: list[str] = []
    for key in LIST_KEYS:
        value = q.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(where, f"quantization_config.{key} must be a list of module names")
        out.extend(value)
    return out


def _unquantised_dtype(config: dict) -> str:
    torch_dtype = config.get("torch_dtype") or config.get("dtype")
    return "float" if torch_dtype in ("float32", "float") else "half"


def _layer_modules(kw: dict, mt: str) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """Canonical linear names of one layer of a Llama-style decoder: per cell ("attention",
    "ffn") the module paths below `model.layers.{i}`; and the MoE layers' FFN paths."""
    if kw.get("kv_lora_rank"):
        q = ("q_a_proj", "q_b_proj") if kw.get("q_lora_rank") else ("q_proj",)
        attn = (*q, "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
    else:
        attn = ("q_proj", "k_proj", "v_proj", "o_proj")
    cells = {"attention": tuple(f"self_attn.{p}" for p in attn)}
    gated = ("gate_proj", "up_proj", "down_proj")
    if not kw.get("gated_ffn", True):
        gated = ("up_proj", "down_proj")
    cells["ffn"] = tuple(f"mlp.{p}" for p in gated)
    if mt == "mixtral":
        moe: tuple[str, ...] = ("block_sparse_moe.experts",)
    else:
        moe = ("mlp.experts",)
    if kw.get("num_shared_experts"):
        moe += ("mlp.shared_expert" if mt == "qwen2_moe" else "mlp.shared_experts",)
    return cells, moe


def _expand(name: str) -> list[str]:
    """Drop a trailing '.weight'; fused vLLM names stand for their projections."""
    if name.endswith(".weight"):
        name = name[: -len(".weight")]
    fused_names = (
        ("qkv_proj", ("q_proj", "k_proj", "v_proj")),
        ("gate_up_proj", ("gate_proj", "up_proj")),
    )
    for fused, parts in fused_names:
        if name.endswith("." + fused):
            base = name[: -len(fused)]
            return [base + p for p in parts]
    return [name]


def _ancestors(path: str) -> list[str]:
    bits = path.split(".")
    return [".".join(bits[:k]) for k in range(len(bits), 0, -1)]


def _first_few(items: list[str], sep: str) -> str:
    """The first three items joined by `sep`, then `...` when there are more."""
    return sep.join(items[:3]) + (f"{sep}..." if len(items) > 3 else "")


def parse_mixed_precision(
    q: dict, method: str, fmt: str, kw: dict, mt: str, dtype: str, where: str
) -> MixedPrecision | None:
    """Reduce the checkpoint's lists of unquantised modules to cells per layer (module doc)."""
    names = [n for raw in _names(q, where) for n in _expand(raw.strip())]
    if not names:
        return None
    layers = kw["num_layers"]
    dense = kw.get("num_dense_layers", 0) if kw.get("num_experts") else layers
    cells, moe = _layer_modules(kw, mt)
    # every canonical linear: path -> (cell kind, layer) ; layer -1 for the LM head
    linears: dict[str, tuple[str, int]] = {"lm_head": ("lm_head", -1)}
    for i in range(layers):
        ffn = cells["ffn"] if i < dense else moe
        for kind, paths in (("attention", cells["attention"]), ("ffn", ffn)):
            for p in paths:
                linears[f"model.layers.{i}.{p}"] = (kind, i)
    by_prefix: dict[str, list[str]] = {}
    for path in linears:
        for a in _ancestors(path):
            by_prefix.setdefault(a, []).append(path)
    hit: set[str] = set()
    unknown: list[str] = []
    for n in names:
        if n.startswith("re:") or "*" in n or "?" in n:
            if n.startswith("re:"):
                try:
                    rx = re.compile(n[3:])
                except re.error:
                    msg = f"quantization_config entry {n!r} is not a valid regular expression"
                    raise _fail(where, msg) from None
                test = rx.fullmatch
            else:
                pattern = n

                def test(a: str, pattern: str = pattern) -> bool:
                    return fnmatch.fnmatchcase(a, pattern)

            found = [p for a, ps in by_prefix.items() if test(a) for p in ps]
        else:
            found = by_prefix.get(n, [])
        if found:
            hit.update(found)
        elif not _NOT_LINEAR.search(n.rsplit("model.layers.", 1)[-1]):
            unknown.append(n)
    full: dict[str, list[int]] = {"attention": [], "ffn": []}
    partial: list[str] = []
    for i in range(layers):
        ffn = cells["ffn"] if i < dense else moe
        for kind, paths in (("attention", cells["attention"]), ("ffn", ffn)):
            got = [p for p in paths if f"model.layers.{i}.{p}" in hit]
            if len(got) == len(paths):
                full[kind].append(i)
            elif got:
                partial.append(f"layer {i} {kind} ({', '.join(got)})")
    notes = []
    if partial:
        have = "cells have" if len(partial) > 1 else "cell has"
        notes.append(
            f"{len(partial)} {have} only some projections "
            f"unquantised, modelled as quantised: {_first_few(partial, '; ')}"
        )
    if unknown:
        match = "names match" if len(unknown) > 1 else "name matches"
        notes.append(
            f"{len(unknown)} unquantised module {match} no "
            f"linear layer of the model, ignored: {_first_few(unknown, ', ')}"
        )
    return MixedPrecision(
        method=method,
        weight_dtype=fmt,
        dtype=dtype,
        attention_layers=tuple(full["attention"]),
        ffn_layers=tuple(full["ffn"]),
        lm_head="lm_head" in hit and kw.get("tied_embeddings") is not True,
        notes=tuple(notes),
    )


def checkpoint_precision(config: dict, kw: dict, where: str) -> dict:
    """ModelSpec fields from the config's `quantization_config`: the checkpoint's FP8 weight
    format (`native_weight_dtype`) and its unquantised modules (`mixed_precision`); {} when the
    config has no quantisation the tool models this way (MXFP4 experts are modelled by
    `native_expert_dtype`)."""
    q = config.get("quantization_config")
    if q is None:
        return {}
    if not isinstance(q, dict):
        raise _fail(where, "quantization_config must be an object")
    method = q.get("quant_method")
    if not isinstance(method, str) or kw.get("arch") != "decoder":
        return {}
    fmt = _format(q, method)
    if fmt is None:
        return {}
    out: dict[str, Any] = {}
    if fmt == "float8":
        out["native_weight_dtype"] = "float8"
    mt = config.get("model_type") if isinstance(config.get("model_type"), str) else ""
    mixed = parse_mixed_precision(q, method, fmt, kw, mt, _unquantised_dtype(config), where)
    if mixed is not None:
        out["mixed_precision"] = mixed
    return out
