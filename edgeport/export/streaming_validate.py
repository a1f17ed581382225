"""Validation of a streamed decoder export that never holds the reference and the artifact at once.

The in-memory path steps the reference and the artifact side by side (export/decoders.py run_plan):
both sets of weights are resident together, 2x the weights at best. Here the same plans run in two
passes over the same feeds, which gives the same checks because each side only ever reads its own
cache:

    1. the artifact in onnxruntime (external data memory-mapped, prepacking off): every chunk of every
       plan, keeping logits and the cache (small: B x S x V and L x B x KV x T x D floats); then the
       session is closed, unmapping the artifact's weights;
    2. the reference on the memory-mapped checkpoint, each module's mapped weights released
       (madvise MADV_DONTNEED) right after the module has run, so at most one layer's weights are
       resident; each chunk is compared with what the artifact gave.

Peak memory: the larger of the artifact's mapped weights (pass 1) and one layer (pass 2; Mixtral: one
layer's experts mapped plus SparseMoe.stacked's copy of them), above the process's base. The
comparison (tolerances, compared slots) is decoders._check's, unchanged.
"""

from __future__ import annotations

import contextlib
import gc

import numpy as np
import torch

from edgeport.export.decoders import _check, left_padded, plans
from edgeport.export.streaming import release_pages
from edgeport.export.validate import raise_on_misses

METHOD = ("two passes over the same plans: the whole artifact in onnxruntime (weights memory-mapped, "
          "prepacking off), outputs kept, session closed; then the reference on the memory-mapped "
          "checkpoint, each module's weights released after it ran; never both in memory at once")


def artifact_pass(decoder, plan, c, compare_cache: bool) -> list:
    """One plan through the artifact's runtime decoder -> [(logits (B, S, V), keys, values or None)]
    per chunk, as numpy copies."""
    from edgeport.runtime.generate import positions_from_mask

    batch, _, chunks = plan
    ids, mask = left_padded(c.vocab_size, batch, sum(chunks), plan[1])
    decoder.reset(batch)
    out, t = [], 0
    for s in chunks:
        pos = positions_from_mask(mask[:, :t + s], s)
        logits = np.array(decoder.step(ids[:, t:t + s], mask[:, t:t + s], pos))
        out.append((logits, *(tuple(np.array(x) for x in decoder.cache()) if compare_cache else (None, None))))
        t += s
    return out


def reference_pass(model, plan, got: list, c) -> list:
    """The same plan through the reference (its own growing cache), compared chunk by chunk with the
    artifact's outputs `got` (artifact_pass) -> [ParityCheck]."""
    from edgeport.runtime.generate import positions_from_mask

    batch, padded, chunks = plan
    ids, mask = left_padded(c.vocab_size, batch, sum(chunks), padded)
    pk = pv = None
    checks, t = [], 0
    for s, (logits_a, keys_a, values_a) in zip(chunks, got):
        new, full = slice(t, t + s), mask[:, :t + s]
        pos = positions_from_mask(full, s)
        with torch.inference_mode():
            logits, pk, pv = model(*(torch.from_numpy(a) for a in (ids[:, new], full, pos)), pk, pv)
        shape = [batch, t, s]
        checks.append(_check("logits", logits_a, logits.numpy(), mask[:, new] == 1, shape, padded, c))
        if keys_a is not None:
            slots = np.broadcast_to(full[None, :, None, :] == 1, keys_a.shape[:4])
            checks.append(_check("present_keys", keys_a, pk.numpy(), slots, shape, padded, c))
            checks.append(_check("present_values", values_a, pv.numpy(), slots, shape, padded, c))
        t += s
    return checks


@contextlib.contextmanager
def releasing_weights(model: torch.nn.Module):
    """While active, every module's mapped parameters, its submodules' included, are released
    (streaming.release_pages) after its forward: the reference runs with about one layer of checkpoint
    pages resident. Submodules' too, since some are read without running their own forward (Mixtral's
    experts, stacked by their SparseMoe: one layer's experts mapped, plus their stacked copy, at once)."""
    def hook(module, args, output):
        for p in module.parameters():
            release_pages(p)

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.parameters(), None) is not None]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def validate_streamed(ref, contract, path, lowered, static, block) -> list:
    """Parity of a streamed artifact: decoders (text-generation) in two passes (module docstring);
    other contracts as the in-memory path validates them, with the artifact's weights memory-mapped.
    Raises ParityError naming the worst miss, as every export's validation does."""
    from edgeport.runtime.generate import open_decoder
    from edgeport.runtime.session import ort_session_config

    with ort_session_config({"session.disable_prepacking": "1"}):
        if getattr(contract, "kind", None) != "decoder" or static is not None:
            return contract.validate(ref, path, lowered, static, block)
        decoder = open_decoder(path, block)
        todo = plans(contract, None)
        got = [artifact_pass(decoder, p, contract, True) for p in todo]
    del decoder
    gc.collect()  # the session's mapping goes with it
    with releasing_weights(ref.model):
        checks = [ch for p, g in zip(todo, got) for ch in reference_pass(ref.model, p, g, contract)]
    return raise_on_misses(checks, "[batch, past, new]")
