"""Causal self-attention with a KV cache and an optional sliding window, as one op with two lowerings.

    out[b, i] = softmax_j(q[b, i] . k[b, j] * scale + pad_bias[b, i, j]) v[b, j]
    over cache slots j with 0 <= (P + i) - j < window   (window -1: full causal)

Slots, not positions: with left padding the window counts cache slots, HF Mistral's rule.
Shapes (GroupQueryAttention's "BSNH" query and "BNSH" cache):
    q (B, S, H*D) rotated, k/v (B, S, KV*D) (k rotated), past_k/past_v (B, KV, P, D),
    pad_bias (B, 1, S, P+S): 0 on real keys, dtype-min on padding (padding only; causality and the
    window are the op's own job) -> out (B, S, H*D), present_k/present_v (B, KV, P+S, D).

Forms:
- `attention_cached` ("edgeport::attention_cached"): the eager reference, a torch.library custom op
  with a fake kernel; its ONNX symbolic is `com.microsoft.GroupQueryAttention` with
  local_window_size = window (same rule: key j visible iff i - j < window). seqlens_k is
  P+S-1 for every row: padding is in pad_bias, so every row has the same cache length.
  Limitation of onnxruntime's CPU kernel (1.31): S > 1 with a non-empty past needs batch 1.
- the reference model itself (decoder.attend with decoder_bias): plain ONNX ops, exact window;
  the "generic" lowering exports it unchanged.

- `rotary_packed` ("edgeport::rotary_packed"): rotate-half RoPE on the packed (B, S, N*D) projection, exported
  as `com.microsoft.RotaryEmbedding` (position_ids (B, S), cos/sin tables (max positions, D/2)), so q and k go
  from their projections straight into GroupQueryAttention ("BSNH") without per-head reshapes, transposes and
  the rotate-half subgraph (about 40 fewer nodes per layer per decode step).

`swap_attention(model, "gqa")` is the named, reversible module swap that routes a Mistral-architecture
model through the op; `swap_attention(model, "reference")` restores it. The swap finds its modules by
what they offer, not by class: a backbone has `attention_bias(mask, new_tokens, dtype)` and
`sliding_window`; an attention module has `project(x, rope) -> q, k, v`, `o_proj` and `kv_heads`; the
backbone's RoPE module (`rotary_emb` with (max positions, D) `cos`/`sin` tables) then hands the attention
modules (position_ids, cos, sin half tables) instead of gathered cos/sin.
Lowerings registered here (data, applied by edgeport/export): "generic" for every decoder family (the
reference graph as built). mistral/onnx "default" (the op as GroupQueryAttention, with the residual adds inside
SkipSimplifiedLayerNormalization) is registered in ops/skip_norm.py, mixtral's in ops/moe.py.
"""

from __future__ import annotations

import torch

import contextlib

from edgeport.errors import EdgeportError
from edgeport.ops.registry import register_lowering

MS_DOMAIN = "com.microsoft"


def window_visible(past: int, new: int, window: int, device=None) -> torch.Tensor:
    """(S, P+S) bool: query i (slot P+i) sees key j iff 0 <= P+i-j (< window when window > 0)."""
    q = torch.arange(new, device=device) + past  # (S,)
    dist = q[:, None] - torch.arange(past + new, device=device)[None]  # (S, P+S)
    visible = dist >= 0
    return visible & (dist < window) if window > 0 else visible


def _heads(x, heads: int, head_dim: int):
    """(B, S, heads*D) -> (B, heads, S, D)."""
    return x.view(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)


@torch.library.custom_op("edgeport::attention_cached", mutates_args=())
def attention_cached(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor,
                     past_v: torch.Tensor, pad_bias: torch.Tensor, heads: int, kv_heads: int, window: int,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eager reference (see the module docstring for shapes); softmax in float32."""
    B, S, _ = q.shape
    D = past_k.shape[-1]
    present_k = torch.cat([past_k, _heads(k, kv_heads, D)], dim=2)  # (B, KV, T, D)
    present_v = torch.cat([past_v, _heads(v, kv_heads, D)], dim=2)
    groups = heads // kv_heads
    kk = present_k.repeat_interleave(groups, dim=1)  # (B, H, T, D)
    vv = present_v.repeat_interleave(groups, dim=1)
    scores = _heads(q, heads, D) @ kk.transpose(2, 3) * scale + pad_bias  # (B, H, S, T)
    visible = window_visible(past_k.shape[2], S, window, q.device)
    scores = scores.float().masked_fill(~visible, float("-inf"))
    out = torch.softmax(scores, dim=-1).to(q.dtype) @ vv  # (B, H, S, D)
    return out.transpose(1, 2).reshape(B, S, heads * D), present_k, present_v


@attention_cached.register_fake
def _attention_cached_fake(q, k, v, past_k, past_v, pad_bias, heads, kv_heads, window, scale):
    B, S, _ = q.shape
    shape = (B, kv_heads, past_k.shape[2] + S, past_k.shape[3])
    return torch.empty_like(q), q.new_empty(shape), q.new_empty(shape)


@torch.library.custom_op("edgeport::rotary_packed", mutates_args=())
def rotary_packed(x: torch.Tensor, position_ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  heads: int) -> torch.Tensor:
    """x (B, S, heads*D), position_ids (B, S) int64, cos/sin (N, D/2) float32 tables of positions 0..N-1
    -> (B, S, heads*D): each head rotate-half rotated (x * cos + rotate_half(x) * sin with the table
    duplicated over both halves; reference_models/decoder.py apply_rope's arithmetic)."""
    B, S, _ = x.shape
    c, s = (torch.cat([t, t], dim=-1)[position_ids][:, :, None].to(x.dtype) for t in (cos, sin))  # (B, S, 1, D)
    h = x.view(B, S, heads, -1)
    half = h.shape[-1] // 2
    rotated = torch.cat([-h[..., half:], h[..., :half]], dim=-1)
    return (h * c + rotated * s).reshape(x.shape)


@rotary_packed.register_fake
def _rotary_packed_fake(x, position_ids, cos, sin, heads):
    return torch.empty_like(x)


def _symbolic_rotary(g, x, position_ids, cos, sin, heads):
    from torch.onnx import symbolic_helper as sh

    out = g.op(f"{MS_DOMAIN}::RotaryEmbedding", x, position_ids, cos, sin, interleaved_i=0,
               num_heads_i=sh._get_const(heads, "i", "heads"))
    out.setType(x.type())  # (B, S, heads*D)
    return out


# ONNX symbolic (TorchScript exporter):
#
#   q, k, v, past_k, past_v, pad_bias
#        |        T = Shape(pad_bias)[3] (= P + S), B = Shape(pad_bias)[0]
#        |        seqlens_k = Expand(T - 1, [B]) int32, total = T int32
#        v
#   com.microsoft.GroupQueryAttention(num_heads, kv_num_heads, scale, local_window_size)
#        -> out, present_k, present_v
def _dim(g, x, axis: int):
    """Shape(x)[axis] as a (1,) int64 tensor."""
    return g.op("Gather", g.op("Shape", x), g.op("Constant", value_t=torch.tensor([axis])), axis_i=0)


def _symbolic_gqa(g, q, k, v, past_k, past_v, pad_bias, heads, kv_heads, window, scale):
    from torch.onnx import symbolic_helper as sh

    heads, kv_heads = sh._get_const(heads, "i", "heads"), sh._get_const(kv_heads, "i", "kv_heads")
    window, scale = sh._get_const(window, "i", "window"), sh._get_const(scale, "f", "scale")
    # T and B read from pad_bias (B, 1, S, T), the one tensor every layer shares: the layers' copies of this
    # subgraph are then identical and onnxruntime's common-subexpression pass keeps one.
    total = _dim(g, pad_bias, 3)  # (1,) T = P + S
    seqlens = g.op("Expand", g.op("Sub", total, g.op("Constant", value_t=torch.tensor([1]))), _dim(g, pad_bias, 0))
    seqlens = g.op("Cast", seqlens, to_i=6)  # int32 (B,)
    total = g.op("Cast", g.op("Squeeze", total, g.op("Constant", value_t=torch.tensor([0]))), to_i=6)
    none = g.op("prim::Constant")
    none.setType(torch._C.OptionalType.ofTensor())
    out, present_k, present_v = g.op(f"{MS_DOMAIN}::GroupQueryAttention", q, k, v, past_k, past_v, seqlens, total,
                                     none, none, none, pad_bias, num_heads_i=heads, kv_num_heads_i=kv_heads,
                                     scale_f=scale, local_window_size_i=window if window > 0 else -1, outputs=3)
    out.setType(q.type())  # (B, S, H*D)
    for present in (present_k, present_v):
        present.setType(past_k.type().with_sizes([None] * 4))  # (B, KV, P+S, D)
    return out, present_k, present_v


def register_symbolics(opset: int):
    """Register the GroupQueryAttention and RotaryEmbedding symbolics with torch.onnx at `opset`."""
    for name, fn in GQA_SYMBOLICS:
        torch.onnx.register_custom_op_symbolic(name, fn, opset)


class OpAttentionMixin:
    """Mixed into an attention module's class by the swap: the same parameters, run through the op."""

    window: int = -1

    def forward(self, x, pad_bias, rope, past_k, past_v):
        """x (B, S, hidden), rope: (position_ids (B, S), cos, sin (N, D/2)) from OpRotaryMixin, or the
        reference's gathered (cos, sin) -> (out (B, S, hidden), present_k, present_v (B, KV, P+S, D))."""
        B, S, _ = x.shape
        if len(rope) == 3:  # packed: RoPE on the projections as they come, no per-head layout in the graph
            pos, cos, sin = rope
            q = rotary_packed(self.q_proj(x), pos, cos, sin, self.heads)  # (B, S, H*D)
            k = rotary_packed(self.k_proj(x), pos, cos, sin, self.kv_heads)  # (B, S, KV*D)
            v = self.v_proj(x)
        else:
            q, k, v = self.project(x, rope)  # (B, H, S, D), (B, KV, S, D) x2
            q, k, v = (t.transpose(1, 2).reshape(B, S, -1) for t in (q, k, v))  # (B, S, heads*D)
        out, k, v = attention_cached(q, k, v, past_k, past_v, pad_bias, self.heads, self.kv_heads,
                                     self.window, self.head_dim ** -0.5)
        return self.o_proj(out), k, v


class OpRotaryMixin:
    """Mixed into the backbone's RoPE module (`cos`/`sin` (N, D) buffers, halves equal) by the swap: it
    hands the attention modules the position ids and the (N, D/2) half tables for `rotary_packed`."""

    def forward(self, position_ids):
        """(B, S) int64 -> (position_ids, cos (N, D/2), sin (N, D/2))."""
        half = self.cos.shape[-1] // 2
        return position_ids, self.cos[:, :half], self.sin[:, :half]


def padding_bias(attention_mask, new_tokens: int, dtype=torch.float32):
    """(B, P+S) 1/0 mask -> (B, 1, S, P+S): 0 on real keys, dtype-min on padding."""
    B, T = attention_mask.shape
    keep = (attention_mask != 0)[:, None, None, :]  # (B, 1, 1, T)
    bias = torch.where(keep, torch.zeros((), dtype=dtype), torch.full((), torch.finfo(dtype).min, dtype=dtype))
    return bias.expand(B, 1, new_tokens, T)


class OpBackboneMixin:
    """Mixed into a backbone's class by the swap: its layers get a padding-only bias (causality and the
    window are the op's job)."""

    def attention_bias(self, attention_mask, new_tokens: int, dtype):
        """(B, P+S) mask -> (B, 1, S, P+S) padding-only bias (0 / dtype-min)."""
        return padding_bias(attention_mask, new_tokens, dtype)


_MIXED: dict = {}


def mix_in(module: torch.nn.Module, mixin: type) -> None:
    """module.__class__ becomes a subclass (mixin, original class); parameters and names unchanged."""
    cls = type(module)
    if mixin not in cls.__mro__:
        key = (mixin, cls)
        if key not in _MIXED:
            _MIXED[key] = type(f"{mixin.__name__.replace('Mixin', '')}{cls.__name__}", (mixin, cls), {})
        module.__class__ = _MIXED[key]


def mix_out(module: torch.nn.Module, mixin: type) -> None:
    """Undo `mix_in`: the module's class is the original again."""
    cls = type(module)
    if mixin in cls.__mro__ and cls.__bases__[0] is mixin:
        module.__class__ = cls.__bases__[1]


def _is_backbone(m) -> bool:
    return callable(getattr(m, "attention_bias", None)) and hasattr(m, "sliding_window")


def _is_attention(m) -> bool:
    return callable(getattr(m, "project", None)) and hasattr(m, "o_proj") and hasattr(m, "kv_heads")


def _is_rope(m) -> bool:
    """A rotate-half RoPE module: (N, D) `cos`/`sin` tables whose two halves are equal."""
    cos, sin = getattr(m, "cos", None), getattr(m, "sin", None)
    if not (isinstance(cos, torch.Tensor) and isinstance(sin, torch.Tensor) and cos.dim() == 2
            and cos.shape[-1] % 2 == 0):
        return False
    half = cos.shape[-1] // 2
    return bool(torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:]))


def swap_attention(model: torch.nn.Module, form: str) -> list[str]:
    """Named, reversible swap: every Mistral-architecture backbone's attention runs as `form`.

    "gqa": through `attention_cached` (exported as GroupQueryAttention); "reference": as built.
    Returns the swapped attention module names; raises EdgeportError on an unknown form.
    """
    if form not in ("gqa", "reference"):
        raise EdgeportError(f"unknown attention form '{form}'; forms: gqa, reference")
    names = []
    for backbone in [m for m in model.modules() if _is_backbone(m)]:
        (mix_in if form == "gqa" else mix_out)(backbone, OpBackboneMixin)
        if _is_rope(getattr(backbone, "rotary_emb", None)):
            (mix_in if form == "gqa" else mix_out)(backbone.rotary_emb, OpRotaryMixin)
        for name, m in backbone.named_modules():
            if _is_attention(m):
                (mix_in if form == "gqa" else mix_out)(m, OpAttentionMixin)
                m.window = backbone.sliding_window or -1
                names.append(name)
    return names


@contextlib.contextmanager
def attention_swapped(model, form: str):
    """`swap_attention(model, form)` for the duration of the block; yields the swapped module names."""
    names = swap_attention(model, form)
    try:
        yield names
    finally:
        swap_attention(model, "reference")


GQA_SYMBOLICS = (("edgeport::attention_cached", _symbolic_gqa), ("edgeport::rotary_packed", _symbolic_rotary))

# Any runtime: plain ONNX ops (masked softmax attention with the exact window; mixtral: dense MoE).
register_lowering(("gpt2", "mistral", "mixtral"), "onnx", "generic", converter={"attention": "reference"})
# TensorRT "generic": the reference graph as built (plain ONNX ops, the sliding window exact in the mask).
# The default is the opset-23 Attention (+ RotaryEmbedding, RMSNormalization) form of ops/onnx23.py.
TRT_ATTENTION_NOTE = "plain ONNX ops, sliding window kept in the mask"
register_lowering(("gpt2", "mistral"), "tensorrt", "generic", converter={"attention": TRT_ATTENTION_NOTE})
