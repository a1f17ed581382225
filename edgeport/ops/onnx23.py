"""ONNX opset-23 standard forms of attention, RoPE and RMSNorm: the TensorRT lowering of GPT-2, Mistral, Mixtral.

TensorRT's ONNX parser (onnx-tensorrt docs/operators.md, 10.15) takes `Attention` (Q, K, V and attn_mask
4-D; no past_key/past_value inputs, no present outputs), `RotaryEmbedding` and `RMSNormalization`;
onnxruntime 1.32 runs all three on the CPU (checked against numpy), so the graph is proven here.

    per layer (B, S new tokens, P cached, T = P + S):
    x -> RMSNormalization(x, weight, axis=-1, epsilon)
      -> q/k/v projections -> RotaryEmbedding(q (B,H,S,D), cos, sin), RotaryEmbedding(k (B,KV,S,D), cos, sin)
         cos/sin (B, S, D/2): the reference's gathered tables, first half (rotate-half = interleaved 0)
      -> Concat(past_k, k) = present_k (B, KV, T, D)     (the cache stays outside the op, as TensorRT wants)
      -> Attention(q, present_k, present_v, bias (B, 1, S, T), scale) -> (B, H, S, D)
         bias: the reference's additive mask (padding, causality and the sliding window: kept exactly)

torch.onnx's TorchScript exporter stops at opset 20, so the three ops are exported in a private domain
(`edgeport.onnx23`) and `to_opset23`, the lowering's graph pass, moves them into the ONNX domain at opset 23
(and moves the axes attribute of Reduce* ops to an input, the one change between 17 and 23 these graphs
meet; onnx's full checker verifies the result). GQA stays GQA: Attention reads the head counts from the
shapes of Q and K (8 query heads over 2 kv heads needs no repeat in the graph).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from edgeport.ops.registry import register_lowering

DOMAIN = "edgeport.onnx23"
OPSET = 23
REDUCE_AXES_TO_INPUT = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")  # opset 18 moved axes to an input


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class _RMSNorm(torch.autograd.Function):
    """x (..., N), weight (N,) -> weight * x / sqrt(mean(x^2) + eps), in float32; RMSNormalization."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        h = x.float()
        return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    @staticmethod
    def symbolic(g, x, weight, eps):
        out = g.op(f"{DOMAIN}::RMSNormalization", x, weight, axis_i=-1, epsilon_f=eps)
        out.setType(x.type())
        return out


class _Rotary(torch.autograd.Function):
    """x (B, N, S, D), cos/sin (B, S, D/2) -> x * cos + rotate_half(x) * sin; RotaryEmbedding (interleaved 0)."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        c, s = (torch.cat([t, t], dim=-1)[:, None].to(x.dtype) for t in (cos, sin))  # (B, 1, S, D)
        return x * c + _rotate_half(x) * s

    @staticmethod
    def symbolic(g, x, cos, sin):
        out = g.op(f"{DOMAIN}::RotaryEmbedding", x, cos, sin)
        out.setType(x.type())
        return out


class _Attention(torch.autograd.Function):
    """q (B, H, S, D), k/v (B, KV, T, D), bias (B, 1, S, T) -> softmax(q k^T * scale + bias) v (B, H, S, D)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, scale: float):
        groups = q.shape[1] // k.shape[1]
        k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))  # (B, H, T, D)
        probs = torch.softmax((torch.matmul(q, k.transpose(2, 3)) * scale + bias).float(), dim=-1).to(q.dtype)
        return torch.matmul(probs, v)

    @staticmethod
    def symbolic(g, q, k, v, bias, scale):
        out = g.op(f"{DOMAIN}::Attention", q, k, v, bias, scale_f=scale)
        out.setType(q.type())
        return out


class Opset23AttentionMixin:
    """Mixed into a Mistral-architecture attention module (q_proj, k_proj, v_proj, o_proj, heads, kv_heads,
    head_dim): RoPE and attention through the opset-23 ops; same parameters."""

    def project(self, x, rope):
        """x (B, S, hidden) -> q (B, H, S, D), k (B, KV, S, D) rotated, v (B, KV, S, D)."""
        cos, sin = rope  # (B, 1, S, D) each
        half = self.head_dim // 2
        c, s = cos[:, 0, :, :half], sin[:, 0, :, :half]  # (B, S, D/2)
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        return _Rotary.apply(q, c, s), _Rotary.apply(k, c, s), v

    def forward(self, x, bias, rope, past_k, past_v):
        """As the reference: -> (out (B, S, hidden), present_k, present_v (B, KV, P+S, D))."""
        B, S, _ = x.shape
        q, k, v = self.project(x, rope)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, KV, P+S, D)
        out = _Attention.apply(q, k, v, bias, self.head_dim ** -0.5)  # (B, H, S, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, -1)), k, v


class Opset23PackedAttentionMixin:
    """Mixed into a GPT-2 attention module (c_attn packing q|k|v, c_proj, heads, head_dim, scale): attention
    through the opset-23 op (no RoPE, no RMSNorm in GPT-2); same parameters."""

    def forward(self, x, bias, past_k, past_v):
        """As the reference: -> (out (B, S, hidden), present_k, present_v (B, H, P+S, D))."""
        B, S, _ = x.shape
        q, k, v = (t.view(B, S, self.heads, self.head_dim).transpose(1, 2) for t in self.c_attn(x).chunk(3, dim=-1))
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, H, P+S, D)
        out = _Attention.apply(q, k, v, bias, float(self.scale))  # (B, H, S, D)
        return self.c_proj(out.transpose(1, 2).reshape(B, S, -1)), k, v


class Opset23RMSNormMixin:
    """Mixed into an RMSNorm module (weight (N,), eps): RMSNormalization."""

    def forward(self, x):
        """x (..., N) -> normalised x, same shape."""
        return _RMSNorm.apply(x, self.weight, self.eps)


def _is_attention(m) -> bool:
    return all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "heads", "kv_heads", "head_dim")) \
        and callable(getattr(m, "project", None))


def _is_packed_attention(m) -> bool:
    return all(hasattr(m, a) for a in ("c_attn", "c_proj", "heads", "head_dim", "scale"))


def _is_rmsnorm(m) -> bool:
    w = getattr(m, "weight", None)
    return type(m).__name__ == "RMSNorm" and isinstance(getattr(m, "eps", None), float) and w is not None \
        and w.dim() == 1 and getattr(m, "bias", None) is None


def opset23_copy(model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
    """A copy of `model` whose attention modules and RMSNorms run through the opset-23 ops -> (copy, counts)."""
    from edgeport.ops.attention import mix_in

    model = copy.deepcopy(model)
    counts = {"attention": 0, "rmsnorm": 0}
    for m in model.modules():
        if _is_attention(m) or _is_packed_attention(m):
            mix_in(m, Opset23AttentionMixin if _is_attention(m) else Opset23PackedAttentionMixin)
            counts["attention"] += 1
        elif _is_rmsnorm(m):
            mix_in(m, Opset23RMSNormMixin)
            counts["rmsnorm"] += 1
    return model.eval(), counts


def to_opset23(path: Path, ctx=None) -> dict:
    """Graph pass: the private-domain nodes -> ONNX domain, default opset -> 23, Reduce* axes attribute ->
    input; then onnx's full checker. -> converter notes {"opset": 23, "opset23_nodes": {op: count}}.
    Raises onnx.checker.ValidationError when the upgraded graph is invalid."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=True)
    moved, extra = {}, []
    for node in proto.graph.node:
        if node.domain == DOMAIN:
            node.domain = ""
            moved[node.op_type] = moved.get(node.op_type, 0) + 1
        elif node.domain in ("", "ai.onnx") and node.op_type in REDUCE_AXES_TO_INPUT:
            axes = [a for a in node.attribute if a.name == "axes"]
            if axes:
                name = f"{node.name or node.output[0]}/axes"
                extra.append(numpy_helper.from_array(np.array(helper.get_attribute_value(axes[0]), np.int64), name))
                node.attribute.remove(axes[0])
                node.input.append(name)
    proto.graph.initializer.extend(extra)
    keep = [o for o in proto.opset_import if o.domain not in (DOMAIN, "", "ai.onnx")]
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", OPSET), *keep])
    proto.ir_version = max(proto.ir_version, 10)
    external = (path.parent / (path.name + ".data")).exists()
    if external:
        (path.parent / (path.name + ".data")).unlink()
    onnx.save_model(proto, str(path), save_as_external_data=external, location=path.name + ".data",
                    size_threshold=1024)
    onnx.checker.check_model(str(path), full_check=True)
    return {"opset": OPSET, "opset23_nodes": moved}


@contextlib.contextmanager
def _opset23_swap(model, ctx):
    swapped, counts = opset23_copy(model)
    extra = ", RotaryEmbedding, RMSNormalization" if counts["rmsnorm"] else ""
    yield swapped, {"attention": f"ONNX Attention (opset 23) x{counts['attention']}{extra}; causal mask and "
                                 "sliding window (if any) kept in the additive mask"}


# TensorRT 10.15+: the standard opset-23 ops (GPT-2: Attention only; Mixtral's experts stay a decomposition: TensorRT's MoE layer
# runs only on Blackwell/Thor-class GPUs).
_MOE_NOTE = {"moe": "decomposed (TensorRT's MoE layer runs only on Blackwell/Thor-class GPUs)"}
for _family in ("gpt2", "mistral", "mixtral"):
    for _name in ("default", "opset23"):
        register_lowering(_family, "tensorrt", _name, swap=_opset23_swap, custom_opsets={DOMAIN: 1},
                          graph_passes=(to_opset23,), converter=_MOE_NOTE if _family == "mixtral" else {})
