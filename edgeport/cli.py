"""`edgeport export|run|inspect|list`: argument parsing only; the work lives in the stages.

User mistakes (EdgeportError) print one line and exit 2; nothing runs at import time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from edgeport.errors import EdgeportError


def _cmd_export(a):
    from edgeport.export import export

    out = export(a.model, target=a.target, task=a.task, checkpoint=a.checkpoint, out_dir=a.output,
                 seq_len=a.seq_len, batch=a.batch, opset=a.opset, lowering=a.lowering, quiet=a.quiet,
                 quantize=a.quantize)
    if a.quantize:
        from edgeport.quantize import quantize_artifact

        quantize_artifact(out, a.quantize, quiet=a.quiet)


def _cmd_run(a):
    from edgeport.runtime import pipeline

    p = pipeline(a.artifact, truncate=a.truncate, threads=a.threads)
    if p.task == "question-answering":
        if not a.question:
            raise EdgeportError("question-answering needs --question (and --text as the context)")
        result = p(a.question, a.text)
    elif p.task == "fill-mask":
        result = p(a.text, top_k=a.top_k)[0]
    elif p.task == "feature-extraction":
        emb = p(a.text, pooling=a.pooling)[0]
        result = {"pooling": a.pooling, "dim": int(emb.shape[-1]), "embedding": [round(float(x), 5) for x in emb.ravel()[:8]],
                  "note": "first 8 values"}
    elif p.task == "token-classification":
        result = p(a.text)
    else:
        result = p(a.text)[0]
    print(json.dumps(result, indent=2))


def _cmd_inspect(a):
    from edgeport.manifest import read_manifest
    from edgeport.runtime import load

    m, folder = read_manifest(a.artifact)
    sess = load(folder)
    print(f"{folder / m.artifact}: {m.family} {m.task} for {m.target} ({m.precision}), "
          f"{m.size_bytes / 2**20:.1f} MiB, sha256 {m.sha256[:16]}...")
    print(f"  source: {m.source}{' (random weights)' if m.random_weights else ''}")
    for kind, specs in (("input", sess.inputs), ("output", sess.outputs)):
        for s in specs:
            print(f"  {kind:6s} {s.name:16s} {s.dtype:8s} {s.shape}")
    print(f"  backend: {sess.backend}; converter: {json.dumps(m.converter)}")
    worst = max(m.parity, key=lambda c: c.max_abs_diff) if m.parity else None
    if worst:
        print(f"  parity: {'pass' if m.parity_passed else 'FAIL'} over {len(m.parity)} checks, worst "
              f"{worst.max_abs_diff:.2e} ({worst.output} at {worst.shape}, tolerance {worst.tolerance:.1e})")
    if m.tokenizer:
        print(f"  tokenizer: {m.tokenizer.file}; max sequence length {m.max_sequence_length}")


def _cmd_list(a):
    from edgeport.export import TARGETS
    from edgeport.export.lowerings import lowerings_for
    from edgeport.reference_models import families

    for name, fam in sorted(families().items()):
        print(f"{name}")
        print(f"  presets: {', '.join(fam.presets)}")
        print(f"  tasks:   {', '.join(fam.tasks)} (default {fam.default_task})")
        targets = [t + (" (Keras route)" if t == "tflite" and fam.keras_build else
                        " (litert-torch route)" if t == "tflite" else "") for t in fam.targets]
        if lowerings_for(name, "tensorrt"):
            targets.append("tensorrt")
        lows = lowerings_for(name, "onnx")
        print(f"  targets: {', '.join(targets)}" + (f"; onnx lowerings: {', '.join(lows)}" if lows else ""))
    print(f"targets known: {', '.join(TARGETS)}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeport", description="Export transformer models, validated, and run them.")
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("export", help="export a model to ONNX, TFLite or TensorRT's ONNX, validated against "
                       "its reference")
    e.add_argument("--model", required=True, help="preset (see `edgeport list`), HF folder, or hub id")
    e.add_argument("--target", default="onnx", help="onnx | tflite | tensorrt (default onnx; tensorrt: ONNX for "
                   "TensorRT's parser, for families with a tensorrt lowering, see `edgeport list`)")
    e.add_argument("--task", help="task head (default: the family's default)")
    e.add_argument("--checkpoint", help="HF folder with weights for a preset's architecture")
    e.add_argument("--seq-len", type=int, help="static sequence length of static-shape targets (TFLite); for "
                   "decoders the prefill length, which must leave room to decode (default: the longest of 128 "
                   "the model's positions allow)")
    e.add_argument("--batch", type=int, default=1, help="static batch size of static-shape targets (TFLite; default 1)")
    e.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    e.add_argument("--lowering", help="a registered lowering for custom ops (default: the family's default)")
    e.add_argument("--quantize", metavar="SCHEME", help="also write a quantized artifact (see `edgeport quantize -h`)")
    e.add_argument("-o", "--output", help="output folder (default edgeport-out/<model>-<task>-<target>)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    e.set_defaults(fn=_cmd_export)

    r = sub.add_parser("run", help="run an exported artifact on text")
    r.add_argument("artifact", help="export folder or its .onnx/.tflite")
    r.add_argument("--text", required=True, help="input text (the context for question-answering)")
    r.add_argument("--question", help="question, for question-answering")
    r.add_argument("--top-k", type=int, default=5, help="fill-mask candidates (default 5)")
    r.add_argument("--pooling", default="mean", choices=("mean", "cls"), help="feature-extraction pooling")
    r.add_argument("--truncate", action="store_true", help="truncate text longer than the artifact accepts")
    r.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    r.set_defaults(fn=_cmd_run)

    i = sub.add_parser("inspect", help="show an artifact's manifest, I/O and parity report")
    i.add_argument("artifact")
    i.set_defaults(fn=_cmd_inspect)

    lst = sub.add_parser("list", help="families, presets, tasks and targets")
    lst.set_defaults(fn=_cmd_list)
    for module in COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(sub)  # adds its subparser with set_defaults(fn=...)
    return p


# Subcommands that live with their stage: each module has `register(subparsers)`, cheap to import.
COMMAND_MODULES = ("edgeport.quantize.commands", "edgeport.runtime.generate_cli", "edgeport.serve.cli")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except EdgeportError as e:
        print(f"edgeport: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
