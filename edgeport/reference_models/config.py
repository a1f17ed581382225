"""Typed configs read from HF `config.json` dicts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from edgeport.errors import EdgeportError


@dataclass
class ModelConfig:
    """Fields shared by every family; each family subclasses with its own typed fields."""

    model_type: ClassVar[str] = ""
    vocab_size: int = 30522
    id2label: dict | None = None  # classification heads: {index: label}
    pad_token_id: int = 0
    # single_label_classification | multi_label_classification | regression | None (from num_labels)
    problem_type: str | None = None

    @classmethod
    def from_hf(cls, d: dict) -> "ModelConfig":
        """Known fields from an HF config dict; unknown keys are ignored, wrong types are errors."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in d and d[f.name] is not None:
                kwargs[f.name] = d[f.name]
        if kwargs.get("id2label"):
            kwargs["id2label"] = {int(k): str(v) for k, v in kwargs["id2label"].items()}
        try:
            cfg = cls(**kwargs)
        except TypeError as e:
            raise EdgeportError(f"config does not fit {cls.__name__}: {e}") from None
        cfg.validate()
        return cfg

    def validate(self):
        """Raise EdgeportError on values that cannot build a model."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and isinstance(v, int) and v < 0:
                raise EdgeportError(f"config: {f.name} must be >= 0, got {v}")

    @property
    def num_labels(self) -> int:
        """Classification labels: len(id2label), else 2 (transformers' default)."""
        return len(self.id2label) if self.id2label else 2

    def score_function(self) -> str:
        """What turns a text-classification head's logits into scores: "none" for regression, "sigmoid"
        for multi-label or one logit, "softmax" otherwise. The defaults of transformers' text-classification
        pipeline (TextClassificationPipeline.postprocess, `function_to_apply`, transformers 4.x and 5.x)."""
        if self.problem_type == "regression":
            return "none"
        if self.problem_type == "multi_label_classification" or self.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def labels(self) -> dict:
        """{"index": label} for the manifest (LABEL_0, LABEL_1 when the config names none)."""
        return {str(i): lab for i, lab in (self.id2label or {0: "LABEL_0", 1: "LABEL_1"}).items()}


@dataclass
class EncoderConfig(ModelConfig):
    """Fields every BERT-like encoder family shares (bert and its derivatives, mobilebert, deberta);
    defaults are BERT-base's, and a family re-declares only the defaults that differ. MEGA keeps its
    own config: no attention heads, no hidden_act, `max_positions` instead of max_position_embeddings."""

    vocab_size: int = 30522
    hidden_size: int = 768  # width of the residual stream between blocks
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # feed-forward width
    hidden_act: str = "gelu"  # blocks.ACTIVATIONS name
    max_position_embeddings: int = 512  # the position table's length: the longest input
    type_vocab_size: int = 2  # 0: no token type embedding, the model takes no token_type_ids
    initializer_range: float = 0.02  # std of random-preset weights
    layer_norm_eps: float = 1e-12
