"""Measure one export folder on this machine: latency per (batch, length), and its fraction of the limits.

    results = bench_folder("out/bert", lengths=[128], batches=[1], threads=2, limits=measure_limits(2))

Full-sequence graphs (encoders, decoder classifiers): `Session.run` timed per call (median, p90).
Decoders with a KV cache (manifest `decoder` block): the runtime's generate backends
(edgeport.runtime.generate.open_decoder): a prompt of `length` tokens prefilled in one step, then
`new_tokens` single-token decode steps, each timed; several rounds, each from an empty cache.

Fractions of the limit (edgeport.runtime.machine):
- full-sequence and prefill: the ideal time, sum over precisions of counted FLOP / that precision's
  measured limit (fp32 MatMul GFLOP/s, int8 MatMulInteger GOP/s), divided by the median time; FLOP as
  edgeport.runtime.flops counts them at the shape. None, with the reason, where the count is incomplete,
  a precision has no measured limit (fp16), or the artifact is not ONNX.
- decode: bytes read per step (weights other than gathered embedding tables, plus the KV cache at the
  step's mean context) / median step time, over the measured memory read bandwidth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.manifest import read_manifest
from edgeport.runtime.latency import LatencyStats, measure

LIMIT_OF = {"fp32": "fp32_gflops", "int8": "int8_gops"}  # FLOP class -> MachineLimits field (G per s)


@dataclass
class Plan:
    """What to run: the export, its kind, the (batch, length) shapes, and notes for the reader."""

    folder: Path
    manifest: object
    kind: str  # "forward" (full sequence) | "decoder" (prefill + decode through the KV cache)
    shapes: list  # [(batch, length)]
    static: bool
    notes: list = field(default_factory=list)


def parse_ints(text: str, flag: str) -> list:
    """'32,128,512' -> [32, 128, 512]; EdgeportError naming `flag` for anything but positive integers."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise EdgeportError(f"{flag}: expected comma-separated positive integers, got '{text}'")
    return sorted(set(values))


def plan(folder, lengths: list | None, batches: list | None, new_tokens: int = 32) -> Plan:
    """Check the request against the export; EdgeportError (one line) for a folder that is not an export,
    a length beyond its positions or static shape, or a decoder prompt with no room for new_tokens.
    lengths/batches None: the defaults (32, 128, 512 within what the export allows; batch 1 and 8), or the
    fixed shape of a static export."""
    m, folder = read_manifest(folder)
    if not (folder / m.artifact).is_file():
        raise EdgeportError(f"{folder}: the manifest names {m.artifact}, which is not there")
    kind = "decoder" if m.decoder else "forward"
    first = m.inputs[0].shape if m.inputs else []
    static = bool(m.static_shapes) or (kind == "forward" and bool(first) and all(isinstance(d, int) for d in first))
    if kind == "decoder":
        return _plan_decoder(folder, m, lengths, batches, new_tokens)
    if static:
        return _plan_static(folder, m, first, lengths, batches)
    limit = m.max_sequence_length
    if lengths is None:
        lengths = [n for n in (32, 128, 512) if n <= limit] or [limit]
    too_long = [n for n in lengths if n > limit]
    if too_long:
        raise EdgeportError(f"--lengths {too_long[0]} is beyond what this export's positions allow ({limit})")
    return Plan(folder, m, kind, [(b, n) for b in (batches or [1, 8]) for n in lengths], False)


def _plan_static(folder, m, dims, lengths, batches) -> Plan:
    b, n = dims[0], dims[-1]
    if (lengths and lengths != [n]) or (batches and batches != [b]):
        raise EdgeportError(f"this {m.target} export is static: it runs batch {b} x length {n} only "
                            f"(give --lengths {n} --batch {b}, or leave them out)")
    return Plan(folder, m, "forward", [(b, n)], True,
                [f"static shapes: benched at the export's fixed batch {b} x length {n}"])


def _plan_decoder(folder, m, lengths, batches, new_tokens) -> Plan:
    info = m.decoder
    most = info.get("max_tokens") or m.max_sequence_length
    if new_tokens < 1 or new_tokens >= most:
        raise EdgeportError(f"--new-tokens must be in 1..{most - 1} for this export (it runs {most} tokens in all)")
    if lengths is None:
        lengths = [n for n in (32, 128, 512) if n + new_tokens <= most] or [most - new_tokens]
    bad = [n for n in lengths if n + new_tokens > most]
    if bad:
        raise EdgeportError(f"--lengths {bad[0]}: a prompt of {bad[0]} plus {new_tokens} new tokens is beyond "
                            f"the {most} tokens this export runs (max positions / cache)")
    notes = []
    if info.get("signatures"):  # TFLite: static batch; prompts run in chunks of the prefill length
        static_batch, chunk = info["signatures"]["prefill"]
        if batches and max(batches) > static_batch:
            raise EdgeportError(f"--batch {max(batches)}: this {m.target} decoder runs batches of at most "
                                f"{static_batch} (static shapes)")
        notes.append(f"static shapes: prompts are left-padded to a multiple of the fixed prefill length "
                     f"{chunk} and prefilled in chunks of it; batches are padded to the static batch {static_batch}")
    return Plan(folder, m, "decoder", [(b, n) for b in (batches or [1]) for n in lengths], bool(notes), notes)


# ---------------------------------------------------------------- feeds

def vocab_size(folder, m) -> int:
    """Token ids the feeds draw from: the export's tokenizer.json vocabulary size (at least 2), or 2
    (ids 0 and 1, valid in any vocabulary) where the export has no `tokenizers` file."""
    if m.tokenizer is None or m.tokenizer.kind != "tokenizers" or not (folder / m.tokenizer.file).is_file():
        return 2
    from tokenizers import Tokenizer

    return max(2, Tokenizer.from_file(str(folder / m.tokenizer.file)).get_vocab_size())


def make_feeds(specs, batch: int, length: int, vocab: int, seed: int = 0) -> dict:
    """Feeds for a full-sequence graph: specs (IOSpec/TensorSpec: name, dtype, shape) with symbolic dims
    'batch' -> batch, any '*sequence*' -> length, 'choices' -> 2, others -> their int or 1.
    Values: masks ones, token types zeros, positions 0.., input ids uniform in [0, vocab), other integer
    inputs ones, float inputs standard normal."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        dims = [d if isinstance(d, int) and d > 0 else batch if d == "batch" else length
                if "sequence" in str(d) else 2 if d == "choices" else 1 for d in s.shape]
        dtype, name = np.dtype(s.dtype), s.name
        if "mask" in name:
            a = np.ones(dims, dtype)
        elif "token_type" in name:
            a = np.zeros(dims, dtype)
        elif "position" in name:
            a = np.broadcast_to(np.arange(dims[-1]) % length, dims).astype(dtype)
        elif name == "input_ids":
            a = rng.integers(0, vocab, dims).astype(dtype)
        elif dtype.kind in "iub":
            a = np.ones(dims, dtype)
        else:
            a = rng.standard_normal(dims).astype(dtype)
        feeds[name] = np.ascontiguousarray(a)
    return feeds


def decoder_feeds(info: dict, batch: int, length: int, vocab: int) -> dict:
    """Prefill feeds of a KV-cache ONNX decoder (empty past in the block's layout, stacked or per layer:
    generate.empty_past): the graph's own input names."""
    from edgeport.runtime.generate import empty_past

    ids = np.random.default_rng(0).integers(0, vocab, (batch, length)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.broadcast_to(
        np.arange(length), (batch, length)).astype(np.int64), **empty_past(info, batch)}


# ---------------------------------------------------------------- fractions

def compute_fraction(flops, seconds: float, limits) -> tuple[float | None, str]:
    """(fraction of the limit, what it is measured against or why there is none) for a FlopCount."""
    if flops is None:
        return None, "FLOPs not counted"
    if not flops.complete:
        return None, "FLOPs incomplete: " + "; ".join(f"{k} x{v}" for k, v in flops.not_counted.items())
    if limits is None:
        return None, "no limits measured"
    ideal = 0.0
    for klass, n in flops.by_class.items():
        if n and klass not in LIMIT_OF:
            return None, f"no {klass} limit measured"
        ideal += n / (getattr(limits, LIMIT_OF[klass]) * 1e9) if n else 0.0
    used = [k for k, n in flops.by_class.items() if n]
    return ideal / seconds, "+".join(used) + " limit" + ("s" if len(used) > 1 else "")


def count_at(path, feeds: dict):
    """(FlopCount or None, reason) of an ONNX artifact at the feeds' shapes; None for other formats."""
    if Path(path).suffix != ".onnx":
        return None, f"FLOPs not counted for {Path(path).suffix} artifacts (only ONNX graphs are counted)"
    from edgeport.runtime.flops import count_flops

    return count_flops(path, feeds), ""


# ---------------------------------------------------------------- timing

def time_forward(sess, feeds: dict, seconds: float) -> LatencyStats:
    """Session.run on feeds: 2 warm-up calls, then calls until `seconds` (at least 5)."""
    return measure(lambda: sess.run(feeds), warmup=2, min_seconds=seconds, min_calls=5)


def time_decoder(decoder, batch: int, length: int, new_tokens: int, vocab: int, seconds: float):
    """(prefill LatencyStats, decode-step LatencyStats): rounds of reset -> prefill `length` tokens ->
    `new_tokens` single-token steps (greedy), each step timed; one untimed round first, then rounds until
    `seconds` have passed (at least 3)."""
    from edgeport.runtime.generate import positions_from_mask

    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, (batch, length)).astype(np.int64)
    mask = np.ones_like(prompt)
    prefill, steps, rounds, t_end = [], [], 0, None
    while rounds < 4 or time.perf_counter() < t_end:
        decoder.reset(batch)
        t0 = time.perf_counter()
        logits = decoder.step(prompt, mask, positions_from_mask(mask, length))
        times = [(time.perf_counter() - t0) * 1e3]
        pos = np.full((batch, 1), length, np.int64)
        for _ in range(new_tokens):
            nxt = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
            t0 = time.perf_counter()
            logits = decoder.step(nxt, np.ones((batch, 1), np.int64), pos)
            times.append((time.perf_counter() - t0) * 1e3)
            pos = pos + 1
        if rounds == 0:  # warm-up round
            t_end = time.perf_counter() + seconds
        else:
            prefill.append(times[0])
            steps += times[1:]
        rounds += 1
    return LatencyStats.of(prefill), LatencyStats.of(steps)
