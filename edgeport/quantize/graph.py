"""Finding the sensitive nodes of an ONNX graph, by named pattern (STYLE.md 7).

Each matcher returns node names; the backends pass them to the quantizers' exclusion lists. The
groups (`--keep-float` values) and what each matches:

    embeddings   Gather(initializer 2-D table, ids)                   token / position embedding lookups
    head         MatMul(x, initializer) -> [Add] -> [Split|Squeeze|Reshape|Transpose]* -> graph output
                 the task head's projection (MLM decoder, LM head, QA/classifier logits)
    attention    MatMul(activation, activation)                       Q.K^T and softmax(.).V products
    ffn-down     MatMul(act(x), W), act = Gelu | FastGelu | Relu | Mul    the feed-forward's down projection: its
                 input is the activation's output (erf-GELU and SwiGLU both end in a Mul), wide-ranged
    norms        LayerNormalization | SimplifiedLayerNormalization | ReduceMean chains' ops (fp16 only)
    softmax      Softmax (fp16 only)
"""

from __future__ import annotations

GROUPS = ("embeddings", "head", "attention", "ffn-down", "norms", "softmax")

# Ops that carry a head's logits to the graph output without changing their meaning.
_PASS_THROUGH = ("Add", "Split", "Squeeze", "Reshape", "Transpose", "Identity", "Cast", "Slice", "Gather")


def _initializers(model) -> dict:
    return {t.name: t for t in model.graph.initializer}


def _producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def match_embeddings(model) -> list:
    """Gather nodes whose data input is a 2-D initializer (an embedding table)."""
    inits = _initializers(model)
    return [n.name for n in model.graph.node
            if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2]


def match_head(model) -> list:
    """MatMul(x, W) nodes that reach a graph output through pass-through ops only."""
    inits, producers = _initializers(model), _producers(model)
    found, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "MatMul" and node.input[1] in inits:
            found.append(node.name)
        elif node.op_type in _PASS_THROUGH:
            stack.extend(i for i in node.input if i and i not in inits)
    return found


def match_attention(model) -> list:
    """MatMul nodes with no initializer input: activation x activation products."""
    inits = _initializers(model)
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in inits or i in consts for i in n.input)]


_ACTIVATIONS = ("Gelu", "FastGelu", "BiasGelu", "Relu", "Mul", "QuickGelu")


def match_ffn_down(model) -> list:
    """MatMul(x, W) whose activation input x comes straight from an activation op (see _ACTIVATIONS)."""
    inits, producers = _initializers(model), _producers(model)
    found = []
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits:
            src = producers.get(n.input[0])
            if src is not None and src.op_type in _ACTIVATIONS:
                found.append(n.name)
    return found


def match_op_types(model, op_types) -> list:
    """Names of the nodes of an onnx ModelProto whose op_type is in `op_types`."""
    return [n.name for n in model.graph.node if n.op_type in op_types]


MATCHERS = {
    "embeddings": match_embeddings,
    "head": match_head,
    "attention": match_attention,
    "ffn-down": match_ffn_down,
    # Not the fused SkipLayerNormalization: the float16 converter leaves its inputs half-cast (a
    # type error at load); onnxruntime's kernel accumulates fp16 inputs in fp32 anyway.
    "norms": lambda m: match_op_types(m, ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")),
    "softmax": lambda m: match_op_types(m, ("Softmax",)),
}


def fold_transposed_tables(model) -> int:
    """Gather(Transpose(W), ids) with W an initializer -> Gather(W^T as its own initializer, ids).

    Tied embeddings are exported as one (H, V) head weight and a Transpose feeding the embedding
    Gather; the quantizers skip a Gather whose table is computed, and must then keep the fp32 copy.
    Materialising the table lets the head and the embedding be quantized separately.
    """
    from onnx import numpy_helper

    inits, producers = _initializers(model), _producers(model)
    folded = 0
    for n in model.graph.node:
        t = producers.get(n.input[0]) if n.op_type == "Gather" else None
        if t is None or t.op_type != "Transpose" or t.input[0] not in inits:
            continue
        perm = [a.ints for a in t.attribute if a.name == "perm"]
        table = numpy_helper.to_array(inits[t.input[0]])
        table = table.transpose(list(perm[0])) if perm else table.T
        name = t.input[0] + "_T"
        model.graph.initializer.append(numpy_helper.from_array(table.copy(), name))
        n.input[0] = name
        folded += 1
    if folded:  # drop Transposes nothing reads any more
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type == "Transpose" and n.output[0] not in used]
        for n in dead:
            model.graph.node.remove(n)
    return folded


def ensure_node_names(model) -> None:
    """Quantizers exclude nodes by name: give unnamed nodes a path-like one (op type + index)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"/{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def nodes_in(model, groups) -> list:
    """Sorted node names of every group in `groups` (MATCHERS keys); KeyError for an unknown group."""
    names = []
    for g in groups:
        names += MATCHERS[g](model)
    return sorted(set(names))


def weight_bytes(model) -> int:
    """Bytes of the graph's initializers (raw data, or the serialized size)."""
    return sum(len(t.raw_data) or t.ByteSize() for t in model.graph.initializer)
