"""`edgeport export --target auto` / `--quantize auto`: measure the candidates, keep the fastest within budget.

    folder = export_auto("bert-tiny", task="text-classification", budget="top1>=0.99")
    folder = export_auto(model, target="onnx", quantizer=fn)   # + quantized candidates (see below)

Candidates (`plan`): every target this machine can time (the target row's `timed_by` module imports;
TensorRT is never timed here: its artifact is an ONNX graph for an engine that only a GPU host builds)
x every lowering the registry offers for the family on that target (the plain route where it has none;
`lowering=` keeps one) x the precisions: fp32, and with a quantizer the schemes of AUTO_SCHEMES. At most
MAX_CANDIDATES are measured; what is left out, and why, is recorded under `skipped`.

Each candidate is exported (and quantized) into a work folder beside the output, then measured on this
machine through the runtime: latency with runtime.latency.measure (median and p90 over at least
`seconds` of calls after warm-up), accuracy against the float *reference model's* outputs on one fixed
set of inputs (export/budget.py's metrics). The fastest candidate meeting the budget becomes the output
folder (moved into place through manifest.atomic_output_dir, as every export); its manifest's `auto`
block lists every candidate. When none meets the budget: EdgeportError with the best accuracy reached,
and no folder is written. Work folders are removed in every case.

Inputs (`Probe`): encoders get PROBE_SENTENCES (real English text) through the export's tokenizer,
padded to the static length L (the tflite row's length for this model, default 128) with their attention
mask; decoders get the same sentences as prompts (at most DECODER_PROMPT tokens). Where the export has no
tokenizer, or it maps most of the text to a single id (a word-level vocabulary that lacks these words),
seeded random ids of varied lengths are used instead; the manifest says which. Timed call: encoders one
`Session.run` at batch 1 x L tokens; decoders one greedy `generate_ids` of NEW_TOKENS tokens after the
first prompt.

Why here and how quantization gets in: export may not import the quantize stage (DESIGN.md: data flows
reference_models -> export -> quantize; tests/test_architecture.py), and only the export stage holds the
reference model that accuracy is measured against. So the search lives in the export stage and takes the
quantizer as an argument, `quantizer(float_folder, scheme, out_dir) -> folder`; the CLI (which may import
every stage) passes edgeport.quantize.quantize_artifact. Without a quantizer only fp32 candidates exist.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.export import Options, default_out_dir, export_reference, load
from edgeport.export.budget import Budget, compare, default_budget, parse_budget
from edgeport.export.targets import TARGETS, fit_seq_len
from edgeport.manifest import MANIFEST_NAME, atomic_output_dir, read_manifest
from edgeport.progress import Steps

MAX_CANDIDATES = 16
NEW_TOKENS = 16  # decoders: greedy tokens per timed call
DECODER_PROMPT = 24  # decoders: longest probe prompt, in tokens
SETTLE_S = 0.3  # idle pause before timing a candidate

# (target, contract kind) -> scheme names `--quantize auto` tries (resolved per target and task by schemes.py).
# Not tried, and why: int8-static needs calibration text and ran slower than int8 dynamic on ONNX (1.21x fp32,
# fused attention left fp32) and equal to fp32 on TFLite (0.98x); encoder int4 on ONNX computes in fp32
# (MatMulNBits, 1.01x) and on TFLite ran 1.58x slower; TFLite fp16 stores fp16 weights but computes in fp32
# (same speed); fp16 decoders are not built; quantized TFLite decoders are untested (README, measured here).
AUTO_SCHEMES = {
    ("onnx", "encoder"): ("fp16", "int8"),
    ("tflite", "encoder"): ("int8",),
    ("onnx", "decoder"): ("int8", "int4"),  # decoder int4 = int4-b32-a8 (schemes.DECODER_SHORT_NAMES)
    ("tflite", "decoder"): (),
}

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


# ---------------------------------------------------------------- planning

def plan(family, contract_kind: str, target: str, lowering: str | None, quantize: bool) -> tuple[list, list]:
    """-> (candidates in measuring order, skipped [{"target", "reason"}]).

    `target`: "auto" (every target the family offers) or one target name. The family's own targets, then
    any other that its lowerings reach (as `edgeport list` offers them). Raises EdgeportError for an unknown
    target or when nothing can be measured.
    """
    from edgeport.export.lowerings import lowerings_for

    if target != "auto" and target not in TARGETS:
        raise EdgeportError(f"unknown target '{target}'; targets: auto, {', '.join(TARGETS)}")
    names = list(family.targets) + [t for t, row in TARGETS.items() if t not in family.targets
                                    and (not row.needs_lowering or lowerings_for(family.name, t))]
    cands, skipped = [], []
    for t in (names if target == "auto" else [target]):
        reason = _untimed(TARGETS[t])
        if reason:
            skipped.append({"target": t, "reason": reason})
            continue
        lows = sorted(lowerings_for(family.name, t), key=lambda n: (n != "default", n)) or [None]
        if lowering is not None:
            if lowering not in lows and lows != [None]:
                skipped.append({"target": t, "reason": f"no lowering '{lowering}' (has {', '.join(lows)})"})
                continue
            lows = [lowering] if lowering in lows else lows
        for low in lows:
            cands.append(Candidate(t, low, "fp32"))
            src = len(cands) - 1
            for scheme in AUTO_SCHEMES.get((t, contract_kind), ()) if quantize else ():
                cands.append(Candidate(t, low, scheme, source=src))
    if not cands:
        raise EdgeportError("no candidate can be measured here: " + "; ".join(f"{s['target']}: {s['reason']}"
                                                                            for s in skipped))
    for c in cands[MAX_CANDIDATES:]:
        skipped.append({"target": c.target, "lowering": c.lowering, "precision": c.precision,
                        "reason": f"over the {MAX_CANDIDATES}-candidate limit (narrow with --target or --lowering)"})
    return cands[:MAX_CANDIDATES], skipped


def _untimed(row) -> str | None:
    """Why a target's artifacts cannot be timed here, or None when they can."""
    if row.timed_by is None:
        has = importlib.util.find_spec(row.name) is not None
        return (f"not measured: a {row.name} artifact is timed as an engine built on a GPU host, which --target "
                f"auto does not build ({row.name} {'imports' if has else 'does not import'} here)")
    if importlib.util.find_spec(row.timed_by) is None:
        return f"not measured: its runtime ({row.timed_by}) does not import here"
    return None


# ---------------------------------------------------------------- inputs and the reference

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


def _random_rows(vocab: int, length: int, n: int = len(PROBE_SENTENCES)) -> list:
    rng = np.random.default_rng(0)
    return [list(rng.integers(5, vocab, max(2, length - (7 * i) % max(1, length - 1)))) for i in range(n)]


def encoder_probe(ref, contract, folder: Path, length: int) -> Probe:
    """PROBE_SENTENCES (or random ids) at batch 1, padded to `length`; the reference run on each."""
    from edgeport.export.validate import reference_outputs

    rows = _tokenize(folder, length)
    source = f"{len(PROBE_SENTENCES)} built-in English sentences (export/auto.py), padded to {length}"
    if rows is None:
        rows = _random_rows(contract.vocab_size, length)
        source = f"{len(rows)} rows of seeded random ids (no usable tokenizer), padded to {length}"
    pad = int(getattr(ref.config, "pad_token_id", 0) or 0)
    feeds, lengths = [], []
    for r in rows:
        ids = np.full((1, length), pad, np.int64)
        mask = np.zeros((1, length), np.int64)
        ids[0, :len(r)], mask[0, :len(r)] = r, 1
        f = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((1, length), np.int64)}
        feeds.append({k: f[k] for k in contract.inputs})
        lengths.append(len(r))
    per_token = {n for n, d in contract.output_dims.items() if "sequence" in d}
    refs = [_real(reference_outputs(ref.model, contract, f), n, per_token) for f, n in zip(feeds, lengths)]
    return Probe("encoder", feeds, lengths, refs, source, f"one call at batch 1 x {length} tokens", per_token)


def decoder_probe(ref, contract, folder: Path, length: int) -> Probe:
    """PROBE_SENTENCES as prompts (or random ids); the reference's logits for every prompt position."""
    import torch

    limit = min(DECODER_PROMPT, length)
    rows = _tokenize(folder, limit, special=False)
    source = f"{len(PROBE_SENTENCES)} built-in English sentences as prompts (export/auto.py), <= {limit} tokens"
    if rows is None:
        rows = _random_rows(contract.vocab_size, limit)
        source = f"{len(rows)} prompts of seeded random ids (no usable tokenizer), <= {limit} tokens"
    rows = [r for r in rows if len(r) >= 2]
    feeds, refs = [], []
    for r in rows:
        ids = np.asarray([r], np.int64)
        mask, pos = np.ones_like(ids), np.arange(ids.shape[1], dtype=np.int64)[None]
        with torch.inference_mode():
            logits = ref.model(*(torch.from_numpy(a) for a in (ids, mask, pos)), None, None)[0]
        feeds.append(ids)
        refs.append({"logits": logits[0].double().numpy()})
    return Probe("decoder", feeds, [len(r) for r in rows], refs, source,
                 f"prompt of {feeds[0].shape[1]} tokens + {NEW_TOKENS} greedy tokens (generate_ids)", {"logits"})


def _real(outputs: dict, n: int, per_token: set) -> dict:
    """(1, L, ...) -> (n, ...) for per-token outputs, (1, C) -> (C,) otherwise; float64."""
    return {k: (v[0, :n] if k in per_token else v[0]).astype(np.float64) for k, v in outputs.items()}


# ---------------------------------------------------------------- measuring

def measure_candidate(folder: Path, probe: Probe, task: str, seconds: float) -> tuple[dict, dict]:
    """-> (latency {"median_ms", "p90_ms", "n"}, metrics) of the artifact in `folder`, through the runtime."""
    from edgeport.runtime.latency import measure

    m, _ = read_manifest(folder)
    gc.collect()  # sessions of earlier candidates (export validation, quantize checks) are gone, and
    time.sleep(SETTLE_S)  # their idle thread pools stop spinning before this one is timed (benchmarks/common.py)
    if probe.kind == "decoder":
        from edgeport.runtime.generate import generate_ids, open_decoder

        dec = open_decoder(folder / m.artifact, m.decoder)
        got = []
        for ids in probe.feeds:
            dec.reset(1)
            got.append({"logits": dec.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None])[0]})
        first = probe.feeds[0]
        call = lambda: generate_ids(dec, first, np.ones_like(first), NEW_TOKENS)  # noqa: E731
    else:
        from edgeport.runtime import load as load_session

        sess = load_session(folder)
        got = [_real(sess.run(f), n, probe.per_token) for f, n in zip(probe.feeds, probe.lengths)]
        call = lambda: sess.run(probe.feeds[0])  # noqa: E731
    metrics = compare(probe.reference, got, task)
    stats = measure(call, warmup=2, min_seconds=seconds, min_calls=5)
    return {"median_ms": stats.median_ms, "p90_ms": stats.p90_ms, "n": stats.n}, metrics


def machine_facts() -> dict:
    """CPU model and the SIMD flags that decide int8 speed, cores, load averages (Linux /proc; else less)."""
    facts = {"cores": os.cpu_count(), "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    facts["cpu"] = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), None)
    facts["flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return facts


# ---------------------------------------------------------------- the search

def export_auto(model: str, task: str | None = None, checkpoint: str | None = None, out_dir=None,
                target: str = "auto", budget: str | None = None, lowering: str | None = None,
                quantizer: Callable | None = None, seq_len: int | None = None, opset: int | None = None,
                seconds: float = 2.0, quiet: bool = False, allow_random_head: bool = False) -> Path:
    """Measure the candidates for `model` (see the module docstring), write the fastest that meets `budget`
    as the output folder (default edgeport-out/<model>-<task>-auto) and return it.

    target: "auto" or one target (then only its lowerings and precisions compete); budget: budget.py's
    syntax, default per task (budget.default_budget); quantizer: fn(float folder, scheme, out dir) -> folder,
    adds AUTO_SCHEMES' precisions; seconds: timed seconds per candidate (runtime.latency.measure).
    Raises EdgeportError, before any export, for bad budget syntax, a task without (batch, sequence) inputs
    or an unusable output path; after measuring, when no candidate meets the budget (naming the best
    accuracy reached). No folder is written then.
    """
    if budget is not None:
        parse_budget(budget)  # syntax first: before minutes of loading and exporting
    if seconds <= 0:
        raise EdgeportError("--measure-seconds must be > 0")
    steps = Steps(2, quiet)
    ref = load(model, task, checkpoint, steps, allow_random_head)
    from edgeport.export.contracts import contract_for

    contract = contract_for(ref)
    bud = parse_budget(budget or default_budget(ref.task), ref.task)
    if contract.kind != "decoder" and ("choices" in contract.input_dims or hasattr(contract, "sample_inputs")):
        raise EdgeportError(f"--target auto measures tasks whose inputs are (batch, sequence) token ids; "
                            f"{ref.family.name} {ref.task} is not one yet")
    cands, skipped = plan(ref.family, contract.kind, target, lowering, quantizer is not None)
    for s in skipped:
        steps.note(f"skipped {'/'.join(str(s[k]) for k in ('target', 'lowering', 'precision') if k in s)}: "
                   f"{s['reason']}")
    static_row = next(r for r in TARGETS.values() if r.static_shapes)
    length = fit_seq_len(static_row, contract, seq_len)[0]
    out = Path(out_dir) if out_dir else default_out_dir(model, ref.task, "auto")
    _check_out(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.auto-", dir=out.parent))
    try:
        block = _measure_all(ref, contract, cands, work, bud, length, opset, quantizer, seconds, steps)
        block.update(budget_given=budget is not None, skipped=skipped)
        chosen = _choose(cands, bud)
        block["chosen"] = chosen.label
        return _write(chosen, out, block, steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_out(out: Path) -> None:
    """Refuse, before any work, an output path that atomic_output_dir would refuse at the end."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).exists())):
        raise EdgeportError(f"{out}: exists and is not an edgeport output folder; choose another -o")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeportError(f"{out}: cannot write the output folder ({e.strerror})") from None


def _measure_all(ref, contract, cands, work, bud: Budget, length, opset, quantizer, seconds, steps) -> dict:
    """Make and measure every candidate in order (a failure is recorded on the candidate); -> the manifest's
    `auto` block without `chosen`."""
    machine = machine_facts()
    n = len(cands)
    if not steps.quiet:
        print(f"      measuring {n} candidates ({', '.join(c.label for c in cands)}); budget {bud.text}; "
              f"~{seconds:g} s of timed calls each, ETA after the first", file=sys.stderr, flush=True)
    probe, start = None, time.perf_counter()
    for i, c in enumerate(cands):
        t0 = time.perf_counter()
        try:
            c.folder = _make(c, cands, ref, work / f"c{i}", length, opset, quantizer)
            q = read_manifest(c.folder)[0].quantization
            c.tag = q["tag"] if q else "fp32"
            if probe is None:
                probe = (decoder_probe if contract.kind == "decoder" else encoder_probe)(ref, contract, c.folder,
                                                                                       length)
            c.latency, c.metrics = measure_candidate(c.folder, probe, ref.task, seconds)
            c.passed = bud.holds(c.metrics)
        except Exception as e:  # recorded in the manifest's candidate table; the search goes on
            c.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
        c.seconds = time.perf_counter() - t0
        _progress(c, i, n, time.perf_counter() - start, steps)
    return {"budget": bud.text, "rule": "fastest median latency among the candidates that meet the budget",
            "inputs": probe.source if probe else None, "timed": probe.timed if probe else None,
            "reference": "the float reference model (PyTorch) on the same inputs",
            "measure_seconds": seconds, "threads": _threads(), "machine": machine,
            "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "candidates": [c.record() for c in cands]}


def _make(c: Candidate, cands: list, ref, dest: Path, length: int, opset, quantizer) -> Path:
    """Export (fp32) or quantize (from its fp32 candidate's folder) into `dest`."""
    if c.source is None:
        return export_reference(ref, Options(c.target, length, 1, opset, c.lowering), dest, Steps(5, True))
    src = cands[c.source]
    if src.folder is None:
        raise EdgeportError(f"its fp32 export ({src.label}) failed")
    return Path(quantizer(src.folder, c.precision, dest))


def _threads() -> int:
    from edgeport.runtime.session import default_threads

    return default_threads()


def _progress(c: Candidate, i: int, n: int, elapsed: float, steps: Steps) -> None:
    if steps.quiet:
        return
    if c.error:
        what = f"failed: {c.error}"
    else:
        m = c.metrics
        acc = ", ".join(f"{k} {m[k]:.4g}" for k in ("top1", "cos", "maxdiff") if m.get(k) is not None)
        what = (f"median {c.latency['median_ms']:.2f} ms, p90 {c.latency['p90_ms']:.2f} ms; {acc}; "
                f"{'meets' if c.passed else 'misses'} the budget")
    left = f"; about {elapsed / (i + 1) * (n - i - 1):.0f} s left" if i + 1 < n else ""
    print(f"      [{i + 1}/{n}] {c.label}: {what} ({c.seconds:.1f} s{left})", file=sys.stderr, flush=True)


def _choose(cands: list, bud: Budget) -> Candidate:
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


def _write(chosen: Candidate, out: Path, block: dict, steps: Steps) -> Path:
    """Move the chosen candidate's folder into `out` (atomically) with the `auto` block in its manifest."""
    m, folder = read_manifest(chosen.folder)
    m.auto = block
    if m.quantization:  # the fp32 candidate it was quantized from lived in the work folder: not kept
        m.quantization = {**m.quantization, "float_artifact": None}
    with atomic_output_dir(out) as tmp:
        for p in folder.iterdir():
            if p.name != MANIFEST_NAME:
                os.replace(p, tmp / p.name)
        (tmp / MANIFEST_NAME).write_text(m.to_json())
    if not steps.quiet:
        lat = chosen.latency
        print(format_table(block), flush=True)
        print(f"chose {chosen.label} (median {lat['median_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms); "
              f"wrote {out}/{m.artifact}", flush=True)
    return out


def format_table(block: dict) -> str:
    """The manifest's `auto` block as a text table: one row per candidate (target, lowering, precision,
    median and p90 ms, top1, cos, maxdiff, budget), the kept one marked with '*', then the skipped ones."""
    head = f"  {'':1s} {'target':8s} {'lowering':9s} {'precision':14s} {'median ms':>9s} {'p90 ms':>8s} " \
           f"{'top1':>6s} {'cos':>8s} {'maxdiff':>9s}  budget"
    lines = [f"  budget {block['budget']}; inputs: {block['inputs']}; timed: {block['timed']}", head]
    num = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"  # noqa: E731
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
