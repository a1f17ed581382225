"""Reference models: compact PyTorch (and Keras) models that load HF checkpoints.

Public entry point: `load_reference(model, task=None, checkpoint=None)`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.reference_models.registry import Family, families, family_for_model_type, get_family


@dataclass
class Reference:
    """A loaded reference model and where it came from (what export needs besides the module)."""

    family: Family
    config: object  # the family's typed config
    model: object  # torch.nn.Module in eval mode
    task: str
    source: str
    folder: Path | None  # checkpoint folder (tokenizer files live here), None for a preset
    random_weights: bool
    missing_head: list  # head tensors the checkpoint lacked (randomly initialised)


def all_presets() -> dict:
    """{preset name: Family} over every registered family."""
    return {p: fam for fam in families().values() for p in fam.presets}


def load_reference(model: str, task: str | None = None, checkpoint: str | None = None, seed: int = 0,
                   allow_random_head: bool = False) -> Reference:
    """Build the reference model for `model` (preset, folder or hub id) and `task`.

    A checkpoint that lacks tensors the task needs (a base model for a task head) is refused with an
    EdgeportError naming them, unless `allow_random_head`: then they stay random (seeded by `seed`), a
    warning says so and `random_weights` is True. Tensors tied to loaded ones are not missing."""
    import torch

    from edgeport.reference_models import checkpoint as ckpt

    presets = {p: fam.presets[p] for p, fam in all_presets().items()}
    src = ckpt.resolve(model, checkpoint, presets)
    family = family_for_model_type(str(src.hf_config.get("model_type")))
    if src.preset and checkpoint is not None:
        named = all_presets()[src.preset]
        if named.name != family.name:
            raise EdgeportError(f"--checkpoint is a '{family.name}' model, not '{named.name}'")
    task = task or family.default_task
    if task not in family.tasks:
        raise EdgeportError(f"family '{family.name}' has no task '{task}'; tasks: {', '.join(family.tasks)}")
    config = family.config_cls.from_hf(src.hf_config)
    torch.manual_seed(seed)
    net = family.build(config, task)
    missing = []
    if src.folder is not None:
        sd = ckpt.load_state_dict(src.folder)
        missing = ckpt.fit_state_dict(net, sd, net.prefix, net.head_prefixes())
        named = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        if missing and not allow_random_head:
            raise EdgeportError(f"{src.name}: the checkpoint has no weights for the {task} head ({named}); "
                                "pass --allow-random-head to export it with random ones (fine-tune first)")
        if missing:
            warnings.warn(f"{src.name}: no weights for the {task} head ({named}); "
                          "they are random: fine-tune before trusting its outputs", stacklevel=2)
    else:
        warnings.warn(f"preset '{src.preset}' has random weights: pass --checkpoint DIR for real ones",
                      stacklevel=2)
    net.eval()
    return Reference(family, config, net, task, src.name, src.folder, src.folder is None or bool(missing), missing)


__all__ = ["Reference", "load_reference", "families", "get_family", "all_presets"]
