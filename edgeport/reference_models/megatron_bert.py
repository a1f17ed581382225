"""MegatronBERT (https://arxiv.org/abs/1909.08053): BERT with pre-LayerNorm layers.

Differences from BERT, as in transformers' MegatronBert* classes (whose names our modules keep):
no LayerNorm after the embeddings; each layer normalises its input before attention
(`attention.ln`) and before the feed-forward (`ln`), with residuals around the un-normalised
tensors; the encoder ends with one final LayerNorm (`encoder.ln`). The blocks are BERT's
(`bert.py`), switched by `pre_layer_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeport.reference_models.bert import BertConfig, build_bert
from edgeport.reference_models.blocks import EncoderForTask
from edgeport.reference_models.registry import ENCODER_TASKS, register_family


@dataclass
class MegatronBertConfig(BertConfig):
    """MegatronBERT's config: BERT's fields with the pre-LayerNorm layout."""
    model_type = "megatron-bert"
    pre_layer_norm: ClassVar[bool] = True
    vocab_size: int = 29056  # the cased Megatron vocabulary
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096


PRESETS = {
    # https://huggingface.co/nvidia/megatron-bert-cased-345m (BERT-345M: transformers' MegatronBertConfig defaults)
    "megatron-bert": {"model_type": "megatron-bert"},
    # A 2-layer config for tests.
    "megatron-bert-tiny": {"model_type": "megatron-bert", "hidden_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 256},
}


@register_family("megatron-bert", config=MegatronBertConfig, presets=PRESETS, default_task="fill-mask",
                 tasks=ENCODER_TASKS + ("multiple-choice", "next-sentence-prediction", "pre-training", "causal-lm"))
def build(cfg: MegatronBertConfig, task: str) -> EncoderForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    return build_bert(cfg, task)
