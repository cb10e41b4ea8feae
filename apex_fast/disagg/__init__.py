"""Disaggregated prefill/decode deployments (xPyD): model, simulation and search over splits.

A request's prompt is processed by one of x prefill instances (a prefill-only stream: the request
with a single output token through the usual simulator); its KV cache then crosses the link to
one of y decode instances, which starts it when the KV has arrived. As in vLLM's NIXL connector,
the decode instance receives the KV of all prompt tokens but the last and computes that one
token itself, sampling the first output token: on the decode side a request is a 1-token prompt
with `prompt - 1` KV tokens already present (the kernel's `prefix`). That one query reads its
context like a decode, so its attention is priced as decode attention; the step that admits it
is a prefill-type step for the engine and keeps the engine's eager-mode rule, as in an
aggregated run.

KV transfer: bytes = the prompt's KV (all layers, the KV dtype); the prefill instance's GPUs
send their shards in parallel (min(prefill, decode instance GPUs) lanes), over NVLink when the
whole deployment sits in one NVLink domain, else over the inter-node network, plus a fixed
latency per transfer. Routing is round-robin in both pools (in arrival order for prefill, in
KV-arrival order for decode). Ranking: goodput per GPU, DistServe's measure (requests meeting
both SLOs per second per GPU, here at the trace's own rate). docs/disaggregation.md.

Modules: `kv_transfer` (bytes, link, time), `pools` (instance sizes and plans, one simulation per
pool), `evaluate` (one deployment and its metrics), `search` (splits ranked by goodput per GPU),
`rating` (DistServe goodput by a rate search), `deployment` (`plan --mode disagg|both`).
"""
