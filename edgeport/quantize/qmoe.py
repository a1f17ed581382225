"""Mixtral experts: com.microsoft.MoE -> com.microsoft.QMoE with int8 (per row) or int4 (blocked) weights.

The packing and the node rewrite are edgeport/qmoe_packing.py's (a shared leaf: the streaming export
writes the same QMoE weights straight from a checkpoint); here they are applied to a whole fp32 artifact.
"""

from __future__ import annotations

from edgeport.qmoe_packing import bits_and_block, dequantize_rows, qmoe_node, quantize_rows, weight_inputs
from edgeport.schemes import Scheme

__all__ = ["convert_moe_nodes", "dequantize_rows", "match_moe", "quantize_rows"]


def match_moe(model) -> list:
    """MoE nodes (domain com.microsoft) whose expert weights are initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MoE" and n.domain == "com.microsoft"
            and n.input[2] in inits and n.input[4] in inits]


def convert_moe_nodes(model, scheme: Scheme, enabled: bool = True) -> int:
    """Rewrite every matched MoE node into QMoE in place; returns how many."""
    import numpy as np
    from onnx import numpy_helper

    if not enabled or scheme.weights not in ("int8", "int4"):
        return 0
    bits, block = bits_and_block(scheme)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = match_moe(model)
    for node in nodes:
        quantized = {}
        for slot, name in weight_inputs(node).items():
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            q, s = quantize_rows(w, bits, block)
            model.graph.initializer.append(numpy_helper.from_array(q, name + "_q"))
            model.graph.initializer.append(numpy_helper.from_array(s, name + "_scales"))
            quantized[slot] = (name + "_q", name + "_scales")
        idx = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(idx, qmoe_node(node, quantized, bits, block))
    if nodes:
        _drop_unused_initializers(model)
    return len(nodes)


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
