"""`edgeport quantize FOLDER --scheme auto [--budget B]`: the fastest precision of one float export within budget.

    out = quantize_auto("edgeport-out/minilm-onnx", budget="cos>=0.995")   # -> edgeport-out/minilm-onnx-auto

Candidates: the float artifact itself (fp32) and the schemes export/auto.py's AUTO_SCHEMES lists for the
export's target and kind (encoder or decoder), each made with quantize_artifact into a work folder beside
the output. Each is timed and scored by export/measuring.py, the same code `export --quantize auto` uses;
the reference here is the float *artifact* (this stage holds no reference model, DESIGN.md), run through
the runtime on the same fixed inputs; the float export was itself validated against the reference model
when it was made. The fastest candidate meeting the budget is written as the output folder (a copy when
it is the float export), its manifest's `auto` block listing every candidate; when none meets it, an
EdgeportError names the best accuracy reached and no folder is written.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import read_manifest
from edgeport.progress import Steps


def quantize_auto(folder_or_artifact, budget: str | None = None, out_dir=None, seconds: float = 2.0,
                  quiet: bool = False) -> Path:
    """Measure fp32 and AUTO_SCHEMES' precisions of an export folder; write the fastest within `budget`
    (export/budget.py syntax; default per task) to `out_dir` (default <folder>-auto) and return it.

    Raises EdgeportError for bad budget syntax, a quantized source, entity or multiple-choice inputs, a target
    with no schemes to try, an unusable output path (all before any work), or when no candidate meets the
    budget (after measuring; nothing is written).
    """
    from edgeport.export import measuring as ms
    from edgeport.export.auto import AUTO_SCHEMES
    from edgeport.export.budget import default_budget, parse_budget
    from edgeport.runtime.latency import check_seconds

    check_seconds(seconds)  # nan/inf would never end, <= 0 would measure nothing
    if budget is not None:
        parse_budget(budget)
    m, folder = read_manifest(folder_or_artifact)
    if m.quantization:
        raise EdgeportError(f"{folder} is already quantized ({m.quantization.get('tag')}); quantize its float export")
    bud = parse_budget(budget or default_budget(m.task), m.task)
    kind = "decoder" if m.decoder else "encoder"
    if kind == "encoder" and (any(len(s.shape) != 2 for s in m.inputs) or any(s.name.startswith("entity_")
                                                                              for s in m.inputs)):
        raise EdgeportError(f"--scheme auto measures (batch, sequence) token-id inputs; {m.family} {m.task} is not one")
    schemes = AUTO_SCHEMES.get((m.target, kind), ())
    if not schemes:
        raise EdgeportError(f"--scheme auto has no schemes to try for {kind} {m.target} exports")
    out = Path(out_dir) if out_dir else folder.parent / f"{folder.name}-auto"
    if out.resolve() == folder.resolve():
        raise EdgeportError("the output folder must differ from the float export's folder")
    ms.check_out(out)
    lowering = m.converter.get("lowering")
    cands = [ms.Candidate(m.target, lowering, "fp32")] + [ms.Candidate(m.target, lowering, s, source=0)
                                                          for s in schemes]
    steps = Steps(1, quiet)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.auto-", dir=out.parent))
    try:
        block = ms.measure_all(cands, lambda i, c: _make(folder, c, work / f"c{i}"),
                               lambda f: _float_probe(folder, m, kind), m.task, bud, seconds, steps)
        block.update(reference=f"the float artifact {folder / m.artifact} on the same inputs",
                     budget_given=budget is not None, skipped=[])
        chosen = ms.choose(cands, bud)
        block["chosen"] = chosen.label
        return ms.write_chosen(chosen, out, block, steps, keep_source=chosen.source is None, float_folder=folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _make(folder: Path, c, dest: Path) -> Path:
    """The float folder itself for fp32; else quantize_artifact(folder, scheme) into `dest`."""
    if c.source is None:
        return folder
    from edgeport.quantize import quantize_artifact

    return quantize_artifact(folder, c.precision, out_dir=dest, quiet=True)


def _float_probe(folder: Path, m, kind: str):
    """measuring.probe_inputs for this export, with the float artifact's own outputs as the reference."""
    from edgeport.export import measuring as ms

    if kind == "decoder":
        vocab = int(m.outputs[0].shape[-1])  # logits (B, S, V)
        probe = ms.probe_inputs(folder, kind, (), vocab, min(128, m.max_sequence_length), {"logits"})
    else:
        ids = next(s for s in m.inputs if s.name == "input_ids")
        length = ids.shape[1] if m.static_shapes else min(128, m.max_sequence_length)
        per_token = {o.name for o in m.outputs} if m.task in ms.PER_TOKEN_TASKS else set()
        pad = m.tokenizer.pad_token_id if m.tokenizer else 0
        probe = ms.probe_inputs(folder, kind, [s.name for s in m.inputs], _vocab(folder, m), length, per_token, pad)
    probe.reference.extend(ms.run_outputs(folder, probe))
    return probe


def _vocab(folder: Path, m) -> int:
    """Id range for random rows: the tokenizer's vocabulary, else 100 (as quantize's own random feeds)."""
    if m.tokenizer is not None and m.tokenizer.kind == "tokenizers" and (folder / m.tokenizer.file).is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(folder / m.tokenizer.file)).get_vocab_size()
    return 100
