"""QMoE expert weights (onnxruntime com.microsoft.QMoE): the packing and the MoE -> QMoE node rewrite.

    MoE(x, router, fc1 (E,N1,H) f32, fc1_b?, fc2 (E,H,I) f32, fc2_b?)
      -> QMoE(x, router, fc1_q (E,N1,H*bits/8) u8, fc1_scales, fc1_b?, fc2_q (E,H,I*bits/8) u8, fc2_scales, fc2_b?)

Weights are quantized symmetrically: q = round(w / s), s = absmax / (2^(bits-1) - 1) per row (int8)
or per block of `block_size` inputs (int4); stored as unsigned q + 2^(bits-1) (the kernel's default zero
point), two 4-bit values per byte, low nibble first. Layout facts: ../../shared/FACTS.md (QMoE).
8-bit uses one scale per row: 8-bit with blocks was measured off by 1.4e-2 in onnxruntime 1.31.

Each row is quantized on its own, so any slice of rows (one expert, part of one) gives the bytes the
whole tensor would. A shared leaf (numpy and onnx only): `edgeport quantize` (quantize/qmoe.py) rewrites
the MoE nodes of an fp32 artifact with it, `export --streaming --quantize int4` (export/streaming_int4.py)
writes the experts from the checkpoint one expert at a time with it.
"""

from __future__ import annotations

import numpy as np

# MoE input slots -> QMoE input slots (QMoE puts a scales input after each weight).
MOE_TO_QMOE = {0: 0, 1: 1, 2: 2, 3: 4, 4: 5, 5: 7, 6: 8, 7: 10}
WEIGHT_SLOTS = (2, 4, 6)  # fc1, fc2, fc3 weights in MoE's inputs


def weight_inputs(node) -> dict:
    """{MoE weight slot (WEIGHT_SLOTS): input name} for the expert weights MoE `node` names (fc3 is optional)."""
    return {k: node.input[k] for k in WEIGHT_SLOTS if k < len(node.input) and node.input[k]}


def quantize_rows(w: np.ndarray, bits: int, block: int) -> tuple:
    """(E, N, K) float -> (packed uint8 (E, N, K*bits/8), scales (E, N) or (E, N, K/block) float32)."""
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


def bits_and_block(scheme) -> tuple:
    """(expert_weight_bits, block_size or 0 for one scale per row) for a schemes.Scheme."""
    if scheme.weights == "int4":
        return 4, scheme.block_size
    return 8, 0


def qmoe_node(node, quantized: dict, bits: int, block: int):
    """The QMoE NodeProto replacing MoE `node`: `quantized` maps each MoE weight slot (WEIGHT_SLOTS) to
    (packed name, scales name); the other inputs move to their QMoE slots; attributes are MoE's plus
    expert_weight_bits and (blocked) block_size."""
    from onnx import helper

    inputs = [""] * 11
    for slot, name in enumerate(node.input):
        if slot in quantized:
            inputs[MOE_TO_QMOE[slot]], inputs[MOE_TO_QMOE[slot] + 1] = quantized[slot]
        elif name:
            inputs[MOE_TO_QMOE[slot]] = name
    while inputs and not inputs[-1]:
        inputs.pop()
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs["expert_weight_bits"] = bits
    if block:
        attrs["block_size"] = block
    return helper.make_node("QMoE", inputs, list(node.output), name=node.name + "/QMoE", domain="com.microsoft",
                            **attrs)
