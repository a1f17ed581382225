"""Export contracts as data: input/output names, symbolic axes, tolerances, static axes per target."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeport.manifest import TensorSpec
from edgeport.reference_models.blocks import TASK_OUTPUTS

DEFAULT_OPSET = 17  # every op the encoders need; onnxruntime 1.20+ runs it


@dataclass
class Contract:
    inputs: list  # input names, in forward() order
    outputs: list  # output names
    output_dims: dict  # output name -> dims (ints or "batch"/"sequence")
    vocab_size: int
    type_vocab_size: int
    max_positions: int
    # |artifact - reference| <= atol + rtol * max|reference|, per output (fp32 artifacts)
    atol: float = 1e-4
    rtol: float = 1e-4
    # TFLite needs every axis static: batch and sequence are fixed at export time.
    tflite_static_axes: tuple = ("batch", "sequence")
    notes: dict = field(default_factory=dict)

    def dynamic_axes(self) -> dict:
        axes = {n: {0: "batch", 1: "sequence"} for n in self.inputs}
        for name, dims in self.output_dims.items():
            axes[name] = {i: d for i, d in enumerate(dims) if isinstance(d, str)}
        return axes

    def input_specs(self, dtype: str, batch=None, seq=None) -> list:
        return [TensorSpec(n, dtype, [batch or "batch", seq or "sequence"]) for n in self.inputs]

    def output_specs(self, batch=None, seq=None) -> list:
        fix = {"batch": batch or "batch", "sequence": seq or "sequence"}
        return [TensorSpec(n, "float32", [fix.get(d, d) if isinstance(d, str) else d for d in dims])
                for n, dims in self.output_dims.items()]


def encoder_contract(cfg, task: str, hidden_size: int) -> Contract:
    """Inputs are exactly those the model uses: no token_type_ids when type_vocab_size is 0."""
    type_vocab = int(getattr(cfg, "type_vocab_size", 0) or 0)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if type_vocab > 0 else [])
    dims = {
        "feature-extraction": {"last_hidden_state": ["batch", "sequence", hidden_size]},
        "fill-mask": {"logits": ["batch", "sequence", cfg.vocab_size]},
        "text-classification": {"logits": ["batch", cfg.num_labels]},
        "token-classification": {"logits": ["batch", "sequence", cfg.num_labels]},
        "question-answering": {"start_logits": ["batch", "sequence"], "end_logits": ["batch", "sequence"]},
    }[task]
    assert tuple(dims) == TASK_OUTPUTS[task]
    return Contract(inputs, list(dims), dims, cfg.vocab_size, type_vocab, cfg.max_position_embeddings)
