"""Decoder specifics of the one export pipeline (gpt2, mistral, mixtral; task text-generation): validation
through the KV cache, special tokens, the tokenizer and the manifest's `decoder` block.

DESIGN notes
- ONNX: prefill and decode are ONE graph. The cache axis P is dynamic, so the first call feeds an
  empty past (L, B, KV, 0, D) and every later call feeds the previous present. One graph means one
  copy of the weights on disk and in memory (two graphs would duplicate them or need shared external
  data), and onnxruntime runs both shapes well: GroupQueryAttention picks its prompt path when P = 0.
  Cache contract (reference_models/decoder.py, export/contracts.py DecoderContract): past/present_keys/values
  (L, B, KV, P(+S), D), left padding, attention_mask (B, P+S), position_ids (B, S); `--kv-layout per-layer`
  rewrites the graph to one past/present per layer and direction (export/kv_layout.py). Lowerings
  (edgeport/ops): "default" for mistral (attention as com.microsoft.GroupQueryAttention with
  local_window_size) and mixtral (+ com.microsoft.MoE), "generic" for every family (plain ONNX ops,
  exact sliding window in the mask, dense MoE).
- TFLite: a static rolling cache of C slots, `prefill` and `decode` signatures (export/tflite_torch.py).
- Validation (layer 2 of DESIGN.md): a plan is (batch, padded rows, chunk lengths); the first
  chunk runs without a cache, the next ones with the artifact's own cache (the runtime's decoder
  backends, so IOBinding and the rolling buffer are what is checked). Logits are compared on real
  tokens and present keys/values on real slots (padding slots are never read; a per-layer artifact's
  cache is stacked by the runtime's cache() for the comparison). ParityCheck.shape is
  [batch, past, new]. Lengths cross the sliding window when the window is short enough to reach.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from edgeport.errors import ParityError
from edgeport.export.contracts import DecoderContract
from edgeport.export.validate import raise_on_misses
from edgeport.manifest import ParityCheck


# ---------------------------------------------------------------- validation

def left_padded(vocab: int, batch: int, total: int, padded_rows: int, seed: int = 0):
    """(B, total) random ids (>= 3) and a 1/0 mask; the last `padded_rows` rows are left-padded."""
    rng = np.random.default_rng(seed + 7919 * batch + total)
    ids = rng.integers(3, vocab, size=(batch, total), dtype=np.int64)
    mask = np.ones((batch, total), np.int64)
    for r in range(batch - padded_rows, batch):
        pad = min(total - 2, 2 + 3 * (r - batch + padded_rows + 1))  # each padded row pads differently
        mask[r, :pad], ids[r, :pad] = 0, 0
    return ids, mask


def plans(contract: DecoderContract, static: tuple | None) -> list:
    """[(batch, padded_rows, [chunk lengths])]: the first chunk runs without a cache.

    Lengths cross the sliding window where it is short enough (tiny configs); `static` is
    (batch, prefill length) for TFLite, whose chunks are prefill-sized or single tokens.
    """
    w = contract.sliding_window
    long = min(contract.max_positions - 4, max(19, 2 * w + 3) if w and w <= 64 else 19)
    if static:
        b, sp = static
        steps = min(contract.max_positions - sp, max(6, (w or 0) + 3 if w and w <= 64 else 6))
        return [(b, 0, [sp] + [1] * steps), (b, b, [sp] + [1] * 3)]
    return [(1, 0, [8]), (3, 2, [long, 1, 1, 1]), (1, 0, [5, 4, 1])]


def _check(name: str, got, want, keep, shape, padded, c: DecoderContract) -> ParityCheck:
    """got/want (..., N, ...) compared where `keep` (bool, broadcast on the leading axes) is true."""
    if got.shape != want.shape:
        raise ParityError(f"shape mismatch on '{name}' at {shape}: artifact {list(got.shape)}, "
                          f"reference {list(want.shape)}")
    diff = float(np.max(np.abs(got[keep].astype(np.float64) - want[keep]), initial=0.0))
    tol = c.atol + c.rtol * float(np.max(np.abs(want[keep]), initial=0.0))
    return ParityCheck(name, list(shape), padded, diff, tol, bool(diff <= tol))


def run_plan(model, decoder, plan, c: DecoderContract, compare_cache: bool) -> list:
    """One plan through the reference (growing cache) and the artifact's runtime backend."""
    from edgeport.runtime.generate import positions_from_mask

    batch, padded, chunks = plan
    ids, mask = left_padded(c.vocab_size, batch, sum(chunks), padded)
    decoder.reset(batch)
    pk = pv = None
    checks, t = [], 0
    for s in chunks:
        new, full = slice(t, t + s), mask[:, :t + s]
        pos = positions_from_mask(full, s)
        with torch.inference_mode():
            logits, pk, pv = model(*(torch.from_numpy(a) for a in (ids[:, new], full, pos)), pk, pv)
        got = decoder.step(ids[:, new], mask[:, new], pos)
        shape = [batch, t, s]
        checks.append(_check("logits", got, logits.numpy(), mask[:, new] == 1, shape, padded, c))
        if compare_cache:
            keys, values = decoder.cache()
            slots = np.broadcast_to(full[None, :, None, :] == 1, keys.shape[:4])
            checks.append(_check("present_keys", keys, pk.numpy(), slots, shape, padded, c))
            checks.append(_check("present_values", values, pv.numpy(), slots, shape, padded, c))
        t += s
    return checks


def validate_decoder(model, decoder, c: DecoderContract, static: tuple | None) -> list:
    """Every plan through the reference and the artifact's runtime decoder; raises ParityError naming
    the worst miss. `static` = (batch, prefill length) for a static-cache artifact (logits only)."""
    checks = [ch for p in plans(c, static) for ch in run_plan(model, decoder, p, c, static is None)]
    return raise_on_misses(checks, "[batch, past, new]")


# ---------------------------------------------------------------- tokenizer, special tokens

def special_tokens(ref) -> dict:
    """eos/bos/pad ids from the checkpoint's config.json and generation_config.json (pad falls back to eos)."""
    found = {}
    for name in ("config.json", "generation_config.json"):
        f = ref.folder / name if ref.folder is not None else None
        if f is not None and f.is_file():
            d = json.loads(f.read_text())
            found.update({k: d[k] for k in ("eos_token_id", "bos_token_id", "pad_token_id") if d.get(k) is not None})
    eos = found.get("eos_token_id")
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    pad = found.get("pad_token_id", eos[0] if eos else 0)
    return {"eos_token_ids": eos, "bos_token_id": found.get("bos_token_id"), "pad_token_id": int(pad)}


def write_decoder_tokenizer(ref, out: Path, pad_id: int, steps):
    """tokenizer.json from whichever layout the checkpoint ships (reference_models.tokenizer: tokenizer.json,
    GPT-2's vocab.json + merges.txt, Mistral's sentencepiece tokenizer.model), with the pad id of the
    config. -> TokenizerInfo, or None (with a warning) when the checkpoint has no tokenizer files;
    EdgeportError when they are incomplete."""
    from edgeport.reference_models.tokenizer import has_tokenizer, write_tokenizer

    folder = ref.folder
    if folder is not None and has_tokenizer(folder):
        info = write_tokenizer(folder, out, mask_token=None)
        info.pad_token_id = pad_id
        return info
    if folder is None:  # a preset: a byte-level tokenizer fit to its vocabulary, <|endoftext|> at the pad id
        from edgeport.reference_models.preset_tokenizer import write_preset_tokenizer

        steps.note("preset: byte-level tokenizer fit to its vocabulary (the random weights give it no meaning)")
        return write_preset_tokenizer(ref.config.vocab_size, out, False, pad_id)
    steps.note("warning: no tokenizer files found; `edgeport generate` will need one")
    return None


def decoder_info(c: DecoderContract, lowered, static: bool, tokens: dict) -> dict:
    """The manifest's `decoder` block: cache layout ("stacked" | "per_layer", the cache's axes, its input and
    output names: key before value, layer by layer when per_layer), window, static cache and signatures,
    the longest sequence the artifact runs (`max_tokens`), special token ids."""
    from edgeport.export.kv_layout import cache_names

    cache = lowered.converter.get("static_cache")
    exact_forever = static and c.sliding_window is not None and c.sliding_window <= cache
    axes = ["layers", "batch", "kv_heads", "past", "head_dim"]
    past, present = cache_names(c.kv_layout, c.layers)
    return {"layout": c.kv_layout, "axes": axes[1:] if c.kv_layout == "per_layer" else axes,
            "layers": c.layers, "kv_heads": c.kv_heads, "head_dim": c.head_dim, "padding_side": "left",
            "inputs": past, "outputs": present,  # key before value (per_layer: layer by layer)
            "sliding_window": c.sliding_window, "static_cache": cache,
            "signatures": lowered.converter.get("signatures"),
            "max_tokens": c.max_positions if not static or exact_forever else min(cache, c.max_positions),
            # onnxruntime's GroupQueryAttention: S > 1 on a non-empty cache only at batch 1.
            "chunk_on_cache_max_batch": 1 if lowered.converter.get("attention") == "gqa" else None,
            **tokens}


def tokenizer_and_info(ref, c: DecoderContract, lowered, static: bool, out: Path, steps) -> tuple:
    """Write the tokenizer into `out`; -> (TokenizerInfo or None, the manifest's decoder block)."""
    tokens = special_tokens(ref)
    tok = write_decoder_tokenizer(ref, out, tokens["pad_token_id"], steps)
    return tok, decoder_info(c, lowered, static, tokens)


def validate(ref, path: Path, c: DecoderContract, info: dict, static: tuple | None) -> list:
    """Open the artifact with the runtime's decoder backend and run every validation plan."""
    from edgeport.runtime.generate import open_decoder

    return validate_decoder(ref.model, open_decoder(path, info), c, static)
