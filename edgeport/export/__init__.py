"""The export stage: reference model -> validated artifact folder (artifact, tokenizer, edgeport.json).

    from edgeport.export import export
    folder = export("mobilebert", target="tflite", task="fill-mask", out_dir="out/mb")
"""

from __future__ import annotations

import warnings
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest, atomic_output_dir, sha256_of
from edgeport.progress import Steps

TARGETS = ("onnx", "tflite", "tensorrt")


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


def export(model: str, target: str = "onnx", task: str | None = None, checkpoint: str | None = None,
           out_dir: str | Path | None = None, seq_len: int = 128, batch: int = 1, opset: int | None = None,
           quiet: bool = False) -> Path:
    """Export, validate over the shape grid, write the manifest; returns the output folder.

    Raises EdgeportError on bad input and ParityError when the artifact misses tolerance (then no
    output folder is written).
    """
    import edgeport
    from edgeport.export import validate
    from edgeport.export.contracts import DEFAULT_OPSET, encoder_contract
    from edgeport.reference_models import load_reference
    from edgeport.runtime.session import open_session

    if target not in TARGETS:
        raise EdgeportError(f"unknown target '{target}'; targets: {', '.join(TARGETS)}")
    if target == "tensorrt":
        raise EdgeportError("target 'tensorrt' is not built yet; export --target onnx and build the engine "
                            "with trtexec on the GPU host")
    if seq_len < 2 or batch < 1:
        raise EdgeportError("--seq-len must be >= 2 and --batch >= 1")
    steps = Steps(5, quiet)
    with steps.step(f"loading {model}" + (f" with weights from {checkpoint}" if checkpoint else "")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ref = load_reference(model, task, checkpoint)
        for w in caught:
            steps.note(f"warning: {w.message}")
    hidden = getattr(ref.config, "hidden_size")
    contract = encoder_contract(ref.config, ref.task, hidden)
    out = Path(out_dir) if out_dir else default_out_dir(model, ref.task, target)
    with atomic_output_dir(out) as tmp:
        with steps.step(f"exporting {ref.family.name} {ref.task} to {target}"):
            if target == "onnx":
                from edgeport.export.onnx import artifact_files, export_onnx

                opset = opset or DEFAULT_OPSET
                name, converter = export_onnx(ref.model, contract, tmp, opset)
                files = artifact_files(tmp, name)
                grid, dtype, static = validate.onnx_grid(contract), "int64", False
                inputs, outputs = contract.input_specs("int64"), contract.output_specs()
            else:
                from edgeport.export.tflite import export_tflite

                name, converter = export_tflite(ref, contract, tmp, batch, seq_len)
                files = [tmp / name]
                grid, dtype, static = validate.static_grid(batch, seq_len), "int32", True
                inputs, outputs = contract.input_specs("int32", batch, seq_len), contract.output_specs(batch, seq_len)
            steps.note(f"{name}: {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
        with steps.step("writing tokenizer files"):
            tok = _tokenizer(ref, tmp, steps)
        with steps.step(f"validating against the reference at {len(grid)} shapes"):
            checks = validate.check(ref.model, open_session(tmp / name, threads=None), contract, grid)
            worst = max(checks, key=lambda c: c.max_abs_diff)
            steps.note(f"all {len(checks)} checks pass; worst max abs diff {worst.max_abs_diff:.2e} "
                       f"({worst.output} at {worst.shape})")
        with steps.step("writing edgeport.json"):
            m = Manifest(family=ref.family.name, task=ref.task, target=target, artifact=name,
                         inputs=inputs, outputs=outputs,
                         max_sequence_length=seq_len if static else contract.max_positions,
                         static_shapes=static, labels=ref.config.labels() if ref.task.endswith("classification") else None,
                         tokenizer=tok, converter=converter, source=ref.source, random_weights=ref.random_weights,
                         sha256=sha256_of(files), size_bytes=sum(f.stat().st_size for f in files),
                         parity=checks, parity_passed=True, edgeport_version=edgeport.__version__)
            (tmp / "edgeport.json").write_text(m.to_json())
    if not quiet:
        print(f"wrote {out}/{name}", flush=True)
    return out
