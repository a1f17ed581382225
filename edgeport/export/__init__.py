"""The export stage: reference model -> validated artifact folder (artifact, tokenizer, edgeport.json).

    from edgeport.export import export
    folder = export("mobilebert", target="tflite", task="fill-mask", out_dir="out/mb")

Routes: a lowering registered for (family, target) (see lowerings.py), else the generic one:
torch.onnx for ONNX; the family's Keras reference, or litert-torch, for TFLite. Decoders
(text-generation families) go through export/decoders.py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest, atomic_output_dir, sha256_of
from edgeport.progress import Steps

TARGETS = ("onnx", "tflite", "tensorrt")


@dataclass
class Options:
    target: str
    seq_len: int = 128  # static length (TFLite, TensorRT profiles)
    batch: int = 1  # static batch (TFLite)
    opset: int | None = None
    lowering: str | None = None
    quantize: str | None = None  # the scheme a quantized copy will get (picks an unfused lowering if needed)


def default_out_dir(model: str, task: str, target: str) -> Path:
    name = Path(model).name if Path(model).exists() else model.replace("/", "--")
    return Path("edgeport-out") / f"{name}-{task}-{target}"


def _tokenizer(ref, out: Path, steps: Steps):
    from edgeport.reference_models.tokenizer import has_tokenizer, packaged_uncased_vocab_dir, write_tokenizer

    src = ref.folder if ref.folder is not None and has_tokenizer(ref.folder) else None
    if src is None and ref.random_weights and ref.family.name in ("mobilebert", "bert"):
        src = packaged_uncased_vocab_dir()  # the presets' real uncased WordPiece vocab
    if src is None:
        steps.note("warning: no tokenizer files found; the runtime pipelines will need one")
        return None
    return write_tokenizer(src, out)


def load(model, task, checkpoint, steps: Steps):
    from edgeport.reference_models import load_reference

    with steps.step(f"loading {model}" + (f" with weights from {checkpoint}" if checkpoint else "")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ref = load_reference(model, task, checkpoint)
        for w in caught:
            steps.note(f"warning: {w.message}")
    return ref


def _lowering_for_quantization(ref, opts: Options) -> str | None:
    """No lowering named and the scheme is int4 or int8-static: the unfused 'generic' graph when the default
    one hides weights in fused ops those quantizers cannot reach (else they would stay fp32)."""
    from edgeport.export.lowerings import fuses_weights, lowerings_for

    if not opts.quantize or not fuses_weights(ref.family.name, opts.target, None):
        return None
    from edgeport.quantize.policy import kind
    from edgeport.quantize.schemes import resolve

    if kind(resolve(opts.quantize, opts.target)) in ("int4", "int8-static") and \
            "generic" in lowerings_for(ref.family.name, opts.target):
        return "generic"
    return None


def lower(ref, contract, tmp: Path, opts: Options):
    """-> (Lowered, validation grid, input dtype, static shapes?)"""
    from edgeport.export import validate
    from edgeport.export.lowerings import find_lowering

    static = opts.target == "tflite"
    name = opts.lowering or _lowering_for_quantization(ref, opts)
    fn = find_lowering(ref.family.name, opts.target, name)
    if fn is not None:
        lowered = fn(ref, contract, tmp, opts)
        lowered.converter = {**lowered.converter, "lowering": name or "default"}
    elif opts.target == "onnx":
        from edgeport.export.onnx import export_onnx

        lowered = export_onnx(ref.model, contract, tmp, opts.opset)
    elif opts.target == "tflite":
        from edgeport.export.tflite import export_tflite

        lowered = export_tflite(ref, contract, tmp, opts.batch, opts.seq_len)
    else:
        raise EdgeportError(f"no {opts.target} lowering for family '{ref.family.name}' yet")
    grid = validate.static_grid(opts.batch, opts.seq_len) if static else validate.onnx_grid(contract)
    return lowered, grid, "int32" if static else "int64", static


def export(model: str, target: str = "onnx", task: str | None = None, checkpoint: str | None = None,
           out_dir: str | Path | None = None, seq_len: int = 128, batch: int = 1, opset: int | None = None,
           lowering: str | None = None, quiet: bool = False, quantize: str | None = None) -> Path:
    """Export, validate over the shape grid, write the manifest; returns the output folder.

    Raises EdgeportError on bad input and ParityError when the artifact misses tolerance (then no
    output folder is written). `quantize`: the scheme the caller will quantize this export with (only
    picks the lowering; `edgeport export --quantize` then calls quantize_artifact).
    """
    import edgeport
    from edgeport.export import validate
    from edgeport.export.contracts import DEFAULT_OPSET, contract_for
    from edgeport.export.onnx import artifact_files

    if target not in TARGETS:
        raise EdgeportError(f"unknown target '{target}'; targets: {', '.join(TARGETS)}")
    if seq_len < 2 or batch < 1:
        raise EdgeportError("--seq-len must be >= 2 and --batch >= 1")
    opts = Options(target, seq_len, batch, opset or DEFAULT_OPSET, lowering, quantize)
    if quantize:
        from edgeport.quantize.schemes import resolve

        resolve(quantize, target)  # an unsupported scheme fails before the export, not after
    steps = Steps(5, quiet)
    ref = load(model, task, checkpoint, steps)
    if "text-generation" in ref.family.tasks:
        from edgeport.export.decoders import export_decoder

        return export_decoder(ref, opts, Path(out_dir) if out_dir else default_out_dir(model, ref.task, target),
                              steps)
    contract = contract_for(ref)
    out = Path(out_dir) if out_dir else default_out_dir(model, ref.task, target)
    with atomic_output_dir(out) as tmp:
        with steps.step(f"exporting {ref.family.name} {ref.task} to {target}"):
            lowered, grid, dtype, static = lower(ref, contract, tmp, opts)
            if lowered.converter.get("lowering") == "generic" and not lowering and quantize:
                steps.note(f"lowering 'generic' (unfused): {quantize} cannot reach weights inside fused ops")
            files = artifact_files(tmp, lowered.artifact)
            steps.note(f"{lowered.artifact}: {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
        with steps.step("writing tokenizer files"):
            tok = _tokenizer(ref, tmp, steps)
        with steps.step(f"validating against the reference at {len(grid)} shapes"):
            from edgeport.runtime.session import open_session

            opener = lowered.open_session or open_session
            checks = validate.check(ref.model, opener(tmp / lowered.artifact), contract, grid)
            worst = max(checks, key=lambda c: c.max_abs_diff)
            steps.note(f"all {len(checks)} checks pass; worst max abs diff {worst.max_abs_diff:.2e} "
                       f"({worst.output} at {worst.shape})")
        with steps.step("writing edgeport.json"):
            fix = (batch, seq_len) if static else (None, None)
            m = Manifest(family=ref.family.name, task=ref.task, target=target, artifact=lowered.artifact,
                         inputs=contract.input_specs(dtype, *fix), outputs=contract.output_specs(*fix),
                         max_sequence_length=seq_len if static else contract.max_positions,
                         static_shapes=static,
                         labels=ref.config.labels() if ref.task.endswith("classification") else None,
                         tokenizer=tok, converter=lowered.converter, custom_ops=lowered.custom_ops,
                         source=ref.source, random_weights=ref.random_weights,
                         sha256=sha256_of(files), size_bytes=sum(f.stat().st_size for f in files),
                         parity=checks, parity_passed=True, edgeport_version=edgeport.__version__)
            (tmp / "edgeport.json").write_text(m.to_json())
    if not quiet:
        print(f"wrote {out}/{lowered.artifact}", flush=True)
    return out
