"""MobileBERT (https://arxiv.org/abs/2004.02984): bottleneck blocks, NoNorm, trigram input embedding.

Module and parameter names follow transformers' MobileBert* classes so HF checkpoints load as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.blocks import EncoderForTask, activation, additive_mask, attention, init_weights
from edgeport.reference_models.config import EncoderConfig
from edgeport.reference_models.heads import PreTrainingHeads, head_for
from edgeport.reference_models.registry import ENCODER_TASKS, register_family

NORMALIZATIONS = ("no_norm", "layer_norm")


@dataclass
class MobileBertConfig(EncoderConfig):
    model_type = "mobilebert"
    hidden_size: int = 512  # width between blocks (the "inter-block" size)
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "relu"
    embedding_size: int = 128  # word embedding width before the trigram transformation
    trigram_input: bool = True  # concat embeddings of tokens i+1, i, i-1 before projecting
    use_bottleneck: bool = True  # project hidden_size -> intra_bottleneck_size inside each block
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False  # q, k and v all from the bottlenecked input
    key_query_shared_bottleneck: bool = True  # q and k from one extra shared bottleneck
    num_feedforward_networks: int = 4  # stacked FFNs per block (the last is the block's output)
    normalization_type: str = "no_norm"  # "no_norm": elementwise x * w + b; "layer_norm"
    classifier_activation: bool = True  # pooler has dense + tanh; else it is the [CLS] vector
    hidden_dropout_prob: float = 0.0  # dropout is inactive at inference; kept for config fidelity

    @property
    def true_hidden_size(self) -> int:
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    def validate(self):
        super().validate()
        if self.normalization_type not in NORMALIZATIONS:
            raise EdgeportError(f"config: normalization_type must be one of {NORMALIZATIONS}")
        if self.true_hidden_size % self.num_attention_heads:
            raise EdgeportError("config: attention width is not divisible by num_attention_heads")
        activation(self.hidden_act)
        if (self.use_bottleneck and not (self.use_bottleneck_attention or self.key_query_shared_bottleneck)
                and self.hidden_size != self.intra_bottleneck_size):
            raise EdgeportError("config: with use_bottleneck and neither use_bottleneck_attention nor "
                                "key_query_shared_bottleneck, queries would be hidden_size wide but the "
                                "attention is intra_bottleneck_size wide (transformers fails here too)")


PRESETS = {
    # https://huggingface.co/google/mobilebert-uncased/blob/main/config.json
    "mobilebert": {"model_type": "mobilebert"},
    # A 2-layer config exercising every switch's default path, for tests.
    "mobilebert-tiny": {"model_type": "mobilebert", "vocab_size": 30522, "hidden_size": 64,
                        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                        "embedding_size": 32, "intra_bottleneck_size": 32, "num_feedforward_networks": 2,
                        "max_position_embeddings": 256},
}


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an elementwise affine map."""

    def __init__(self, size: int, eps: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x):
        return x * self.weight + self.bias


def norm(cfg: MobileBertConfig, size: int, eps: float | None) -> nn.Module:
    # HF builds some of these LayerNorms without the config eps (torch's default 1e-5): we match.
    if cfg.normalization_type == "no_norm":
        return NoNorm(size)
    return nn.LayerNorm(size, eps=1e-5 if eps is None else eps)


class Embeddings(nn.Module):
    def __init__(self, cfg: MobileBertConfig):
        super().__init__()
        self.trigram = cfg.trigram_input
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.embedding_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        width = cfg.embedding_size * (3 if cfg.trigram_input else 1)
        self.project = cfg.trigram_input or cfg.embedding_size != cfg.hidden_size
        if self.project:
            self.embedding_transformation = nn.Linear(width, cfg.hidden_size)
        self.LayerNorm = norm(cfg, cfg.hidden_size, None)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids, token_type_ids):
        S = input_ids.shape[1]
        x = self.word_embeddings(input_ids)  # (B, S, E)
        if self.trigram:
            nxt = F.pad(x[:, 1:], (0, 0, 0, 1))  # token i+1, zero after the end
            prv = F.pad(x[:, :-1], (0, 0, 1, 0))  # token i-1, zero before the start
            x = torch.cat([nxt, x, prv], dim=2)  # (B, S, 3E)
        if self.project:
            x = self.embedding_transformation(x)  # (B, S, H)
        x = x + self.position_embeddings(self.position_ids[:, :S]) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


class DenseNorm(nn.Module):
    """LayerNorm(dense(x) [+ residual]): the unit most MobileBERT sub-blocks are made of."""

    def __init__(self, cfg, d_in, d_out, eps):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = norm(cfg, d_out, eps)

    def forward(self, x, residual=None):
        y = self.dense(x)
        return self.LayerNorm(y if residual is None else y + residual)


class SelfAttention(nn.Module):
    def __init__(self, cfg: MobileBertConfig):
        super().__init__()
        t = cfg.true_hidden_size
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(t, t)
        self.key = nn.Linear(t, t)
        self.value = nn.Linear(t if cfg.use_bottleneck_attention else cfg.hidden_size, t)

    def forward(self, q_in, k_in, v_in, bias):
        return attention(self.query(q_in), self.key(k_in), self.value(v_in), bias, self.heads)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = DenseNorm(cfg, cfg.true_hidden_size, cfg.true_hidden_size, cfg.layer_norm_eps)


class Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.true_hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


class FFN(nn.Module):
    """One of the stacked feed-forward networks: x -> LayerNorm(W2 act(W1 x) + x)."""

    def __init__(self, cfg):
        super().__init__()
        self.intermediate = Intermediate(cfg)
        self.output = DenseNorm(cfg, cfg.intermediate_size, cfg.true_hidden_size, cfg.layer_norm_eps)

    def forward(self, x):
        return self.output(self.intermediate(x), x)


class Output(nn.Module):
    """The block's last FFN output, then (with bottlenecks) the projection back to hidden_size."""

    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.true_hidden_size)
        self.LayerNorm = norm(cfg, cfg.true_hidden_size, None)
        if cfg.use_bottleneck:
            self.bottleneck = DenseNorm(cfg, cfg.true_hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, inter, residual, block_input):
        y = self.LayerNorm(self.dense(inter) + residual)
        return self.bottleneck(y, block_input) if hasattr(self, "bottleneck") else y


class Bottleneck(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.mode = ("all" if cfg.use_bottleneck_attention else
                     "shared_qk" if cfg.key_query_shared_bottleneck else "none")
        self.input = DenseNorm(cfg, cfg.hidden_size, cfg.intra_bottleneck_size, cfg.layer_norm_eps)
        if self.mode == "shared_qk":
            self.attention = DenseNorm(cfg, cfg.hidden_size, cfg.intra_bottleneck_size, cfg.layer_norm_eps)

    def forward(self, x):
        """-> (query input, key input, value input, block input for the attention residual)."""
        b = self.input(x)
        if self.mode == "all":
            return b, b, b, b
        if self.mode == "shared_qk":
            s = self.attention(x)
            return s, s, x, b
        return x, x, x, b


class Layer(nn.Module):
    def __init__(self, cfg: MobileBertConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = Output(cfg)
        if cfg.use_bottleneck:
            self.bottleneck = Bottleneck(cfg)
        if cfg.num_feedforward_networks > 1:
            self.ffn = nn.ModuleList(FFN(cfg) for _ in range(cfg.num_feedforward_networks - 1))

    def forward(self, x, bias):
        q, k, v, block_in = self.bottleneck(x) if hasattr(self, "bottleneck") else (x, x, x, x)
        h = self.attention.output(self.attention.self(q, k, v, bias), block_in)  # (B, S, T)
        for ffn in getattr(self, "ffn", ()):
            h = ffn(h)
        return self.output(self.intermediate(h), h, x)  # (B, S, H)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.classifier_activation:
            self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, seq):
        first = seq[:, 0]  # (B, H): the [CLS] position
        return torch.tanh(self.dense(first)) if hasattr(self, "dense") else first


class MobileBert(nn.Module):
    def __init__(self, cfg: MobileBertConfig, pooler: bool):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        if pooler:
            self.pooler = Pooler(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        bias = additive_mask(attention_mask, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x, (self.pooler(x) if hasattr(self, "pooler") else None)


class MLMHead(nn.Module):
    """Scores against [word embeddings (E) | extra rows (H - E)]; the word part is tied to the input."""

    def __init__(self, cfg: MobileBertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = nn.Module()
        self.predictions.transform = nn.Module()
        self.predictions.transform.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.predictions.transform.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.predictions.dense = nn.Linear(cfg.vocab_size, cfg.hidden_size - cfg.embedding_size, bias=False)
        self.predictions.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.act = activation(cfg.hidden_act)
        self.word_embeddings = [word_embeddings]  # a list: tied, not registered twice

    def forward(self, seq):
        p = self.predictions
        h = p.transform.LayerNorm(self.act(p.transform.dense(seq)))  # (B, S, H)
        word = self.word_embeddings[0].weight  # (V, E)
        E = word.shape[1]
        # h @ [word^T; extra] as two products, so exports need not store a second copy of `word`
        return F.linear(h[..., :E], word) + torch.matmul(h[..., E:], p.dense.weight) + p.bias  # (B, S, V)


@register_family("mobilebert", config=MobileBertConfig, presets=PRESETS, default_task="fill-mask",
                 tasks=ENCODER_TASKS + ("multiple-choice", "next-sentence-prediction", "pre-training"),
                 keras_build="edgeport.reference_models.mobilebert_keras:build_keras")
def build(cfg: MobileBertConfig, task: str) -> EncoderForTask:
    backbone = MobileBert(cfg, pooler=head_for(task).reads in ("pooled", "both"))
    mlm = MLMHead(cfg, backbone.embeddings.word_embeddings) if task in ("fill-mask", "pre-training") else None
    heads = {"pre-training": [("cls", PreTrainingHeads(mlm, cfg.hidden_size))]} if task == "pre-training" else None
    model = EncoderForTask("mobilebert", backbone, task, cfg.hidden_size, cfg.num_labels, mlm, heads=heads)
    init_weights(model, cfg.initializer_range)
    return model.eval()
