"""Task heads as data, shared by the encoder families.

A `TaskHead` says, for one task: its output names and dims (what the export contracts and the runtime
read), what it reads from the backbone ("sequence": (B, S, H) token vectors; "pooled": (B, H), the
family's [CLS] vector), whether inputs carry a choices axis, and the default head module with its
transformers attribute name (so checkpoint keys match). `EncoderForTask` (blocks.py) builds and runs
heads from this table; a family whose transformers head differs passes its own modules as a chain of
(attribute, module) pairs per task, applied in order:

    EncoderForTask("convbert", backbone, task, hidden, num_labels,
                   heads={"fill-mask": [("generator_predictions", ...), ("generator_lm_head", ...)]})

Registering a new task (LUKE's entity tasks, say) is one call beside the family's code:

    from edgeport.reference_models.heads import register_head
    register_head("entity-classification", outputs=("logits",), reads="pooled",
                  dims=lambda cfg, hidden: {"logits": ["batch", cfg.num_labels]},
                  module=lambda hidden, labels: nn.Linear(hidden, labels), attr="classifier")

then list the task in the family's `register_family(tasks=...)`. A family with its own forward (extra
inputs) reads `head_for(task).outputs` / `output_dims(...)` and builds `head_for(task).module(...)`.
Dims are lists of ints or the symbolic "batch", "sequence", "choices".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from edgeport.errors import EdgeportError


def _single(y) -> tuple:
    return (y,)


@dataclass(frozen=True)
class TaskHead:
    """One task's head: outputs, dims, what it reads and its default module (module docstring)."""

    task: str
    outputs: tuple  # output names, in the model's return order
    reads: str  # "sequence" (B, S, H) | "pooled" (B, H) | "both": the pair (sequence, pooled)
    dims: Callable  # (cfg, hidden_size) -> {output name: dims}
    module: Callable | None = None  # (hidden_size, num_labels) -> nn.Module; None: the family must give one
    attr: str | None = None  # transformers' attribute name of the default module
    choices: bool = False  # inputs (B, C, S) run as (B*C, S) rows; one score per row -> (B, C)
    finish: Callable = _single  # head output -> tuple of outputs (QA splits start/end)


TASK_HEADS: dict[str, TaskHead] = {}


def register_head(task: str, **fields) -> TaskHead:
    """Register a TaskHead (fields as in the dataclass); raises RuntimeError when `task` has one."""
    if task in TASK_HEADS:
        raise RuntimeError(f"task head '{task}' registered twice")
    TASK_HEADS[task] = TaskHead(task, **fields)
    return TASK_HEADS[task]


def head_for(task: str) -> TaskHead:
    """The registered head; EdgeportError naming the known tasks otherwise."""
    if task not in TASK_HEADS:
        raise EdgeportError(f"unknown task '{task}'; tasks: {', '.join(TASK_HEADS)}")
    return TASK_HEADS[task]


def output_dims(task: str, cfg, hidden_size: int) -> dict:
    """{output name: dims} of `task`'s outputs for a config (vocab_size, num_labels) and hidden size."""
    head = head_for(task)
    dims = head.dims(cfg, hidden_size)
    assert tuple(dims) == head.outputs, (task, tuple(dims), head.outputs)
    return dims


def _linear(out: int | None = None):
    return lambda hidden, labels: nn.Linear(hidden, labels if out is None else out)


register_head("feature-extraction", outputs=("last_hidden_state",), reads="sequence",
              dims=lambda cfg, h: {"last_hidden_state": ["batch", "sequence", h]})
register_head("fill-mask", outputs=("logits",), reads="sequence", attr="cls",  # module: the family's MLM head
              dims=lambda cfg, h: {"logits": ["batch", "sequence", cfg.vocab_size]})
register_head("text-classification", outputs=("logits",), reads="pooled", module=_linear(), attr="classifier",
              dims=lambda cfg, h: {"logits": ["batch", cfg.num_labels]})
register_head("token-classification", outputs=("logits",), reads="sequence", module=_linear(), attr="classifier",
              dims=lambda cfg, h: {"logits": ["batch", "sequence", cfg.num_labels]})
register_head("question-answering", outputs=("start_logits", "end_logits"), reads="sequence", module=_linear(2),
              attr="qa_outputs", finish=lambda y: tuple(y.unbind(-1)),  # (B, S, 2) -> (B, S) x2
              dims=lambda cfg, h: {"start_logits": ["batch", "sequence"], "end_logits": ["batch", "sequence"]})
register_head("multiple-choice", outputs=("logits",), reads="pooled", module=_linear(1), attr="classifier",
              choices=True, dims=lambda cfg, h: {"logits": ["batch", "choices"]})


class NextSentenceHead(nn.Module):
    """transformers' *OnlyNSPHead as `cls`: `seq_relationship` Linear(H, 2) on the pooled vector -> (B, 2)
    logits, index 0 = "B follows A" (is next), 1 = random sentence (BertForNextSentencePrediction's labels)."""

    def __init__(self, hidden: int, labels: int = 2):
        super().__init__()
        self.seq_relationship = nn.Linear(hidden, 2)

    def forward(self, pooled):
        return self.seq_relationship(pooled)  # (B, 2)


class PreTrainingHeads(nn.Module):
    """transformers' *PreTrainingHeads as `cls`: the family's MLM head (its `predictions` registered here,
    so keys are `cls.predictions.*`) on the sequence and `seq_relationship` on the pooled vector.
    (sequence (B, S, H), pooled (B, H)) -> (prediction_logits (B, S, V), seq_relationship_logits (B, 2))."""

    def __init__(self, mlm_head: nn.Module, hidden: int):
        super().__init__()
        self.mlm = [mlm_head]  # a list: its `predictions` is registered below, not the head twice
        self.predictions = mlm_head.predictions
        self.seq_relationship = nn.Linear(hidden, 2)

    def forward(self, both):
        seq, pooled = both
        return self.mlm[0](seq), self.seq_relationship(pooled)


register_head("next-sentence-prediction", outputs=("logits",), reads="pooled", module=NextSentenceHead, attr="cls",
              dims=lambda cfg, h: {"logits": ["batch", 2]})
register_head("pre-training", outputs=("prediction_logits", "seq_relationship_logits"), reads="both", attr="cls",
              finish=tuple,  # module: PreTrainingHeads over the family's MLM head
              dims=lambda cfg, h: {"prediction_logits": ["batch", "sequence", cfg.vocab_size],
                                   "seq_relationship_logits": ["batch", 2]})
register_head("causal-lm", outputs=("logits",), reads="sequence", attr="lm_head",  # module: the family's LM head
              dims=lambda cfg, h: {"logits": ["batch", "sequence", cfg.vocab_size]})
