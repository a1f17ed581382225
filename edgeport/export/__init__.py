"""The export stage: reference model -> validated artifact folder (artifact, tokenizer, edgeport.json).

    from edgeport.export import export
    folder = export("mobilebert", target="tflite", task="fill-mask", out_dir="out/mb")

One pipeline for encoders and decoders, over their contracts (contracts.py) and the target's row
(targets.py): load -> choose the lowering (lowerings.py; data registered in edgeport/ops) -> apply it
and convert (onnx.py, tflite.py) -> tokenizer -> validate against the reference -> manifest. The
folder is written to a temp directory and renamed at the end (manifest.atomic_output_dir).
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.export.targets import TARGETS, Target, fit_seq_len, get_target
from edgeport.manifest import Manifest, Sha256InBackground, atomic_output_dir, sha256_of
from edgeport.progress import Steps

__all__ = ["export", "export_reference", "Options", "TARGETS", "default_out_dir"]


@dataclass
class Options:
    """Export settings. seq_len/batch: the static shape of static targets (None: the longest of 128 the
    model allows); opset: ONNX opset (None: contracts.DEFAULT_OPSET); lowering: a registered lowering
    name; quantize: the scheme a quantized copy will get (picks an unfused lowering if needed)."""

    target: str
    seq_len: int | None = None
    batch: int = 1
    opset: int | None = None
    lowering: str | None = None
    quantize: str | None = None
    streaming: bool = False  # weights streamed from the memory-mapped checkpoint (export/streaming.py)
    cpu_class: str | None = None  # the serving machine's CPU class for measured defaults (None: this one's)
    kv_layout: str | None = None  # decoders: "stacked" | "per_layer" (None: the target's default; targets.py)


def default_out_dir(model: str, task: str, target: str) -> Path:
    """edgeport-out/<model name>-<task>-<target>."""
    name = Path(model).name if Path(model).exists() else model.replace("/", "--")
    return Path("edgeport-out") / f"{name}-{task}-{target}"


def load(model, task, checkpoint, steps: Steps, allow_random_head: bool = False):
    """load_reference with its warnings shown as progress notes. An allocation failure while loading
    (MemoryError, torch's RuntimeError "can't allocate memory") becomes a one-line EdgeportError."""
    from edgeport.export.streaming import allocation_failed, out_of_memory
    from edgeport.reference_models import load_reference

    with steps.step(f"loading {model}" + (f" with weights from {checkpoint}" if checkpoint else "")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ref = load_reference(model, task, checkpoint, allow_random_head=allow_random_head)
            except (MemoryError, RuntimeError) as e:
                if not out_of_memory(e):
                    raise
                raise EdgeportError(f"not enough memory to load {model}: {allocation_failed(e)} while building "
                                    "the model; free memory or export on a machine with more") from None
        for w in caught:
            steps.note(f"warning: {w.message}")
    return ref


def lower(ref, contract, tgt: Target, tmp: Path, opts: Options, steps: Steps | None = None):
    """Apply the chosen lowering and convert -> Lowered (artifact, converter, custom_ops).

    Raises EdgeportError for an unknown lowering, or a target that needs a lowering the family lacks.
    """
    from edgeport.export import onnx as onnx_export
    from edgeport.export.kv_layout import layout_rewrites
    from edgeport.export.lowerings import Lowered, choose_lowering
    from edgeport.ops.registry import LoweringContext

    lowering, choice = choose_lowering(ref.family.name, tgt.name, opts.lowering, opts.quantize, opts.cpu_class)
    if lowering is None and tgt.needs_lowering:
        raise EdgeportError(f"no {tgt.name} lowering for family '{ref.family.name}' yet")
    if steps is not None:
        steps.note(choice.line if lowering else f"lowering: none (the plain {tgt.route} route)")
    ctx = LoweringContext(ref.config, opts.seq_len if tgt.static_shapes else None)
    with lowering.applied(ref.model, ctx) if lowering else nullcontext((ref.model, {})) as (model, notes):
        if tgt.route == "tflite":
            from edgeport.export.tflite import export_tflite

            swapped = model if lowering is not None and lowering.swap is not None else None
            lowered = export_tflite(ref, contract, tmp, opts.batch, opts.seq_len, model=swapped)
        else:
            lowered = onnx_export.export_onnx(model, contract, tmp, opts.opset,
                                              lowering.symbolics if lowering else (),
                                              lowering.custom_opsets if lowering else None,
                                              layout_rewrites(contract))
    for graph_pass in (lowering.graph_passes if lowering else ()) + tgt.graph_passes:
        notes.update(graph_pass(tmp / lowered.artifact, ctx))
    converter = {**lowered.converter, **(lowering.converter if lowering else {}), **notes,
                 **dict(tgt.manifest_notes), "validated_by": tgt.validated_by}
    if lowering is not None:
        converter["lowering"] = lowering.name
        converter["lowering_choice"] = choice.to_dict()
    ops = onnx_export.custom_ops(tmp / lowered.artifact) if tgt.route == "onnx" else []
    return Lowered(lowered.artifact, converter, ops, lowering.validation if lowering else None)


def export(model: str, target: str = "onnx", task: str | None = None, checkpoint: str | None = None,
           out_dir: str | Path | None = None, seq_len: int | None = None, batch: int = 1, opset: int | None = None,
           lowering: str | None = None, quiet: bool = False, quantize: str | None = None,
           allow_random_head: bool = False, streaming: bool = False, memory_check: bool = True,
           cpu_class: str | None = None, kv_layout: str | None = None) -> Path:
    """Load `model` (preset, HF folder or hub id), export it for `target`, validate it over the shape grid,
    write the folder; returns the output folder (default edgeport-out/<model>-<task>-<target>).

    seq_len/batch: the static shape (TFLite; seq_len default: the longest of 128 the positions allow,
    decoders leaving room to decode). `quantize`: the scheme the caller will quantize this export with
    (only picks the lowering; `edgeport export --quantize` then calls quantize_artifact).
    `allow_random_head`: export a checkpoint that lacks the task head's weights with random ones
    (random_weights true in the manifest); without it that is an EdgeportError naming the tensors.
    Raises EdgeportError on bad input (the message names what is accepted) and ParityError when the
    artifact misses tolerance; then no output folder is written. `streaming`: decoders from a safetensors
    folder, with about one copy of the weights in memory (export/streaming.py; refused with an
    EdgeportError, before any work, when the machine's available memory is below its estimate).
    `memory_check`: refuse before any work, for every target, when the path's estimated peak memory
    (streaming.preflight) exceeds what the machine has available. `cpu_class`: with no `lowering`, take
    the measured default of that CPU class (lowerings.py; e.g. "avx2" for a serving machine other than
    this one) instead of this machine's; EdgeportError for a class machine.CPU_CLASSES lacks.
    `kv_layout`: a decoder's KV cache in the graph, "stacked" or "per_layer" (export/kv_layout.py; None:
    the target's default, targets.py); EdgeportError for a layout the target does not take.
    """
    tgt = get_target(target)
    if streaming and (tgt.route != "onnx" or tgt.graph_passes):  # before the checkpoint is mapped
        raise EdgeportError(f"--streaming writes ONNX graphs as traced (--target onnx); target '{tgt.name}' needs "
                            "the in-memory path: drop --streaming")
    if (seq_len is not None and seq_len < 2) or batch < 1:
        raise EdgeportError("--seq-len must be >= 2 and --batch >= 1")
    if quantize:
        from edgeport.schemes import resolve

        resolve(quantize, target)  # an unsupported scheme fails before the export, not after
    if kv_layout is not None:
        from edgeport.export.targets import check_kv_layout

        check_kv_layout(tgt, kv_layout)
        check_kv_layout_task(model, task, checkpoint)  # before loading (kv_layout_for checks again after)
    if cpu_class is not None:
        from edgeport.export.lowerings import check_cpu_class

        check_cpu_class(cpu_class, tgt.name)
    if memory_check:  # every route, before loading (the estimate per route: streaming.preflight)
        from edgeport.export.streaming import preflight

        preflight(model, task, checkpoint, streaming, quantize=quantize if streaming else None, target=tgt.name)
    steps = Steps(5, quiet)
    if streaming:
        from edgeport.export.streaming import load_lazy_reference

        with steps.step(f"mapping {checkpoint or model} (weights stay on disk until written)"):
            ref = load_lazy_reference(model, task, checkpoint, allow_random_head)
    else:
        ref = load(model, task, checkpoint, steps, allow_random_head)
    out = Path(out_dir) if out_dir else default_out_dir(model, ref.task, tgt.name)
    opts = Options(tgt.name, seq_len, batch, opset, lowering, quantize, streaming, cpu_class, kv_layout)
    return export_reference(ref, opts, out, steps)


def check_kv_layout_task(model: str, task: str | None, checkpoint: str | None) -> None:
    """--kv-layout is a text-generation decoder's (a KV cache): EdgeportError, before anything is built or
    read beyond a config.json, when the task is known to be another: given, or the default of the preset's
    or the checkpoint folder's family. A hub id without --task is judged after loading (kv_layout_for)."""
    if task is None:
        from edgeport.reference_models import all_presets
        from edgeport.reference_models.checkpoint import read_config
        from edgeport.reference_models.registry import family_for_model_type

        folder = Path(checkpoint) if checkpoint else None if model in all_presets() else Path(model)
        if folder is not None and folder.is_dir():  # as checkpoint.resolve orders them
            family = family_for_model_type(str(read_config(folder).get("model_type")))
        elif model in all_presets():
            family = all_presets()[model]
        else:
            return
        task = family.default_task
    if task != "text-generation":
        raise EdgeportError(f"--kv-layout applies to text-generation decoders (a KV cache); {model} exports "
                            f"{task}, which has none: drop --kv-layout")


def export_reference(ref, opts: Options, out: Path, steps: Steps) -> Path:
    """Export a loaded Reference (edgeport.reference_models.load_reference) with `opts` into `out`.

    The pipeline behind `export()`: contract, sequence length, lowering, conversion, tokenizer, parity
    checks and manifest; raises as `export()` does.
    """
    import edgeport
    from edgeport.export.artifact_io import check_io
    from edgeport.export.contracts import DEFAULT_OPSET, contract_for
    from edgeport.export.onnx import artifact_files
    from edgeport.export.targets import kv_layout_for

    tgt = get_target(opts.target)
    contract = contract_for(ref)
    layout = kv_layout_for(tgt, contract, opts.kv_layout)
    if layout is not None:
        contract.kv_layout = layout
    opts.opset = opts.opset or DEFAULT_OPSET
    opts.seq_len, fitted = fit_seq_len(tgt, contract, opts.seq_len)
    if fitted:
        steps.note(fitted)
    static = (opts.batch, opts.seq_len) if tgt.static_shapes else None
    if opts.streaming and opts.quantize:  # int4 straight from the checkpoint, never an fp32 artifact
        from edgeport.export.streaming_int4 import export_int4

        return export_int4(ref, contract, tgt, opts, out, steps)
    with atomic_output_dir(out) as tmp, ExitStack() as later:
        with steps.step(f"exporting {ref.family.name} {ref.task} to {tgt.name}"):
            if opts.streaming:  # the reference pass runs while the weights are written
                from edgeport.export.streaming import lower_streaming
                from edgeport.export.streaming_validate import ReferenceInBackground

                reference = later.enter_context(ReferenceInBackground(ref, contract, static))
                lowered = lower_streaming(ref, contract, tgt, tmp, opts, steps, on_traced=reference.start)
                reference.wait()  # the model is whole again before anything else reads it
            else:
                lowered = lower(ref, contract, tgt, tmp, opts, steps)
            files = artifact_files(tmp, lowered.artifact)
            steps.note(f"{lowered.artifact}: {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
        # streamed artifacts are final here: hashed (GBs) on the core validation leaves idle
        hashing = later.enter_context(Sha256InBackground(files)) if opts.streaming else None
        with steps.step("writing tokenizer files"):
            tok, block = contract.write_tokenizer(ref, lowered, static, tmp, steps)
        with steps.step(contract.validating):
            if opts.streaming:  # never the reference and the artifact in memory at once
                from edgeport.export.streaming_validate import validate_streamed

                checks = validate_streamed(ref, contract, tmp / lowered.artifact, lowered, static, block, reference)
            else:
                checks = contract.validate(ref, tmp / lowered.artifact, lowered, static, block)
            worst = max(checks, key=lambda c: c.max_abs_diff)
            steps.note(f"all {len(checks)} checks pass; worst max abs diff {worst.max_abs_diff:.2e} "
                       f"({worst.output} at {contract.shape_label}{worst.shape})")
        with steps.step("writing edgeport.json"):
            ins, outs = contract.io_specs(tgt.input_dtype, static)
            signature_key = check_io(tgt.route, tmp / lowered.artifact, ins, outs)  # the graph's own names
            m = Manifest(family=ref.family.name, task=ref.task, target=tgt.name, artifact=lowered.artifact,
                         inputs=ins, outputs=outs, signature_key=signature_key,
                         max_sequence_length=contract.max_sequence_length(static, block),
                         static_shapes=tgt.static_shapes,
                         labels=ref.config.labels() if ref.task.endswith("classification") else None,
                         score_function=ref.config.score_function() if ref.task == "text-classification" else None,
                         tokenizer=tok, converter=lowered.converter, custom_ops=lowered.custom_ops,
                         source=ref.source, random_weights=ref.random_weights, notes=list(ref.family.notes),
                         sha256=hashing.result() if hashing else sha256_of(files),
                         size_bytes=sum(f.stat().st_size for f in files),
                         parity=checks, parity_passed=True, edgeport_version=edgeport.__version__, decoder=block)
            (tmp / "edgeport.json").write_text(m.to_json())
    if not steps.quiet:
        print(f"wrote {out}/{lowered.artifact}", flush=True)
    return out
