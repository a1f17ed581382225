"""PyTorch reference -> TFLite with litert-torch, for families without a Keras reference.

litert-torch traces with torch.export at one static shape and lowers to TFLite builtin ops; the
wrapper below takes int32 inputs (what TFLite runtimes feed) and returns a dict, so the .tflite
signature carries the contract's input and output names.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from edgeport.errors import EdgeportError
from edgeport.export.contracts import Contract
from edgeport.export.lowerings import Lowered
from edgeport.export.validate import sample_inputs


class Int32Named(torch.nn.Module):
    """int32 keyword inputs -> the model's int64 positional inputs; outputs as a name -> tensor dict."""

    def __init__(self, model: torch.nn.Module, contract: Contract):
        super().__init__()
        self.model, self.inputs, self.outputs = model, list(contract.inputs), list(contract.outputs)

    def forward(self, **feeds):
        outs = self.model(*[feeds[n].long() for n in self.inputs])
        return dict(zip(self.outputs, outs))


def export_tflite_torch(ref, contract: Contract, out_dir: Path, batch: int, seq: int) -> Lowered:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import litert_torch
    except ImportError:
        raise EdgeportError(f"TFLite export of '{ref.family.name}' needs litert-torch: "
                            "pip install 'edgeport[tflite]'") from None
    feeds = sample_inputs(contract, batch, seq, padded_rows=0)
    sample = {n: torch.from_numpy(v).to(torch.int32) for n, v in feeds.items()}
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # litert-torch prints a progress tree
            edge = litert_torch.convert(Int32Named(ref.model, contract).eval(), (), sample_kwargs=sample)
            edge.export(str(out_dir / "model.tflite"))
    except Exception as e:  # torch.export / MLIR errors: long, many types
        raise EdgeportError(f"litert-torch could not convert {ref.family.name}: "
                            f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}") from None
    return Lowered("model.tflite", {"torch": torch.__version__, "litert_torch": litert_torch.__version__
                                    if hasattr(litert_torch, "__version__") else "unknown",
                                    "route": "litert-torch (torch.export -> TFLite builtins)",
                                    "static_shape": [batch, seq], "input_dtype": "int32"})
