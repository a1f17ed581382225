"""Export contracts as data: input/output names, symbolic axes, tolerances, static axes per target."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeport.manifest import TensorSpec
from edgeport.reference_models.blocks import TASK_OUTPUTS

DEFAULT_OPSET = 17  # every op the encoders need; onnxruntime 1.20+ runs it


@dataclass
class Contract:
    inputs: list  # input names, in forward() order
    input_dims: list  # symbolic dims shared by every input, e.g. ["batch", "sequence"]
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
        axes = {n: dict(enumerate(self.input_dims)) for n in self.inputs}
        for name, dims in self.output_dims.items():
            axes[name] = {i: d for i, d in enumerate(dims) if isinstance(d, str)}
        return axes

    def input_specs(self, dtype: str, batch=None, seq=None) -> list:
        fix = {"batch": batch or "batch", "sequence": seq or "sequence"}
        return [TensorSpec(n, dtype, [fix.get(d, d) for d in self.input_dims]) for n in self.inputs]

    def output_specs(self, batch=None, seq=None) -> list:
        fix = {"batch": batch or "batch", "sequence": seq or "sequence"}
        return [TensorSpec(n, "float32", [fix.get(d, d) if isinstance(d, str) else d for d in dims])
                for n, dims in self.output_dims.items()]


def encoder_contract(cfg, task: str, hidden_size: int, input_names=None) -> Contract:
    """Inputs are exactly those the model uses: no token_type_ids when type_vocab_size is 0.

    `input_names`: what the task model says it takes (its `input_names`), when it says.
    """
    type_vocab = int(getattr(cfg, "type_vocab_size", 0) or 0)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if type_vocab > 0 else [])
    if input_names is not None:
        inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tuple(input_names)]
    input_dims = ["batch", "choices", "sequence"] if task == "multiple-choice" else ["batch", "sequence"]
    dims = {
        "feature-extraction": {"last_hidden_state": ["batch", "sequence", hidden_size]},
        "fill-mask": {"logits": ["batch", "sequence", cfg.vocab_size]},
        "text-classification": {"logits": ["batch", cfg.num_labels]},
        "token-classification": {"logits": ["batch", "sequence", cfg.num_labels]},
        "question-answering": {"start_logits": ["batch", "sequence"], "end_logits": ["batch", "sequence"]},
        "multiple-choice": {"logits": ["batch", "choices"]},
    }[task]
    assert tuple(dims) == TASK_OUTPUTS[task]
    # MEGA calls it max_positions; a family with neither has no table limit we know of
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "max_positions", None) or 512
    return Contract(inputs, input_dims, list(dims), dims, cfg.vocab_size, type_vocab, max_pos)


def contract_for(ref) -> Contract:
    """The encoder contract for a loaded reference (decoders have their own in export/decoders.py)."""
    hidden = getattr(ref.config, "hidden_size", None) or getattr(ref.config, "n_embd")
    names = getattr(ref.model, "input_names", None)
    names = names() if callable(names) else names
    return encoder_contract(ref.config, ref.task, hidden, names)
