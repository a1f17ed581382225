"""ONNX (onnxruntime) and TensorRT-form quantization, through onnxruntime's own quantization tools.

    scheme            onnx target                                   tensorrt target (ONNX graph TensorRT parses)
    fp16              float16 converter, I/O + kept ops fp32         float16 converter, fp16 float I/O (strongly typed)
    int8 dynamic      MatMulInteger / DynamicQuantizeMatMul          -
    int8 static       QDQ: u8 activations, s8 per-channel weights    QDQ: s8 symmetric activations and weights
    int4 weight-only  MatMulNBits (com.microsoft)                    DequantizeLinear(int4, block_size) -> MatMul
    int4 + a8         MatMulNBits accuracy_level=4 (int8 compute)    -
Mixtral experts (com.microsoft.MoE nodes) become QMoE nodes (qmoe.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.manifest import TWO_GB
from edgeport.quantize import graph
from edgeport.schemes import Scheme


def _load(path: Path):
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    graph.ensure_node_names(model)
    return model


def _save(model, path: Path) -> None:
    import onnx

    big = model.ByteSize() > TWO_GB if graph.weight_bytes(model) < TWO_GB else True
    onnx.save_model(model, str(path), save_as_external_data=big, location=path.name + ".data",
                    size_threshold=1024)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizers log and print per node: keep the user's terminal to our progress lines."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.getLogger().setLevel(level)


def to_fp16(model, keep: list, keep_io_types: bool = True):
    """Everything in fp16 but the `keep` nodes and, with `keep_io_types`, the graph's float I/O (Cast nodes
    are inserted at the seams). TensorRT's form passes keep_io_types=False: fp16 float inputs and outputs,
    integer inputs unchanged (a strongly typed TensorRT 11 network takes its precision from the graph)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _unshare_initializers(model, set(keep))
    _drop_unread_norm_statistics(model)
    out = convert_float_to_float16(model, keep_io_types=keep_io_types, node_block_list=keep,
                                   disable_shape_infer=False)
    _unique_node_names(out)
    return out


# Fused norms whose optional outputs 1 and 2 (mean, inv_std_var) are float32 in onnxruntime's kernels
# (type constraint U = float in ContribOperators.md) whatever the input type: the float16 converter types every
# named output fp16, which onnxruntime refuses at load.
_NORM_STATISTICS = {"SkipSimplifiedLayerNormalization": (1, 2), "SkipLayerNormalization": (1, 2)}


def _drop_unread_norm_statistics(model) -> None:
    """Unname the mean / inv_std_var outputs of fused norms that no node and no graph output reads (an empty
    name is ONNX's omitted optional output), and drop their value_info, so the float16 converter has no
    float32-only tensor to retype. Outputs that are read are left alone."""
    read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    dropped = set()
    for n in model.graph.node:
        for slot in _NORM_STATISTICS.get(n.op_type, ()):
            if slot < len(n.output) and n.output[slot] and n.output[slot] not in read:
                dropped.add(n.output[slot])
                n.output[slot] = ""
    if dropped:
        kept = [v for v in model.graph.value_info if v.name not in dropped]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)


def _unshare_initializers(model, keep: set) -> None:
    """An initializer read by several nodes is cast once per kept reader by the converter (Casts of one
    name), or made fp16 under a kept reader: give every kept reader of a shared initializer its own copy."""
    import copy

    inits = {t.name: t for t in model.graph.initializer}
    readers = {}
    for n in model.graph.node:
        for slot, name in enumerate(n.input):
            if name in inits:
                readers.setdefault(name, []).append((n, slot))
    for name, uses in readers.items():
        if len(uses) < 2:
            continue
        for k, (n, slot) in enumerate(uses, 1):
            if n.name not in keep:
                continue
            t = copy.deepcopy(inits[name])
            t.name = f"{name}__{k}"
            model.graph.initializer.append(t)
            n.input[slot] = t.name


def _unique_node_names(model) -> None:
    """The float16 converter names its Cast nodes after the tensor: a tensor feeding two kept nodes
    gets two Casts of one name, which onnxruntime refuses. Suffix the repeats."""
    seen = {}
    for n in model.graph.node:
        if n.name in seen:
            seen[n.name] += 1
            n.name = f"{n.name}_{seen[n.name]}"
        else:
            seen[n.name] = 0


def int8_dynamic(model, scheme: Scheme, exclude: list, embeddings: bool, tmp: Path):
    """onnxruntime's quantize_dynamic on `model` (int8 weights per `scheme.granularity`, 7-bit range),
    leaving `exclude` nodes float; embeddings quantized when `embeddings`. Returns the quantized ModelProto."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp / "in.onnx", tmp / "out.onnx"
    _save(model, src)
    with _quiet():
        # Attention / EmbedLayerNormalization: the fused contrib ops of the bert lowering (QAttention, QEmbedLayerNorm)
        ops = ["MatMul", "Attention"] + (["Gather", "EmbedLayerNormalization"] if embeddings else [])
        # reduce_range: 7-bit weights. x86 without AVX-512 VNNI multiplies u8 x s8 pairs into saturating
        # int16 sums (vpmaddubsw): 8-bit weights can overflow there and not on VNNI machines, so the
        # accuracy measured here would not hold everywhere. all-MiniLM-L6-v2 on this (AVX2) machine:
        # query top-1 agreement 100% vs 96.9% without, mean cosine 0.9912 vs 0.9915 (benchmarks/bench_quantize.py).
        quantize_dynamic(src, dst, op_types_to_quantize=ops, reduce_range=True,
                         per_channel=scheme.granularity == "channel", weight_type=QuantType.QInt8,
                         nodes_to_exclude=exclude, extra_options={"MatMulConstBOnly": True,
                                                                       "DefaultTensorType": 1})  # FLOAT
    return _load(dst)


def int8_static(model, scheme: Scheme, exclude: list, embeddings: bool, calib: list, tensorrt: bool, tmp: Path):
    """QDQ pairs with activation ranges from `calib` (feed dicts of real text)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    length = max(f["input_ids"].shape[-1] for f in calib)  # one shape for every sample (histogram calibrators)
    calib = [{k: np.pad(v, ((0, 0), (0, length - v.shape[-1]))) for k, v in f.items()} for f in calib]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp / "in.onnx", tmp / "out.onnx"
    _save(model, src)
    ops = ["MatMul"] + (["Gather"] if embeddings and not tensorrt else [])
    # TensorRT's explicit quantization takes symmetric int8 only (zero point 0) on both sides.
    act = QuantType.QInt8 if tensorrt else QuantType.QUInt8
    extra = {"ActivationSymmetric": tensorrt, "WeightSymmetric": True, "MatMulConstBOnly": False}
    with _quiet():
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                        per_channel=scheme.granularity == "channel", activation_type=act,
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude, extra_options=extra)
    return _load(dst)


def int4_weight_only(model, scheme: Scheme, exclude: list, embeddings: bool, tensorrt: bool):
    """MatMulNBits (onnxruntime) or blocked DequantizeLinear(int4) -> MatMul (TensorRT's form)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    ops = ("MatMul",) + (("Gather",) if embeddings and not tensorrt else ())
    q = MatMulNBitsQuantizer(model, bits=4, block_size=scheme.block_size, is_symmetric=scheme.symmetric,
                             accuracy_level=4 if scheme.activations == "int8-dynamic" else 0,
                             nodes_to_exclude=exclude, op_types_to_quantize=ops,
                             quant_format=QuantFormat.QDQ if tensorrt else QuantFormat.QOperator)
    opset = _default_opset(model)
    with _quiet():
        q.process()
    out = q.model.model
    if not tensorrt:  # QOperator adds only com.microsoft nodes; keep the graph's own ops at their opset
        _set_default_opset(out, opset)
    return out


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _set_default_opset(model, version: int) -> None:
    """MatMulNBitsQuantizer raises the default-domain opset to 21 even when it only emits com.microsoft
    nodes; an opset-17 graph's ReduceMean(axes=...) (Mistral's RMSNorm) is then invalid at load."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and version:
            o.version = version


def quantize_onnx(src: Path, dst: Path, scheme: Scheme, target: str, keep_float: list, calib: list,
                  fp16_io: bool = True) -> dict:
    """src artifact -> dst artifact; returns what the manifest records about the rewrite.

    fp16_io: for tensorrt fp16, float inputs/outputs become fp16 too (False for decoders: the runtime's
    KV cache is float32, so their I/O stays float32 around fp16 compute)."""
    import onnxruntime

    tensorrt = target == "tensorrt"
    model = _load(src)
    embeddings = "embeddings" not in keep_float
    if embeddings and scheme.weights != "fp16":
        graph.fold_transposed_tables(model)
    fused = {}
    if scheme.weights == "int4" or scheme.activations == "int8-static":  # int8 dynamic reaches them (Q* ops)
        for n in model.graph.node:
            if n.domain == "com.microsoft" and n.op_type in FUSED_WITH_WEIGHTS:
                fused[n.op_type] = fused.get(n.op_type, 0) + 1
    keep_groups = [g for g in keep_float if g != "embeddings"]
    exclude = graph.nodes_in(model, keep_groups)
    batched = []
    if scheme.weights == "int8" and scheme.granularity == "channel":
        batched = _batched_weight_matmuls(model)  # per-channel int8 needs 2-D weights (onnxruntime refuses
        exclude = exclude + [n for n in batched if n not in exclude]  # a 3-D zero point at run time)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        if scheme.weights == "fp16":
            out = to_fp16(model, exclude + (graph.match_embeddings(model) if not embeddings else []),
                          keep_io_types=not (tensorrt and fp16_io))
        elif scheme.weights == "int8" and scheme.activations == "int8-dynamic":
            out = int8_dynamic(model, scheme, exclude, embeddings, Path(tmp))
        elif scheme.weights == "int8":
            if not calib:
                raise EdgeportError("int8-static needs calibration text and the artifact has no tokenizer; "
                                    "pass --calibration-text FILE with a tokenizer-bearing export")
            out = int8_static(model, scheme, exclude, embeddings, calib, tensorrt, Path(tmp))
        else:
            out = int4_weight_only(model, scheme, exclude, embeddings, tensorrt)
        from edgeport.quantize import qmoe

        moe = qmoe.convert_moe_nodes(out, scheme, "experts" not in keep_float) if not tensorrt else 0
        parser = _tensorrt_check(out) if tensorrt else {}
        _save(out, dst)
    return {**parser, "onnxruntime": onnxruntime.__version__, "tool": _TOOLS[scheme.weights],
            "excluded_nodes": len(exclude), "qmoe_nodes": moe, "fused_ops_left_float": fused,
            "batched_weight_matmuls_left_float": len(batched),
            **({"reduce_range": True} if scheme.activations == "int8-dynamic" and scheme.weights == "int8" else {})}


def _tensorrt_check(model) -> dict:
    """{"tensorrt_check": report} of edgeport.export.tensorrt.check on the rewritten graph; EdgeportError
    naming the nodes when TensorRT's ONNX parser would reject it."""
    from edgeport.export.tensorrt import check

    report = check(model)
    if not report.passed:
        raise EdgeportError(f"the quantized graph would not parse in TensorRT: {report.summary()}")
    return {"tensorrt_check": report.to_dict()}


def _batched_weight_matmuls(model) -> list:
    """MatMul nodes whose constant weight is not 2-D (ConvBERT's grouped linear: (G, in/G, out/G))."""
    rank = {t.name: len(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and rank.get(n.input[1], 2) != 2]


# onnxruntime contrib ops that carry weights the int4 and static int8 quantizers do not rewrite
FUSED_WITH_WEIGHTS = ("Attention", "EmbedLayerNormalization")


_TOOLS = {"fp16": "onnxruntime.transformers.float16", "int8": "onnxruntime.quantization",
          "int4": "onnxruntime.quantization.matmul_nbits_quantizer"}
