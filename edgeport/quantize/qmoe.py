"""Mixtral experts: com.microsoft.MoE -> com.microsoft.QMoE with int8 (per row) or int4 (blocked) weights.

    MoE(x, router, fc1 (E,N1,H) f32, fc1_b?, fc2 (E,H,I) f32, fc2_b?)
      -> QMoE(x, router, fc1_q (E,N1,H*bits/8) u8, fc1_scales, fc1_b?, fc2_q (E,H,I*bits/8) u8, fc2_scales, fc2_b?)

Weights are quantized symmetrically: q = round(w / s), s = absmax / (2^(bits-1) - 1) per row (int8)
or per block of `block_size` inputs (int4); stored as unsigned q + 2^(bits-1) (the kernel's default zero
point), two 4-bit values per byte, low nibble first. Layout facts: ../../shared/FACTS.md (QMoE).
8-bit uses one scale per row: 8-bit with blocks was measured off by 1.4e-2 in onnxruntime 1.31.
"""

from __future__ import annotations

import numpy as np

from edgeport.schemes import Scheme

# MoE input slots -> QMoE input slots (QMoE puts a scales input after each weight).
_MOE_TO_QMOE = {0: 0, 1: 1, 2: 2, 3: 4, 4: 5, 5: 7, 6: 8, 7: 10}
_WEIGHT_SLOTS = (2, 4, 6)  # fc1, fc2, fc3 weights in MoE's inputs


def match_moe(model) -> list:
    """MoE nodes (domain com.microsoft) whose expert weights are initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MoE" and n.domain == "com.microsoft"
            and n.input[2] in inits and n.input[4] in inits]


def quantize_rows(w: np.ndarray, bits: int, block: int) -> tuple:
    """(E, N, K) float -> (packed uint8 (E, N, K*bits/8), scales (E, N) or (E, N, K/block))."""
    E, N, K = w.shape
    qmax = 2 ** (bits - 1) - 1
    groups = w.reshape(E, N, K // block, block) if block else w[:, :, None, :]  # (E, N, G, b)
    scale = np.abs(groups).max(axis=-1) / qmax  # (E, N, G)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(groups / scale[..., None]), -qmax, qmax).astype(np.int32) + 2 ** (bits - 1)
    q = q.reshape(E, N, K).astype(np.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)  # low nibble first
    return q, scale if block else scale[..., 0]


def dequantize_rows(q: np.ndarray, scale: np.ndarray, bits: int, block: int) -> np.ndarray:
    """Inverse of quantize_rows (tests compare QMoE against MoE on these weights)."""
    if bits == 4:
        q = np.stack([q & 0x0F, q >> 4], axis=-1).reshape(*q.shape[:2], -1)
    w = q.astype(np.float32) - 2 ** (bits - 1)  # (E, N, K)
    E, N, K = w.shape
    s = np.repeat(scale, block, axis=-1) if block else scale[..., None]
    return w * s.reshape(E, N, -1)


def _bits_block(scheme: Scheme) -> tuple:
    if scheme.weights == "int4":
        return 4, scheme.block_size
    return 8, 0


def convert_moe_nodes(model, scheme: Scheme, enabled: bool = True) -> int:
    """Rewrite every matched MoE node into QMoE in place; returns how many."""
    from onnx import helper, numpy_helper

    if not enabled or scheme.weights not in ("int8", "int4"):
        return 0
    bits, block = _bits_block(scheme)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = match_moe(model)
    for node in nodes:
        inputs = [""] * 11
        for slot, name in enumerate(node.input):
            if slot in _WEIGHT_SLOTS and name:
                w = numpy_helper.to_array(inits[name]).astype(np.float32)
                q, s = quantize_rows(w, bits, block)
                model.graph.initializer.append(numpy_helper.from_array(q, name + "_q"))
                model.graph.initializer.append(numpy_helper.from_array(s, name + "_scales"))
                inputs[_MOE_TO_QMOE[slot]], inputs[_MOE_TO_QMOE[slot] + 1] = name + "_q", name + "_scales"
            elif name:
                inputs[_MOE_TO_QMOE[slot]] = name
        while inputs and not inputs[-1]:
            inputs.pop()
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs["expert_weight_bits"] = bits
        if block:
            attrs["block_size"] = block
        q_node = helper.make_node("QMoE", inputs, list(node.output), name=node.name + "/QMoE",
                                  domain="com.microsoft", **attrs)
        idx = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(idx, q_node)
    if nodes:
        _drop_unused_initializers(model)
    return len(nodes)


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
