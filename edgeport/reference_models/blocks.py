"""Blocks shared by the encoder families: activations, attention, task heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError

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
    B, S, HD = q.shape
    D = HD // num_heads
    q = q.view(B, S, num_heads, D).transpose(1, 2)  # (B, H, S, D)
    k = k.view(B, -1, num_heads, D).transpose(1, 2)
    v = v.view(B, -1, num_heads, D).transpose(1, 2)
    # A Div by the scale (not a Mul): onnxruntime's BERT attention fusion matches this form.
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + bias  # (B, H, S, S)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v).transpose(1, 2).reshape(B, S, HD)


# Output names per task: the export contracts and the runtime's post-processing rely on them.
TASK_OUTPUTS = {
    "feature-extraction": ("last_hidden_state",),
    "fill-mask": ("logits",),
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "multiple-choice": ("logits",),  # inputs (B, C, S) -> logits (B, C)
}


class EncoderForTask(nn.Module):
    """A backbone under `prefix` (HF's attribute name, so checkpoint keys match) plus a task head.

    The backbone returns (sequence_output (B, S, H), pooled_output (B, H) or None).
    """

    HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")

    def __init__(self, prefix: str, backbone: nn.Module, task: str, hidden_size: int, num_labels: int,
                 mlm_head: nn.Module | None = None):
        super().__init__()
        self.prefix, self.task = prefix, task
        self.add_module(prefix, backbone)
        if task in ("text-classification", "token-classification"):
            self.classifier = nn.Linear(hidden_size, num_labels)
        elif task == "question-answering":
            self.qa_outputs = nn.Linear(hidden_size, 2)
        elif task == "multiple-choice":
            self.classifier = nn.Linear(hidden_size, 1)  # one score per (question, choice) row
        elif task == "fill-mask":
            self.cls = mlm_head
        elif task != "feature-extraction":
            raise EdgeportError(f"unknown task '{task}'")

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.prefix)

    def head_prefixes(self) -> tuple:
        return self.HEAD_PREFIXES + (f"{self.prefix}.pooler.",)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if self.task == "multiple-choice":  # (B, C, S) -> rows (B*C, S) -> scores (B, C)
            B, C, S = input_ids.shape
            flat = [t.reshape(B * C, S) if t is not None else None for t in (input_ids, attention_mask, token_type_ids)]
            _, pooled = self.backbone(*flat)
            return (self.classifier(pooled).view(B, C),)
        seq, pooled = self.backbone(input_ids, attention_mask, token_type_ids)
        if self.task == "feature-extraction":
            return (seq,)
        if self.task == "text-classification":
            return (self.classifier(pooled),)
        if self.task == "token-classification":
            return (self.classifier(seq),)
        if self.task == "question-answering":
            start, end = self.qa_outputs(seq).unbind(-1)  # (B, S) each
            return (start, end)
        return (self.cls(seq),)
