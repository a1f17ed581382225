"""Mixture-of-experts feed-forward (Mixtral): softmax router -> top-k -> renormalise -> sum of SwiGLU experts.

    y[t] = sum over the top-k experts e of token t:  p[t, e] * w2[e] @ (silu(w1[e] @ x[t]) * (w3[e] @ x[t]))
    p = softmax(router_logits) restricted to the top k, renormalised to sum 1.

Weights are stacked per expert (the layout onnxruntime's MoE and TensorRT take):
    w1 (E, I, H) gate projection, w3 (E, I, H) up projection, w2 (E, H, I) down projection.
The router's linear layer stays outside: the op takes its logits (T, E), as onnxruntime's MoE does.

Two forms with one contract, tested against each other in tests/test_ref_decoders.py:
- `moe`: the eager reference, a `torch.library.custom_op` ("edgeport::moe") with a fake kernel; it runs
  only the chosen experts on their tokens (data-dependent indexing, so it does not trace).
- `moe_dense`: a traceable decomposition correct for any routing: every expert runs on every token and
  the results are weighted by a dense (T, E) routing matrix that is zero off the top k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def routing_weights(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, E) logits -> top-k (weights (T, k) renormalised in float32, expert indices (T, k))."""
    probs = torch.softmax(router_logits.float(), dim=-1)  # (T, E)
    top_p, top_i = torch.topk(probs, top_k, dim=-1)  # (T, k)
    return top_p / top_p.sum(dim=-1, keepdim=True), top_i


def routing_matrix(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """(T, E) logits -> (T, E) weights: the renormalised top-k probabilities, zero elsewhere.

    Built with comparisons against arange(E) (Equal, Cast, Mul, ReduceSum): no scatter, no one_hot,
    so every target's builtin ops express it.
    """
    top_p, top_i = routing_weights(router_logits, top_k)
    experts = torch.arange(router_logits.shape[-1], device=router_logits.device)  # (E,)
    hit = (top_i[..., None] == experts).to(top_p.dtype)  # (T, k, E)
    return (hit * top_p[..., None]).sum(dim=1)  # (T, E)


def swiglu_expert(x, w1, w3, w2):
    """One expert (or all, batched on a leading E axis): w2 @ (silu(w1 @ x) * (w3 @ x))."""
    h = F.silu(torch.matmul(x, w1.transpose(-1, -2))) * torch.matmul(x, w3.transpose(-1, -2))  # (..., T, I)
    return torch.matmul(h, w2.transpose(-1, -2))  # (..., T, H)


def moe_dense(x, router_logits, w1, w3, w2, top_k: int):
    """Traceable MoE: x (T, H), router_logits (T, E) -> (T, H). Cost: every expert on every token."""
    r = routing_matrix(router_logits, top_k).to(x.dtype)  # (T, E)
    y = swiglu_expert(x[None], w1, w3, w2)  # (E, T, H)
    return (y * r.t()[..., None]).sum(dim=0)  # (T, H)


@torch.library.custom_op("edgeport::moe", mutates_args=())
def moe(x: torch.Tensor, router_logits: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor,
        top_k: int) -> torch.Tensor:
    """Eager reference: x (T, H), router_logits (T, E) -> (T, H), each expert on its routed tokens only."""
    top_p, top_i = routing_weights(router_logits, top_k)  # (T, k)
    out = torch.zeros_like(x)
    for e in range(w1.shape[0]):
        tok, slot = torch.nonzero(top_i == e, as_tuple=True)  # tokens routed to e, and in which top-k slot
        if tok.numel() == 0:
            continue
        y = swiglu_expert(x[tok], w1[e], w3[e], w2[e])  # (n, H)
        out.index_add_(0, tok, y * top_p[tok, slot, None].to(x.dtype))
    return out


@moe.register_fake
def _moe_fake(x, router_logits, w1, w3, w2, top_k):
    return torch.empty_like(x)
