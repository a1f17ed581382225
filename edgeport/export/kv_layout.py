"""KV-cache layouts of an ONNX decoder graph, and the graph surgery from one to the other.

    stacked    past_keys, past_values (L, B, KV, P, D) -> present_keys, present_values (L, B, KV, P+S, D)
               (reference_models/decoder.py's contract: what torch.onnx traces)
    per_layer  past_key_values.{i}.key/.value (B, KV, P, D) -> present.{i}.key/.value (B, KV, P+S, D)
               (the names transformers/Optimum and onnxruntime-genai use; key then value, layer by layer)

The traced graph is always stacked: each layer Gathers its past out of the stack and the presents are
Unsqueezed and Concatenated at the end, two full-cache copies per call on top of the one every layer
makes when it appends its new keys. `to_per_layer` removes both: the per-layer inputs feed the layers
directly and each layer's present is a graph output of its own. The runtime (runtime/generate.py) binds
either layout from the manifest's `decoder` block ("layout", "inputs", "outputs").
"""

from __future__ import annotations

from functools import partial

from edgeport.errors import EdgeportError

STACKED_INPUTS = ("past_keys", "past_values")
STACKED_OUTPUTS = ("present_keys", "present_values")


def per_layer_names(layers: int) -> tuple[list, list]:
    """-> (past names, present names), each 2L long: layer 0's key, layer 0's value, layer 1's key, ..."""
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return past, present


def cache_names(layout: str, layers: int) -> tuple[list, list]:
    """-> (cache input names, cache output names) of `layout`, key before value (stacked: 2 and 2)."""
    if layout == "stacked":
        return list(STACKED_INPUTS), list(STACKED_OUTPUTS)
    return per_layer_names(layers)


# ---------------------------------------------------------------- graph helpers

class _Constants:
    """Lookup of constant tensors by name: Constant nodes' `value` and initializers stored in the graph
    (never external data), converted to numpy only when asked for (a weight is never copied)."""

    def __init__(self, graph):
        self.protos = {t.name: t for t in graph.initializer if t.data_location != 1}  # 1: TensorProto.EXTERNAL
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.protos[n.output[0]] = n.attribute[0].t

    def get(self, name: str):
        """numpy value of `name`, or None when it is not a constant."""
        from onnx import numpy_helper

        t = self.protos.get(name)
        return None if t is None else numpy_helper.to_array(t)


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _consumers(graph, tensor: str) -> list:
    return [n for n in graph.node if tensor in n.input]


def _rename(graph, old: str, new: str) -> None:
    """Every node input and output named `old` becomes `new`."""
    for n in graph.node:
        for slot in (n.input, n.output):
            for k, name in enumerate(slot):
                if name == old:
                    slot[k] = new


def _value_info(name: str, like, dims: list):
    """A float tensor ValueInfo named `name`, of `like`'s element type, with `dims` (str: symbolic)."""
    from onnx import helper

    return helper.make_tensor_value_info(name, like.type.tensor_type.elem_type, dims)


def _dims(value_info) -> list:
    """A graph I/O's shape as ints and dim_param strings."""
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


# ---------------------------------------------------------------- the two patterns

#   past_keys (L, B, KV, P, D) --Gather(axis=0, index=i)--> g_i (B, KV, P, D) --> layer i
# becomes
#   past_key_values.{i}.key (B, KV, P, D) ---------------------------------> layer i
def unstack_input(graph, stacked: str, names: list, consts: _Constants) -> list:
    """Pattern: every consumer of graph input `stacked` is Gather(axis=0) with a scalar constant index
    0..L-1, one per layer. Each Gather's output is replaced by the graph input names[index] and the
    Gather removed. -> the removed nodes. EdgeportError when the graph has another consumer of `stacked`
    (the export's trace changed: this pass must be taught the new pattern, not guess)."""
    gathers = {}
    for n in _consumers(graph, stacked):
        index = consts.get(n.input[1]) if n.op_type == "Gather" and len(n.input) == 2 else None
        if n.input[0] != stacked or index is None or index.ndim != 0 or _attr(n, "axis", 0) != 0:
            raise EdgeportError(f"per-layer KV cache: '{stacked}' feeds {n.op_type} '{n.name}', expected only "
                                "Gather(axis=0, scalar constant index) per layer")
        i = int(index)
        if not 0 <= i < len(names) or i in gathers:
            raise EdgeportError(f"per-layer KV cache: '{stacked}' is gathered at index {i} twice or out of range")
        gathers[i] = n
    if sorted(gathers) != list(range(len(names))):
        raise EdgeportError(f"per-layer KV cache: '{stacked}' is gathered for layers {sorted(gathers)}, "
                            f"expected 0..{len(names) - 1}")
    for i, n in gathers.items():
        _rename(graph, n.output[0], names[i])  # the Gather's own output too; it is removed next
    return list(gathers.values())


#   layer i --> t_i (B, KV, T, D) --Unsqueeze(axes=[0])--> u_i --\
#                                                                Concat(axis=0) --> present_keys (L, B, KV, T, D)
#   layer j --> t_j --------------Unsqueeze(axes=[0])--> u_j --/
# becomes
#   layer i --> present.{i}.key (B, KV, T, D), a graph output
def unstack_output(graph, stacked: str, names: list, consts: _Constants) -> list:
    """Pattern: graph output `stacked` = Concat(axis=0) over L inputs, input i = Unsqueeze(t_i, axes=[0])
    read by nothing else. t_i is renamed names[i] everywhere (it becomes a graph output; other readers
    keep reading it) and the Concat and Unsqueezes removed. -> the removed nodes. EdgeportError when the
    graph does not have this shape."""
    producer = {o: n for n in graph.node for o in n.output}
    concat = producer.get(stacked)
    if concat is None or concat.op_type != "Concat" or _attr(concat, "axis") != 0 or len(concat.input) != len(names):
        raise EdgeportError(f"per-layer KV cache: '{stacked}' is not Concat(axis=0) over {len(names)} layers")
    removed = [concat]
    for i, u in enumerate(concat.input):
        unsq = producer.get(u)
        axes = _attr(unsq, "axes") if unsq is not None else None
        if axes is None and unsq is not None and len(unsq.input) == 2:
            axes = consts.get(unsq.input[1])
            axes = None if axes is None else axes.tolist()
        alone = len(_consumers(graph, u)) == 1
        if unsq is None or unsq.op_type != "Unsqueeze" or list(axes or []) != [0] or not alone:
            raise EdgeportError(f"per-layer KV cache: input {i} of '{concat.name}' is not Unsqueeze(axes=[0]) "
                                "read only by the Concat")
        _rename(graph, unsq.input[0], names[i])
        removed.append(unsq)
    return removed


def _assign(repeated, items: list) -> None:
    """A protobuf repeated field's contents := `items`."""
    del repeated[:]
    repeated.extend(items)


def _drop_dead_constants(graph, candidates: set) -> None:
    """Remove Constant nodes and initializers named in `candidates` that nothing reads any more."""
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = candidates - read
    _assign(graph.node, [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in dead)])
    _assign(graph.initializer, [t for t in graph.initializer if t.name not in dead])


def to_per_layer(proto, layers: int) -> dict:
    """Rewrite a stacked-cache decoder graph (module docstring) in place into the per-layer layout:
    inputs past_key_values.{i}.key/.value (B, KV, past, D) where past_keys/past_values were, outputs
    present.{i}.key/.value (B, KV, total, D) where present_keys/present_values were (same dtype; the
    stacked input's dims without the layer axis, the output's own `total`). -> converter notes.
    EdgeportError when the graph lacks either pattern (unstack_input, unstack_output). Weights in external
    data are never read."""
    graph = proto.graph
    consts = _Constants(graph)
    past, present = per_layer_names(layers)
    removed = []
    for k, stacked in enumerate(STACKED_INPUTS):
        removed += unstack_input(graph, stacked, past[k::2], consts)
    for k, stacked in enumerate(STACKED_OUTPUTS):
        removed += unstack_output(graph, stacked, present[k::2], consts)
    gone = {id(n) for n in removed}
    _assign(graph.node, [n for n in graph.node if id(n) not in gone])
    _drop_dead_constants(graph, {i for n in removed for i in n.input[1:]})
    past_dims = _dims(next(v for v in graph.input if v.name == STACKED_INPUTS[0]))[1:]  # (B, KV, past, D)
    total = _dims(next(v for v in graph.output if v.name == STACKED_OUTPUTS[0]))[3]
    _replace_io(graph.input, STACKED_INPUTS, past, past_dims)
    _replace_io(graph.output, STACKED_OUTPUTS, present, past_dims[:2] + [total] + past_dims[3:])
    io_names = set(past) | set(present)  # typed as graph I/O now
    _assign(graph.value_info, [v for v in graph.value_info if v.name not in io_names])
    return {"kv_layout": "per_layer", "kv_layout_nodes_removed": len(removed)}


def _replace_io(io, stacked: tuple, names: list, dims: list) -> None:
    """Graph inputs/outputs: the two stacked entries -> the per-layer ones with `dims`, at the first one's
    place."""
    like = next(v for v in io if v.name == stacked[0])
    at = [v.name for v in io].index(stacked[0])
    rest = [v for v in io if v.name not in stacked]
    _assign(io, rest[:at] + [_value_info(n, like, dims) for n in names] + rest[at:])


def layout_rewrites(contract) -> tuple:
    """The graph rewrites a contract's cache layout needs, fn(ModelProto) -> notes (export_onnx applies
    them to the traced graph before saving it): (to_per_layer for its depth,) or ()."""
    if getattr(contract, "kv_layout", "stacked") != "per_layer":
        return ()
    return (partial(to_per_layer, layers=contract.layers),)
