"""TensorRT's ONNX parser as data: what it rejects or restricts, checked per node before any GPU sees it.

    from edgeport.export.tensorrt import check
    report = check("out/model.onnx")       # or an onnx.ModelProto
    report.passed, report.errors           # [Finding(node, op_type, rule, severity, detail)]

Source of every rule: onnx-tensorrt's operator table (docs/operators.md) for TensorRT 10.15, the parser
of TensorRT 10.x/11.x: opset 9..24; UINT8 only as a network input/output; INT8/INT4/FP8 only through
Q/DQ from a float type; the ops marked N; the per-op "Supported Types" column (checked on the op's data
input); the restrictions column (axes/K/depth inputs that must be build-time constants, TopK sorted with
K < 3840, zero Q/DQ zero points, the `Attention` op without past/present, `RotaryEmbedding`
position_ids INT64, LayerNormalization's first output only). Older tables (TensorRT 8.x-10.0) also
require Slice's `axes` as an initializer: kept, since a constant satisfies both.
Nodes outside the ONNX domain are parsed only as TensorRT plugins looked up by op_type, their version
and namespace read from the string attributes `plugin_version` / `plugin_namespace` (onnx-tensorrt's
plugin fallback): com.microsoft contrib ops (onnxruntime's) are rejected.

A severity "error" is a node the parser refuses; "warning" a node it takes with a documented caveat
(DOUBLE cast down to FLOAT; a float constant beyond fp16's range, which becomes inf when a TensorRT 10
fp16 build casts it). `finite_masks` is the graph pass that removes the latter.
This module imports onnx lazily and never imports tensorrt: it runs on any machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

PARSER_TABLE = "onnx-tensorrt docs/operators.md, TensorRT 10.15 (opset 9..24)"
OPSETS = (9, 24)
TOPK_MAX = 3840  # K must be less than this
FP16_MAX = 65504.0
# Mask value the pass writes: exp(-1e4) is 0 in fp32 and fp16, and two or three masks added together
# (-3e4) still stay inside fp16's range, where float32's minimum (-3.4e38) becomes -inf -> NaN rows.
MASK_VALUE = -1.0e4



def _words(text: str) -> list:
    return text.split()


# Ops the table marks N (those an exporter could plausibly emit; the sequence/string ops are listed too).
UNSUPPORTED = frozenset(_words("""AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im
CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger
MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat
StringNormalizer StringSplit TfIdfVectorizer Unique"""))

# The "Supported Types" column for the ops transformer graphs hold, as groups of ONNX type names.
_F = {"FLOAT", "FLOAT16", "BFLOAT16"}
_FI = _F | {"INT32", "INT64"}
_FIB = _FI | {"BOOL"}
_GROUPS = {
    "float": (_F, """Acos Acosh Asin Asinh Atan Atanh Ceil Celu Conv ConvTranspose Cos Cosh CumSum Dropout Einsum
        Elu Erf Exp Floor Gemm HardSigmoid HardSwish InstanceNormalization IsInf LayerNormalization LeakyRelu Log
        LogSoftmax MatMul RMSNormalization Reciprocal RotaryEmbedding Round Selu Sigmoid Sin Sinh Softmax Softplus
        Softsign Sqrt Tan Tanh ThresholdedRelu GroupNormalization BatchNormalization PRelu QuantizeLinear"""),
    "float+int": (_FI, """Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual
        Max Mean Min Mod Mul Neg Pad Pow Range Relu ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
        ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare ScatterElements ScatterND Shrink Sign
        SpaceToDepth Sub Sum TopK"""),
    "float+int+bool": (_FIB, """Concat Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop
        OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where"""),
    "bool": ({"BOOL"}, "And Not Or Xor"),
    "cast": (_FIB | {"UINT8"}, "Cast CastLike"),
    "nonzero": ({"FLOAT", "FLOAT16"}, "NonZero"),
    "gelu": (_FI | {"INT8"}, "Gelu"),
    "attention": (_F | {"INT8", "FLOAT8E4M3FN"}, "Attention"),
}
OP_TYPES = {op: types for types, ops in _GROUPS.values() for op in _words(ops)}
DATA_INPUT = {"Where": 1}  # which input's type the column is about (default: input 0)

# Inputs the parser needs as build-time constants: op -> {input index: what it is}.
CONSTANT_INPUTS = {
    **{op: {1: "axes"} for op in _words("ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean "
                                        "ReduceMin ReduceProd ReduceSum ReduceSumSquare Squeeze Unsqueeze")},
    "Slice": {3: "axes"}, "CumSum": {1: "axis"}, "TopK": {1: "K"}, "OneHot": {1: "depth"},
    "Dropout": {2: "training_mode"}, "QuantizeLinear": {2: "y_zero_point"}, "DequantizeLinear": {2: "x_zero_point"},
}

# Plugins the parser finds by op_type (TensorRT's plugin registry): required attributes, inputs, versions.
KNOWN_PLUGINS = {
    # TensorRT plugin/disentangledAttentionPlugin: span (int32), factor (float32); data0 c2c (B*H, S, S),
    # data1 c2p and data2 p2c (B*H, S, 2*span); version "2" is the IPluginV3 form ("1" deprecated).
    "DisentangledAttention_TRT": {"attributes": {"span": "INT", "factor": "FLOAT"}, "inputs": 3,
                                  "versions": ("1", "2"), "deprecated": ("1",)},
}


@dataclass
class Finding:
    """One node the parser rejects ("error") or takes with a caveat ("warning")."""

    node: str  # the node's name (or "#<index> <op_type>" when unnamed; "graph" / a tensor name for graph rules)
    op_type: str
    rule: str  # short rule id, e.g. "unsupported-op", "constant-input", "type"
    severity: str  # "error" | "warning"
    detail: str


@dataclass
class Report:
    """check()'s result: `passed` when no finding is an error. `to_dict()` is what the manifest stores."""

    findings: list = field(default_factory=list)
    opset: int = 0
    nodes: int = 0
    plugins: dict = field(default_factory=dict)  # op_type -> count

    @property
    def errors(self) -> list:
        """The findings of severity "error"."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def passed(self) -> bool:
        """True when the parser takes every node (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict:
        """JSON-ready: parser table, opset, node count, plugins, passed, findings."""
        return {"parser_table": PARSER_TABLE, "opset": self.opset, "nodes": self.nodes, "plugins": self.plugins,
                "passed": self.passed, "findings": [asdict(f) for f in self.findings]}

    def summary(self) -> str:
        """One line naming the first few errors (what an EdgeportError says)."""
        bad = self.errors
        head = "; ".join(f"{f.node} ({f.op_type}): {f.detail}" for f in bad[:3])
        return f"{len(bad)} node(s) TensorRT's ONNX parser rejects: {head}" + (" ..." if len(bad) > 3 else "")


class _Graph:
    """What the rules read: constants (initializers and Constant outputs), tensor types, graph I/O."""

    def __init__(self, proto):
        import onnx
        from onnx import numpy_helper

        g = proto.graph
        self.const = {t.name: t for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                for a in n.attribute:
                    if a.name == "value":
                        self.const[n.output[0]] = a.t
        self.value = lambda name: numpy_helper.to_array(self.const[name])
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False).graph
        # custom domains can stop inference; graphs over 2 GB cannot be serialized for it (ValueError)
        except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
            inferred = g
        self.types, self.ranks = {}, {}
        for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.types[vi.name] = onnx.TensorProto.DataType.Name(tt.elem_type)
            if tt.HasField("shape"):
                self.ranks[vi.name] = len(tt.shape.dim)
        for name, t in self.const.items():
            self.types[name] = onnx.TensorProto.DataType.Name(t.data_type)
            self.ranks[name] = len(t.dims)
        self.io = {v.name for v in list(g.input) + list(g.output)}


def _name(node, i: int) -> str:
    return node.name or f"#{i} {node.op_type}"


def _attr(node, name):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def _present(node, idx: int) -> bool:
    return len(node.input) > idx and node.input[idx] != ""


def _domain_rule(node, g: _Graph, report: Report) -> list:
    """Nodes outside the ONNX domain: known TensorRT plugins with their documented attributes, else error."""
    spec = KNOWN_PLUGINS.get(node.op_type)
    if spec is None:
        why = " (an onnxruntime contrib op)" if node.domain == "com.microsoft" else ""
        return [("custom-domain", "error", (f"{node.domain}.{node.op_type}{why}: the parser takes ONNX ops and "
                                             "registered TensorRT plugins only"))]
    report.plugins[node.op_type] = report.plugins.get(node.op_type, 0) + 1
    out = []
    for attr, kind in spec["attributes"].items():
        v = _attr(node, attr)
        if v is None or (kind == "INT" and not isinstance(v, int)) or (kind == "FLOAT" and not isinstance(v, float)):
            out.append(("plugin-attribute", "error", f"plugin attribute '{attr}' ({kind}) missing or mistyped"))
    if sum(1 for x in node.input if x) != spec["inputs"]:
        out.append(("plugin-inputs", "error", f"the plugin takes {spec['inputs']} inputs, node has {len(node.input)}"))
    version = _attr(node, "plugin_version")
    version = version.decode() if isinstance(version, bytes) else (version or "1")
    if version not in spec["versions"]:
        out.append(("plugin-version", "error", f"plugin_version '{version}' is not one of {spec['versions']}"))
    elif version in spec["deprecated"]:
        out.append(("plugin-version", "warning", f"plugin_version '{version}' is deprecated"))
    return out


def _constant_rules(node, g: _Graph) -> list:
    """Inputs that must be build-time constants, and the values the table restricts."""
    out = []
    for idx, what in CONSTANT_INPUTS.get(node.op_type, {}).items():
        if not _present(node, idx):
            continue
        name = node.input[idx]
        if name not in g.const:
            out.append(("constant-input", "error", f"input {idx} ({what}) '{name}' must be an initializer or Constant"))
            continue
        v = g.value(name)
        if node.op_type == "TopK" and int(v.reshape(-1)[0]) >= TOPK_MAX:
            out.append(("topk-k", "error", f"K = {int(v.reshape(-1)[0])}, the parser takes K < {TOPK_MAX}"))
        if what.endswith("zero_point") and v.any():
            out.append(("zero-point", "error", f"{what} must be zero (symmetric quantization)"))
        if what == "training_mode" and bool(v.reshape(-1)[0]):
            out.append(("dropout-training", "error", "training_mode must be False"))
    if node.op_type == "TopK" and _attr(node, "sorted") == 0:
        out.append(("topk-sorted", "error", "sorted must be 1"))
    return out


def _op_rules(node, g: _Graph) -> list:
    """Per-op restrictions of the table's last column."""
    op, out = node.op_type, []
    if op == "Attention":
        for idx, what in ((4, "past_key"), (5, "past_value"), (6, "nonpad_kv_seqlen")):
            if _present(node, idx):
                out.append(("attention-input", "error", f"input {what} is unsupported (concatenate the cache outside)"))
        if any(o for o in node.output[1:]):
            out.append(("attention-output", "error", "present_key/present_value/qk_matmul_output are unsupported"))
        for a in ("qk_matmul_output_mode", "softcap"):
            if _attr(node, a) is not None:
                out.append(("attention-attribute", "error", f"attribute {a} is unsupported"))
        for idx in (0, 1, 2, 3):
            if _present(node, idx) and g.ranks.get(node.input[idx], 4) != 4:
                out.append(("attention-rank", "error", f"input {idx} must be 4-D (Q, K, V, attn_mask)"))
    elif op == "RotaryEmbedding" and _present(node, 3) and g.types.get(node.input[3], "INT64") != "INT64":
        out.append(("rotary-positions", "error", "position_ids must be INT64"))
    elif op == "LayerNormalization" and any(o for o in node.output[1:]):
        out.append(("layernorm-outputs", "error", "only the first output Y is supported"))
    elif op == "ScatterND" and (_attr(node, "reduction") or b"none") not in (b"none", "none"):
        out.append(("scatternd-reduction", "error", "reduction other than none is unsupported"))
    return out


def _type_rule(node, g: _Graph) -> list:
    types = OP_TYPES.get(node.op_type)
    idx = DATA_INPUT.get(node.op_type, 0)
    if types is None or not _present(node, idx):
        return []
    t = g.types.get(node.input[idx])
    if t is None or t in types or t == "DOUBLE":
        return []
    return [("type", "error", f"input {idx} is {t}; the parser takes {node.op_type} on {', '.join(sorted(types))}")]


def _tensor_rules(proto, g: _Graph) -> list:
    """Graph-wide: opset range, UINT8 inside the network, DOUBLE, float constants beyond fp16's range."""
    import numpy as np

    out = []
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not OPSETS[0] <= opset <= OPSETS[1]:
        out.append(Finding("graph", "", "opset", "error", f"opset {opset} outside the parser's {OPSETS}"))
    for name, t in sorted(g.types.items()):
        if t == "UINT8" and name not in g.io:
            out.append(Finding(name, "", "uint8", "error", "UINT8 is supported only as a network input or output"))
        elif t == "DOUBLE":
            out.append(Finding(name, "", "double", "warning", "DOUBLE is cast down to FLOAT (clamped to +-FLT_MAX)"))
    for name, t in g.const.items():
        if t.data_type in (1, 11) and int(np.prod(t.dims)) <= 16:  # small FLOAT / DOUBLE constants: mask values
            v = g.value(name)
            if v.size and not np.all(np.abs(v) <= FP16_MAX):
                out.append(Finding(name, "Constant", "fp16-range", "warning",
                                   f"value {float(v.reshape(-1)[np.argmax(np.abs(v))]):.3g} becomes inf in fp16"))
    return out


def check(model_or_path) -> Report:
    """Check an ONNX graph (a path to .onnx, or an onnx.ModelProto) against TensorRT's ONNX parser.

    Returns a Report whose findings name each offending node (see the module docstring for the rules and
    their source). Never raises for what it finds; raises EdgeportError when the file cannot be read.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from edgeport.errors import EdgeportError

    if isinstance(model_or_path, (str, Path)):
        try:
            proto = onnx.load(str(model_or_path), load_external_data=True)
        except (OSError, ValueError, DecodeError) as e:
            raise EdgeportError(f"{model_or_path}: cannot read the ONNX graph ({str(e).splitlines()[0][:200]})") from None
    else:
        proto = model_or_path
    g = _Graph(proto)
    report = Report(opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0),
                    nodes=len(proto.graph.node))
    for i, node in enumerate(proto.graph.node):
        if node.domain not in ("", "ai.onnx"):
            found = _domain_rule(node, g, report)
        elif node.op_type in UNSUPPORTED:
            found = [("unsupported-op", "error", f"{node.op_type} is not supported by the parser")]
        else:
            found = _constant_rules(node, g) + _op_rules(node, g) + _type_rule(node, g)
        report.findings += [Finding(_name(node, i), node.op_type, *f) for f in found]
    report.findings += _tensor_rules(proto, g)
    return report


# ---------------------------------------------------------------- graph passes (parser-clean graphs)

def finite_masks(proto) -> int:
    """Pattern: a small float constant (<= 16 values, an initializer or a Constant node's value) holding
    values below -65504 (float32's minimum or -inf: the masked_fill / (1 - mask) * min of attention
    masks). Those values become MASK_VALUE, so the mask stays finite when TensorRT computes in fp16.
    Returns how many constants changed."""
    import numpy as np
    from onnx import numpy_helper

    changed = 0
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_type != 1 or int(np.prod(t.dims)) > 16:  # FLOAT only
            continue
        v = numpy_helper.to_array(t)
        if np.any(v < -FP16_MAX):
            t.CopyFrom(numpy_helper.from_array(np.where(v < -FP16_MAX, np.float32(MASK_VALUE), v), t.name))
            changed += 1
    return changed


def float_cumsum(proto) -> int:
    """Pattern: CumSum(x int32/int64, axis) (position ids counted from the attention mask). The parser
    takes CumSum on float types only, so it becomes Cast(FLOAT) -> CumSum -> Cast(back to x's type):

        x (INT64) -> Cast(to=FLOAT) -> CumSum(axis) -> Cast(to=INT64) -> y

    exact for running sums below 2**24 (sequence positions). Returns how many CumSum nodes changed."""
    import onnx
    from onnx import helper

    g, hits, nodes = _Graph(proto), 0, []
    for node in proto.graph.node:
        t = g.types.get(node.input[0]) if node.op_type == "CumSum" and node.domain in ("", "ai.onnx") else None
        if t not in ("INT32", "INT64"):
            nodes.append(node)
            continue
        base, src, dst = node.name or f"/CumSum_{hits}", node.input[0], node.output[0]
        to_int = getattr(onnx.TensorProto, t)
        nodes.append(helper.make_node("Cast", [src], [f"{base}/float_in"], to=onnx.TensorProto.FLOAT,
                                      name=f"{base}/CastToFloat"))
        node.input[0], node.output[0] = f"{base}/float_in", f"{base}/float_out"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [f"{base}/float_out"], [dst], to=to_int, name=f"{base}/CastBack"))
        hits += 1
    if hits:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return hits


PASSES = (("finite_masks", finite_masks), ("float_cumsum", float_cumsum))


def parser_clean(path: Path, ctx=None) -> dict:
    """Graph pass of the tensorrt target (targets.py): apply PASSES to the ONNX file at `path` in place
    (external data kept beside it), then `check` it. -> converter notes {"tensorrt_passes",
    "tensorrt_check"}. Raises EdgeportError naming the nodes when the parser would still reject the graph."""
    import onnx

    from edgeport.errors import EdgeportError

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=True)
    done = {name: fn(proto) for name, fn in PASSES}
    if any(done.values()):
        external = (path.parent / (path.name + ".data")).exists()
        if external:
            (path.parent / (path.name + ".data")).unlink()
        onnx.save_model(proto, str(path), save_as_external_data=external, location=path.name + ".data",
                        size_threshold=1024)
    report = check(proto)
    if not report.passed:
        raise EdgeportError(report.summary())
    return {"tensorrt_passes": done, "tensorrt_check": report.to_dict()}
