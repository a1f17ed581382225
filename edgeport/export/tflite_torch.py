"""PyTorch reference -> TFLite with litert-torch: encoders without a Keras reference, and decoders.

litert-torch traces with torch.export at one static shape and lowers to TFLite builtin ops; the
wrappers below take int32 inputs (what TFLite runtimes feed) and return dicts, so the .tflite
signatures carry the contract's input and output names.

Decoders: a static-size rolling cache of C slots and two signatures over the same weights,
`prefill` (B, Sp) and `decode` (B, 1). Each call takes the C cached slots plus S new ones and
returns the last C (the oldest S fall off); the mask (B, C+S) marks real slots and positions are
explicit, so an empty cache is just C slots of left padding. With a sliding window W <= C this
is exact for any length; otherwise the runtime stops at C tokens (manifest `decoder.max_tokens`).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch

from edgeport.errors import EdgeportError
from edgeport.export.lowerings import Lowered
from edgeport.export.validate import sample_inputs

DEFAULT_CACHE = 512  # TFLite static cache slots (capped by the model's positions)
ROUTE = "litert-torch (torch.export -> TFLite builtins)"


def _litert_torch(what: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import litert_torch
    except ImportError:
        raise EdgeportError(f"TFLite export of {what} needs litert-torch: pip install 'edgeport[tflite]'") from None
    return litert_torch


def _convert(what: str, build, path: Path) -> dict:
    """Run `build(litert_torch)` -> edge model, write it to `path`; litert-torch's errors become one
    EdgeportError line. Returns the converter versions."""
    litert_torch = _litert_torch(what)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # progress tree, deprecations
            warnings.simplefilter("ignore")
            build(litert_torch).export(str(path))
    except Exception as e:  # torch.export / MLIR errors: long, many types
        raise EdgeportError(f"litert-torch could not convert {what}: "
                            f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}") from None
    return {"torch": torch.__version__, "litert_torch": getattr(litert_torch, "__version__", "unknown"),
            "route": ROUTE}


class Int32Named(torch.nn.Module):
    """int32 keyword inputs -> the model's int64 positional inputs; outputs as a name -> tensor dict."""

    def __init__(self, model: torch.nn.Module, contract):
        super().__init__()
        self.model, self.inputs, self.outputs = model, list(contract.inputs), list(contract.outputs)

    def forward(self, **feeds):
        outs = self.model(*[feeds[n].long() for n in self.inputs])
        return dict(zip(self.outputs, outs))


def export_tflite_torch(model: torch.nn.Module, contract, out_dir: Path, batch: int, seq: int,
                        what: str = "the model") -> Lowered:
    """Encoder -> `out_dir/model.tflite` at the static shape (batch, seq) [(batch, choices, seq) for
    multiple-choice], int32 inputs, builtin ops only. Raises EdgeportError when litert-torch is missing
    or fails (its first message line)."""
    feeds = sample_inputs(contract, batch, seq, padded_rows=0)
    sample = {n: torch.from_numpy(v).to(torch.int32) for n, v in feeds.items()}
    wrapped = Int32Named(model, contract).eval()
    converter = _convert(what, lambda lt: lt.convert(wrapped, (), sample_kwargs=sample), out_dir / "model.tflite")
    return Lowered("model.tflite", {**converter, "static_shape": [batch, seq], "input_dtype": "int32"})


class StaticCacheStep(torch.nn.Module):
    """int32 feeds; past (L, B, KV, C, D) -> logits (B, S, V) and the last C slots of the present."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, past_keys, past_values):
        S = input_ids.shape[1]
        logits, k, v = self.model(input_ids.long(), attention_mask.long(), position_ids.long(), past_keys,
                                  past_values)  # present (L, B, KV, C+S, D)
        return {"logits": logits, "present_keys": k[:, :, :, S:], "present_values": v[:, :, :, S:]}


def _static_sample(contract, batch: int, new: int, cache: int) -> dict:
    shape = (contract.layers, batch, contract.kv_heads, cache, contract.head_dim)
    return {"input_ids": torch.ones(batch, new, dtype=torch.int32),
            "attention_mask": torch.ones(batch, cache + new, dtype=torch.int32),
            "position_ids": torch.arange(new, dtype=torch.int32)[None].expand(batch, -1).contiguous(),
            "past_keys": torch.zeros(shape), "past_values": torch.zeros(shape)}


def cache_length(contract, prefill: int) -> int:
    """Static cache slots C: DEFAULT_CACHE capped by the positions, never below the prefill length."""
    return max(prefill, min(contract.max_positions, DEFAULT_CACHE))


def export_tflite_decoder(model: torch.nn.Module, contract, out_dir: Path, batch: int, seq: int,
                          what: str = "the decoder") -> Lowered:
    """Decoder -> `out_dir/model.tflite` with `prefill` (batch, seq) and `decode` (batch, 1) signatures
    over a static rolling cache of `cache_length` slots (float32 (L, B, KV, C, D)); int32 ids, mask,
    positions. Raises EdgeportError when litert-torch is missing or fails."""
    cache = cache_length(contract, seq)
    step = StaticCacheStep(model).eval()

    def build(lt):
        return (lt.signature("prefill", step, sample_kwargs=_static_sample(contract, batch, seq, cache))
                .signature("decode", step, sample_kwargs=_static_sample(contract, batch, 1, cache)).convert())

    converter = _convert(what, build, out_dir / "model.tflite")
    return Lowered("model.tflite", {**converter, "signatures": {"prefill": [batch, seq], "decode": [batch, 1]},
                                    "static_cache": cache, "input_dtype": "int32"})
