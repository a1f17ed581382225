"""`edgeport quantize ARTIFACT --scheme ...`: argument parsing only (cheap import: no torch, no onnx)."""

from __future__ import annotations

HELP = """schemes (resolved per target; see `supported` below):
  fp16           fp16 weights (ONNX: fp16 compute, I/O and LayerNorm/Softmax kept fp32)
  int8           int8 per-channel weights, activations quantized at run time (dynamic)
  int8-static    int8 weights and matmul activations, ranges calibrated on real text (QDQ on ONNX; TFLite alike)
  int4           int4 weights in blocks of 32 (ONNX decoders: int4-b32-a8); variants int4-b64, int4-b128-asym, int4-b32-a8 (int8 compute)
  or the axes:   weights=int4,activations=fp32,granularity=block,block=64,algorithm=rtn,symmetric=true
  auto           time fp32 and fp16/int8 (encoders; TFLite: int8) or int8/int4 (ONNX decoders) here, keep the fastest
                 whose accuracy against the float artifact meets --budget (-> <folder>-auto)
supported:
  onnx:     fp16, int8-dyn-pc, int8-dyn-pt, int8-static-pc, int8-static-pt, int4-b{16,32,64,128}[-asym][-a8]
  tflite:   fp16, int8-dyn-pc, int8-static-pc, int4-b{32,64,128}-a8
  tensorrt: fp16 (fp16 I/O, strongly typed), int8-static-pc, int4-b{32,64,128}
keep-float groups: embeddings, head, attention, ffn-down, norms, softmax, experts (tflite: embeddings, ffn-down), none"""


def _cmd_quantize(a):
    from edgeport.errors import EdgeportError

    if a.scheme.strip().lower() == "auto":
        if a.calibration_text or a.keep_float:
            raise EdgeportError("--scheme auto measures each scheme with its default policy: drop "
                                + ("--calibration-text" if a.calibration_text else "--keep-float"))
        from edgeport.quantize.auto import quantize_auto

        return quantize_auto(a.artifact, budget=a.budget, out_dir=a.output, seconds=a.measure_seconds, quiet=a.quiet)
    if a.budget is not None:
        raise EdgeportError("--budget goes with --scheme auto")
    from edgeport.quantize import quantize_artifact

    quantize_artifact(a.artifact, a.scheme, out_dir=a.output, calibration_text=a.calibration_text,
                      keep_float=a.keep_float, quiet=a.quiet)


def register(subparsers) -> None:
    """Add `edgeport quantize` to the CLI's subparsers (cheap: imports nothing of the quantizers)."""
    import argparse

    q = subparsers.add_parser("quantize", help="quantize an exported artifact (fp16, int8, int8-static, int4)",
                              epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("artifact", help="export folder (with edgeport.json) or its .onnx/.tflite")
    q.add_argument("--scheme", required=True, help="fp16 | int8 | int8-static | int4[-bN][-asym][-a8] | axes | auto "
                   "(measure fp32 and the schemes --quantize auto tries here, keep the fastest within --budget)")
    q.add_argument("--budget", metavar="BOUNDS", help="with --scheme auto: accuracy against the float artifact, e.g. "
                   "'top1>=0.99', 'cos>=0.995', 'maxdiff<=0.01' (default cos>=0.99 for feature-extraction, else top1>=0.99)")
    q.add_argument("--measure-seconds", type=float, default=2.0, metavar="S",
                   help="with --scheme auto: seconds of timed calls per candidate (default 2)")
    q.add_argument("-o", "--output", help="output folder (default: <folder>-<scheme tag>)")
    q.add_argument("--calibration-text", metavar="FILE",
                   help="text file, one passage per line, for int8-static (default: Python's reference manual)")
    q.add_argument("--keep-float", metavar="GROUPS",
                   help="comma-separated groups kept in float, or 'none' (default: the measured policy)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    q.set_defaults(fn=_cmd_quantize)
