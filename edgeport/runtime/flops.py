"""Count the matmul work of an ONNX graph at one concrete input shape, and the weight bytes a step reads.

    count = count_flops("out/model.onnx", {"input_ids": (1, 128), "attention_mask": (1, 128)})
    count.by_class        # {"fp32": 2.9e9, "int8": ...}: FLOP (a multiply-add counts 2)
    count.complete        # False when a heavy op could not be counted (count.not_counted says which)

What is counted (everything else is not: elementwise, normalisation, softmax, gathers are memory-bound
and small next to these):
- MatMul, FusedMatMul, Gemm: 2*M*K*N per product (batch dims broadcast), class from the input dtype
  (float32 -> fp32, float16 -> fp16); products of two activations (attention scores) included.
- MatMulInteger, QLinearMatMul, DynamicQuantizeMatMul, MatMulIntegerToFloat: 2*M*K*N, class int8.
- MatMulNBits: 2*M*K*N, class int8 when accuracy_level is 4 (activations quantized to int8), else fp32.
- com.microsoft Attention / QAttention: the QKV projection 2*B*S*H_in*(Q+K+V widths) (int8 for
  QAttention) plus the two attention products 2*B*S*T*(Q width) and 2*B*S*T*(V width) in fp32,
  T = past + S keys.
- com.microsoft MultiHeadAttention / GroupQueryAttention, ONNX Attention (opset 23): the two attention
  products 2*B*S*T*(heads*head_dim) each, T = past keys + new keys.
  Counted dense: a causal or sliding-window kernel may skip up to half of that work.
- com.microsoft MoE / QMoE: each token through k experts, 2 * k * (fc1 + fc2 [+ fc3] weights) per
  token (the router is a MatMul); fp32.
- Conv: 2 * output elements * (C_in / group) * kernel size.
Ops that do heavy work but are not counted (Einsum, ConvTranspose, recurrent ops, plugin nodes of other
domains) and counted ops whose shapes shape inference could not make concrete make the count
incomplete: `not_counted` names them and callers must not turn an incomplete count into a fraction.

Shapes come from onnxruntime's symbolic shape inference (onnxruntime.tools.symbolic_shape_infer, which
knows the com.microsoft ops) run on the graph with its inputs fixed to the given shapes; local
functions are inlined first. Needs the onnx and sympy packages (edgeport[bench]); torch-free.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeport.errors import EdgeportError

INT8_MATMULS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
# ops whose work is not counted here; their presence makes a count incomplete
HEAVY_UNCOUNTED = {"Einsum", "ConvTranspose", "ConvInteger", "QLinearConv", "LSTM", "GRU", "RNN"}
# input indices of the fc1, fc2, fc3 expert weights (onnxruntime's contrib op schemas)
MOE_WEIGHTS = {"MoE": (2, 4, 6), "QMoE": (2, 5, 8)}
MOE_OPS = set(MOE_WEIGHTS)  # a decode step reads only the routed experts' weights (see weight_bytes)
# ops of the com.microsoft domain known to be cheap (memory-bound, not matmuls)
CHEAP_CONTRIB = {"SkipLayerNormalization", "EmbedLayerNormalization", "QEmbedLayerNormalization", "BiasGelu",
                 "FastGelu", "Gelu", "QuickGelu", "BiasAdd", "BiasSoftmax", "SkipSimplifiedLayerNormalization",
                 "SimplifiedLayerNormalization", "RotaryEmbedding", "GatherBlockQuantized", "DequantizeLinear",
                 "QuantizeLinear", "DynamicQuantizeLinear", "LayerNormalization", "BiasSplitGelu", "NhwcConv"}
# initializers only ever gathered from (embedding tables): one row per token is read, not the table
GATHER_TABLE_INPUTS = {"Gather": {0}, "GatherBlockQuantized": {0, 2, 3}, "EmbedLayerNormalization": {2, 3, 4},
                       "QEmbedLayerNormalization": {2, 3, 4}}


class NotCounted(Exception):
    """A node whose work this module cannot count (shape unknown, layout not handled); `name`: the value
    whose shape was unknown, if that was the reason."""

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


@dataclass
class FlopCount:
    """FLOP of one graph at one input shape. by_class: "fp32" | "fp16" | "int8" -> FLOP (int8: OP);
    by_op: op type -> FLOP; not_counted: "op type: reason" -> node count (empty when complete)."""

    by_class: dict = field(default_factory=dict)
    by_op: dict = field(default_factory=dict)
    not_counted: dict = field(default_factory=dict)
    nodes_counted: int = 0

    @property
    def complete(self) -> bool:
        """True when every heavy op of the graph was counted."""
        return not self.not_counted

    @property
    def total(self) -> int:
        """All counted FLOP, every class together."""
        return sum(self.by_class.values())

    def add(self, op: str, klass: str, flops: float):
        """Count `flops` (floating-point or integer operations of one node, a multiply-add counting 2) under
        the node's op type `op` (e.g. "MatMul") and its class `klass` ("fp32" | "fp16" | "int8", as by_class); truncated to int."""
        self.by_class[klass] = self.by_class.get(klass, 0) + int(flops)
        self.by_op[op] = self.by_op.get(op, 0) + int(flops)

    def to_dict(self) -> dict:
        """JSON-ready: by_class, by_op, not_counted, nodes_counted, complete, total."""
        return {"by_class": self.by_class, "by_op": self.by_op, "not_counted": self.not_counted,
                "nodes_counted": self.nodes_counted, "complete": self.complete, "total": self.total}


def _onnx():
    try:
        import onnx
        import sympy  # noqa: F401  (onnxruntime's symbolic shape inference needs it)
    except ImportError as e:
        raise EdgeportError(f"counting FLOPs needs {e.name}: pip install 'edgeport[bench]'") from None
    return onnx


def load_graph(path):
    """The ModelProto of an .onnx file without its external weight data (dims are enough), functions
    inlined. EdgeportError when the file is not a readable ONNX model."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise EdgeportError(f"{path}: not a readable ONNX model ({str(e)[:200]})") from None
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    return model


def infer_concrete(model, shapes: dict):
    """A copy of `model` whose graph inputs have the concrete `shapes` (name -> tuple of ints), with
    every value's shape inferred by onnxruntime's symbolic shape inference (incomplete inference is kept:
    unknown shapes show up as NotCounted later). Inputs missing from `shapes` raise EdgeportError."""
    onnx = _onnx()
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        if inp.name not in shapes:
            raise EdgeportError(f"no shape given for graph input '{inp.name}'")
        dims = inp.type.tensor_type.shape.dim
        del dims[:]
        for d in shapes[inp.name]:
            dims.add().dim_value = int(d)
    # infer_shapes() writes a copy of the model into the working folder when inference is incomplete;
    # its loop is driven here instead so nothing is written
    ssi = SymbolicShapeInference(2**31 - 1, True, False, 0)
    ssi._preprocess(m)
    while ssi.run_:
        ssi._infer_impl()
    ssi._update_output_from_vi()
    return ssi.out_mp_


def _value_infos(model) -> dict:
    """name -> (elem_type, dims as ints or None) for inputs, outputs, value_info and initializers."""
    out = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            out[vi.name] = (t.elem_type, None)
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        out[vi.name] = (t.elem_type, dims)
    for t in model.graph.initializer:
        out[t.name] = (t.data_type, list(t.dims))
    return out


class _Graph:
    """Shape look-ups for one shape-inferred graph."""

    def __init__(self, model):
        self.vi = _value_infos(model)
        self.consts = {t.name: t for t in model.graph.initializer}

    def shape(self, name: str) -> list:
        dims = self.vi.get(name, (0, None))[1]
        if not name or dims is None or any(d is None for d in dims):
            raise NotCounted(f"shape of {name or '<absent input>'} unknown", name)
        return dims

    def klass(self, name: str) -> str:
        from onnx import TensorProto

        t = self.vi.get(name, (0, None))[0]
        return {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16",
                TensorProto.UINT8: "int8", TensorProto.INT8: "int8"}.get(t, "fp32")


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _matmul(a: list, b: list) -> float:
    """2*M*K*N times the broadcast batch of numpy-matmul operands a (..., M, K), b (..., K, N)."""
    a = [1] + a if len(a) == 1 else a
    b = b + [1] if len(b) == 1 else b
    rank = max(len(a), len(b)) - 2  # batch dims broadcast right-aligned, as numpy.matmul
    ba, bb = [1] * (rank - len(a) + 2) + a[:-2], [1] * (rank - len(b) + 2) + b[:-2]
    batch = math.prod(max(x, y) for x, y in zip(ba, bb))
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def _attention_products(batch: int, s: int, t: int, qk_width: int, v_width: int) -> float:
    """Scores (B, S, T) over qk_width and the weighted sum of values over v_width: 2 products."""
    return 2.0 * batch * s * t * (qk_width + v_width)


def _count_node(node, g: _Graph, fc: FlopCount):
    op, ins = node.op_type, node.input
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
              "FusedMatMul"):
        b_index = 3 if op == "QLinearMatMul" else 1
        a, b = g.shape(ins[0]), g.shape(ins[b_index])
        if op == "FusedMatMul":  # transA / transB swap the last two dims
            a = a[:-2] + a[-2:][::-1] if _attr(node, "transA", 0) else a
            b = b[:-2] + b[-2:][::-1] if _attr(node, "transB", 0) else b
        fc.add(op, "int8" if op in INT8_MATMULS else g.klass(ins[0]), _matmul(a, b))
    elif op == "Gemm":
        a, b = g.shape(ins[0]), g.shape(ins[1])
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        fc.add(op, g.klass(ins[0]), 2.0 * m * k * n)
    elif op == "MatMulNBits":
        rows = math.prod(g.shape(ins[0])[:-1])
        klass = "int8" if _attr(node, "accuracy_level", 0) == 4 else "fp32"
        fc.add(op, klass, 2.0 * rows * _attr(node, "K") * _attr(node, "N"))
    elif op in ("Attention", "QAttention") and node.domain == "com.microsoft":
        _contrib_attention(node, g, fc)
    elif op in ("MultiHeadAttention", "GroupQueryAttention") or (op == "Attention" and node.domain in ("", "ai.onnx")):
        _sdpa(node, g, fc)
    elif op in MOE_OPS and node.domain == "com.microsoft":
        _moe(node, g, fc)
    elif op == "Conv":
        w, y = g.shape(ins[1]), g.shape(node.output[0])
        fc.add(op, g.klass(ins[0]), 2.0 * math.prod(y) * math.prod(w[1:]))
    else:
        return False
    return True


def _contrib_attention(node, g: _Graph, fc: FlopCount):
    """com.microsoft Attention/QAttention: input (B, S, H_in), weights (H_in, Q+K+V), optional past
    (2, B, N, P, head) at input 4 (Attention) / 8 (QAttention)."""
    x, w = g.shape(node.input[0]), g.shape(node.input[1])
    b, s = x[0], x[1]
    widths = _attr(node, "qkv_hidden_sizes") or [w[1] // 3] * 3
    past_index = 8 if node.op_type == "QAttention" else 4
    past = 0
    if len(node.input) > past_index and node.input[past_index]:
        past = g.shape(node.input[past_index])[3]
    proj = "int8" if node.op_type == "QAttention" else g.klass(node.input[0])
    fc.add(node.op_type, proj, 2.0 * b * s * w[0] * w[1])
    fc.add(node.op_type, "fp32", _attention_products(b, s, past + s, widths[0], widths[2]))


def _moe(node, g: _Graph, fc: FlopCount):
    """com.microsoft MoE / QMoE: every token runs k experts; fc1 (E, N1, K1) [, fc3], fc2 (E, N2, K2) at
    inputs 2, 4 (MoE) / 2, 5 (QMoE) and 8 (QMoE fc3) or 6 (MoE fc3); QMoE packs K * bits / 8 bytes a row.
    Per token: 2 * k * sum(N * K). QMoE dequantizes to float on the CPU: counted fp32."""
    if _attr(node, "weights_prepacked", 0):
        raise NotCounted("prepacked expert weights")
    tokens = math.prod(g.shape(node.input[0])[:-1])
    k = _attr(node, "k", 1)
    macs = 0
    for fc_index, i in enumerate(MOE_WEIGHTS[node.op_type], start=1):
        if len(node.input) > i and node.input[i]:
            bits = _attr(node, f"fc{fc_index}_expert_weight_bits") or _attr(node, "expert_weight_bits", 4)
            unpack = 8 // bits if node.op_type == "QMoE" else 1
            _, n, kk = g.shape(node.input[i])
            macs += n * kk * unpack
    fc.add(node.op_type, "fp32", 2.0 * tokens * k * macs)


def _sdpa(node, g: _Graph, fc: FlopCount):
    """Attention products of MultiHeadAttention / GroupQueryAttention (query (B, S, heads*head_dim); GQA
    packs QKV into the query when key is absent) and ONNX Attention (query (B, heads, S, head_dim) or
    (B, S, heads*head_dim)). Keys T = past (dim 2 of past_key) + new keys."""
    q = g.shape(node.input[0])
    if len(q) == 4 and node.op_type == "Attention":  # ONNX Attention, (B, heads, S, head_dim)
        b, s, width = q[0], q[2], q[1] * q[3]
    elif len(q) == 3:
        b, s, width = q[0], q[1], q[2]
    else:
        raise NotCounted(f"query of rank {len(q)}")
    key = node.input[1] if len(node.input) > 1 else ""
    if node.op_type == "GroupQueryAttention":
        heads, kv = _attr(node, "num_heads"), _attr(node, "kv_num_heads")
        width = width if key else width * heads // (heads + 2 * kv)  # packed (B, S, (N + 2*KV) * head)
        new_keys = s
    elif not key:
        raise NotCounted("packed query/key/value layout")
    else:
        k = g.shape(key)
        new_keys = k[1] if len(k) == 3 else k[2]
    past_index = {"GroupQueryAttention": 3, "MultiHeadAttention": 6, "Attention": 4}[node.op_type]
    past = node.input[past_index] if len(node.input) > past_index else ""
    t = (g.shape(past)[2] if past else 0) + new_keys
    fc.add(node.op_type, g.klass(node.input[0]), _attention_products(b, s, t, width, width))


def count_flops(path_or_model, feeds: dict, folder=None) -> FlopCount:
    """FlopCount of an .onnx file (or ModelProto) with its graph inputs at the shapes of `feeds`.

    feeds: input name -> numpy array (or a tuple of ints: the shape only). Shapes come from symbolic
    shape inference; where it leaves a counted op's operand unknown and `feeds` are arrays, the graph is
    run once in onnxruntime (no graph optimizations) with those values exposed as outputs, and their
    observed shapes are used (`folder`: where the model's external data lies; default the file's).
    Raises EdgeportError where onnx/sympy are missing or the file is not ONNX; an op it cannot count is
    recorded in `not_counted`, never guessed."""
    if isinstance(path_or_model, (str, Path)):
        folder = folder or Path(path_or_model).parent
        model = load_graph(path_or_model)
    else:
        model = path_or_model
    shapes = {k: tuple(getattr(v, "shape", v)) for k, v in feeds.items()}
    try:
        g = _Graph(infer_concrete(model, shapes))
    except Exception:  # the symbolic inference asserts on some graphs (a Reshape of unknown rank): probe instead
        g = _Graph(model)
        g.vi.update({k: (0, list(v)) for k, v in shapes.items()})
    fc, missing = _count_all(model, g)
    probed: set = set()
    while missing - probed and all(hasattr(v, "dtype") for v in feeds.values()):
        # a node reports its first unknown operand only: probe until no new name turns up
        g.vi.update(_probe(model, folder, feeds, sorted(missing - probed)))
        probed |= missing
        fc, missing = _count_all(model, g)
    return fc


def _count_all(model, g: _Graph) -> tuple[FlopCount, set]:
    """One counting pass: (FlopCount, names of values whose unknown shapes stopped a count)."""
    fc, skipped, missing = FlopCount(), Counter(), set()
    for node in model.graph.node:
        try:
            counted = _count_node(node, g, fc)
        except NotCounted as e:
            skipped[f"{node.op_type}: {e}"] += 1
            missing.add(e.name) if e.name else None
            continue
        fc.nodes_counted += counted
        if not counted and _heavy(node):
            skipped[f"{node.op_type}: not counted by edgeport"] += 1
    fc.not_counted = dict(skipped)
    return fc, missing


def _probe(model, folder, feeds: dict, names: list) -> dict:
    """name -> (elem_type, dims) observed by running `model` on `feeds` with `names` as extra outputs."""
    onnx = _onnx()
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    outputs = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in outputs)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if folder is not None:  # external data is found relative to this folder for a model given as bytes
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
    try:
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        values = sess.run(names, feeds)
    except Exception:  # onnxruntime's own exception types: shapes stay unknown, reported as such
        return {}
    return {n: (onnx.helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)) for n, v in zip(names, values)}


def _heavy(node) -> bool:
    """An op that may do matmul-scale work: HEAVY_UNCOUNTED, or any op of a domain other than ONNX's
    that is not a known-cheap com.microsoft op (plugin nodes, custom kernels)."""
    if node.op_type in HEAVY_UNCOUNTED:
        return True
    if node.domain in ("", "ai.onnx"):
        return False
    return not (node.domain == "com.microsoft" and node.op_type in CHEAP_CONTRIB)


def weight_bytes(path_or_model) -> dict:
    """Bytes of the graph's constant tensors a forward step reads: {"weights": bytes, "gathered": bytes}.

    "weights": every initializer (and Constant node tensor) read in full each step; "gathered": tables
    that only Gather-like ops consume (embeddings: a row per token is read, not the table); "experts":
    MoE/QMoE expert weights, scales and biases (a step reads only the routed experts': it depends on
    the routing).
    Sizes from dims and dtype (int4 types count half a byte), so external data need not be loaded."""
    onnx = _onnx()
    model = path_or_model if not isinstance(path_or_model, (str, Path)) else load_graph(path_or_model)
    uses: dict = {}
    experts = {name for n in model.graph.node if n.op_type in MOE_OPS for name in n.input[2:]}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append(i in GATHER_TABLE_INPUTS.get(node.op_type, ()))
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value"]
    out = {"weights": 0, "gathered": 0, "experts": 0}
    for t in tensors:
        size = math.prod(t.dims) * _itemsize(onnx, t.data_type)
        key = ("experts" if t.name in experts else "gathered" if t.name in uses and all(uses[t.name])
               else "weights")
        out[key] += int(size)
    return out


def _itemsize(onnx, data_type: int) -> float:
    if data_type in (getattr(onnx.TensorProto, "INT4", -1), getattr(onnx.TensorProto, "UINT4", -1)):
        return 0.5
    return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
