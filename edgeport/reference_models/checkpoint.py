"""Where a model comes from: a named preset, a local HF folder, or a hub id; and its weights.

Weights load from safetensors first; `pytorch_model.bin` only through
`torch.load(weights_only=True)`. Every failure a user can cause is one EdgeportError line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeport.errors import EdgeportError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_HUB_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*", "vocab*",
                 "special_tokens_map.json", "merges.txt", "spm.model", "*.model"]


@dataclass
class Source:
    """A resolved model source."""

    name: str  # what the user passed
    folder: Path | None  # HF-format folder, None for a preset
    hf_config: dict  # the config.json content (or the preset's dict)
    preset: str | None = None


def read_config(folder: Path) -> dict:
    """config.json of an HF model folder as a dict; EdgeportError when missing, not JSON, or without
    model_type."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise EdgeportError(f"{folder}: no config.json; expected a Hugging Face model folder")
    try:
        d = json.loads(cfg.read_text())
    except ValueError as e:
        raise EdgeportError(f"{cfg}: not valid JSON ({e})") from None
    if not isinstance(d, dict) or "model_type" not in d:
        raise EdgeportError(f"{cfg}: has no model_type")
    return d


def download(hub_id: str) -> Path:
    """Snapshot of the files a model needs from the Hugging Face Hub (needs a network)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise EdgeportError("downloading from the Hub needs huggingface_hub: pip install 'edgeport[export]'") from None
    try:
        return Path(snapshot_download(hub_id, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # the hub client raises many types; all mean "could not get it"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgeportError(f"could not download '{hub_id}' from the Hugging Face Hub "
                            f"({type(e).__name__}: {reason[:200]}); pass a local folder instead") from None


def resolve(model: str, checkpoint: str | None, presets: dict) -> Source:
    """`presets`: preset name -> HF config dict. `checkpoint` overrides a preset's random weights."""
    if checkpoint is not None:
        folder = Path(checkpoint)
        if not folder.is_dir():
            raise EdgeportError(f"--checkpoint {checkpoint}: no such folder")
        return Source(checkpoint, folder, read_config(folder), preset=model if model in presets else None)
    if model in presets:
        return Source(model, None, dict(presets[model]), preset=model)
    path = Path(model)
    if path.is_dir():
        return Source(model, path, read_config(path))
    if path.exists():
        raise EdgeportError(f"{model}: is a file; pass the model folder (with config.json)")
    if HUB_ID.match(model) and not model.startswith((".", "/")):
        folder = download(model)
        return Source(model, folder, read_config(folder))
    raise EdgeportError(f"unknown model '{model}': not a preset (see `edgeport list`), a folder, or a hub id")


def _weight_files(folder: Path) -> list[Path]:
    st = folder / "model.safetensors"
    if st.is_file():
        return [st]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as e:
            raise EdgeportError(f"{index}: unreadable shard index ({e})") from None
        return [folder / s for s in shards]
    bin_ = folder / "pytorch_model.bin"
    if bin_.is_file():
        return [bin_]
    raise EdgeportError(f"{folder}: no weights (model.safetensors or pytorch_model.bin)")


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every weight of the folder (safetensors or pytorch_model.bin, sharded or not) by key; EdgeportError on
    a missing shard or a corrupt file."""
    sd: dict[str, torch.Tensor] = {}
    for f in _weight_files(folder):
        if not f.is_file():
            raise EdgeportError(f"{f}: weight shard listed in the index is missing")
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file
                sd.update(load_file(str(f)))
            else:
                sd.update(torch.load(str(f), map_location="cpu", weights_only=True))
        except Exception as e:  # safetensors/pickle raise varied types on corrupt files
            raise EdgeportError(f"{f}: corrupt or truncated weights file ({type(e).__name__})") from None
    return sd


def fit_state_dict(model: torch.nn.Module, sd: dict, prefix: str, head_prefixes: tuple) -> list[str]:
    """Load `sd` into `model`, adding the backbone `prefix` to bare backbone checkpoints.

    Errors on any backbone tensor missing or of the wrong shape (the config contradicts the
    weights); returns the head tensors that the checkpoint lacks (they stay randomly initialised).
    Not missing: a tensor the model ties to a loaded one (it shares its storage, e.g. an LM decoder tied
    to the word embeddings, which transformers drops on save) or one named in `model.TIED_FALLBACKS`.
    """
    own = model.state_dict()
    if not any(k.startswith(prefix + ".") for k in sd):
        sd = {f"{prefix}.{k}" if not k.startswith(head_prefixes) else k: v for k, v in sd.items()}
    # A tensor saved only through the one it is tied to (transformers drops tied copies on save).
    for dst, src in getattr(model, "TIED_FALLBACKS", {}).items():
        if dst not in sd and src in sd:
            sd = {**sd, dst: sd[src]}
    missing, fitted = [], {}
    for name, param in own.items():
        if name not in sd:
            missing.append(name)
            continue
        t = sd[name]
        if tuple(t.shape) != tuple(param.shape):
            raise EdgeportError(f"config contradicts weights: '{name}' is {tuple(t.shape)} in the "
                                f"checkpoint but the config implies {tuple(param.shape)}")
        fitted[name] = t.to(param.dtype)
    tied = {own[n].data_ptr() for n in fitted}
    missing = [m for m in missing if own[m].data_ptr() not in tied]
    backbone_missing = [m for m in missing if not m.startswith(head_prefixes)]
    if backbone_missing:
        more = f" (+{len(backbone_missing) - 1} more)" if len(backbone_missing) > 1 else ""
        raise EdgeportError(f"checkpoint lacks '{backbone_missing[0]}'{more}: wrong family or config?")
    model.load_state_dict(fitted, strict=False)
    return missing
