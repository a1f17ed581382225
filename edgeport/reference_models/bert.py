"""BERT (https://arxiv.org/abs/1810.04805): the post-LayerNorm encoder the other BERT-likes build on.

Module and parameter names follow transformers' Bert* classes so HF checkpoints load as is.
The blocks take switches that MegatronBERT (pre-LayerNorm) and ConvBERT (its own self-attention,
grouped feed-forward, narrower embeddings) reuse instead of copying them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.blocks import EncoderForTask, activation, additive_mask, attention, init_weights
from edgeport.reference_models.config import EncoderConfig
from edgeport.reference_models.heads import PreTrainingHeads, head_for
from edgeport.reference_models.registry import ENCODER_TASKS, register_family


@dataclass
class BertConfig(EncoderConfig):
    """BERT's config.json fields (transformers' BertConfig names and defaults); MegatronBERT and ConvBERT
    extend it."""
    model_type = "bert"
    pre_layer_norm: ClassVar[bool] = False  # False: BERT's post-LN; True: MegatronBERT's pre-LN layout
    position_embedding_type: str = "absolute"  # "relative_key*" configs predate transformers 5: refused
    tie_word_embeddings: bool = True  # the MLM decoder reuses the word embeddings (untied: refused)

    def validate(self):
        """EdgeportError naming the first value that cannot build a model."""
        super().validate()
        activation(self.hidden_act)
        if self.hidden_size % self.num_attention_heads:
            raise EdgeportError("config: hidden_size is not divisible by num_attention_heads")
        if self.position_embedding_type != "absolute":
            raise EdgeportError(f"config: position_embedding_type '{self.position_embedding_type}' is not "
                                "supported (only 'absolute')")


PRESETS = {
    # https://huggingface.co/google-bert/bert-base-uncased/blob/main/config.json
    "bert": {"model_type": "bert"},
    # https://huggingface.co/google/bert_uncased_L-2_H-128_A-2/blob/main/config.json ("BERT-Tiny")
    "bert-tiny": {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 512},
}

Linear = Callable[[int, int], nn.Module]  # factory for the feed-forward projections (d_in, d_out)


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm (BERT) or nothing (pre-LN models: `norm=False`)."""

    def __init__(self, cfg: BertConfig, width: int | None = None, norm: bool = True):
        super().__init__()
        width = width or cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, width)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, width)
        if norm:
            self.LayerNorm = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids, token_type_ids):
        S = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(self.position_ids[:, :S])  # (B, S, W)
        return self.LayerNorm(x) if hasattr(self, "LayerNorm") else x


class SelfAttention(nn.Module):
    """Multi-head self-attention with query/key/value projections (hidden -> hidden)."""
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, bias, rows: int | None = None):
        """`rows`: only the first `rows` positions query (they attend to all): (B, rows, H)."""
        q = self.query(x if rows is None else x[:, :rows])
        return attention(q, self.key(x), self.value(x), bias, self.heads)  # (B, S or rows, H)


class ResidualOutput(nn.Module):
    """dense(x) + residual, then LayerNorm when post-LN (BertSelfOutput / BertOutput)."""

    def __init__(self, cfg: BertConfig, d_in: int, linear: Linear = nn.Linear):
        super().__init__()
        self.dense = linear(d_in, cfg.hidden_size)
        if not cfg.pre_layer_norm:
            self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x, residual):
        y = self.dense(x) + residual
        return self.LayerNorm(y) if hasattr(self, "LayerNorm") else y


class Attention(nn.Module):
    """[ln ->] self-attention -> output (pre-LN: the residual is the un-normalised input)."""

    def __init__(self, cfg: BertConfig, self_attention: nn.Module | None = None):
        super().__init__()
        if cfg.pre_layer_norm:
            self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self = self_attention or SelfAttention(cfg)
        self.output = ResidualOutput(cfg, cfg.hidden_size)

    def forward(self, x, bias, rows: int | None = None):
        h = self.ln(x) if hasattr(self, "ln") else x
        if rows is None:
            return self.output(self.self(h, bias), x)
        if isinstance(self.self, SelfAttention):  # queries for the first `rows` positions only
            return self.output(self.self(h, bias, rows), x[:, :rows])
        return self.output(self.self(h, bias)[:, :rows], x[:, :rows])  # other attentions run whole


class Intermediate(nn.Module):
    """dense (hidden -> intermediate) + hidden_act."""
    def __init__(self, cfg: BertConfig, linear: Linear = nn.Linear):
        super().__init__()
        self.dense = linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))  # (B, S, I)


class Layer(nn.Module):
    """One encoder layer: attention, intermediate and output (post-LN, or pre-LN for MegatronBERT)."""
    def __init__(self, cfg: BertConfig, self_attention: nn.Module | None = None, linear: Linear = nn.Linear):
        super().__init__()
        self.attention = Attention(cfg, self_attention)
        if cfg.pre_layer_norm:
            self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.intermediate = Intermediate(cfg, linear)
        self.output = ResidualOutput(cfg, cfg.intermediate_size, linear)

    def forward(self, x, bias, rows: int | None = None):
        a = self.attention(x, bias, rows)  # (B, S or rows, H)
        h = self.ln(a) if hasattr(self, "ln") else a
        return self.output(self.intermediate(h), a)


class Encoder(nn.Module):
    """The layer stack; pre-LN models end with a final LayerNorm `ln`."""

    def __init__(self, cfg: BertConfig, make_layer: Callable[[BertConfig], nn.Module] = Layer):
        super().__init__()
        self.layer = nn.ModuleList(make_layer(cfg) for _ in range(cfg.num_hidden_layers))
        if cfg.pre_layer_norm:
            self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x, bias, last_rows: int | None = None):
        """`last_rows`: the last layer computes only the first `last_rows` positions (see Bert)."""
        for i, layer in enumerate(self.layer):
            x = layer(x, bias, last_rows if i == len(self.layer) - 1 else None)
        return self.ln(x) if hasattr(self, "ln") else x


class Pooler(nn.Module):
    """tanh(dense([CLS])): (B, S, H) -> (B, H)."""
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, seq):
        return torch.tanh(self.dense(seq[:, 0]))  # (B, H): the [CLS] position


class Bert(nn.Module):
    """Backbone: (input_ids, attention_mask, token_type_ids) -> (sequence (B, S, H), pooled (B, H) or None).

    `cls_only` (heads that read only the pooled [CLS] vector: text-classification, multiple-choice):
    the last layer's queries, output projection and feed-forward run for position 0 alone (keys and
    values still see every position), so the sequence output is (B, 1, H). Same numbers for the pooled
    vector, ~10/12 of one layer's matmuls fewer (BERT-base: 7% of the model).
    """

    def __init__(self, cfg: BertConfig, pooler: bool, cls_only: bool = False, causal: bool = False):
        super().__init__()
        self.cls_only, self.causal = cls_only, causal
        self.embeddings = Embeddings(cfg, norm=not cfg.pre_layer_norm)
        self.encoder = Encoder(cfg)
        if pooler:
            self.pooler = Pooler(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        bias = causal_mask(attention_mask, x.dtype) if self.causal else additive_mask(attention_mask, x.dtype)
        x = self.encoder(x, bias, 1 if self.cls_only else None)
        return x, (self.pooler(x) if hasattr(self, "pooler") else None)


def causal_mask(attention_mask, dtype=torch.float32):
    """(B, S) 1/0 mask -> (B, 1, S, S) additive bias: query i sees real keys j <= i (a decoder's mask, as
    transformers builds it for is_decoder configs)."""
    S = attention_mask.shape[1]
    pos = torch.arange(S, device=attention_mask.device)
    visible = (pos[None, :] <= pos[:, None])[None, None] & (attention_mask[:, None, None, :] != 0)  # (B, 1, S, S)
    return torch.where(visible, torch.zeros((), dtype=dtype), torch.full((), torch.finfo(dtype).min, dtype=dtype))


class TiedDecoder(nn.Module):
    """Vocabulary scores with the input word embeddings as weights, plus a bias: h (B, S, E) -> (B, S, V)."""

    def __init__(self, word_embeddings: nn.Embedding):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        self.word_embeddings = [word_embeddings]  # a list: tied, not registered twice

    def forward(self, h):
        return F.linear(h, self.word_embeddings[0].weight, self.bias)


class MLMHead(nn.Module):
    """`cls.predictions`: transform (dense, act, LayerNorm) then the tied decoder with `predictions.bias`."""

    def __init__(self, cfg: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = TiedDecoder(word_embeddings)
        self.predictions.transform = nn.Module()
        self.predictions.transform.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.predictions.transform.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = activation(cfg.hidden_act)

    def forward(self, seq):
        t = self.predictions.transform
        return self.predictions(t.LayerNorm(self.act(t.dense(seq))))  # (B, S, V)


def check_tied(cfg: BertConfig, task: str):
    """EdgeportError for fill-mask with an untied MLM decoder (not supported)."""
    if task in ("fill-mask", "pre-training", "causal-lm") and not cfg.tie_word_embeddings:
        raise EdgeportError("config: tie_word_embeddings=false (an untied MLM decoder) is not supported")


def build_bert(cfg: BertConfig, task: str) -> EncoderForTask:
    """BERT or MegatronBERT (by `cfg.pre_layer_norm`) for `task`, under HF's prefix `bert`.

    causal-lm (transformers' *ForCausalLM: the MLM head `cls` over causally masked layers) attends causally
    whatever `is_decoder` says (transformers only warns when it is false, then attends both ways), and
    gives full-sequence logits (for scoring whole sequences); MegatronBERT's text-generation task
    (megatron_bert.py) steps the same layers over decoder.py's KV cache."""
    check_tied(cfg, task)
    reads = head_for(task).reads
    backbone = Bert(cfg, pooler=reads in ("pooled", "both"), cls_only=reads == "pooled", causal=task == "causal-lm")
    mlm = MLMHead(cfg, backbone.embeddings.word_embeddings) if task in ("fill-mask", "pre-training", "causal-lm") \
        else None
    heads = None
    if task == "pre-training":
        heads = {task: [("cls", PreTrainingHeads(mlm, cfg.hidden_size))]}
    elif task == "causal-lm":
        heads = {task: [("cls", mlm)]}
    model = EncoderForTask("bert", backbone, task, cfg.hidden_size, cfg.num_labels, mlm, heads=heads)
    init_weights(model, cfg.initializer_range)
    return model.eval()


@register_family("bert", config=BertConfig, presets=PRESETS, default_task="feature-extraction",
                 tasks=ENCODER_TASKS + ("multiple-choice",))
def build(cfg: BertConfig, task: str) -> EncoderForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    return build_bert(cfg, task)
