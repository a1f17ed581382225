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

import torch
from torch import nn

from edgeport.reference_models.bert import Bert, BertConfig, MLMHead, build_bert
from edgeport.reference_models.blocks import EncoderForTask, init_weights
from edgeport.reference_models.decoder import DecoderForTask, attend, decoder_bias, run_layers, split_heads
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


class CachedLayer(nn.Module):
    """One pre-LN MegatronBERT layer run as a decoder step over a KV cache (the encoder Layer's modules)."""

    def __init__(self, layer: nn.Module, heads: int):
        super().__init__()
        self.layer, self.heads = layer, heads

    def forward(self, x, bias, past_k, past_v):
        """x (B, S, H), past (B, heads, P, D) -> (x, present_k, present_v (B, heads, P+S, D))."""
        att, D = self.layer.attention, x.shape[-1] // self.heads
        h = att.ln(x)
        q, k, v = (split_heads(m(h), self.heads, D) for m in (att.self.query, att.self.key, att.self.value))
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, heads, P+S, D)
        a = att.output(attend(q, k, v, bias, D ** -0.5), x)  # (B, S, H)
        return self.layer.output(self.layer.intermediate(self.layer.ln(a)), a), k, v


class MegatronBertDecoder(nn.Module):
    """MegatronBERT as a decoder with decoder.py's cache contract: (input_ids, attention_mask (B, P+S),
    position_ids, past_keys, past_values) -> (hidden (B, S, H) after `encoder.ln`, present_keys,
    present_values). The encoder's modules and names (`embeddings`, `encoder.layer.N`), token type 0,
    learned positions at `position_ids`, causal attention over the cache (transformers' is_decoder mask)."""

    def __init__(self, cfg: MegatronBertConfig):
        super().__init__()
        bert = Bert(cfg, pooler=False)
        self.embeddings, self.encoder = bert.embeddings, bert.encoder
        self.cached = [CachedLayer(layer, cfg.num_attention_heads) for layer in self.encoder.layer]  # not registered
        self.cache_dims = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads)

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The word embeddings (the MLM head's tied decoder)."""
        return self.embeddings.word_embeddings

    def forward(self, input_ids, attention_mask, position_ids, past_keys, past_values):
        e = self.embeddings
        x = e.word_embeddings(input_ids) + e.token_type_embeddings(torch.zeros_like(input_ids)) \
            + e.position_embeddings(position_ids)  # (B, S, H); pre-LN: no embedding LayerNorm
        bias = decoder_bias(attention_mask, input_ids.shape[1], None, x.dtype)  # (B, 1, S, P+S)
        x, keys, values = run_layers(self.cached, x, past_keys, past_values, bias)
        return self.encoder.ln(x), keys, values


def build_decoder(cfg: MegatronBertConfig) -> DecoderForTask:
    """text-generation: MegatronBertForCausalLM with the KV cache (`bert` backbone, `cls` MLM head)."""
    backbone = MegatronBertDecoder(cfg)
    model = DecoderForTask("bert", backbone, "text-generation", cfg.hidden_size, cfg.vocab_size, cfg.num_labels,
                           tie_embeddings=True, lm_head=("cls", MLMHead(cfg, backbone.input_embeddings)))
    init_weights(model, cfg.initializer_range)
    return model.eval()


@register_family("megatron-bert", config=MegatronBertConfig, presets=PRESETS, default_task="fill-mask",
                 tasks=ENCODER_TASKS + ("multiple-choice", "next-sentence-prediction", "pre-training", "causal-lm",
                                        "text-generation"))
def build(cfg: MegatronBertConfig, task: str) -> EncoderForTask | DecoderForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    text-generation is the decoder with the KV cache, causal-lm the same weights as full-sequence logits.
    EdgeportError for a config or task it cannot build."""
    return build_decoder(cfg) if task == "text-generation" else build_bert(cfg, task)
