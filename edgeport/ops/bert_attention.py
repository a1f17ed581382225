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

from edgeport.export.lowerings import Lowered, register_lowering

FAMILIES = ("bert", "megatron-bert")


def fuse(path: Path, heads: int, width: int) -> list:
    """Rewrite the ONNX file at `path` in place with onnxruntime's BERT fusions; returns the custom ops."""
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


def _generic(ref, contract, out_dir: Path, opts) -> Lowered:
    from edgeport.export.onnx import export_onnx

    return export_onnx(ref.model, contract, out_dir, opts.opset)


@register_lowering(FAMILIES, "onnx", "default", fuses_weights=True)
def ort_fused(ref, contract, out_dir: Path, opts) -> Lowered:
    import onnxruntime

    lowered = _generic(ref, contract, out_dir, opts)
    if (out_dir / (lowered.artifact + ".data")).exists():  # > 2 GB: the optimizer would inline the weights
        return lowered
    custom = fuse(out_dir / lowered.artifact, ref.config.num_attention_heads, ref.config.hidden_size)
    converter = {**lowered.converter, "onnxruntime_fusions": onnxruntime.__version__,
                 "route": "torch.onnx + onnxruntime.transformers.optimizer (bert, opt_level 0)"}
    return Lowered(lowered.artifact, converter, custom)


register_lowering(FAMILIES, "onnx", "generic")(_generic)
