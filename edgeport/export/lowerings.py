"""Lowerings: per (family, target) ways to turn a reference model into an artifact.

A lowering registers itself next to its code with `@register_lowering(families, target, name)`.
`export()` uses the one named by `--lowering`, else the one registered as `default` for the
family and target, else the generic route (torch.onnx for ONNX, Keras or litert-torch for TFLite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from edgeport.errors import EdgeportError


@dataclass
class Lowered:
    artifact: str  # file name written into the output folder
    converter: dict  # tool versions, opset, route
    custom_ops: list = field(default_factory=list)  # [{"domain", "op_type", "runtimes": [...]}]
    # How to run the artifact for parity validation (e.g. with a reference kernel library for
    # plugin nodes); None = the runtime's ordinary Session.
    open_session: Callable | None = None


_LOWERINGS: dict[tuple, Callable] = {}
# Lowerings whose graph hides weights inside fused ops (onnxruntime's Attention, EmbedLayerNormalization):
# weight-only and static int8 quantizers cannot reach those weights.
_FUSES_WEIGHTS: set = set()


def register_lowering(families, target: str, name: str = "default", fuses_weights: bool = False):
    """Decorator for `fn(ref, contract, out_dir, opts) -> Lowered`; opts has opset, batch, seq_len."""
    fams = (families,) if isinstance(families, str) else tuple(families)

    def deco(fn):
        for f in fams:
            _LOWERINGS[(f, target, name)] = fn
            if fuses_weights:
                _FUSES_WEIGHTS.add((f, target, name))
        return fn

    return deco


def _load_all():
    import importlib
    import pkgutil

    import edgeport.ops as ops_pkg

    for info in pkgutil.iter_modules(ops_pkg.__path__):  # lowerings live beside their ops
        importlib.import_module(f"edgeport.ops.{info.name}")


def lowerings_for(family: str, target: str) -> list:
    _load_all()
    return sorted(n for (f, t, n) in _LOWERINGS if f == family and t == target)


def find_lowering(family: str, target: str, name: str | None):
    """The registered lowering, or None for the generic route (only when no name was asked for)."""
    _load_all()
    if name is None:
        return _LOWERINGS.get((family, target, "default"))
    if (family, target, name) not in _LOWERINGS:
        have = lowerings_for(family, target)
        raise EdgeportError(f"no lowering '{name}' for {family} on {target}; available: "
                            f"{', '.join(have) if have else 'none (generic route only)'}")
    return _LOWERINGS[(family, target, name)]


def fuses_weights(family: str, target: str, name: str | None) -> bool:
    _load_all()
    return (family, target, name or "default") in _FUSES_WEIGHTS
