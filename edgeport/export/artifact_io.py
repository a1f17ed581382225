"""What a written artifact itself declares: its input and output names (per TFLite signature).

The manifest's inputs and outputs come from the export contract; an exporter can still drop an input
the graph does not use (torch.onnx removes unused inputs silently: MEGA's token_type_ids once did) or
name a TFLite signature differently. `check_io` compares the two after conversion so a manifest never
promises inputs its artifact lacks. Readers are plain format readers (onnx's protobuf, LiteRT's
signature list), not the exporters that wrote the file.
"""

from __future__ import annotations

from pathlib import Path

from edgeport.errors import EdgeportError


def onnx_io(path: str | Path) -> dict:
    """{None: (input names, output names)} of an ONNX graph, in graph order; initializers that older
    exporters also list as graph inputs are left out. Weights in external data are not read."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return {None: ([i.name for i in graph.input if i.name not in weights], [o.name for o in graph.output])}


def tflite_io(path: str | Path) -> dict:
    """{signature key: (input names, output names)} of a .tflite file, as LiteRT's Interpreter lists
    its signatures (`get_signature_list()`; names sorted as LiteRT gives them). EdgeportError when the
    file has no signature (the runtime and the mobile demo run artifacts by signature)."""
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_path=str(path)).get_signature_list()
    if not sigs:
        raise EdgeportError(f"{path}: the .tflite has no signature (the runtime feeds inputs by signature name)")
    return {key: (list(s["inputs"]), list(s["outputs"])) for key, s in sigs.items()}


READERS = {"onnx": onnx_io, "tflite": tflite_io}  # by Target.route


def check_io(route: str, path: str | Path, inputs: list, outputs: list) -> str | None:
    """Compare the artifact's declared I/O with the manifest's TensorSpecs `inputs`/`outputs` (as name
    sets: TFLite lists signature names sorted). Returns the TFLite signature key when the artifact has
    exactly one signature, else None (ONNX; decoders' prefill/decode, which the manifest's `decoder`
    block names). Raises EdgeportError naming the difference when any signature's names differ."""
    want_in, want_out = sorted(s.name for s in inputs), sorted(s.name for s in outputs)
    found = READERS[route](path)
    for key, (ins, outs) in found.items():
        where = f" (signature '{key}')" if key is not None else ""
        if sorted(ins) != want_in:
            raise EdgeportError(f"{Path(path).name}{where}: graph inputs {sorted(ins)} differ from the contract's "
                                f"{want_in} (an exporter dropped or renamed an input); nothing was written")
        if sorted(outs) != want_out:
            raise EdgeportError(f"{Path(path).name}{where}: graph outputs {sorted(outs)} differ from the "
                                f"contract's {want_out}; nothing was written")
    keys = [k for k in found if k is not None]
    return keys[0] if len(keys) == 1 else None
