"""The measuring half of `--target auto` / `--quantize auto`: fixed inputs, timing, scoring, choosing, writing.

Torch-free (numpy, tokenizers, the runtime), so both searches use it: export/auto.py, whose reference is
the float PyTorch model, and quantize/auto.py, whose reference is the float artifact it quantizes.

Inputs (`probe_inputs`): encoders get PROBE_SENTENCES (real English text) through the export's tokenizer,
padded to the length L with their attention mask, at batch 1; decoders get the same sentences as prompts
(at most DECODER_PROMPT tokens). Where the export has no tokenizer, or it maps most of the text to one id
(a word-level vocabulary that lacks these words), seeded random ids of varied lengths are used instead,
and `Probe.source` says so. Timed call: encoders one `Session.run` at batch 1 x L tokens; decoders one
greedy `generate_ids` of NEW_TOKENS tokens after the first prompt. Every candidate is made and scored
first (accuracy: export/budget.py's metrics), then all are timed with runtime.latency.measure in ROUNDS
interleaved rounds, so load that drifts over the search (the machine is often shared) falls on every
candidate alike: median and p90 over the pooled calls, at least `seconds` per candidate in all.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.export.budget import Budget, compare
from edgeport.manifest import MANIFEST_NAME, atomic_output_dir, read_manifest
from edgeport.progress import Steps

NEW_TOKENS = 16  # decoders: greedy tokens per timed call
DECODER_PROMPT = 24  # decoders: longest probe prompt, in tokens
ROUNDS = 3  # interleaved timing rounds (time_candidates)
SETTLE_S = 0.3  # idle pause before timing a candidate (benchmarks/common.py: idle onnxruntime pools spin)
PER_TOKEN_TASKS = ("feature-extraction", "fill-mask", "token-classification", "question-answering")

PROBE_SENTENCES = (
    "The capital of France is Paris, a city on the river Seine.",
    "She read the report twice before signing it.",
    "Interest rates rose again this quarter, and markets fell sharply.",
    "A small dog slept on the mat by the open door.",
    "The committee will meet on Tuesday to review the budget.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "He missed the last train home and walked for an hour.",
    "The new phone has a larger screen but a shorter battery life.",
    "Rain is expected in the north, with sunny spells further south.",
    "Our team fixed the bug that crashed the server at midnight.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "The recipe needs two eggs, flour, sugar and a pinch of salt.",
    "Who won the football match last night?",
    "Electric cars are becoming cheaper to buy and to run.",
    "The museum opens at nine and closes at five on weekdays.",
    "Mount Everest is the highest mountain above sea level.",
)


@dataclass
class Candidate:
    """One (target, lowering, precision) and what measuring it gave."""

    target: str
    lowering: str | None  # registered lowering name, None for the plain route
    precision: str  # "fp32", or the scheme name handed to the quantizer (fp16, int8, int4)
    source: int | None = None  # index of the fp32 candidate a quantized one is made from
    folder: Path | None = None
    tag: str = "fp32"  # the artifact's precision as its manifest states it (quantization tag)
    latency: dict | None = None  # {"median_ms", "p90_ms", "n"}
    metrics: dict | None = None  # export/budget.compare's {"top1", "cos", "maxdiff", "inputs"}
    passed: bool = False
    error: str | None = None
    seconds: float = 0.0  # wall time to make and measure it

    @property
    def label(self) -> str:
        """'onnx/generic/int8-dyn-pc'."""
        return f"{self.target}/{self.lowering or 'plain'}/{self.tag if self.folder else self.precision}"

    def record(self) -> dict:
        """The manifest's row for this candidate."""
        return {"target": self.target, "lowering": self.lowering, "precision": self.tag if self.folder else
                self.precision, "latency_median_ms": (self.latency or {}).get("median_ms"),
                "latency_p90_ms": (self.latency or {}).get("p90_ms"), "timed_calls": (self.latency or {}).get("n"),
                "metrics": self.metrics, "passed": self.passed, "error": self.error,
                "seconds": round(self.seconds, 2)}


@dataclass
class Probe:
    """Fixed inputs and the reference's outputs on them (real positions only)."""

    kind: str  # encoder | decoder
    feeds: list  # encoders: {input: (1, L) int64}; decoders: (1, S) int64 prompt ids
    lengths: list  # real tokens per input
    reference: list  # {output: float64 array}, padding dropped (budget.compare's layout)
    source: str  # what the inputs are (for the manifest)
    timed: str  # what one timed call does
    per_token: set = field(default_factory=set)  # encoder outputs with a sequence axis


# ---------------------------------------------------------------- inputs

def probe_inputs(folder: Path, kind: str, input_names, vocab: int, length: int, per_token,
                 pad_id: int = 0) -> Probe:
    """The fixed inputs (module docstring) for artifacts like the one in `folder` (its tokenizer is used);
    `reference` is left empty for the caller to fill. kind: encoder | decoder; input_names: the encoder's
    inputs (input_ids, attention_mask, token_type_ids as it takes them); vocab: id range of random rows;
    length: encoders' padded length (L), decoders' longest prompt; per_token: outputs with a sequence axis."""
    if kind == "decoder":
        limit = min(DECODER_PROMPT, length)
        rows = _tokenize(folder, limit, special=False)
        source = f"{len(PROBE_SENTENCES)} built-in English sentences as prompts (export/measuring.py), <= {limit} tokens"
        if rows is None:
            rows = random_rows(vocab, limit)
            source = f"{len(rows)} prompts of seeded random ids (no usable tokenizer), <= {limit} tokens"
        feeds = [np.asarray([r], np.int64) for r in rows if len(r) >= 2]
        return Probe("decoder", feeds, [f.shape[1] for f in feeds], [], source,
                     f"prompt of {feeds[0].shape[1]} tokens + {NEW_TOKENS} greedy tokens (generate_ids)", {"logits"})
    rows = _tokenize(folder, length)
    source = f"{len(PROBE_SENTENCES)} built-in English sentences (export/measuring.py), padded to {length}"
    if rows is None:
        rows = random_rows(vocab, length)
        source = f"{len(rows)} rows of seeded random ids (no usable tokenizer), padded to {length}"
    feeds = []
    for r in rows:
        ids = np.full((1, length), pad_id, np.int64)
        mask = np.zeros((1, length), np.int64)
        ids[0, :len(r)], mask[0, :len(r)] = r, 1
        f = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((1, length), np.int64)}
        feeds.append({k: f[k] for k in input_names})
    return Probe("encoder", feeds, [len(r) for r in rows], [], source, f"one call at batch 1 x {length} tokens",
                 set(per_token))


def _tokenize(folder: Path, length: int, special: bool = True) -> list | None:
    """PROBE_SENTENCES -> id lists (<= length) with the export's tokenizer; None when there is none or it
    maps most tokens to one id."""
    m, _ = read_manifest(folder)
    if m.tokenizer is None or m.tokenizer.kind != "tokenizers" or not (folder / m.tokenizer.file).is_file():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / m.tokenizer.file))
    tok.no_padding()
    tok.enable_truncation(length)
    rows = [tok.encode(s, add_special_tokens=special).ids for s in PROBE_SENTENCES]
    flat = np.concatenate([np.asarray(r, np.int64) for r in rows if r] or [np.zeros(0, np.int64)])
    if flat.size == 0 or np.bincount(flat).max() > flat.size / 2:
        return None
    return rows


def random_rows(vocab: int, length: int, n: int = len(PROBE_SENTENCES)) -> list:
    """`n` seeded rows of random ids in [5, vocab), lengths length, length - 7, ... (at least 2)."""
    rng = np.random.default_rng(0)
    return [list(rng.integers(5, vocab, max(2, length - (7 * i) % max(1, length - 1)))) for i in range(n)]


def real_positions(outputs: dict, n: int, per_token: set) -> dict:
    """(1, L, ...) -> (n, ...) for per-token outputs, (1, C) -> (C,) otherwise; float64."""
    return {k: (v[0, :n] if k in per_token else v[0]).astype(np.float64) for k, v in outputs.items()}


# ---------------------------------------------------------------- measuring

def open_runner(folder: Path, probe: Probe) -> tuple[Callable[[], list], Callable[[], object]]:
    """Open the artifact in `folder` through the runtime (Session, or the decoder backends for text
    generation) -> (outputs(): its outputs on every probe input, real positions only; call(): the timed call)."""
    m, _ = read_manifest(folder)
    if probe.kind == "decoder":
        from edgeport.runtime.generate import generate_ids, open_decoder

        dec = open_decoder(folder / m.artifact, m.decoder)

        def outputs() -> list:
            got = []
            for ids in probe.feeds:
                dec.reset(1)
                got.append({"logits": dec.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None])[0]})
            return got

        first = probe.feeds[0]
        return outputs, lambda: generate_ids(dec, first, np.ones_like(first), NEW_TOKENS)
    from edgeport.runtime import load as load_session

    sess = load_session(folder)
    return (lambda: [real_positions(sess.run(f), n, probe.per_token) for f, n in zip(probe.feeds, probe.lengths)],
            lambda: sess.run(probe.feeds[0]))


def run_outputs(folder: Path, probe: Probe) -> list:
    """The artifact's outputs on every probe input (real positions only): open_runner's outputs()."""
    return open_runner(folder, probe)[0]()


def time_candidates(cands: list, probe: Probe, seconds: float, rounds: int = ROUNDS) -> None:
    """Time every candidate that has a folder and metrics in `rounds` interleaved rounds (each round visits
    every candidate for seconds/rounds of calls, one session open at a time, earlier sessions collected and a
    SETTLE_S pause first), so load that drifts during the search falls on all of them alike. Sets
    `latency` {"median_ms", "p90_ms", "n"} over the pooled samples; a failure sets `error` and clears `passed`."""
    from edgeport.runtime.latency import LatencyStats, measure

    timed = [c for c in cands if c.metrics is not None and c.error is None]
    samples = {id(c): [] for c in timed}
    for _ in range(rounds):
        for c in timed:
            if c.error:
                continue
            try:
                call = None
                gc.collect()
                time.sleep(SETTLE_S)
                call = open_runner(c.folder, probe)[1]
                samples[id(c)] += measure(call, warmup=2, min_seconds=seconds / rounds, min_calls=3).samples_ms
            except Exception as e:  # recorded in the candidate table
                c.error, c.passed = _one_line(e), False
            del call
    for c in timed:
        if not c.error:
            stats = LatencyStats.of(samples[id(c)])
            c.latency = {"median_ms": stats.median_ms, "p90_ms": stats.p90_ms, "n": stats.n}


def _outputs_and_visit(folder: Path, probe: Probe, min_seconds: float) -> tuple[list, float]:
    """(run_outputs' outputs, seconds one time_candidates visit of `folder` takes) from one session:
    a visit opens the session, makes 2 warm-up calls, then calls for `min_seconds` (at least 3), estimated
    here from this open and 3 calls after the outputs. The seconds are for the ETA only."""
    t0 = time.perf_counter()
    outputs, call = open_runner(folder, probe)
    opened = time.perf_counter() - t0
    got = outputs()
    t1 = time.perf_counter()
    for _ in range(3):
        call()
    per_call = (time.perf_counter() - t1) / 3
    return got, opened + 2 * per_call + max(min_seconds, 3 * per_call)


def _one_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def machine_facts() -> dict:
    """runtime.machine.machine_facts as a dict: CPU model and flags (AVX2, AVX-512 VNNI, AMX...), cores,
    memory, load averages, library versions."""
    from dataclasses import asdict

    from edgeport.runtime.machine import machine_facts as facts

    return asdict(facts())


def measure_all(cands: list, make, probe_for, task: str, bud: Budget, seconds: float, steps: Steps) -> dict:
    """Make (`make(i, candidate) -> folder`) and score every candidate in order (`probe_for(folder) -> Probe`
    runs once, on the first folder made), then time them all (time_candidates). A failure is recorded on its
    candidate and the search goes on. -> the manifest's `auto` block (without `chosen`, `skipped`)."""
    machine, n = machine_facts(), len(cands)
    timing = n * (seconds + ROUNDS * (SETTLE_S + 0.5))
    _say(steps, f"{n} candidates ({', '.join(c.label for c in cands)}); budget {bud.text}; each made and scored, "
                f"then all timed in {ROUNDS} interleaved rounds (~{timing:.0f} s); ETA after the first")
    probe, start = None, time.perf_counter()
    for i, c in enumerate(cands):
        t0 = time.perf_counter()
        try:
            c.folder = Path(make(i, c))
            q = read_manifest(c.folder)[0].quantization
            c.tag = q["tag"] if q else "fp32"
            probe = probe or probe_for(c.folder)
            if i == 0:  # what one timing visit costs for this model: sessions of real models open slowly
                got, visit = _outputs_and_visit(c.folder, probe, seconds / ROUNDS)
                timing = n * ROUNDS * (SETTLE_S + visit)
            else:
                got = run_outputs(c.folder, probe)
            c.metrics = compare(probe.reference, got, task)
            c.passed = bud.holds(c.metrics)
        except Exception as e:  # recorded in the manifest's candidate table; the search goes on
            c.error = _one_line(e)
        c.seconds = time.perf_counter() - t0
        left = (time.perf_counter() - start) / (i + 1) * (n - i - 1) + timing
        _say(steps, f"[{i + 1}/{n}] {c.label}: {_scored(c)} ({c.seconds:.1f} s; about {left:.0f} s left)")
    if probe is not None:
        _say(steps, f"timing {sum(c.metrics is not None for c in cands)} candidates: {probe.timed}, "
                    f"{ROUNDS} rounds of ~{seconds / ROUNDS:.2g} s each")
        time_candidates(cands, probe, seconds)
    return {"budget": bud.text, "rule": "fastest median latency among the candidates that meet the budget",
            "inputs": probe.source if probe else None, "timed": probe.timed if probe else None,
            "measure_seconds": seconds, "rounds": ROUNDS, "threads": _threads(), "machine": machine,
            "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "candidates": [c.record() for c in cands]}


def _threads() -> int:
    from edgeport.runtime.session import default_threads

    return default_threads()


def _scored(c: Candidate) -> str:
    if c.error:
        return f"failed: {c.error}"
    acc = ", ".join(f"{k} {c.metrics[k]:.4g}" for k in ("top1", "cos", "maxdiff") if c.metrics.get(k) is not None)
    return f"{acc}; {'meets' if c.passed else 'misses'} the budget"


def _say(steps: Steps, text: str) -> None:
    if not steps.quiet:
        print(f"      {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- choosing and writing

def check_out(out: Path) -> None:
    """Refuse, before any work, an output path that atomic_output_dir would refuse at the end."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).exists())):
        raise EdgeportError(f"{out}: exists and is not an edgeport output folder; choose another -o")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeportError(f"{out}: cannot write the output folder ({e.strerror})") from None


def choose(cands: list, bud: Budget) -> Candidate:
    """The fastest (median) candidate meeting the budget; EdgeportError with the best accuracy otherwise."""
    passed = [c for c in cands if c.passed]
    if passed:
        return min(passed, key=lambda c: c.latency["median_ms"])
    measured = [c for c in cands if c.metrics]
    if not measured:
        raise EdgeportError(f"no candidate could be measured; first failure: {cands[0].label}: {cands[0].error}")
    best = []
    for b in bud.bounds:
        have = [c for c in measured if c.metrics.get(b.metric) is not None]
        top = (max if b.op == ">=" else min)(have, key=lambda c: c.metrics[b.metric])
        best.append(f"{b.metric} {top.metrics[b.metric]:.6g} ({top.label})")
    raise EdgeportError(f"no candidate meets --budget {bud.text} ({len(measured)} of {len(cands)} measured); "
                        f"best reached: {', '.join(best)}; no folder written")


def write_chosen(chosen: Candidate, out: Path, block: dict, steps: Steps, keep_source: bool = False,
                 float_folder: Path | None = None) -> Path:
    """Put the chosen candidate's folder at `out` (atomically) with the `auto` block in its manifest: moved
    from the work folder, or copied when `keep_source` (a folder the user owns).

    A quantized choice records where its float artifact is: `float_folder` (the user's own float export,
    `quantize --scheme auto`) as a path relative to `out` (as quantize_artifact records it; its sha256 was
    recorded when quantizing); without one (`export --quantize auto`: the fp32 candidate lived in the work
    folder and is not kept) float_artifact is None and `float_kept` False (manifest.float_artifact_status).
    """
    m, folder = read_manifest(chosen.folder)
    m.auto = block
    if m.quantization:
        rel = None
        if float_folder is not None:
            fm, ff = read_manifest(float_folder)
            rel = os.path.relpath(ff.resolve() / fm.artifact, out.resolve()).replace(os.sep, "/")
        m.quantization = {**m.quantization, "float_artifact": rel, "float_kept": rel is not None}
    fp32_note = None if m.quantization else _fp32_note(block, keep_source)
    if fp32_note:
        m.notes = list(m.notes) + [fp32_note]
    with atomic_output_dir(out) as tmp:
        for p in folder.iterdir():
            if p.name == MANIFEST_NAME or p.name.startswith("."):
                continue
            if keep_source:
                (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name)
            else:
                os.replace(p, tmp / p.name)
        (tmp / MANIFEST_NAME).write_text(m.to_json())
    if not steps.quiet:
        lat = chosen.latency
        print(format_table(block), flush=True)
        print(f"chose {chosen.label} (median {lat['median_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms); "
              f"wrote {out}/{m.artifact}", flush=True)
    if fp32_note:
        print(fp32_note, flush=True)  # a result, not progress: printed even with --quiet
    return out


def _fp32_note(block: dict, copied: bool) -> str | None:
    """Why the fp32 candidate was kept when quantized ones competed (None when none did): no quantized
    scheme met the budget, or those meeting it were slower. `copied`: the output is a copy of the float export."""
    quantized = [r for r in block.get("candidates", []) if r.get("precision") != "fp32"]
    if not quantized:
        return None
    if not any(r.get("passed") for r in quantized):
        return (f"no quantized scheme met the budget ({block.get('budget')}): the output is the fp32 artifact"
                + (", a copy of the float export" if copied else ""))
    return "fp32 was the fastest candidate within the budget (the quantized ones meeting it were slower)"


def format_table(block: dict) -> str:
    """The manifest's `auto` block as a text table: one row per candidate (target, lowering, precision,
    median and p90 ms, top1, cos, maxdiff, budget), the kept one marked with '*', then the skipped ones."""
    head = f"  {'':1s} {'target':8s} {'lowering':9s} {'precision':14s} {'median ms':>9s} {'p90 ms':>8s} " \
           f"{'top1':>6s} {'cos':>8s} {'maxdiff':>9s}  budget"
    lines = [f"  budget {block['budget']}; inputs: {block['inputs']}; timed: {block['timed']}", head]
    num = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-".rjust(int(f.split(".")[0]))  # noqa: E731
    for c in block["candidates"]:
        label = f"{c['target']}/{c['lowering'] or 'plain'}/{c['precision']}"
        m = c["metrics"] or {}
        verdict = f"error: {c['error']}" if c["error"] else ("pass" if c["passed"] else "miss")
        lines.append(f"  {'*' if label == block.get('chosen') else ' '} {c['target']:8s} {c['lowering'] or 'plain':9s} "
                     f"{c['precision']:14s} {num(c['latency_median_ms'], '9.2f')} {num(c['latency_p90_ms'], '8.2f')} "
                     f"{num(m.get('top1'), '6.3f')} {num(m.get('cos'), '8.5f')} {num(m.get('maxdiff'), '9.2e')}  "
                     f"{verdict}")
    lines += [f"  skipped {'/'.join(str(s[k]) for k in ('target', 'lowering', 'precision') if k in s)}: {s['reason']}"
              for s in block.get("skipped", [])]
    return "\n".join(lines)
