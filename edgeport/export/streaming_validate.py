"""Validation of a streamed decoder export that never holds the reference and the artifact at once.

The in-memory path steps the reference and the artifact side by side (export/decoders.py run_plan):
both sets of weights are resident together, 2x the weights at best. Here the same plans run in two
passes over the same feeds, which gives the same checks because each side only ever reads its own
cache (the export runs pass 2 first, on a thread while the weights are written: ReferenceInBackground;
run here, it comes after pass 1):

    1. the artifact in onnxruntime (external data memory-mapped, prepacking off): every chunk of every
       plan, keeping logits and the cache (small: B x S x V and L x B x KV x T x D floats); then the
       session is closed, unmapping the artifact's weights;
    2. the reference on the memory-mapped checkpoint, layer-major (reference_layer_major): each layer
       runs every chunk of every plan (its own cache growing chunk by chunk, as in the whole-model
       calls), then its mapped weights are released (madvise MADV_DONTNEED), so each weight is read
       once and at most one layer's weights are resident; each chunk's logits and cache then come out of
       the model's own forward with the layers replaced by their recorded outputs, and are compared with
       what the artifact gave. Run chunk-major (the whole model per chunk, weights released after each
       module) each weight was faulted in 8 times (8 chunks): 31 of the 47 s of validating at 1B.

Each layer sees exactly the inputs the whole-model calls give it (the same tensors, the same ops), so
the reference's outputs are bit for bit those of calling the model chunk by chunk
(tests/test_export_streaming.py checks it). Peak memory: the larger of the artifact's mapped weights
(pass 1) and one layer (pass 2; Mixtral: one layer's experts mapped plus SparseMoe.stacked's copy of
them) plus the recorded activations and caches (L x the cache of every chunk: 43 MB at 1B), above the
process's base. The comparison (tolerances, compared slots) is decoders._check's, unchanged.
"""

from __future__ import annotations

import contextlib
import gc
import threading

import numpy as np
import torch

from edgeport.export.decoders import _check, left_padded, plans
from edgeport.export.streaming import release_pages
from edgeport.export.streaming_checkpoint import populate_pages
from edgeport.export.validate import raise_on_misses

METHOD = ("two passes over the same plans: the reference on the memory-mapped checkpoint one layer at a time, "
          "each layer's weights released after it ran (while the weights are written), outputs kept; then the "
          "whole artifact in onnxruntime (weights memory-mapped, prepacking off); never both in memory at once")


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


def chunk_feeds(plan, c) -> list:
    """[(ids (B, s), attention mask so far (B, t + s), positions (B, s))] int64 numpy per chunk of `plan`:
    the reference's inputs, as run_plan feeds them."""
    from edgeport.runtime.generate import positions_from_mask

    batch, padded, chunks = plan
    ids, mask = left_padded(c.vocab_size, batch, sum(chunks), padded)
    feeds, t = [], 0
    for s in chunks:
        feeds.append((ids[:, t:t + s], mask[:, :t + s], positions_from_mask(mask[:, :t + s], s)))
        t += s
    return feeds


def compare_chunks(plan, got: list, want: list, c) -> list:
    """The artifact's outputs `got` (artifact_pass) against the reference's `want` ([(logits, keys, values)]
    numpy per chunk) with decoders._check: logits on the real new tokens, the cache on the real slots
    -> [ParityCheck]."""
    batch, padded, chunks = plan
    _, mask = left_padded(c.vocab_size, batch, sum(chunks), padded)
    checks, t = [], 0
    for s, (logits_a, keys_a, values_a), (logits, pk, pv) in zip(chunks, got, want):
        shape = [batch, t, s]
        checks.append(_check("logits", logits_a, logits, mask[:, t:t + s] == 1, shape, padded, c))
        if keys_a is not None:
            slots = np.broadcast_to(mask[None, :, None, :t + s] == 1, keys_a.shape[:4])
            checks.append(_check("present_keys", keys_a, pk, slots, shape, padded, c))
            checks.append(_check("present_values", values_a, pv, slots, shape, padded, c))
        t += s
    return checks


def reference_chunk_major(model, plan, c) -> list:
    """One plan through the whole reference chunk by chunk (its own growing cache) -> [(logits (B, S, V),
    keys, values (L, B, KV, T, D))] numpy per chunk. Run inside releasing_weights, every weight is read
    again for every chunk."""
    pk = pv = None
    out = []
    for feed in chunk_feeds(plan, c):
        with torch.inference_mode():
            logits, pk, pv = model(*(torch.from_numpy(a) for a in feed), pk, pv)
        out.append((logits.numpy(), pk.numpy(), pv.numpy()))
    return out


def reference_pass(model, plan, got: list, c) -> list:
    """The same plan through the reference chunk-major (reference_chunk_major), compared chunk by chunk
    with the artifact's outputs `got` (artifact_pass) -> [ParityCheck]."""
    return compare_chunks(plan, got, reference_chunk_major(model, plan, c), c)


# torch's fp32 GEMM (MKL) with the few rows of one chunk ran 2-4x slower on 2 threads than on 1 on the AMD
# EPYC AVX2 machine with 2 shared cores (x (3..19, 2048) @ W^T, W 5632 x 2048: 8.5-15 ms on 1 thread, 29-38 ms
# on 2), and 2x faster on 2 with 57 rows (16 vs 33 ms): chunks of fewer token rows than this run on one thread.
ONE_THREAD_ROWS = 32


@contextlib.contextmanager
def threads_for(rows: int):
    """While active, torch runs on one thread when `rows` (batch x new tokens of a chunk) is under
    ONE_THREAD_ROWS, else on the threads it had; restored on exit."""
    before = torch.get_num_threads()
    if rows < ONE_THREAD_ROWS and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class _Stop(Exception):
    """Ends a forward once _Recorder has the first layer's inputs."""


class _Recorder(torch.nn.Module):
    """Stands in for one decoder layer of run_layers (layer(x, *args, past_k, past_v) -> (x, k, v)): with
    no `outputs` set it records its inputs (x, args) and stops the forward (_Stop); with `outputs` (x, k,
    v) recorded from the real layer, it returns them."""

    def __init__(self):
        super().__init__()
        self.inputs, self.outputs = None, None

    def forward(self, x, *args):
        if self.outputs is None:
            self.inputs = (x, args[:-2])  # the past cache (the last two) is each layer's own
            raise _Stop
        return self.outputs


def decoder_layers(model) -> torch.nn.ModuleList | None:
    """The ModuleList of `model`'s backbone that run_layers steps through (the one child ModuleList with
    cache_dims[0] entries: Mistral's and Mixtral's `layers`, GPT-2's `h`), or None when there is not
    exactly one."""
    backbone = getattr(model, "backbone", None)
    n = getattr(backbone, "cache_dims", (None,))[0]
    found = [m for m in backbone.children() if isinstance(m, torch.nn.ModuleList) and len(m) == n] \
        if backbone is not None else []
    return found[0] if len(found) == 1 else None


def release_all(model: torch.nn.Module) -> None:
    """Drop the resident mapped pages of every parameter of `model` (streaming.release_pages)."""
    for p in model.parameters():
        release_pages(p)


def reference_layer_major(model, todo: list, c, layers: torch.nn.ModuleList, stop: threading.Event | None = None) -> list:
    """Every plan of `todo` through the reference, one layer at a time -> for each plan
    [(logits (B, S, V), keys, values (L, B, KV, T, D))] numpy per chunk, bit for bit what
    reference_chunk_major gives, each weight read from the mapped checkpoint once:

        1. each chunk through the model up to its first layer (_Recorder records the layer's inputs:
           the hidden states and the attention bias / rotary tables the backbone made for the chunk);
        2. each layer in turn over every chunk of every plan in order (the cache of a plan's earlier
           chunks is the layer's past, as in the whole-model calls), then its mapped pages released;
        3. each chunk through the model again with every layer replaced by its recorded outputs: the
           backbone's final norm, the head and the stacked cache are the model's own code.

    `layers`: decoder_layers(model), restored whatever happens. `stop`: when set, RuntimeError at the next
    layer (ReferenceInBackground.cancel)."""
    feeds = [[tuple(torch.from_numpy(a) for a in f) for f in chunk_feeds(p, c)] for p in todo]
    originals, stubs = list(layers), [_Recorder() for _ in layers]
    weight = model.backbone.input_embeddings.weight
    try:
        for k, stub in enumerate(stubs):
            layers[k] = stub
        with torch.inference_mode():
            states = []  # per plan, per chunk: [hidden (B, s, H), the layer's other inputs]
            for chunks in feeds:
                states.append([])
                for feed in chunks:
                    with contextlib.suppress(_Stop):
                        model(*feed)
                    states[-1].append(list(stubs[0].inputs))
            release_all(model)
            recorded = [[[] for _ in chunks] for chunks in feeds]  # per plan, chunk: (x, k, v) per layer
            for i, layer in enumerate(originals):
                if stop is not None and stop.is_set():
                    raise RuntimeError("the reference pass was cancelled")
                for p in layer.parameters():  # mapped in one call each, not faulted in page by page
                    populate_pages(p)
                for (batch, _, _), row, rec in zip(todo, states, recorded):
                    pk, pv = (e[i] for e in model.empty_cache(batch, weight.dtype, weight.device))
                    for state, r in zip(row, rec):
                        with threads_for(state[0].shape[0] * state[0].shape[1]):
                            state[0], pk, pv = layer(state[0], *state[1], pk, pv)
                        r.append((state[0], pk, pv))
                for p in layer.parameters():
                    release_pages(p)
            del states
            outputs = []
            for chunks, rec in zip(feeds, recorded):
                outputs.append([])
                pk = pv = None
                for feed, r in zip(chunks, rec):
                    for stub, o in zip(stubs, r):
                        stub.outputs = o
                    with threads_for(feed[0].numel()):
                        logits, pk, pv = model(*feed, pk, pv)
                    outputs[-1].append((logits.numpy(), pk.numpy(), pv.numpy()))
            release_all(model)
    finally:
        for k, layer in enumerate(originals):
            layers[k] = layer
    return outputs


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


def return_freed_memory() -> None:
    """Hand the free pages of every malloc arena back to the system (glibc's malloc_trim(0)) before the
    artifact's weights are mapped, the export's peak: what the writer and the reference thread freed stays
    resident otherwise (a thread's arena is trimmed only as it sees fit). No-op without glibc."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ReferenceInBackground:
    """The reference pass of a decoder's validation (reference_layer_major over plans(contract)) on a
    background thread, started (start()) once the graph is traced and the weight plan made, while the
    weights are written: writing GBs is mostly waiting for the disk (buffered writes throttled to its
    speed once the dirty-page limit is reached: 4.3 GB in 16.6 s by dd here, 258 MB/s), the reference pass
    is CPU work. Nothing else may use the model until wait() (its layers are swapped while it runs).
    Writer and reference each map and release checkpoint pages; a page one releases while the other
    reads it is read again from the file (private mapping, never written), so the values are the same.
    Memory: one layer of weights and the recorded activations (reference_layer_major), beside the writer's
    one tensor; the peak (the artifact's mapped weights while onnxruntime runs it) comes later.
    Not started (result() None) for contracts other than a dynamic-shape decoder, or a backbone without
    one list of layers (decoder_layers). Used as a context manager, exiting cancels it at the next layer
    and waits."""

    def __init__(self, ref, contract, static):
        self.model, self.contract = ref.model, contract
        applies = getattr(contract, "kind", None) == "decoder" and static is None
        self.layers = decoder_layers(ref.model) if applies else None
        self._stop, self._out, self._thread = threading.Event(), {}, None

    def start(self) -> None:
        """Begin the pass on its thread (no-op where it does not apply)."""
        if self.layers is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="reference", daemon=True)
            self._thread.start()

    def _run(self):
        try:
            todo = plans(self.contract, None)
            self._out["want"] = reference_layer_major(self.model, todo, self.contract, self.layers, self._stop)
        except Exception as e:  # noqa: BLE001  handed to result(): the caller decides
            self._out["error"] = e

    def wait(self) -> None:
        """Block until the pass has finished (the model is whole again); no-op when not started."""
        if self._thread is not None:
            self._thread.join()

    def result(self) -> list | None:
        """reference_layer_major's outputs (after wait()); None when not started; re-raises its error."""
        self.wait()
        if "error" in self._out:
            raise self._out["error"]
        return self._out.get("want")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.wait()


def validate_streamed(ref, contract, path, lowered, static, block, reference: ReferenceInBackground | None = None) -> list:
    """Parity of a streamed artifact: decoders (text-generation) in two passes (module docstring);
    other contracts as the in-memory path validates them, with the artifact's weights memory-mapped.
    `reference`: the reference pass already run while the weights were written (ReferenceInBackground;
    waited for before the artifact is opened: never both in memory at once), else it runs here after the
    artifact pass. Raises ParityError naming the worst miss, as every export's validation does."""
    from edgeport.runtime.generate import open_decoder
    from edgeport.runtime.session import ort_session_config

    want = reference.result() if reference is not None else None
    return_freed_memory()
    with ort_session_config({"session.disable_prepacking": "1"}):
        if getattr(contract, "kind", None) != "decoder" or static is not None:
            return contract.validate(ref, path, lowered, static, block)
        decoder = open_decoder(path, block)
        todo = plans(contract, None)
        got = [artifact_pass(decoder, p, contract, True) for p in todo]
    del decoder
    gc.collect()  # the session's mapping goes with it
    layers = decoder_layers(ref.model)
    if want is not None:
        pass  # computed while the weights were written
    elif layers is not None:
        want = reference_layer_major(ref.model, todo, contract, layers)
    else:  # a backbone without one list of layers: the whole model per chunk
        with releasing_weights(ref.model):
            want = [reference_chunk_major(ref.model, p, contract) for p in todo]
    checks = [ch for p, g, w in zip(todo, got, want) for ch in compare_chunks(p, g, w, contract)]
    return raise_on_misses(checks, "[batch, past, new]")
