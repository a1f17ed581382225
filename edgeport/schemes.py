"""Quantization schemes as named axes, and the explicit list of what each target supports.

A scheme is a tuple (weights, activations, granularity, algorithm) plus two parameters (block size,
symmetry). Users name it by a short name, resolved per target, or by its axes:

    fp16          weights fp16; ONNX computes in fp16 (I/O and fragile ops stay fp32), TFLite keeps fp32 compute
    int8          int8 weights per output channel, activations quantized dynamically at run time
    int8-static   int8 weights per channel, int8 activations with ranges calibrated on real text (QDQ)
    int4          int4 weights in blocks of 32 (symmetric), fp32 activations (weight-only)
    int4-b64, int4-b128-asym, int4-b32-a8 (int8 compute), int8-pt (per tensor), ...   a parameter changed
    weights=int4,activations=fp32,granularity=block,block=64,symmetric=false   the axes spelled out

The output file is named by `Scheme.tag` (model.int8-dyn-pc.onnx, model.int4-b32.onnx) and the
manifest records `asdict(scheme)` under `quantization`. Torch-free, cheap to import: a shared leaf that
the export stage (which lowering suits a scheme, `needs_unfused_graph`) and the quantize stage both read.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from edgeport.errors import EdgeportError

BLOCK_SIZES = (16, 32, 64, 128)


@dataclass(frozen=True)
class Scheme:
    """A quantization scheme by its axes; compare with SUPPORTED[target] to know if a target takes it."""

    weights: str  # stored weight type
    activations: str  # what the matmuls compute on: float, or int8 quantized at run time / calibrated
    granularity: str  # one scale per tensor, per output channel, or per block of `block_size` inputs
    algorithm: str  # how scales are chosen: cast (no scales), minmax (calibrated/absmax ranges), rtn
    # (round-to-nearest on the weights' absmax per block)
    block_size: int = 0  # granularity == "block" only
    symmetric: bool = True  # weights' zero point fixed at 0

    @property
    def tag(self) -> str:
        """File-name form: fp16, int8-dyn-pc, int8-static-pt, int4-b32, int4-b64-asym."""
        if self.weights == "fp16":
            return "fp16"
        if self.weights == "int4":
            a8 = "-a8" if self.activations == "int8-dynamic" else ""
            return f"int4-b{self.block_size}" + ("" if self.symmetric else "-asym") + a8
        kind = "dyn" if self.activations == "int8-dynamic" else "static"
        return f"int8-{kind}-{'pc' if self.granularity == 'channel' else 'pt'}"

    def axes(self) -> dict:
        """The scheme's fields as a dict (what the manifest records)."""
        return dataclasses.asdict(self)

    @property
    def kind(self) -> str:
        """fp16 | int4 | int8-dynamic | int8-static: the axis the per-target policies are keyed by."""
        return self.weights if self.weights in ("fp16", "int4") else self.activations


def _fp16(target):
    # TFLite stores fp16 weights and dequantizes them once at load; compute stays fp32.
    return Scheme("fp16", "fp32" if target == "tflite" else "fp16", "tensor", "cast")


def _int8(target):
    return Scheme("int8", "int8-dynamic", "channel", "minmax")


def _int8_static(target):
    return Scheme("int8", "int8-static", "channel", "minmax")


def _int4(target):
    # TFLite's blockwise int4 kernels quantize activations to int8 on the fly (no weight-only form:
    # ai-edge-quantizer's weight-only recipe with blocks leaves the weights in float, checked).
    return Scheme("int4", "int8-dynamic" if target == "tflite" else "fp32", "block", "rtn", 32, True)


SHORT_NAMES = {"fp16": _fp16, "int8": _int8, "int8-dynamic": _int8, "int8-static": _int8_static, "int4": _int4}

# Everything each target takes, as data. Any other combination is refused with this list in the message.
SUPPORTED = {
    "onnx": [
        Scheme("fp16", "fp16", "tensor", "cast"),  # float16 converter; LayerNorm/Softmax/I/O kept fp32
        Scheme("int8", "int8-dynamic", "channel", "minmax"),  # MatMulInteger / DynamicQuantizeMatMul
        Scheme("int8", "int8-dynamic", "tensor", "minmax"),
        Scheme("int8", "int8-static", "channel", "minmax"),  # QDQ, u8 activations, s8 weights
        Scheme("int8", "int8-static", "tensor", "minmax"),
        *[Scheme("int4", "fp32", "block", "rtn", b, s) for b in BLOCK_SIZES for s in (True, False)],  # MatMulNBits
        # MatMulNBits accuracy_level=4: activations quantized to int8 per block at run time (faster, less exact)
        *[Scheme("int4", "int8-dynamic", "block", "rtn", b, s) for b in BLOCK_SIZES for s in (True, False)],
    ],
    "tflite": [
        Scheme("fp16", "fp32", "tensor", "cast"),  # ai-edge-quantizer float casting
        Scheme("int8", "int8-dynamic", "channel", "minmax"),  # dynamic-range (hybrid) kernels
        Scheme("int8", "int8-static", "channel", "minmax"),  # int8 FULLY_CONNECTED inputs, representative text
        # int4 blockwise, symmetric only (ai-edge-quantizer's blockwise granularities), int8 dynamic compute
        *[Scheme("int4", "int8-dynamic", "block", "rtn", b, True) for b in (32, 64, 128)],
    ],
    "tensorrt": [
        # Explicit quantization: symmetric int8 Q/DQ pairs on activations and weights (TensorRT's rule).
        Scheme("int8", "int8-static", "channel", "minmax"),
        # int4 weight-only: blocked DequantizeLinear(int4) -> MatMul, symmetric (TensorRT takes no zero point).
        *[Scheme("int4", "fp32", "block", "rtn", b, True) for b in (32, 64, 128)],
        # fp16 as TensorRT 11 wants it (strongly typed: no fp16 builder flag): fp16 weights, compute and float
        # I/O in the graph itself; TensorRT 10 can still take the fp32 graph with --fp16 instead.
        Scheme("fp16", "fp16", "tensor", "cast"),
    ],
}


def needs_unfused_graph(scheme: Scheme) -> bool:
    """Weight-only int4 and static int8 rewrite MatMul weights only: they cannot reach weights inside
    fused ops (onnxruntime's Attention, EmbedLayerNormalization), so an export meant for them takes the
    unfused lowering. int8 dynamic can (QAttention), fp16 converts every weight."""
    return scheme.kind in ("int4", "int8-static")


def supported_names(target: str) -> list:
    """The tags `target` supports, in SUPPORTED's order ([] for an unknown target)."""
    return [s.tag for s in SUPPORTED.get(target, [])]


def _parse_axes(text: str, target: str) -> Scheme:
    """weights=int4,activations=fp32,granularity=block,block=64,algorithm=rtn,symmetric=false"""
    fields = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key in ("block", "block_size"):
            if not value.isdigit():
                raise EdgeportError(f"scheme '{text}': block must be a number, got '{value}'")
            fields["block_size"] = int(value)
        elif key == "symmetric":
            fields["symmetric"] = value.lower() in ("1", "true", "yes")
        elif key in ("weights", "activations", "granularity", "algorithm"):
            fields[key] = value
        else:
            raise EdgeportError(f"scheme '{text}': unknown axis '{key}' (weights, activations, granularity, "
                                "algorithm, block, symmetric)")
    base = SHORT_NAMES.get(fields.get("weights", ""), _int4)(target)
    if fields.get("weights") == "int8" and fields.get("activations") == "int8-static":
        base = _int8_static(target)
    if fields.get("granularity") not in (None, "block"):
        fields.setdefault("block_size", 0)
    return dataclasses.replace(base, **fields)


_MODIFIER = re.compile(r"^(?:b(?P<block>\d+)|(?P<asym>asym)|(?P<sym>sym)|(?P<pt>pt)|(?P<pc>pc)|(?P<a8>a8)|dyn)$")


def _parse_short(text: str, target: str) -> Scheme:
    """fp16 | int8[-pt|-pc] | int8-static[-pt] | int4[-b64][-asym], and the tags themselves."""
    for name in sorted(SHORT_NAMES, key=len, reverse=True):
        if text == name or text.startswith(name + "-"):
            scheme, rest = SHORT_NAMES[name](target), text[len(name):].strip("-")
            break
    else:
        raise EdgeportError(f"unknown scheme '{text}'; short names: {', '.join(SHORT_NAMES)} "
                            f"(supported on {target}: {', '.join(supported_names(target))})")
    for mod in filter(None, rest.split("-")):
        m = _MODIFIER.match(mod)
        if m is None or ((m["block"] or m["a8"]) and scheme.weights != "int4"):
            raise EdgeportError(f"scheme '{text}': unknown modifier '{mod}' (int4: b<N>, asym, a8; int8: pt, pc)")
        if m["a8"]:
            scheme = dataclasses.replace(scheme, activations="int8-dynamic")
        if m["block"]:
            scheme = dataclasses.replace(scheme, block_size=int(m["block"]))
        elif m["asym"] or m["sym"]:
            scheme = dataclasses.replace(scheme, symmetric=bool(m["sym"]))
        elif m["pt"] or m["pc"]:
            scheme = dataclasses.replace(scheme, granularity="tensor" if m["pt"] else "channel")
    return scheme


# Short names that mean something else for decoders (task text-generation), per target.
# ONNX `int4`: int8 compute on int4 weights. Mistral-arch 125M decode vs fp32: 3.04x tokens/s (plain
# int4-b32, fp32 compute: 1.21x), perplexity +0.03% vs +0.10% (benchmarks/bench_quantize_decoders.py).
DECODER_SHORT_NAMES = {("onnx", "int4"): "int4-b32-a8"}


def resolve(text: str, target: str, task: str | None = None) -> Scheme:
    """A scheme name for `target` (and the artifact's task) -> Scheme; EdgeportError naming what is
    supported otherwise."""
    if target not in SUPPORTED:
        raise EdgeportError(f"cannot quantize {target} artifacts; targets: {', '.join(SUPPORTED)}")
    text = (text or "").strip().lower()
    if text == "int8-static-pc":
        text = "int8-static"
    if task == "text-generation":
        text = DECODER_SHORT_NAMES.get((target, text), text)
    scheme = _parse_axes(text, target) if "=" in text else _parse_short(text, target)
    if scheme not in SUPPORTED[target]:
        why = ""
        raise EdgeportError(f"scheme {scheme.tag} ({_describe(scheme)}) is not supported on {target}{why}; "
                            f"supported: {', '.join(supported_names(target))}")
    return scheme


def _describe(s: Scheme) -> str:
    g = f"block {s.block_size}" if s.granularity == "block" else f"per {s.granularity}"
    return f"weights {s.weights}, activations {s.activations}, {g}, {s.algorithm}" + \
        ("" if s.symmetric else ", asymmetric")
