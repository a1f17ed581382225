"""Which lowering an export applies, and what it produced.

Lowerings are data registered beside their ops (edgeport/ops/registry.py); this module picks one for an
export: the one named by `--lowering`, else the family's "default", else "generic", else none (the plain
route: torch.onnx of the reference as built, or the family's TFLite route). An export meant for a
quantization scheme that cannot reach weights inside fused ops (edgeport.schemes.needs_unfused_graph)
takes the unfused "generic" lowering when none is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeport.ops.registry import Lowering, find_lowering, lowerings_for
from edgeport.schemes import needs_unfused_graph, resolve

__all__ = ["Lowered", "Lowering", "choose_lowering", "find_lowering", "lowerings_for"]


@dataclass
class Lowered:
    """What an exporter wrote into the output folder."""

    artifact: str  # file name in the folder (model.onnx, model.tflite; + model.onnx.data when > 2 GB)
    converter: dict  # tool versions, opset, route, lowering notes (the manifest's `converter`)
    custom_ops: list = field(default_factory=list)  # [{"domain", "op_type", "count", "runtimes", "attributes"}]
    validation: object = None  # ops.registry.CustomOpLibrary the parity check runs custom nodes with, or None


def choose_lowering(family: str, target: str, name: str | None, quantize: str | None) -> tuple[Lowering | None, str]:
    """-> (lowering or None for the plain route, why it was chosen: "named" | "default" | "unfused for <scheme>").

    Raises EdgeportError when `name` is not registered for (family, target), or `quantize` is not a
    scheme `target` supports.
    """
    if name is not None:
        return find_lowering(family, target, name), "named"
    chosen = find_lowering(family, target, None)
    if quantize and chosen is not None and chosen.fuses_weights and \
            needs_unfused_graph(resolve(quantize, target)) and "generic" in lowerings_for(family, target):
        return find_lowering(family, target, "generic"), f"unfused for {quantize}"
    return chosen, "default"
