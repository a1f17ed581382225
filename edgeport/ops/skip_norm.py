r"""Residual add + RMSNorm as one op (onnxruntime's SkipSimplifiedLayerNormalization).

    total  = x + skip                                    (the residual stream after a sublayer)
    normed = weight * total / sqrt(mean(total^2, -1) + eps)   (float32 arithmetic, as decoder.RMSNorm)

Shapes: x, skip (B, S, H) -> normed (B, S, H), total (B, S, H); weight (H,); eps a Python float.

Forms:
- `skip_rms_norm` ("edgeport::skip_rms_norm"): the eager reference, a torch.library custom op with a fake
  kernel; its arithmetic is reference_models/decoder.py RMSNorm's after the add (bit for bit in float32,
  tests/test_export_decoders.py). Its ONNX symbolic is `com.microsoft.SkipSimplifiedLayerNormalization`
  (inputs input, skip, gamma; attribute epsilon; outputs output, mean, inv_std_var, input_skip_bias_sum:
  onnxruntime's ContribOperators.md), of whose outputs the graph reads output and input_skip_bias_sum.
- the reference model itself: Add, then RMSNorm's plain ops (what every other lowering exports).

Why a lowering and not left to onnxruntime: its session optimizer fuses RMSNorm's ops into
SimplifiedLayerNormalization but not the residual Add before it (checked with onnxruntime 1.32,
SessionOptions.optimized_model_filepath: a 2-layer Mistral keeps 4 Adds beside 5 SimplifiedLayerNormalization);
onnxruntime-genai's Mistral graph has the fused op.

`swap_norms(model, "skip")` is the named, reversible module swap that routes a Mistral-architecture backbone's
norms through the op; `swap_norms(model, "reference")` restores it. Where the fused op sits:

    layer 0:  x --RMSNorm--> attn --\                     (no residual before the first norm: as built)
              x -------------------SkipNorm(post_attention_layernorm) -> normed -> ffn --\
                                      \ total h ----------------------------------------- SkipNorm(layer 1's
    layer i:                                                                             input_layernorm) ...
    final:    the last layer's (h, ffn out) -> SkipNorm(norm) -> normed (its total is unused)

A swapped layer hands the next one a `Residual(total, delta)` pair instead of total + delta, so the add
happens inside the next norm. The swap finds modules by what they offer: a backbone (`attention_bias`,
`sliding_window`) with `layers` and a final `norm`; a layer with `input_layernorm`,
`post_attention_layernorm` (RMSNorms: `weight`, `eps`), `self_attn` and `ffn_name`.
Lowerings registered here: mistral/onnx "default" (GroupQueryAttention, ops/attention.py, + this op);
mixtral's default (ops/moe.py) applies the same swap.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from edgeport.errors import EdgeportError
from edgeport.ops.attention import GQA_SYMBOLICS, MS_DOMAIN, attention_swapped, mix_in, mix_out
from edgeport.ops.registry import register_lowering


@torch.library.custom_op("edgeport::skip_rms_norm", mutates_args=())
def skip_rms_norm(x: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, skip (B, S, H), weight (H,) -> (normed (B, S, H), total = x + skip (B, S, H)); see the module docstring."""
    total = x + skip
    h = total.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(total.dtype), total


@skip_rms_norm.register_fake
def _skip_rms_norm_fake(x, skip, weight, eps):
    return torch.empty_like(x), torch.empty_like(x)


# ONNX symbolic (TorchScript exporter): one node, two of its four outputs read.
#
#   x, skip, weight --com.microsoft.SkipSimplifiedLayerNormalization(epsilon)--> output, (mean), (inv_std_var),
#                                                                                input_skip_bias_sum
def _symbolic_skip_norm(g, x, skip, weight, eps):
    from torch.onnx import symbolic_helper as sh

    out, _mean, _inv_std, total = g.op(f"{MS_DOMAIN}::SkipSimplifiedLayerNormalization", x, skip, weight,
                                       epsilon_f=sh._get_const(eps, "f", "eps"), outputs=4)
    for t in (out, total):
        t.setType(x.type())  # (B, S, H)
    for t in (_mean, _inv_std):
        t.setType(x.type().with_sizes([None] * 3))  # (B, S, 1) float32, unused
    return out, total


SKIP_NORM_SYMBOLICS = (("edgeport::skip_rms_norm", _symbolic_skip_norm),)


def register_symbolics(opset: int):
    """Register the SkipSimplifiedLayerNormalization symbolic of `skip_rms_norm` with torch.onnx at `opset`."""
    for name, fn in SKIP_NORM_SYMBOLICS:
        torch.onnx.register_custom_op_symbolic(name, fn, opset)


class Residual(NamedTuple):
    """The residual stream with its last add pending: the stream is total + delta (both (B, S, H))."""

    total: torch.Tensor
    delta: torch.Tensor


def _skip_norm(norm, r: Residual):
    """(normed, total + delta) through the op, with `norm`'s weight and eps."""
    return skip_rms_norm(r.delta, r.total, norm.weight, float(norm.eps))


class SkipNormLayerMixin:
    """Mixed into a decoder layer's class by the swap: pre-norm block x + attn(norm(x)), h + ffn(norm(h)), with
    each residual add inside the next norm (this layer's post-attention norm, the next layer's input norm)."""

    def forward(self, x, bias, rope, past_k, past_v):
        """x (B, S, H) or a Residual from the previous swapped layer -> (Residual(h, ffn out), present_k,
        present_v); the caller's next norm finishes the add."""
        if isinstance(x, Residual):
            normed, x = _skip_norm(self.input_layernorm, x)  # x = total + delta (B, S, H)
        else:  # the first layer: nothing pending
            normed = self.input_layernorm(x)
        a, k, v = self.self_attn(normed, bias, rope, past_k, past_v)
        normed, h = _skip_norm(self.post_attention_layernorm, Residual(x, a))  # h = x + a
        return Residual(h, getattr(self, self.ffn_name)(normed)), k, v


class SkipNormFinalMixin:
    """Mixed into the backbone's final RMSNorm by the swap: a Residual is added and normed in one op."""

    def forward(self, x):
        """x (B, S, H) or Residual -> normed (B, S, H)."""
        if isinstance(x, Residual):
            return _skip_norm(self, x)[0]
        return super().forward(x)


NORM_FORMS = ("skip", "reference")


def _is_norm(m) -> bool:
    return isinstance(getattr(m, "weight", None), torch.Tensor) and isinstance(getattr(m, "eps", None), (int, float))


def _is_layer(m) -> bool:
    return (_is_norm(getattr(m, "input_layernorm", None)) and _is_norm(getattr(m, "post_attention_layernorm", None))
            and hasattr(m, "self_attn") and isinstance(getattr(m, "ffn_name", None), str))


def swap_norms(model: torch.nn.Module, form: str) -> list[str]:
    """Named, reversible swap: every Mistral-architecture backbone's residual adds run inside its norms.

    "skip": through `skip_rms_norm` (exported as SkipSimplifiedLayerNormalization); "reference": as built.
    A backbone is swapped only when its final `norm` and every one of its `layers` qualify (all or nothing:
    a Residual must never reach an unswapped layer). Returns the swapped layer names (parameters and names
    unchanged, only classes); raises EdgeportError on an unknown form.
    """
    if form not in NORM_FORMS:
        raise EdgeportError(f"unknown norm form '{form}'; forms: {', '.join(NORM_FORMS)}")
    names = []
    for bname, backbone in model.named_modules():
        if not (callable(getattr(backbone, "attention_bias", None)) and hasattr(backbone, "sliding_window")):
            continue
        layers, norm = getattr(backbone, "layers", None), getattr(backbone, "norm", None)
        if layers is None or not _is_norm(norm) or not all(_is_layer(m) for m in layers):
            continue
        apply = mix_in if form == "skip" else mix_out
        apply(norm, SkipNormFinalMixin)
        for i, layer in enumerate(layers):
            apply(layer, SkipNormLayerMixin)
            names.append(f"{bname}.layers.{i}" if bname else f"layers.{i}")
    return names


@contextlib.contextmanager
def norms_swapped(model):
    """`swap_norms(model, "skip")` for the duration of the block; yields the swapped layer names."""
    names = swap_norms(model, "skip")
    try:
        yield names
    finally:
        swap_norms(model, "reference")


@contextlib.contextmanager
def _gqa_skip_norm(model, ctx):
    with attention_swapped(model, "gqa"), norms_swapped(model):
        yield model, {"attention": "gqa", "norm": "skip"}


# onnxruntime: attention as com.microsoft.GroupQueryAttention (window = local_window_size), residual adds
# inside com.microsoft.SkipSimplifiedLayerNormalization.
register_lowering("mistral", "onnx", "default", swap=_gqa_skip_norm, symbolics=GQA_SYMBOLICS + SKIP_NORM_SYMBOLICS,
                  custom_opsets={MS_DOMAIN: 1})
