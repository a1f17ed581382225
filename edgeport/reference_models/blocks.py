"""Blocks shared by the encoder families: activations, attention, the task-model wrapper (heads: heads.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.heads import head_for

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact erf form
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str):
    """The activation function named by an HF config (`hidden_act`); EdgeportError for unknown names."""
    if name not in ACTIVATIONS:
        raise EdgeportError(f"activation '{name}' is not supported; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def init_weights(module: nn.Module, std: float):
    """HF-style init for random-weight presets: normal(0, std) matrices, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def additive_mask(attention_mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(B, S) 1/0 mask -> (B, 1, 1, S) bias: 0 where attended, dtype-min where padded."""
    m = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


def attention(q, k, v, bias, num_heads: int):
    """Scaled dot-product attention over (B, S, H*D) projections; returns (B, S, H*D)."""
    D = q.shape[-1] // num_heads  # only the scale uses it; math.sqrt makes it a constant when traced
    q, k, v = (split_heads(t, num_heads) for t in (q, k, v))  # (B, H, S, D)
    # A Div by the scale (not a Mul): onnxruntime's BERT attention fusion matches this form.
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + bias  # (B, H, S, S)
    probs = torch.softmax(scores, dim=-1)
    return merge_heads(torch.matmul(probs, v))


# Both reshapes below read their sizes from the reshaped tensor itself and leave the head width to -1:
# torch.onnx traces that as Concat(Gather(Shape(x), 0), Gather(Shape(x), 1), const, -1), which
# onnxruntime's ReshapeFusion folds into a constant shape [0, 0, ...] at load. Sizes taken from another
# tensor (q's length for k) or a computed width (Div) stay a Shape/Gather/Unsqueeze/Div/Concat chain per
# reshape at run time (MobileBERT: 264 more nodes after onnxruntime's optimizations; README, "MobileBERT re-measure").


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, S, H*D) -> (B, H, S, D), any float dtype; a view of `x` (transposed)."""
    return x.view(x.shape[0], x.shape[1], num_heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, S, D) -> (B, S, H*D), any float dtype (a copy when `x` is not contiguous after the transpose)."""
    x = x.transpose(1, 2)
    return x.reshape(x.shape[0], x.shape[1], -1)


class EncoderForTask(nn.Module):
    """A backbone under `prefix` (HF's attribute name, so checkpoint keys match) plus the task's head
    (heads.py): the registry's default module under its transformers name, or the family's own chain
    `heads[task] = [(attribute, module), ...]` applied in order (`mlm_head`: the fill-mask head as `cls`).

    `encode(...)` returns (sequence_output (B, S, H), pooled_output (B, H) or None); by default the
    backbone's own return. Multiple-choice inputs (B, C, S) run as (B*C, S) rows -> logits (B, C).
    """

    HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")

    def __init__(self, prefix: str, backbone: nn.Module, task: str, hidden_size: int, num_labels: int,
                 mlm_head: nn.Module | None = None, heads: dict | None = None):
        super().__init__()
        self.prefix, self.task, self.head = prefix, task, head_for(task)
        self.add_module(prefix, backbone)
        chain = dict(heads or {}).get(task)
        if chain is None and task == "fill-mask" and mlm_head is not None:
            chain = [("cls", mlm_head)]
        if chain is None and self.head.module is not None:
            chain = [(self.head.attr, self.head.module(hidden_size, num_labels))]
        if chain is None and self.head.attr is not None:
            raise EdgeportError(f"task '{task}' needs the family's own head module")
        self.head_chain = [name for name, _ in chain or ()]
        for name, module in chain or ():
            self.add_module(name, module)

    @property
    def backbone(self) -> nn.Module:
        """The backbone module (registered under `prefix`)."""
        return getattr(self, self.prefix)

    def head_prefixes(self) -> tuple:
        """Checkpoint key prefixes that belong to heads (kept as they are; missing ones are warned about, not
        fatal)."""
        return self.HEAD_PREFIXES + (f"{self.prefix}.pooler.",)

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """-> (sequence_output (B, S, H), pooled_output (B, H) or None)."""
        return self.backbone(input_ids, attention_mask, token_type_ids)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if self.head.choices:  # (B, C, S) -> rows (B*C, S)
            B, C, S = input_ids.shape
            input_ids, attention_mask, token_type_ids = (t.reshape(B * C, S) if t is not None else None
                                                         for t in (input_ids, attention_mask, token_type_ids))
        seq, pooled = self.encode(input_ids, attention_mask, token_type_ids)
        y = {"pooled": pooled, "sequence": seq}.get(self.head.reads, (seq, pooled))  # "both": the pair
        for name in self.head_chain:
            y = getattr(self, name)(y)
        return (y.view(B, C),) if self.head.choices else self.head.finish(y)
