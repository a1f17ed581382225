"""`edgeport export --target auto` / `--quantize auto`: measure the candidates, keep the fastest within budget.

    folder = export_auto("bert-tiny", task="text-classification", budget="top1>=0.99")
    folder = export_auto(model, target="onnx", quantizer=fn)   # + quantized candidates (see below)

Candidates (`plan`): every target this machine can time (the target row's `timed_by` module imports;
TensorRT is never timed here: its artifact is an ONNX graph for an engine that only a GPU host builds)
x every lowering the registry offers for the family on that target (the plain route where it has none;
`lowering=` keeps one) x the precisions: fp32, and with a quantizer the schemes of AUTO_SCHEMES. At most
MAX_CANDIDATES are measured (whole lowerings dropped, the targets taken in turn); what is left out, and
why, is recorded under `skipped`.

Each candidate is exported (and quantized) into a work folder beside the output and scored against the
float *reference model's* outputs on one fixed set of inputs (export/budget.py's metrics); then all are
timed on this machine through the runtime in interleaved rounds (runtime.latency.measure: median and
p90 over at least `seconds` of calls each). The fastest candidate meeting the budget becomes the output
folder (moved into place through manifest.atomic_output_dir, as every export); its manifest's `auto`
block lists every candidate. When none meets the budget: EdgeportError with the best accuracy reached,
and no folder is written. Work folders are removed in every case.

Inputs, timing, choosing and writing: export/measuring.py (torch-free, shared with quantize/auto.py).
Encoders are fed at batch 1 x L, L the static length the tflite row takes for this model (default 128).

Why here and how quantization gets in: export may not import the quantize stage (DESIGN.md: data flows
reference_models -> export -> quantize; tests/test_architecture.py), and only the export stage holds the
reference model that accuracy is measured against. So the search lives in the export stage and takes the
quantizer as an argument, `quantizer(float_folder, scheme, out_dir) -> folder`; the CLI (which may import
every stage) passes edgeport.quantize.quantize_artifact. Without a quantizer only fp32 candidates exist.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.export import Options, default_out_dir, export_reference, load
from edgeport.export.budget import default_budget, parse_budget
from edgeport.export.measuring import (Candidate, Probe, check_out, choose, measure_all, probe_inputs, real_positions,
                                       write_chosen)
from edgeport.export.targets import TARGETS, fit_seq_len
from edgeport.progress import Steps
from edgeport.runtime.latency import check_seconds

MAX_CANDIDATES = 16

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


# ---------------------------------------------------------------- planning

def plan(family, contract_kind: str, target: str, lowering: str | None, quantize: bool) -> tuple[list, list]:
    """-> (candidates in measuring order, skipped [{"target", ...,  "reason"}]).

    `target`: "auto" (every target the family offers: its own, then any other its lowerings reach, as
    `edgeport list` offers them) or one target name. A group is one lowering's fp32 candidate and its
    quantized ones (each made from that fp32 export); groups are taken round-robin over the targets, the
    default lowering first, whole groups while they fit in MAX_CANDIDATES, so a cap drops the last
    lowerings of every target rather than a whole target. Raises EdgeportError for an unknown target or
    when nothing can be measured.
    """
    from edgeport.export.lowerings import lowerings_for

    if target != "auto" and target not in TARGETS:
        raise EdgeportError(f"unknown target '{target}'; targets: auto, {', '.join(TARGETS)}")
    names = list(family.targets) + [t for t, row in TARGETS.items() if t not in family.targets
                                    and (not row.needs_lowering or lowerings_for(family.name, t))]
    groups, skipped = [], []
    for t in (names if target == "auto" else [target]):
        reason = _untimed(TARGETS[t])
        lows = sorted(lowerings_for(family.name, t), key=lambda n: (n != "default", n)) or [None]
        if not reason and lowering is not None and lowering not in lows and lows != [None]:
            reason = f"no lowering '{lowering}' (has {', '.join(lows)})"
        if reason:
            skipped.append({"target": t, "reason": reason})
            continue
        lows = [lowering] if lowering in lows else lows
        schemes = AUTO_SCHEMES.get((t, contract_kind), ()) if quantize else ()
        groups.append([[(t, low, p) for p in ("fp32", *schemes)] for low in lows])
    cands = []
    for group in (g for rank in range(max(map(len, groups), default=0)) for per in groups
                  for g in per[rank:rank + 1]):
        if len(cands) + len(group) > MAX_CANDIDATES:
            skipped += [{"target": t, "lowering": low, "precision": p, "reason": f"over the {MAX_CANDIDATES}-"
                         "candidate limit (narrow with --target or --lowering)"} for t, low, p in group]
            continue
        src = len(cands)
        cands += [Candidate(t, low, p, source=None if p == "fp32" else src) for t, low, p in group]
    if not cands:
        raise EdgeportError("no candidate can be measured here: " + "; ".join(f"{s['target']}: {s['reason']}"
                                                                            for s in skipped))
    return cands, skipped


def _untimed(row) -> str | None:
    """Why a target's artifacts cannot be timed here, or None when they can."""
    if row.timed_by is None:
        has = importlib.util.find_spec(row.name) is not None
        return (f"not measured: a {row.name} artifact is timed as an engine built on a GPU host, which --target "
                f"auto does not build ({row.name} {'imports' if has else 'does not import'} here)")
    if importlib.util.find_spec(row.timed_by) is None:
        return f"not measured: its runtime ({row.timed_by}) does not import here"
    return None


# ---------------------------------------------------------------- the reference

def reference_probe(ref, contract, folder: Path, length: int) -> Probe:
    """measuring.probe_inputs for this model, with the float reference model's outputs on each input
    (encoders: validate.reference_outputs; decoders: logits of the whole prompt, no cache)."""
    if contract.kind == "decoder":
        import torch

        probe = probe_inputs(folder, "decoder", (), contract.vocab_size, length, {"logits"})
        for ids in probe.feeds:
            mask, pos = np.ones_like(ids), np.arange(ids.shape[1], dtype=np.int64)[None]
            with torch.inference_mode():
                logits = ref.model(*(torch.from_numpy(a) for a in (ids, mask, pos)), None, None)[0]
            probe.reference.append({"logits": logits[0].double().numpy()})
        return probe
    from edgeport.export.validate import reference_outputs

    per_token = {n for n, d in contract.output_dims.items() if "sequence" in d}
    pad = int(getattr(ref.config, "pad_token_id", 0) or 0)
    probe = probe_inputs(folder, "encoder", contract.inputs, contract.vocab_size, length, per_token, pad)
    probe.reference += [real_positions(reference_outputs(ref.model, contract, f), n, per_token)
                        for f, n in zip(probe.feeds, probe.lengths)]
    return probe


# ---------------------------------------------------------------- the search

def export_auto(model: str, task: str | None = None, checkpoint: str | None = None, out_dir=None,
                target: str = "auto", budget: str | None = None, lowering: str | None = None,
                quantizer: Callable | None = None, seq_len: int | None = None, opset: int | None = None,
                seconds: float = 2.0, quiet: bool = False, allow_random_head: bool = False,
                memory_check: bool = True) -> Path:
    """Measure the candidates for `model` (see the module docstring), write the fastest that meets `budget`
    as the output folder (default edgeport-out/<model>-<task>-auto) and return it.

    target: "auto" or one target (then only its lowerings and precisions compete); budget: budget.py's
    syntax, default per task (budget.default_budget); quantizer: fn(float folder, scheme, out dir) -> folder,
    adds AUTO_SCHEMES' precisions; seconds: timed seconds per candidate (runtime.latency.measure).
    Raises EdgeportError, before any export, for bad budget syntax, a task without (batch, sequence) inputs
    or an unusable output path, or (memory_check) when the most expensive candidate's estimated peak
    memory exceeds what the machine has (streaming.preflight); after measuring, when no candidate meets
    the budget (naming the best accuracy reached). No folder is written then.
    """
    if budget is not None:
        parse_budget(budget)  # syntax first: before minutes of loading and exporting
    check_seconds(seconds)  # nan/inf would never end, <= 0 would measure nothing
    if memory_check:
        from edgeport.export.streaming import preflight

        preflight(model, task, checkpoint, False, target=target)
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
    check_out(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.auto-", dir=out.parent))
    try:
        def make(i, c):
            return _make(c, cands, ref, work / f"c{i}", length, opset, quantizer)

        block = measure_all(cands, make, lambda folder: reference_probe(ref, contract, folder, length), ref.task,
                            bud, seconds, steps)
        block.update(reference="the float reference model (PyTorch) on the same inputs",
                     budget_given=budget is not None, skipped=skipped)
        chosen = choose(cands, bud)
        block["chosen"] = chosen.label
        return write_chosen(chosen, out, block, steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _make(c: Candidate, cands: list, ref, dest: Path, length: int, opset, quantizer) -> Path:
    """Export (fp32) or quantize (from its fp32 candidate's folder) into `dest`."""
    if c.source is None:
        return export_reference(ref, Options(c.target, length, 1, opset, c.lowering), dest, Steps(5, True))
    src = cands[c.source]
    if src.folder is None:
        raise EdgeportError(f"its fp32 export ({src.label}) failed")
    return Path(quantizer(src.folder, c.precision, dest))
