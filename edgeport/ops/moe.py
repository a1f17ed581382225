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

Lowerings (data, applied by edgeport/export): onnxruntime gets `com.microsoft.MoE` (the symbolic of `moe`
below) through the swap `swap_moe(model, "op")`, registered for mixtral/onnx "default" (with
GroupQueryAttention and SkipSimplifiedLayerNormalization, ops/skip_norm.py) and "moe-only"; every other target
exports `moe_dense` (the "generic" lowering in ops/attention.py, TFLite, TensorRT). The swap finds MoE modules by what they offer: `stacked() ->
(w1, w3, w2)`, `top_k` and a `moe(x, logits)` method (reference_models/mixtral.py's SparseMoe).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from edgeport.errors import EdgeportError
from edgeport.ops.attention import GQA_SYMBOLICS, MS_DOMAIN, TRT_ATTENTION_NOTE, attention_swapped, mix_in, mix_out
from edgeport.ops.registry import register_lowering
from edgeport.ops.skip_norm import SKIP_NORM_SYMBOLICS, norms_swapped


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


# ONNX symbolic (TorchScript exporter), onnxruntime's CPU MoE kernel contract (see FACTS.md):
#
#   w1 (E, I, H) --Unsqueeze(2)--\
#                                 Concat(axis 2) -> (E, I, 2, H) --Reshape--> fc1 (E, 2I, H), rows gate/up interleaved
#   w3 (E, I, H) --Unsqueeze(2)--/                                            (constant-folded into one initializer)
#   x (T, H), router_logits (T, E), fc1, w2 (E, H, I)
#        -> com.microsoft.MoE(k, activation_type=swiglu, swiglu_fusion=1, normalize_routing_weights=1) -> (T, H)
# The kernel applies the softmax to router_probs itself, so the raw logits go in.
def _symbolic_ort_moe(g, x, router_logits, w1, w3, w2, top_k):
    from torch.onnx import symbolic_helper as sh

    k = sh._get_const(top_k, "i", "top_k")
    axis2 = g.op("Constant", value_t=torch.tensor([2]))
    pairs = g.op("Concat", g.op("Unsqueeze", w1, axis2), g.op("Unsqueeze", w3, axis2), axis_i=2)  # (E, I, 2, H)
    hidden = g.op("Slice", g.op("Shape", w1), axis2, g.op("Constant", value_t=torch.tensor([3])))  # (1,) H
    fc1 = g.op("Reshape", pairs, g.op("Concat", g.op("Constant", value_t=torch.tensor([0, -1])), hidden, axis_i=0))
    none = g.op("prim::Constant")
    none.setType(torch._C.OptionalType.ofTensor())
    return g.op("com.microsoft::MoE", x, router_logits, fc1, none, w2, k_i=k, activation_type_s="swiglu",
                swiglu_fusion_i=1, normalize_routing_weights_i=1, activation_alpha_f=1.0,
                activation_beta_f=0.0).setType(x.type())


def register_symbolics(opset: int):
    """Register the com.microsoft.MoE symbolic of `moe` with torch.onnx at `opset`."""
    torch.onnx.register_custom_op_symbolic("edgeport::moe", _symbolic_ort_moe, opset)


class OpMoeMixin:
    """Mixed into an MoE module's class by the swap: `moe` runs the `edgeport::moe` custom op."""

    def moe(self, x, logits):
        """x (T, H), router logits (T, E) -> (T, H) through the `edgeport::moe` custom op."""
        return moe(x, logits, *self.stacked(), self.top_k)


MOE_FORMS = ("dense", "op")


def swap_moe(model: torch.nn.Module, form: str) -> list[str]:
    """Named, reversible module swap: every MoE module runs as `form` ("dense" as built | "op").

    Parameters are kept (only the class changes). Returns the swapped module names; raises
    EdgeportError on an unknown form.
    """
    if form not in MOE_FORMS:
        raise EdgeportError(f"unknown MoE form '{form}'; forms: {', '.join(MOE_FORMS)}")
    names = []
    for name, m in model.named_modules():
        if callable(getattr(m, "stacked", None)) and callable(getattr(m, "moe", None)) and hasattr(m, "top_k"):
            (mix_in if form == "op" else mix_out)(m, OpMoeMixin)
            names.append(name)
    return names


def _moe_op(attention: str, skip_norm: bool = False):
    @contextlib.contextmanager
    def swap(model, ctx):
        norms = norms_swapped(model) if skip_norm else contextlib.nullcontext()
        with attention_swapped(model, attention), norms:
            swap_moe(model, "op")
            try:
                yield model, {"attention": attention, "moe": "op", **({"norm": "skip"} if skip_norm else {})}
            finally:
                swap_moe(model, "dense")

    return swap


_MOE_SYMBOLICS = GQA_SYMBOLICS + (("edgeport::moe", _symbolic_ort_moe),)
# onnxruntime: the MoE as com.microsoft.MoE, attention as GroupQueryAttention and the residual adds inside
# SkipSimplifiedLayerNormalization (ops/skip_norm.py) (the default);
# "moe-only": the MoE op with the reference attention and norms (plain ops), to measure the two apart.
register_lowering("mixtral", "onnx", "default", swap=_moe_op("gqa", skip_norm=True),
                  symbolics=_MOE_SYMBOLICS + SKIP_NORM_SYMBOLICS, custom_opsets={MS_DOMAIN: 1})
register_lowering("mixtral", "onnx", "moe-only", swap=_moe_op("reference"), symbolics=_MOE_SYMBOLICS,
                  custom_opsets={MS_DOMAIN: 1})
# TensorRT: experts as the reference's decomposition (every expert computed, weighted by the top-k routing),
# since TensorRT's MoE layer (TRT_MoE, TensorRT 11) runs only on Blackwell/Thor-class GPUs.
register_lowering("mixtral", "tensorrt", "generic", converter={
    "attention": TRT_ATTENTION_NOTE,
    "moe": "decomposed (TensorRT's MoE layer runs only on Blackwell/Thor-class GPUs)"})
