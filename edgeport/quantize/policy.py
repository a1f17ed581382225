"""Sensitivity policy: which node groups stay in float by default, per target and scheme kind.

Override with `--keep-float GROUP[,GROUP]` (or `none` to quantize everything the scheme can reach).
Groups: see graph.py (embeddings, head, attention, norms, softmax) and `experts` (MoE -> QMoE).
Each default below carries the measurement that decided it (all-MiniLM-L6-v2, 128 held-out sentences
of Python's reference manual; benchmarks/bench_quantize.py --policy reproduces them).
"""

from __future__ import annotations

from edgeport.errors import EdgeportError
from edgeport.quantize import graph
from edgeport.schemes import Scheme

ALL_GROUPS = graph.GROUPS + ("experts",)
TFLITE_GROUPS = ("embeddings", "ffn-down")  # what tflite_backend's recipes can keep in float

# (target, kind) -> (groups kept in float, why)
DEFAULTS = {
    # fp32 LayerNorm/Softmax halve the max diff (2.1e-3 vs 4.4e-3 of absmax 6.4, cosine 1.0 both) on the
    # plain graph, but onnxruntime's float16 converter mis-types kept LayerNorms in the fused bert
    # lowering's graph (load-time type error): all-fp16 by default, `--keep-float norms,softmax` to opt in.
    ("onnx", "fp16"): ((), "all-fp16 max diff 4.4e-3 (absmax 6.4), cosine 1.0; kept norms fail on fused graphs"),
    # Error is spread evenly (excluding any one group moves mean cosine by <= 0.003) and the word
    # embeddings are half of MiniLM: quantizing them costs nothing measurable (0.9917 vs 0.9919).
    ("onnx", "int8-dynamic"): ((), "no group dominates; embeddings int8: size 25% vs 65%, same cosine"),
    # Per-tensor ranges of the GELU outputs are the loss: fp32 down projections lift mean cosine
    # 0.932 -> 0.990 (min 0.85 -> 0.98); fp32 attention products change nothing (0.936).
    ("onnx", "int8-static"): (("ffn-down",), "ffn-down fp32: cosine 0.932 -> 0.990"),
    # Embeddings int4 (GatherBlockQuantized): size 16% vs 60%, cosine 0.962 vs 0.966.
    ("onnx", "int4"): ((), "embeddings int4: size 16% vs 60% for -0.004 cosine"),
    ("tensorrt", "int8-static"): (("ffn-down",), "same graph rule as onnx int8-static"),
    ("tensorrt", "int4"): (("embeddings",), "TensorRT's int4 form is DequantizeLinear -> MatMul; Gather has none"),
    ("tflite", "fp16"): ((), "fp16 weights are dequantized at load; compute stays fp32"),
    # MiniLM on LiteRT: cosine 0.998 / top-1 99.2%, 26% size, 0.85x latency with everything quantized.
    ("tflite", "int8-dynamic"): ((), "all quantized: cosine 0.998, 26% size"),
    # Matmul inputs only (the note in tflite_backend.py); fp32 down projections: cosine 0.949 -> 0.9945.
    ("tflite", "int8-static"): (("ffn-down",), "ffn-down fp32: cosine 0.949 -> 0.9945"),
    # int4 blocks with int8 compute: cosine 0.954, query top-1 96.9%, 15% size (1.6x slower than fp32 here).
    ("tflite", "int4"): ((), "all quantized: cosine 0.954, 15% size"),
}


def default_keep_float(target: str, scheme: Scheme) -> list:
    """The groups DEFAULTS keeps in float for (target, scheme kind); [] when none are listed."""
    return list(DEFAULTS.get((target, scheme.kind), ((), ""))[0])


def parse_keep_float(value, target: str, scheme: Scheme) -> list:
    """None -> the default for (target, scheme); 'none' or [] -> nothing; else validated group names."""
    if value is None:
        return default_keep_float(target, scheme)
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip().lower() for n in names if n and n.strip()]
    if names in ([], ["none"]):
        return []
    allowed = TFLITE_GROUPS if target == "tflite" else ALL_GROUPS
    bad = [n for n in names if n not in allowed]
    if bad:
        raise EdgeportError(f"--keep-float: unknown group '{bad[0]}' for {target}; groups: {', '.join(allowed)}, none")
    return sorted(set(names))
