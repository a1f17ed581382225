"""BERT-style attention for onnxruntime: the generic graph, fused offline into com.microsoft ops.

onnxruntime's load-time optimizer (ORT_ENABLE_ALL, onnxruntime 1.31) finds BiasGelu in edgeport's
torch.onnx graph of BERT but neither Attention nor SkipLayerNormalization. Its offline optimizer
(`onnxruntime.transformers.optimizer`, the "bert" fusions) does find them all in that graph:

    Gather x3 + Add + LayerNorm              -> EmbedLayerNormalization
    MatMul+Add (q, k, v) -> Reshape -> Transpose -> MatMul -> Div -> Add(mask) -> Softmax -> MatMul
        -> Transpose -> Reshape              -> Attention (one packed QKV weight)
    MatMul -> Add(bias) -> Add(residual) -> LayerNorm -> SkipLayerNormalization
    MatMul -> Add(bias) -> Gelu              -> MatMul + BiasGelu

(the attention match needs the score scale as a Div and the mask as Mul(Sub(1, Cast(mask)), min):
blocks.attention and blocks.additive_mask emit exactly that). It runs with opt_level 0, so no
hardware-specific node is baked in, and with the 2-D attention mask format, so any mask (not only
right padding) keeps its meaning. Measured in benchmarks/bench_encoders.py.

Lowerings for target onnx, families bert and megatron-bert (ConvBERT is left on the generic route:
its mixed attention defeats the matchers, only Gelu fused):
- "default": the fused graph (onnxruntime only: the com.microsoft ops are listed as custom ops);
- "generic": the plain torch.onnx graph, for any ONNX runtime. `export --quantize int4|int8-static`
  picks it when no lowering is named: those quantizers cannot reach the weights inside the fused
  Attention/EmbedLayerNormalization nodes (int8 dynamic can: QAttention, QEmbedLayerNormalization).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from edgeport.ops.registry import LoweringContext, register_lowering

FAMILIES = ("bert", "megatron-bert")


def fuse(path: Path, heads: int, width: int) -> list:
    """Rewrite the ONNX file at `path` in place with onnxruntime's BERT fusions; returns the custom ops
    used as [{"domain", "op_type", "runtimes"}]. `heads`/`width`: attention heads and hidden size."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    opts = FusionOptions("bert")
    opts.attention_mask_format = AttentionMaskFormat.AttentionMask  # the (B, S) mask as is: any padding
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=width,
                               optimization_options=opts, opt_level=0)
    model.save_model_to_file(str(path))
    used = {n.op_type for n in model.model.graph.node if n.domain == "com.microsoft"}
    return [{"domain": "com.microsoft", "op_type": op, "runtimes": ["onnxruntime"]} for op in sorted(used)]


def fuse_pass(path: Path, ctx: LoweringContext) -> dict:
    """Graph pass: the fusions above on the exported file; a graph over 2 GB (external data) is left
    unfused, since the optimizer would inline its weights. Returns converter notes."""
    import onnxruntime

    if path.with_name(path.name + ".data").exists():
        return {}
    fuse(path, ctx.config.num_attention_heads, ctx.config.hidden_size)
    return {"onnxruntime_fusions": onnxruntime.__version__,
            "route": "torch.onnx + onnxruntime.transformers.optimizer (bert, opt_level 0)"}


register_lowering(FAMILIES, "onnx", "default", graph_passes=(fuse_pass,), fuses_weights=True)
register_lowering(FAMILIES, "onnx", "generic")
