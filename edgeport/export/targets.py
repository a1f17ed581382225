"""Targets as data: one row per target; nothing else in the export stage asks `target == ...`.

    name       shapes   integer inputs  graph route                   validated by
    onnx       dynamic  int64           torch.onnx (TorchScript)      onnxruntime (the runtime's Session)
    tflite     static   int32           Keras 3 + TFLiteConverter,    LiteRT (the runtime's Session)
                                        or litert-torch
    tensorrt   dynamic  int64           torch.onnx (+ plugin nodes    onnxruntime + the lowering's reference
                                        where a lowering registers    kernels for plugin nodes (no GPU here);
                                        them), then the parser-clean  tensorrt.check on every graph
                                        passes of export/tensorrt.py

A static target fixes batch and sequence at export time (`--batch`, `--seq-len`); its default length is
the longest of DEFAULT_SEQ_LEN the model's positions allow (decoders: leaving room to decode).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeport.errors import EdgeportError
from edgeport.export import tensorrt, tensorrt_build

DEFAULT_SEQ_LEN = 128


@dataclass(frozen=True)
class Target:
    """One target's row (see the module docstring's table)."""

    name: str
    static_shapes: bool  # batch and sequence fixed at export time
    input_dtype: str  # numpy dtype of integer inputs (token ids, masks, positions)
    route: str  # "onnx": a torch.onnx graph; "tflite": a .tflite flatbuffer
    validated_by: str  # how parity is checked (recorded in the manifest's converter block)
    needs_lowering: bool = False  # only families with a registered lowering export to it
    manifest_notes: tuple = ()  # extra converter notes the manifest carries for this target
    # fn(onnx path, LoweringContext) -> converter notes, run after the lowering's own passes
    graph_passes: tuple = ()
    # `--target auto` (export/auto.py): the module that must import to time this target's artifact on this
    # machine, or None when an artifact alone cannot be timed (TensorRT needs an engine built on a GPU host)
    timed_by: str | None = None
    # decoders' KV-cache layouts this target's graphs can take (export/kv_layout.py), the default first
    kv_layouts: tuple = ("stacked",)


TARGETS = {
    # per_layer first (the default): decode 12% (fp32) and 9% (int4) faster than stacked, 250M Mistral on
    # AVX2 (README "KV-cache layout"; benchmarks/bench_kv_layout.py)
    "onnx": Target("onnx", False, "int64", "onnx", "onnxruntime", timed_by="onnxruntime",
                   kv_layouts=("per_layer", "stacked")),
    "tflite": Target("tflite", True, "int32", "tflite", "litert", timed_by="ai_edge_litert"),
    "tensorrt": Target("tensorrt", False, "int64", "onnx", "onnxruntime + reference kernels for plugin nodes",
                       manifest_notes=(("engine", ("not built here: `edgeport build-engine FOLDER` on a host "
                                                   "with tensorrt, or the commands under tensorrt_build")),),
                       graph_passes=(tensorrt.parser_clean, tensorrt_build.build_commands_note)),
}


def get_target(name: str) -> Target:
    """The Target row; EdgeportError naming the known targets otherwise."""
    if name not in TARGETS:
        raise EdgeportError(f"unknown target '{name}'; targets: {', '.join(TARGETS)}")
    return TARGETS[name]


def check_kv_layout(target: Target, asked: str) -> str:
    """`asked` ("stacked" | "per_layer"; "per-layer" as the CLI spells it) as the manifest spells it;
    EdgeportError naming the layouts the target takes otherwise."""
    layout = asked.replace("-", "_")
    if layout not in target.kv_layouts:
        raise EdgeportError(f"--kv-layout for {target.name}: "
                            + " | ".join(k.replace("_", "-") for k in target.kv_layouts) + f" (got '{asked}')")
    return layout


def kv_layout_for(target: Target, contract, asked: str | None) -> str | None:
    """The KV-cache layout of a decoder export: `asked` (check_kv_layout) or the target's default (the first
    of its kv_layouts); None for a contract without a cache. EdgeportError for a layout the target does
    not take, or a layout asked of a model without a KV cache."""
    if getattr(contract, "kind", None) != "decoder":
        if asked is not None:
            raise EdgeportError("--kv-layout applies to text-generation decoders (a KV cache)")
        return None
    return target.kv_layouts[0] if asked is None else check_kv_layout(target, asked)


def fit_seq_len(target: Target, contract, asked: int | None) -> tuple[int, str | None]:
    """-> (sequence length, a note when the default was shortened to fit the model).

    A static target's length must fit the positions (decoders: a prefill leaving room to decode);
    raises EdgeportError when an asked length does not. Dynamic targets keep the asked or default length
    (it only sets the manifest's profile hints).
    """
    longest = contract.longest_static_len()
    if asked is None:
        if not target.static_shapes or longest >= DEFAULT_SEQ_LEN:
            return DEFAULT_SEQ_LEN, None
        what = "prefill length" if contract.kind == "decoder" else "length"
        return longest, (f"--seq-len {longest}: the longest static {what} this model's {contract.max_positions} "
                         "positions allow" + (" with room to decode" if contract.kind == "decoder" else "")
                         + f" (default {DEFAULT_SEQ_LEN})")
    if asked < 2:
        raise EdgeportError("--seq-len must be >= 2 and --batch >= 1")
    if target.static_shapes and asked > longest:
        if contract.kind == "decoder":
            raise EdgeportError(f"--seq-len is the prefill length and must leave room to decode: at most "
                                f"{longest} for this model's {contract.max_positions} positions")
        raise EdgeportError(f"--seq-len {asked} is longer than the model's {contract.max_positions} positions")
    return asked, None
