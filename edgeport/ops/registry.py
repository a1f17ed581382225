"""Lowerings as data: per (family, target, name), what the exporter applies to a reference model.

A lowering never calls an exporter. It says what to change and what to bring:

- `swap`: a named, reversible module swap (STYLE.md 5), a context manager `swap(model, ctx)` that yields
  `(model to export, converter notes)` and undoes itself on exit (or works on a copy);
- `symbolics`: `(custom op name, symbolic fn)` pairs the exporter registers with torch.onnx, and
  `custom_opsets` ({domain: version}) for the nodes they emit;
- `graph_passes`: `fn(onnx path, ctx) -> converter notes` run in order on the written ONNX file
  (pattern rewrites, offline fusions);
- `validation`: a `CustomOpLibrary` when the graph holds nodes no stock runtime runs (a plugin proved
  on the CPU with a reference kernel);
- `converter`: notes recorded in the manifest's `converter` block; `fuses_weights`: the graph hides
  weights inside fused ops that weight-only / static int8 quantizers cannot reach.

Register next to the op's code with `register_lowering(families, target, name, **fields)`. The
exporter (edgeport/export/lowerings.py) finds them with `find_lowering` / `lowerings_for`, which
import every module of edgeport.ops once. This module imports nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from edgeport.errors import EdgeportError


@dataclass(frozen=True)
class LoweringContext:
    """What a swap or graph pass may read: the family's typed config and the static length (TFLite)."""

    config: object
    static_len: int | None = None  # static sequence length, None for dynamic-shape targets


@dataclass(frozen=True)
class CustomOpLibrary:
    """Runs custom nodes on the CPU for parity validation.

    `prepare(proto) -> int`: registers the reference kernels and rewrites the ONNX ModelProto in place
    (e.g. moves plugin nodes into the library's domain); returns how many nodes it moved.
    `library_path() -> str`: the shared library onnxruntime registers (SessionOptions.register_custom_ops_library).
    """

    prepare: Callable
    library_path: Callable


@dataclass(frozen=True)
class Lowering:
    """One registered lowering of (family, target, name): the fields of the module docstring."""

    family: str
    target: str  # onnx | tflite | tensorrt
    name: str
    swap: Callable | None = None  # contextmanager (model, LoweringContext) -> (model, converter notes)
    symbolics: tuple = ()  # ((custom op name "ns::op", torch.onnx symbolic fn), ...)
    custom_opsets: dict | None = None  # {domain: version} for torch.onnx.export
    graph_passes: tuple = ()  # fn(path: Path, ctx: LoweringContext) -> dict of converter notes
    validation: CustomOpLibrary | None = None
    converter: dict = field(default_factory=dict)
    fuses_weights: bool = False

    @contextlib.contextmanager
    def applied(self, model, ctx: LoweringContext):
        """Yields (model to export, converter notes); the reference model is as built again on exit."""
        if self.swap is None:
            yield model, {}
        else:
            with self.swap(model, ctx) as (swapped, notes):
                yield swapped, dict(notes)


_LOWERINGS: dict[tuple, Lowering] = {}


def register_lowering(families, target: str, name: str = "default", **fields) -> None:
    """Register a Lowering (fields as in the dataclass) for each family; raises RuntimeError on a repeat."""
    for fam in (families,) if isinstance(families, str) else tuple(families):
        if (fam, target, name) in _LOWERINGS:
            raise RuntimeError(f"lowering {name!r} for {fam} on {target} registered twice")
        _LOWERINGS[(fam, target, name)] = Lowering(fam, target, name, **fields)


def _load_all() -> None:
    import edgeport.ops as pkg

    for info in pkgutil.iter_modules(pkg.__path__):  # lowerings live beside their ops
        importlib.import_module(f"edgeport.ops.{info.name}")


def lowerings_for(family: str, target: str) -> list[str]:
    """Sorted names of the lowerings registered for (family, target); [] when none."""
    _load_all()
    return sorted(n for (f, t, n) in _LOWERINGS if f == family and t == target)


def find_lowering(family: str, target: str, name: str | None) -> Lowering | None:
    """The named lowering; with no name, "default", else "generic", else None (the plain route).

    Raises EdgeportError naming the available ones when `name` is not registered.
    """
    _load_all()
    if name is None:
        return _LOWERINGS.get((family, target, "default")) or _LOWERINGS.get((family, target, "generic"))
    if (family, target, name) not in _LOWERINGS:
        have = lowerings_for(family, target)
        raise EdgeportError(f"no lowering '{name}' for {family} on {target}; available: "
                            f"{', '.join(have) if have else 'none (generic route only)'}")
    return _LOWERINGS[(family, target, name)]
