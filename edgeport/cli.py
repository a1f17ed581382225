"""`edgeport export|run|inspect|list`: argument parsing only; the work lives in the stages.

User mistakes (EdgeportError) print one line and exit 2; nothing runs at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import signal
import sys
import threading

from edgeport.errors import EdgeportError


def _cmd_export(a):
    if a.target == "auto" or a.quantize == "auto":
        return _cmd_export_auto(a)
    if a.budget is not None:
        raise EdgeportError("--budget goes with --target auto or --quantize auto")
    from edgeport.export import export

    out = export(a.model, target=a.target, task=a.task, checkpoint=a.checkpoint, out_dir=a.output,
                 seq_len=a.seq_len, batch=a.batch, opset=a.opset, lowering=a.lowering, quiet=a.quiet,
                 quantize=a.quantize, allow_random_head=a.allow_random_head, streaming=a.streaming,
                 memory_check=not a.no_memory_check, cpu_class=a.cpu_class, kv_layout=a.kv_layout)
    if a.quantize and not a.streaming:  # --streaming writes the quantized artifact itself
        from edgeport.quantize import quantize_artifact

        quantize_artifact(out, a.quantize, quiet=a.quiet)


def _cmd_export_auto(a):
    """--target auto / --quantize auto: export/auto.py measures; this wires in the quantize stage, which the
    export stage may not import (DESIGN.md's one-way data flow)."""
    from edgeport.export.auto import export_auto

    if a.cpu_class is not None:
        raise EdgeportError("--target auto / --quantize auto measure on this machine: drop --cpu-class")
    if a.kv_layout is not None:
        raise EdgeportError("--target auto / --quantize auto export each target's default KV-cache layout: "
                            "drop --kv-layout")
    if a.streaming or a.batch != 1:
        raise EdgeportError("--target auto / --quantize auto time candidates at batch 1 in memory: drop "
                            + ("--streaming" if a.streaming else "--batch"))
    if a.quantize not in (None, "auto"):
        raise EdgeportError(f"--target auto takes --quantize auto (the precisions are measured), not '{a.quantize}'")
    quantizer = None
    if a.quantize == "auto":
        from edgeport.quantize import quantize_artifact

        def quantizer(folder, scheme, out):
            return quantize_artifact(folder, scheme, out_dir=out, quiet=True)

    export_auto(a.model, task=a.task, checkpoint=a.checkpoint, out_dir=a.output, target=a.target, budget=a.budget,
                lowering=a.lowering, quantizer=quantizer, seq_len=a.seq_len, opset=a.opset,
                seconds=a.measure_seconds, quiet=a.quiet, allow_random_head=a.allow_random_head,
                memory_check=not a.no_memory_check)


def _cmd_inspect(a):
    from edgeport.manifest import read_manifest
    from edgeport.runtime import load

    m, folder = read_manifest(a.artifact)
    sess, why_not = _inspect_session(m, folder, load)
    print(f"{folder / m.artifact}: {m.family} {m.task} for {m.target} ({m.precision}), "
          f"{m.size_bytes / 2**20:.1f} MiB, sha256 {m.sha256[:16]}...")
    print(f"  source: {m.source}{' (random weights)' if m.random_weights else ''}")
    if m.quantization:
        from edgeport.manifest import float_artifact_status

        path, words = float_artifact_status(m, folder)
        print(f"  quantized ({m.quantization.get('tag')}) from: {os.path.normpath(path) if path else words}")
    if m.signature_key:
        print(f"  signature: {m.signature_key}")
    _print_io(sess.inputs if sess else m.inputs, sess.outputs if sess else m.outputs)
    print(f"  backend: {sess.backend if sess else why_not}; converter: {json.dumps(m.converter)}")
    if m.converter.get("lowering"):
        c = m.converter.get("lowering_choice") or {}
        why = f" ({c['why']}; {c['precision']} on CPU class {c['cpu_class']}, {c['cpu_class_from']})" if c else ""
        print(f"  lowering: {m.converter['lowering']}{why}")
    _print_parity(m)
    if m.auto:  # export --target auto / --quantize auto: every candidate measured
        from edgeport.export.measuring import format_table

        print(f"  auto: kept {m.auto.get('chosen')}, the fastest of the candidates meeting the budget (*)")
        print(format_table(m.auto))
    if m.tokenizer:
        print(f"  tokenizer: {m.tokenizer.file}; max sequence length {m.max_sequence_length}")
    for note in m.notes:
        print(f"  note: {note}")


def _inspect_session(m, folder, load):
    """(runtime session, None), or (None, why) when the artifact would take more than half the memory this
    process can still use (a streamed 7B export may not fit where it was made): inspect then shows the
    manifest's inputs and outputs, which the export checked equal to the graph's."""
    from edgeport.runtime.machine import available_memory_bytes

    avail = available_memory_bytes()
    if avail is not None and m.size_bytes > avail / 2:
        return None, (f"not loaded ({m.size_bytes / 2**30:.1f} GiB artifact, {avail / 2**30:.1f} GiB available; "
                      f"inputs and outputs from the manifest)")
    return load(folder), None


def _print_io(inputs, outputs) -> None:
    """One row per input and output (kind, name, dtype, shape), the name column as wide as the longest name
    (per-layer KV caches: past_key_values.{i}.key)."""
    width = max([16] + [len(s.name) for s in (*inputs, *outputs)])
    for kind, specs in (("input", inputs), ("output", outputs)):
        for s in specs:
            print(f"  {kind:6s} {s.name:{width}s} {s.dtype:8s} {s.shape}")


# Decoder parity checks compare the whole cache, stacked over layers (export/decoders.py run_plan); a
# per-layer export's outputs hold it as present.{i}.key / present.{i}.value.
_PER_LAYER_CHECK_NAMES = {"present_keys": "present.*.key", "present_values": "present.*.value"}


def _print_parity(m) -> None:
    """The parity report: a summary line, then one row per check (output, shape, padded rows, max abs
    diff, tolerance, pass/FAIL), as the export validated them against the reference. A quantized export
    carries its float export's checks: then the summary line, labelled so, and the quantized artifact's
    accuracy against the float one (_print_accuracy) instead of the rows; a quantized export with no checks
    (streamed int4, made straight from the checkpoint) still shows its accuracy."""
    if not m.parity:
        print("  parity: no checks recorded")
        if m.quantization:
            _print_accuracy(m.quantization)
        return
    names = _PER_LAYER_CHECK_NAMES if m.converter.get("kv_layout") == "per_layer" else {}
    worst = max(m.parity, key=lambda c: c.max_abs_diff)
    what = "parity of the float export, against the reference" if m.quantization else "parity"
    print(f"  {what}: {'pass' if m.parity_passed else 'FAIL'} over {len(m.parity)} checks, worst "
          f"{worst.max_abs_diff:.2e} ({names.get(worst.output, worst.output)} at {worst.shape}, "
          f"tolerance {worst.tolerance:.1e})")
    if m.quantization:
        _print_accuracy(m.quantization)
        return
    width = max([20] + [len(names.get(c.output, c.output)) for c in m.parity])
    shape = "[batch, past, new]" if m.decoder else "shape"  # decoders record the cache step, not a tensor shape
    print(f"    {'output':{width}s} {shape:18s} {'padded':>6s} {'max abs diff':>12s} {'tolerance':>9s}  result")
    for c in m.parity:
        print(f"    {names.get(c.output, c.output):{width}s} {c.shape!s:18s} {c.padded_rows:6d} "
              f"{c.max_abs_diff:12.2e} {c.tolerance:9.1e}  {'pass' if c.passed else 'FAIL'}")


def _print_accuracy(q: dict) -> None:
    """The quantized artifact against its float export, as `edgeport quantize` measured it (the manifest's
    quantization.accuracy): decoders held-out perplexity, greedy next-token agreement and the largest logit
    difference; other tasks each recorded metric."""
    acc = dict(q.get("accuracy") or {})
    if not acc:
        print(f"  accuracy ({q.get('tag')} vs float): not recorded")
        return
    on = acc.pop("text", None) or f"{acc.pop('texts', '?')} held-out texts"
    if "perplexity_float" in acc:
        line = (f"perplexity {acc['perplexity_float']:.3f} -> {acc['perplexity_quantized']:.3f} "
                f"({acc['perplexity_relative_delta']:+.2%}), greedy next-token agreement "
                f"{acc['greedy_next_token_agreement']:.1%} over {acc.get('tokens')} tokens, max abs logit diff "
                f"{acc['max_abs_logit_diff']:.3g}")
    else:
        acc.pop("reference_absmax", None)
        line = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in acc.items())
    print(f"  accuracy ({q.get('tag')} vs float, on {on}): {line}")


def _route_note(target, fam) -> str:
    if target.route != "tflite":
        return ""
    return " (Keras route)" if fam.keras_build else " (litert-torch route)"


def offered_targets(name: str, fam) -> list:
    """Target names `edgeport list` offers for family `name` (every task of the family exports to each;
    tests/test_list_offers.py walks them): the family's own, then any other target it can reach."""
    from edgeport.export import TARGETS
    from edgeport.export.lowerings import lowerings_for

    return list(fam.targets) + [t for t, tgt in TARGETS.items()
                                if t not in fam.targets and (not tgt.needs_lowering or lowerings_for(name, t))]


def _cmd_list(a):
    from edgeport.export import TARGETS
    from edgeport.export.lowerings import lowerings_for
    from edgeport.reference_models import families

    for name, fam in sorted(families().items()):
        print(f"{name}")
        print(f"  presets: {', '.join(fam.presets)}")
        print(f"  tasks:   {', '.join(fam.tasks)} (default {fam.default_task})")
        offered = offered_targets(name, fam)
        print(f"  targets: {', '.join(t + _route_note(TARGETS[t], fam) for t in offered)}")
        lows = [f"{t}: {', '.join(lowerings_for(name, t))}" for t in offered if lowerings_for(name, t)]
        if lows:  # every name `--lowering` accepts for this family, per target
            print(f"  lowerings (--lowering): {'; '.join(lows)}")
    print(f"targets known: {', '.join(TARGETS)}")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose usage errors are one line, exit status 2 (argparse's own status), as
    every other user mistake: `edgeport: error: MESSAGE (see `edgeport --help`)` for the top level,
    `edgeport: error: CMD: MESSAGE (see `edgeport CMD --help`)` for a subcommand (the program name once).
    Subparsers made through add_subparsers get this class too (argparse's parser_class default).
    Arguments no parser takes are reported by the subcommand's parser, whose help lists what it takes."""

    def error(self, message):
        cmd = self.prog.partition(" ")[2]  # "" for the top-level parser, "run" for `edgeport run`
        print(f"edgeport: error: {cmd + ': ' if cmd else ''}{message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        """argparse's parse_args, with unrecognized arguments refused by the chosen subcommand's parser."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = getattr(self, "subcommands", {}).get(getattr(parsed, "cmd", None), self)
            sub.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _version() -> str:
    """The installed distribution's version (importlib.metadata), else edgeport.__version__ (a source tree
    on sys.path without an install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeport")
    except PackageNotFoundError:
        import edgeport

        return edgeport.__version__


def parser() -> argparse.ArgumentParser:
    """The `edgeport` argument parser: export, run, inspect, list, and the commands of COMMAND_MODULES."""
    p = OneLineErrorParser(prog="edgeport", description="Export transformer models, validated, and run them.")
    p.add_argument("--version", action="version", version=f"edgeport {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("export", help="export a model to ONNX, TFLite or TensorRT's ONNX, validated against "
                       "its reference")
    e.add_argument("--model", required=True, help="preset (see `edgeport list`), HF folder, or hub id")
    e.add_argument("--target", default="onnx", help="onnx | tflite | tensorrt | auto (default onnx; tensorrt: ONNX for "
                   "TensorRT's parser, for families with a tensorrt lowering, see `edgeport list`; auto: measure "
                   "every target and lowering here, keep the fastest within --budget)")
    e.add_argument("--task", help="task head (default: the family's default)")
    e.add_argument("--checkpoint", help="HF folder with weights for a preset's architecture")
    e.add_argument("--seq-len", type=int, help="static sequence length of static-shape targets (TFLite); for "
                   "decoders the prefill length, which must leave room to decode (default: the longest of 128 "
                   "the model's positions allow)")
    e.add_argument("--batch", type=int, default=1, help="static batch size of static-shape targets (TFLite; default 1)")
    e.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    e.add_argument("--lowering", help="a registered lowering for custom ops (default: the one measured fastest "
                   "for this CPU class and precision, edgeport/ops/lowering_defaults.json, else the family's default)")
    e.add_argument("--cpu-class", help="take the measured default lowering of another machine's CPU class "
                   "(avx2 | avx512_vnni; default: this machine's; --lowering still wins); --target onnx only: "
                   "the defaults are onnxruntime's on x86 CPUs, and tflite/tensorrt refuse it rather than ignore it")
    e.add_argument("--kv-layout", choices=["stacked", "per-layer"], help="decoders: the KV cache in the graph, "
                   "one stacked past/present per direction (L, B, KV, P, D) or one per layer and direction "
                   "(past_key_values.{i}.key/value -> present.{i}.key/value, as transformers and onnxruntime-genai "
                   "name them; ONNX only) (default: per-layer for ONNX; TFLite and TensorRT: stacked only)")
    e.add_argument("--quantize", metavar="SCHEME", help="also write a quantized artifact (see `edgeport quantize -h`); "
                   "auto: measure fp32 and the quantized precisions too, keep the fastest within --budget; "
                   "with --streaming: int4 schemes only, written straight from the checkpoint (no fp32 artifact)")
    e.add_argument("--budget", metavar="BOUNDS", help="with auto: accuracy against the float reference the kept "
                   "candidate must reach, e.g. 'top1>=0.99', 'cos>=0.995', 'maxdiff<=0.01' (comma = and; default "
                   "cos>=0.99 for feature-extraction, top1>=0.99 otherwise)")
    e.add_argument("--measure-seconds", type=float, default=2.0, metavar="S",
                   help="with auto: seconds of timed calls per candidate (default 2)")
    e.add_argument("--allow-random-head", action="store_true", help="export a checkpoint that lacks the task "
                   "head's weights with random ones (marked random_weights; default: refused, naming them)")
    e.add_argument("--streaming", action="store_true", help="decoders from a safetensors folder: weights read "
                   "from the memory-mapped checkpoint and written one tensor at a time (about one copy in memory)")
    e.add_argument("--no-memory-check", action="store_true", help="skip the refusal when the estimated peak "
                   "memory of the export exceeds what the machine has available")
    e.add_argument("-o", "--output", help="output folder (default edgeport-out/<model>-<task>-<target>)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    e.set_defaults(fn=_cmd_export)

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
    p.subcommands = sub.choices  # {name: its parser}, for parse_args' unrecognized-arguments error
    return p


# Subcommands that live with their stage: each module has `register(subparsers)`, cheap to import.
COMMAND_MODULES = ("edgeport.runtime.run_cli", "edgeport.quantize.commands", "edgeport.runtime.generate_cli",
                   "edgeport.serve.cli", "edgeport.export.tensorrt_build", "edgeport.runtime.bench_cli")


# Commands whose third-party stderr noise is filtered (edgeport/noise.py); not `serve`, which logs for hours.
QUIET_COMMANDS = ("export", "quantize", "run", "generate", "inspect", "bench", "build-engine")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so that every `finally` (temp folders, auto's work folder,
    atomic_output_dir) runs as on Ctrl-C; main() then returns 143 (128 + SIGTERM)."""


@contextlib.contextmanager
def _sigterm_unwinds():
    """While the command runs, SIGTERM raises Terminated instead of killing the process without cleanup
    (Python's default). Servers install their own handler on top (uvicorn's graceful shutdown)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv=None) -> int:
    """Run the CLI on `argv` (default sys.argv[1:]); returns the exit status: 0, 2 on EdgeportError (one line
    on stderr; out of memory too), 130 on Ctrl-C, 143 on SIGTERM (temp and work folders removed in both
    cases)."""
    args = parser().parse_args(argv)
    from edgeport.noise import third_party_quiet

    try:
        with third_party_quiet(args.cmd in QUIET_COMMANDS), _sigterm_unwinds():
            args.fn(args)
    except EdgeportError as e:
        print(f"edgeport: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("edgeport: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("edgeport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error (before OSError, its base)
        sys.stdout = open(os.devnull, "w")
        return 0
    except (MemoryError, OSError) as e:  # std::bad_alloc, mmap ENOMEM: past the memory check, or it was skipped
        if not isinstance(e, MemoryError) and e.errno != errno.ENOMEM:
            raise
        print(f"edgeport: error: out of memory during `{args.cmd}` ({type(e).__name__}: {e or 'allocation failed'});"
              f" free memory, raise the limit (ulimit -v, cgroup), or take a path that needs less (export "
              f"--streaming for safetensors decoder checkpoints); nothing was written", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
