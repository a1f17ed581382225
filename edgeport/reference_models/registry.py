"""Family registry: each family registers itself next to its class with `@register_family`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

from edgeport.errors import EdgeportError

ENCODER_TASKS = ("feature-extraction", "fill-mask", "text-classification", "token-classification",
                 "question-answering")


@dataclass
class Family:
    name: str  # edgeport id, e.g. "mobilebert"
    config_cls: type  # typed config; `from_hf(dict)` reads an HF config.json
    build: Callable  # build(config, task) -> torch.nn.Module (the reference model for that task)
    model_types: tuple  # HF `model_type` values this family loads
    tasks: tuple
    presets: dict  # preset name -> HF-style config dict
    default_task: str
    keras_build: Callable | None = None  # build_keras(config, task, state_dict, batch, seq) for TF routes
    targets: tuple = ("onnx", "tflite")
    notes: dict = field(default_factory=dict)


_FAMILIES: dict[str, Family] = {}


def register_family(name, *, config, presets, tasks=ENCODER_TASKS, model_types=None,
                    default_task=None, keras_build=None, targets=("onnx", "tflite")):
    """Decorator for a family's `build(config, task)` function."""

    def deco(build):
        if name in _FAMILIES:
            raise RuntimeError(f"family {name} registered twice")
        _FAMILIES[name] = Family(name, config, build, tuple(model_types or (name,)), tuple(tasks),
                                 dict(presets), default_task or tasks[0], keras_build, tuple(targets))
        return build

    return deco


# Modules in this package that are not families (importing them registers nothing).
_NOT_FAMILIES = {"registry", "config", "checkpoint", "tokenizer", "blocks", "decoder"}


def _load_all():
    """Import every family module once: their `@register_family` decorators fill the registry."""
    import importlib
    import pkgutil

    import edgeport.reference_models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in _NOT_FAMILIES or info.name.endswith("_keras"):
            continue
        try:
            importlib.import_module(f"edgeport.reference_models.{info.name}")
        except Exception as e:  # one broken family must not take the others down; tests list them all
            warnings.warn(f"family module {info.name} failed to import: {type(e).__name__}: {e}", stacklevel=2)


def families() -> dict[str, Family]:
    _load_all()
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    fams = families()
    if name not in fams:
        raise EdgeportError(f"unknown family '{name}'; known: {', '.join(sorted(fams))}")
    return fams[name]


def family_for_model_type(model_type: str) -> Family:
    for fam in families().values():
        if model_type in fam.model_types:
            return fam
    raise EdgeportError(f"model_type '{model_type}' is not supported; supported families: "
                        f"{', '.join(sorted(families()))}")


def find_preset(name: str):
    """(family, preset config dict) for a preset name, or None."""
    for fam in families().values():
        if name in fam.presets:
            return fam, fam.presets[name]
    return None
