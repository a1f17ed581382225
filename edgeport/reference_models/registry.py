"""Family registry: each family registers itself next to its class with `@register_family`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from edgeport.errors import EdgeportError

ENCODER_TASKS = ("feature-extraction", "fill-mask", "text-classification", "token-classification",
                 "question-answering")


@dataclass
class Family:
    """A registered family: how to read its config, build its task models, and what it offers."""

    name: str  # edgeport id, e.g. "mobilebert"
    config_cls: type  # typed config; `from_hf(dict)` reads an HF config.json
    build: Callable  # build(config, task) -> torch.nn.Module (the reference model for that task)
    model_types: tuple  # HF `model_type` values this family loads
    tasks: tuple
    presets: dict  # preset name -> HF-style config dict
    default_task: str
    # "module:function" of build_keras(config, task, state_dict, batch, seq), imported only by the TFLite
    # route (so listing families never imports TensorFlow); None: TFLite goes through litert-torch.
    keras_build: str | None = None
    targets: tuple = ("onnx", "tflite")
    notes: tuple = ()  # what users must know about every export of the family (copied into the manifest)


_FAMILIES: dict[str, Family] = {}


def register_family(name, *, config, presets, tasks=ENCODER_TASKS, model_types=None,
                    default_task=None, keras_build=None, targets=("onnx", "tflite"), notes=()):
    """Decorator for a family's `build(config, task)` function."""

    def deco(build):
        if name in _FAMILIES:
            raise RuntimeError(f"family {name} registered twice")
        _FAMILIES[name] = Family(name, config, build, tuple(model_types or (name,)), tuple(tasks),
                                 dict(presets), default_task or tasks[0], keras_build, tuple(targets),
                                 tuple(notes))
        return build

    return deco


# Modules in this package that are not families (importing them registers nothing).
_NOT_FAMILIES = {"registry", "config", "checkpoint", "tokenizer", "blocks", "decoder", "heads", "preset_tokenizer"}


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
    """{family id: Family} of every family module (imported once)."""
    _load_all()
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    """The Family by edgeport id; EdgeportError naming the known ones otherwise."""
    fams = families()
    if name not in fams:
        raise EdgeportError(f"unknown family '{name}'; known: {', '.join(sorted(fams))}")
    return fams[name]


def family_for_model_type(model_type: str) -> Family:
    """The Family loading HF `model_type`; EdgeportError naming the supported families otherwise."""
    for fam in families().values():
        if model_type in fam.model_types:
            return fam
    raise EdgeportError(f"model_type '{model_type}' is not supported; supported families: "
                        f"{', '.join(sorted(families()))}")
