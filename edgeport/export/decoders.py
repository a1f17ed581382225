"""Decoder export (gpt2, mistral, mixtral; task text-generation): ONNX with a growing KV cache, TFLite
with a static one, both validated against the reference with and without a cache.

DESIGN notes
- ONNX: prefill and decode are ONE graph. The cache axis P is dynamic, so the first call feeds an
  empty past (L, B, KV, 0, D) and every later call feeds the previous present. One graph means one
  copy of the weights on disk and in memory (two graphs would duplicate them or need shared external
  data), and onnxruntime runs both shapes well: GroupQueryAttention picks its prompt path when P = 0.
  Cache contract (reference_models/decoder.py): past/present_keys/values (L, B, KV, P(+S), D), left
  padding, attention_mask (B, P+S), position_ids (B, S). Lowerings: "default" for mistral (attention
  as com.microsoft.GroupQueryAttention with local_window_size) and mixtral (+ com.microsoft.MoE),
  "generic" for every family (plain ONNX ops, exact sliding window in the mask, dense MoE).
- TFLite: a static-size rolling cache of C slots and two signatures over the same weights,
  `prefill` (B, Sp) and `decode` (B, 1). Each call takes the C cached slots plus S new ones and
  returns the last C (the oldest S fall off); the mask (B, C+S) marks real slots and positions are
  explicit, so an empty cache is just C slots of left padding. With a sliding window W <= C this
  is exact for any length; otherwise the runtime stops at C tokens (manifest `decoder.max_tokens`).
- Validation (layers 2 of DESIGN.md): a plan is (batch, padded rows, chunk lengths); the first
  chunk runs without a cache, the next ones with the artifact's own cache (the runtime's decoder
  backends, so IOBinding and the rolling buffer are what is checked). Logits are compared on real
  tokens and present keys/values on real slots (padding slots are never read). ParityCheck.shape is
  [batch, past, new]. Lengths cross the sliding window when the window is short enough to reach.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeport.errors import EdgeportError, ParityError
from edgeport.export.validate import raise_on_misses
from edgeport.export.lowerings import Lowered, find_lowering
from edgeport.manifest import Manifest, ParityCheck, TensorSpec, atomic_output_dir, sha256_of
from edgeport.reference_models.decoder import DECODER_INPUTS, DECODER_TASK_OUTPUTS

TWO_GB = 2 * 1024**3
DEFAULT_CACHE = 512  # TFLite static cache slots (capped by the model's positions)


@dataclass
class DecoderContract:
    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int
    sliding_window: int | None
    atol: float = 1e-4  # |artifact - reference| <= atol + rtol * max|reference| (fp32)
    rtol: float = 1e-4
    inputs: tuple = DECODER_INPUTS
    outputs: tuple = DECODER_TASK_OUTPUTS["text-generation"]

    def dims(self, cache_axis: str, seq: str = "sequence") -> dict:
        cache = [self.layers, "batch", self.kv_heads, cache_axis, self.head_dim]
        return {"input_ids": ["batch", seq], "position_ids": ["batch", seq], "past_keys": cache,
                "past_values": cache, "logits": ["batch", seq, self.vocab_size]}

    def specs(self, dtype: str) -> tuple[list, list]:
        d = self.dims("past")
        ins = [TensorSpec(n, dtype if n in ("input_ids", "position_ids") else "float32", d[n])
               for n in ("input_ids", "position_ids", "past_keys", "past_values")]
        ins.insert(1, TensorSpec("attention_mask", dtype, ["batch", "past + sequence"]))
        present = self.dims("past + sequence")["past_keys"]
        outs = [TensorSpec("logits", "float32", d["logits"]), TensorSpec("present_keys", "float32", present),
                TensorSpec("present_values", "float32", present)]
        return ins, outs


def decoder_contract(ref) -> DecoderContract:
    L, KV, D = ref.model.backbone.cache_dims
    cfg = ref.config
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions")
    return DecoderContract(L, KV, D, cfg.vocab_size, max_pos, getattr(cfg, "sliding_window", None))


# ---------------------------------------------------------------- ONNX

@contextmanager
def swapped(model, attention: str, moe_form: str | None):
    """The named module swaps of ops/attention.py and reference_models/mixtral.py, undone on exit."""
    from edgeport.ops.attention import swap_attention
    from edgeport.reference_models.mixtral import swap_moe

    swap_attention(model, attention)
    if moe_form:
        swap_moe(model, moe_form)
    try:
        yield model
    finally:
        swap_attention(model, "reference")
        if moe_form:
            swap_moe(model, "dense")


def _sample_args(contract: DecoderContract, batch=2, past=3, new=4):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, contract.vocab_size, (batch, new), generator=g)
    mask = torch.ones(batch, past + new, dtype=torch.long)
    pos = torch.arange(past, past + new)[None].expand(batch, -1).contiguous()
    cache = torch.randn(contract.layers, batch, contract.kv_heads, past, contract.head_dim, generator=g)
    return ids, mask, pos, cache, cache.clone()


def _dynamic_axes() -> dict:
    cache_in, cache_out = {1: "batch", 3: "past"}, {1: "batch", 3: "total"}
    return {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "sequence"}, "past_keys": cache_in, "past_values": cache_in,
            "logits": {0: "batch", 1: "sequence"}, "present_keys": cache_out, "present_values": cache_out}


def export_onnx_decoder(ref, contract: DecoderContract, out_dir: Path, opts, attention: str = "reference",
                        moe_form: str | None = "dense") -> Lowered:
    """TorchScript export of the (swapped) reference: one graph for prefill and decode."""
    import onnx

    from edgeport.ops import attention as attn_op
    from edgeport.ops import moe as moe_op

    attn_op.register_symbolics(opts.opset)
    moe_op.register_symbolics(opts.opset)
    path = out_dir / "model.onnx"
    with swapped(ref.model, attention, moe_form if ref.family.name == "mixtral" else None) as model, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python ints
        torch.onnx.export(model, _sample_args(contract), str(path), input_names=list(DECODER_INPUTS),
                          output_names=list(contract.outputs), dynamic_axes=_dynamic_axes(),
                          opset_version=opts.opset, dynamo=False, do_constant_folding=True,
                          custom_opsets={"com.microsoft": 1} if attention == "gqa" or moe_form == "op" else None)
    proto = onnx.load(str(path), load_external_data=True)
    if sum(t.ByteSize() for t in proto.graph.initializer) > TWO_GB:  # protobuf's limit
        for extra in out_dir.glob("*.data"):
            extra.unlink()
        onnx.save_model(proto, str(path), save_as_external_data=True, location="model.onnx.data",
                        size_threshold=1024)
    custom = sorted({(n.domain, n.op_type) for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    del proto
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise EdgeportError(f"exported ONNX graph is invalid: {str(e).splitlines()[0]}") from None
    return Lowered("model.onnx", {"torch": torch.__version__, "onnx": onnx.__version__, "opset": opts.opset,
                                  "exporter": "torch.onnx (TorchScript)", "attention": attention,
                                  "moe": moe_form if ref.family.name == "mixtral" else None},
                   [{"domain": d, "op_type": t, "runtimes": ["onnxruntime"]} for d, t in custom])


# ---------------------------------------------------------------- TFLite (static rolling cache)

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


def _static_sample(contract: DecoderContract, batch: int, new: int, cache: int) -> dict:
    shape = (contract.layers, batch, contract.kv_heads, cache, contract.head_dim)
    return {"input_ids": torch.ones(batch, new, dtype=torch.int32),
            "attention_mask": torch.ones(batch, cache + new, dtype=torch.int32),
            "position_ids": torch.arange(new, dtype=torch.int32)[None].expand(batch, -1).contiguous(),
            "past_keys": torch.zeros(shape), "past_values": torch.zeros(shape)}


def cache_length(contract: DecoderContract, prefill: int) -> int:
    return max(prefill, min(contract.max_positions, DEFAULT_CACHE))


def export_tflite_decoder(ref, contract: DecoderContract, out_dir: Path, opts) -> Lowered:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import litert_torch
    except ImportError:
        raise EdgeportError("TFLite export of decoders needs litert-torch: pip install 'edgeport[tflite]'") from None
    cache = cache_length(contract, opts.seq_len)
    step = StaticCacheStep(ref.model).eval()
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # progress tree, deprecations
            warnings.simplefilter("ignore")
            edge = (litert_torch.signature("prefill", step, sample_kwargs=_static_sample(contract, opts.batch,
                                                                                          opts.seq_len, cache))
                    .signature("decode", step, sample_kwargs=_static_sample(contract, opts.batch, 1, cache))
                    .convert())
            edge.export(str(out_dir / "model.tflite"))
    except Exception as e:  # torch.export / MLIR errors: long, many types
        raise EdgeportError(f"litert-torch could not convert {ref.family.name}: "
                            f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}") from None
    return Lowered("model.tflite", {"torch": torch.__version__, "litert_torch": getattr(litert_torch, "__version__",
                                                                                       "unknown"),
                                    "route": "litert-torch (torch.export -> TFLite builtins)",
                                    "signatures": {"prefill": [opts.batch, opts.seq_len], "decode": [opts.batch, 1]},
                                    "static_cache": cache, "input_dtype": "int32"})


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
    """tokenizer.json from the checkpoint: copied, or built from GPT-2's vocab.json + merges.txt."""
    from edgeport.manifest import TokenizerInfo
    from edgeport.reference_models.tokenizer import write_tokenizer

    folder = ref.folder
    if folder is not None and (folder / "tokenizer.json").is_file():
        info = write_tokenizer(folder, out, mask_token=None)
        info.pad_token_id = pad_id
        return info
    if folder is not None and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from tokenizers import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
        tok.save(str(out / "tokenizer.json"))
        return TokenizerInfo(file="tokenizer.json", pad_token_id=pad_id)
    steps.note("warning: no tokenizer.json (or vocab.json + merges.txt) found; `edgeport generate` will need one")
    return None


# ---------------------------------------------------------------- the entry point

def _lower(ref, contract, tmp: Path, opts) -> Lowered:
    if opts.target == "tflite":
        return export_tflite_decoder(ref, contract, tmp, opts)
    if opts.target != "onnx":
        raise EdgeportError(f"no {opts.target} export for decoder family '{ref.family.name}' yet")
    fn = find_lowering(ref.family.name, "onnx", opts.lowering) or find_lowering(ref.family.name, "onnx", "generic")
    return fn(ref, contract, tmp, opts)


def decoder_info(ref, c: DecoderContract, lowered: Lowered, opts, tokens: dict) -> dict:
    static = opts.target == "tflite"
    cache = lowered.converter.get("static_cache")
    exact_forever = static and c.sliding_window is not None and c.sliding_window <= cache
    return {"layout": "stacked", "axes": ["layers", "batch", "kv_heads", "past", "head_dim"],
            "layers": c.layers, "kv_heads": c.kv_heads, "head_dim": c.head_dim, "padding_side": "left",
            "inputs": ["past_keys", "past_values"], "outputs": ["present_keys", "present_values"],
            "sliding_window": c.sliding_window, "static_cache": cache,
            "signatures": lowered.converter.get("signatures"),
            "max_tokens": c.max_positions if not static or exact_forever else min(cache, c.max_positions),
            # onnxruntime's GroupQueryAttention: S > 1 on a non-empty cache only at batch 1.
            "chunk_on_cache_max_batch": 1 if lowered.converter.get("attention") == "gqa" else None,
            **tokens}


def export_decoder(ref, opts, out: Path, steps) -> Path:
    """Export a decoder (text-generation) to `out`, validated; same folder layout as encoders."""
    import edgeport
    from edgeport.export.onnx import artifact_files
    from edgeport.runtime.generate import open_decoder

    if ref.task != "text-generation":
        raise EdgeportError(f"decoder export supports the text-generation task (got '{ref.task}')")
    c = decoder_contract(ref)
    static = opts.target == "tflite"
    if static and opts.seq_len > c.max_positions - 8:
        raise EdgeportError(f"--seq-len is the prefill length and must leave room to decode: at most "
                            f"{c.max_positions - 8} for this model's {c.max_positions} positions")
    with atomic_output_dir(out) as tmp:
        with steps.step(f"exporting {ref.family.name} text-generation to {opts.target}"):
            lowered = _lower(ref, c, tmp, opts)
            files = artifact_files(tmp, lowered.artifact)
            steps.note(f"{lowered.artifact}: {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
        with steps.step("writing tokenizer files"):
            tokens = special_tokens(ref)
            tok = write_decoder_tokenizer(ref, tmp, tokens["pad_token_id"], steps)
        info = decoder_info(ref, c, lowered, opts, tokens)
        with steps.step("validating against the reference with and without the KV cache"):
            decoder = open_decoder(tmp / lowered.artifact, info)
            checks = validate_decoder(ref.model, decoder, c, (opts.batch, opts.seq_len) if static else None)
            worst = max(checks, key=lambda ch: ch.max_abs_diff)
            steps.note(f"all {len(checks)} checks pass; worst max abs diff {worst.max_abs_diff:.2e} "
                       f"({worst.output} at [batch, past, new] {worst.shape})")
        with steps.step("writing edgeport.json"):
            ins, outs = c.specs("int32" if static else "int64")
            m = Manifest(family=ref.family.name, task=ref.task, target=opts.target, artifact=lowered.artifact,
                         inputs=ins, outputs=outs, max_sequence_length=info["max_tokens"], static_shapes=static,
                         tokenizer=tok, converter=lowered.converter, custom_ops=lowered.custom_ops,
                         source=ref.source, random_weights=ref.random_weights, sha256=sha256_of(files),
                         size_bytes=sum(f.stat().st_size for f in files), parity=checks, parity_passed=True,
                         edgeport_version=edgeport.__version__, decoder=info)
            (tmp / "edgeport.json").write_text(m.to_json())
    if not steps.quiet:
        print(f"wrote {out}/{lowered.artifact}", flush=True)
    return out
