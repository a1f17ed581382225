"""PyTorch model -> ONNX with the contract's dynamic axes (encoders: batch, sequence; decoders: + past).

TorchScript-based `torch.onnx.export(dynamo=False)`: for these models it emits the same graph as the
dynamo exporter (checked: both match eager to ~1e-6) in a fraction of the time, and onnxruntime's
load-time fusions work on it. Models over 2 GB (protobuf's limit) are saved with external data
(model.onnx.data). Custom ops come from the lowering: its torch.onnx symbolics and opset domains.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from edgeport.errors import EdgeportError
from edgeport.export.lowerings import Lowered
from edgeport.manifest import TWO_GB

# Custom-op domains -> the runtimes that run their nodes (the manifest's custom_ops[].runtimes).
DOMAIN_RUNTIMES = {"com.microsoft": ["onnxruntime"], "trt.plugins": ["tensorrt"]}


def export_onnx(model: torch.nn.Module, contract, out_dir: Path, opset: int, symbolics: tuple = (),
                custom_opsets: dict | None = None, rewrites: tuple = ()) -> Lowered:
    """Trace `model` on `contract.sample_args()` and write `out_dir/model.onnx` (+ .data over 2 GB).

    contract: an encoder Contract or a DecoderContract (names, dynamic axes, sample args).
    symbolics: ((custom op "ns::op", torch.onnx symbolic), ...) registered at `opset` first;
    custom_opsets: {domain: version} of the nodes they emit. Encoders store tied weights once
    (`share_transposed_weights`). rewrites: fn(ModelProto) -> converter notes, applied in place to the
    traced graph before it is saved (the graph is loaded once for all of them; e.g. kv_layout.to_per_layer).
    Raises EdgeportError when onnx's checker rejects the graph.
    """
    import onnx

    for op, fn in symbolics:
        torch.onnx.register_custom_op_symbolic(op, fn, opset)
    path = out_dir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python ints
        torch.onnx.export(model, contract.sample_args(), str(path), input_names=contract.input_names,
                          output_names=contract.output_names, dynamic_axes=contract.dynamic_axes(),
                          opset_version=opset, dynamo=False, do_constant_folding=True, custom_opsets=custom_opsets)
    proto = onnx.load(str(path), load_external_data=True)
    shared = share_transposed_weights(proto) if contract.share_transposed else 0
    notes = {}
    for rewrite in rewrites:
        notes.update(rewrite(proto))
    size = sum(t.ByteSize() for t in proto.graph.initializer)
    for extra in out_dir.glob("*.data"):
        extra.unlink()
    if size > TWO_GB:  # protobuf's limit: keep the weights beside the graph
        onnx.save_model(proto, str(path), save_as_external_data=True, location="model.onnx.data",
                        size_threshold=1024)
    elif shared or rewrites:
        onnx.save_model(proto, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise EdgeportError(f"exported ONNX graph is invalid: {str(e).splitlines()[0]}") from None
    return Lowered("model.onnx", {"torch": torch.__version__, "onnx": onnx.__version__, "opset": opset,
                                  "exporter": "torch.onnx (TorchScript)", **notes})


def share_transposed_weights(proto) -> int:
    """Pattern: a 2-D initializer W_t that is exactly the transpose of another initializer W.

    Tied weights (an MLM head scoring against the word embeddings) reach the graph as W and a
    constant-folded copy W^T. Each copy is replaced by `Transpose(W)`, which onnxruntime folds
    again at load time: the file stores the matrix once. Returns how many copies were removed.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    by_shape = {}
    for t in proto.graph.initializer:
        if len(t.dims) == 2 and t.dims[0] * t.dims[1] >= 1024:  # small ones are not worth comparing
            by_shape.setdefault(tuple(t.dims), []).append(t)
    removed = []
    for (r, c), tensors in by_shape.items():
        for t in tensors:
            for src in by_shape.get((c, r), []):
                if src.name in removed or t.name in removed or src is t:
                    continue
                if np.array_equal(numpy_helper.to_array(src).T, numpy_helper.to_array(t)):
                    node = helper.make_node("Transpose", [src.name], [t.name], perm=[1, 0],
                                            name=f"/shared/{t.name}/Transpose")
                    proto.graph.node.insert(0, node)
                    removed.append(t.name)
                    break
    keep = [t for t in proto.graph.initializer if t.name not in removed]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return len(removed)


def custom_ops(path: Path) -> list:
    """[{"domain", "op_type", "count", "runtimes", "attributes"}] for every node outside the standard
    ONNX domain in the graph at `path`, sorted by (domain, op_type)."""
    import onnx

    found = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        if n.domain not in ("", "ai.onnx"):
            entry = found.setdefault((n.domain, n.op_type), {"count": 0, "attributes": set()})
            entry["count"] += 1
            entry["attributes"].update(a.name for a in n.attribute)
    return [{"domain": d, "op_type": t, "count": e["count"], "runtimes": DOMAIN_RUNTIMES.get(d, []),
             "attributes": sorted(e["attributes"])} for (d, t), e in sorted(found.items())]


def artifact_files(folder: Path, name: str) -> list:
    """The artifact and its external data file, if any (both are hashed)."""
    files = [folder / name]
    data = folder / (name + ".data")
    return files + ([data] if data.exists() else [])
