"""ConvBERT (https://arxiv.org/abs/2008.02496): mixed attention = self-attention heads + span-based
dynamic convolution heads; grouped feed-forward; embeddings narrower than the encoder.

BERT's post-LN blocks (`bert.py`) with ConvBERT's self-attention and grouped linears plugged in.
Module and parameter names follow transformers' ConvBert* classes so HF checkpoints load as is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.bert import BertConfig, Embeddings, Encoder, Layer, TiedDecoder, check_tied
from edgeport.reference_models.blocks import EncoderForTask, activation, additive_mask, attention, init_weights
from edgeport.reference_models.config import ModelConfig
from edgeport.reference_models.registry import ENCODER_TASKS, register_family


@dataclass
class ConvBertConfig(BertConfig):
    """ConvBERT's config.json fields on top of BERT's (head_ratio, conv_kernel_size, num_groups,
    embedding_size)."""
    model_type = "convbert"
    embedding_size: int = 768  # embedding width; projected to hidden_size when they differ
    head_ratio: int = 2  # num_attention_heads / head_ratio heads attend, as many are convolutions
    conv_kernel_size: int = 9  # span of the dynamic convolution (odd)
    num_groups: int = 1  # feed-forward projections split into this many independent groups
    # Multiple-choice summary (transformers' ConvBertSequenceSummary reads these with getattr; ConvBertConfig
    # declares none, so its defaults apply: the LAST token's vector, no projection, no activation).
    summary_type: str = "last"  # "last" | "first" | "mean"
    summary_use_proj: bool = False  # a Linear(hidden, hidden) `summary` after picking the vector
    summary_activation: str | None = None  # blocks.ACTIVATIONS name applied after it
    summary_proj_to_labels: bool = False  # project to num_labels instead (not supported: the classifier reads H)

    @property
    def attn_heads(self) -> int:
        """Self-attention heads: num_attention_heads // head_ratio (at least 1), transformers' rule."""
        return max(1, self.num_attention_heads // self.head_ratio)  # transformers' rule

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.attn_heads // 2

    def validate(self):
        """EdgeportError naming the first value that cannot build a model."""
        ModelConfig.validate(self)  # not BertConfig's: heads need not divide hidden_size here
        activation(self.hidden_act)
        if self.head_ratio < 1 or self.conv_kernel_size % 2 == 0:
            raise EdgeportError("config: head_ratio must be >= 1 and conv_kernel_size odd")
        if 2 * self.attn_heads * self.head_size != self.hidden_size:
            raise EdgeportError("config: hidden_size must be 2 * (num_attention_heads // head_ratio) * head size")
        if self.summary_type not in ("last", "first", "mean"):
            raise EdgeportError(f"config: summary_type '{self.summary_type}' is not supported (last, first, mean)")
        if self.summary_use_proj and self.summary_proj_to_labels:
            raise EdgeportError("config: summary_proj_to_labels is not supported (the classifier reads hidden_size)")
        if self.summary_activation:
            activation(self.summary_activation)
        if self.num_groups < 1 or self.hidden_size % self.num_groups or self.intermediate_size % self.num_groups:
            raise EdgeportError("config: num_groups must divide hidden_size and intermediate_size")


PRESETS = {
    # https://huggingface.co/YituTech/conv-bert-base/blob/main/config.json (transformers' ConvBertConfig defaults)
    "convbert": {"model_type": "convbert"},
    # A 2-layer config that exercises the embedding projection and grouped linears, for tests.
    "convbert-tiny": {"model_type": "convbert", "hidden_size": 64, "embedding_size": 32, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "intermediate_size": 128, "num_groups": 2,
                      "max_position_embeddings": 256},
}


class SeparableConv1D(nn.Module):
    """Depthwise conv over the sequence, pointwise projection, bias: (B, S, C_in) -> (B, S, C_out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv1d(c_in, c_in, kernel, groups=c_in, padding=kernel // 2, bias=False)
        self.pointwise = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(c_out, 1))

    def forward(self, x):
        y = self.pointwise(self.depthwise(x.transpose(1, 2))) + self.bias  # (B, C_out, S)
        return y.transpose(1, 2)


def span_windows(x, kernel: int):
    """(B, S, C) -> (B, S, C, K): the K positions centred on each position, zeros beyond the ends.

    Static slices of a padded copy (what nn.Unfold computes, without the 4-D im2col)."""
    S, p = x.shape[1], (kernel - 1) // 2
    xp = F.pad(x, (0, 0, p, p))  # (B, S + 2p, C)
    return torch.stack([xp[:, k:k + S] for k in range(kernel)], dim=-1)


class ConvSelfAttention(nn.Module):
    """Attention heads and dynamic-convolution heads side by side, concatenated: (B, S, H) -> (B, S, H)."""

    def __init__(self, cfg: ConvBertConfig):
        super().__init__()
        self.heads, self.kernel = cfg.attn_heads, cfg.conv_kernel_size
        H, A = cfg.hidden_size, cfg.attn_heads * cfg.head_size  # A = H / 2
        self.query = nn.Linear(H, A)
        self.key = nn.Linear(H, A)
        self.value = nn.Linear(H, A)
        self.key_conv_attn_layer = SeparableConv1D(H, A, self.kernel)
        self.conv_kernel_layer = nn.Linear(A, self.heads * self.kernel)
        self.conv_out_layer = nn.Linear(H, A)

    def dynamic_conv(self, x, q):
        """Each position mixes its span of `conv_out_layer(x)` with a kernel predicted from itself."""
        kernel = self.conv_kernel_layer(self.key_conv_attn_layer(x) * q)  # (B, S, heads * K)
        kernel = torch.softmax(kernel.unflatten(-1, (self.heads, 1, self.kernel)), dim=-1)  # (B, S, h, 1, K)
        win = span_windows(self.conv_out_layer(x), self.kernel)  # (B, S, A, K)
        win = win.unflatten(2, (self.heads, -1))  # (B, S, h, D, K)
        return (win * kernel).sum(-1).flatten(2)  # (B, S, A)

    def forward(self, x, bias):
        q = self.query(x)  # (B, S, A)
        ctx = attention(q, self.key(x), self.value(x), bias, self.heads)  # (B, S, A)
        return torch.cat([ctx, self.dynamic_conv(x, q)], dim=-1)  # (B, S, 2A)


class GroupedLinearLayer(nn.Module):
    """G independent (d_in/G -> d_out/G) projections over the channel groups: (B, S, d_in) -> (B, S, d_out)."""

    def __init__(self, d_in: int, d_out: int, groups: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(groups, d_in // groups, d_out // groups))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x):
        x = x.unflatten(-1, (self.weight.shape[0], -1)).transpose(1, 2)  # (B, G, S, d_in/G)
        y = torch.matmul(x, self.weight[None])  # (B, G, S, d_out/G)
        return y.transpose(1, 2).flatten(2) + self.bias


class ConvBert(nn.Module):
    """Backbone -> (sequence (B, S, H), first-token vector (B, H): ConvBERT has no pooler).

    `cls_only` (text-classification): the last layer's mixed attention runs whole, its output projection
    and feed-forward only for position 0 (as in bert.Bert); the sequence output is then (B, 1, H)."""

    cls_only = False

    def __init__(self, cfg: ConvBertConfig):
        super().__init__()
        g = cfg.num_groups
        linear = nn.Linear if g == 1 else (lambda i, o: GroupedLinearLayer(i, o, g))
        self.embeddings = Embeddings(cfg, width=cfg.embedding_size)
        if cfg.embedding_size != cfg.hidden_size:
            self.embeddings_project = nn.Linear(cfg.embedding_size, cfg.hidden_size)
        self.encoder = Encoder(cfg, lambda c: Layer(c, ConvSelfAttention(c), linear))

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, E)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)  # (B, S, H)
        x = self.encoder(x, additive_mask(attention_mask, x.dtype), 1 if self.cls_only else None)
        return x, x[:, 0]


class ClassificationHead(nn.Module):
    """`classifier`: dense, hidden_act, out_proj on the first token (no tanh pooler)."""

    def __init__(self, cfg: ConvBertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, first):
        return self.out_proj(self.act(self.dense(first)))  # (B, num_labels)


class SequenceSummary(nn.Module):
    """`sequence_summary` of ConvBertForMultipleChoice: (B, S, H) -> (B, H), one vector per row as the config's
    summary_type says (transformers' default "last": the last position, padding included), then the
    optional `summary` projection and activation."""

    def __init__(self, cfg: ConvBertConfig):
        super().__init__()
        self.kind = cfg.summary_type
        self.summary = nn.Linear(cfg.hidden_size, cfg.hidden_size) if cfg.summary_use_proj else nn.Identity()
        self.act = activation(cfg.summary_activation) if cfg.summary_activation else (lambda x: x)

    def forward(self, seq):
        picked = {"last": lambda: seq[:, -1], "first": lambda: seq[:, 0], "mean": lambda: seq.mean(1)}[self.kind]()
        return self.act(self.summary(picked))  # (B, H)


class GeneratorPredictions(nn.Module):
    """dense (H -> E), exact GELU (whatever hidden_act says), LayerNorm(E)."""

    def __init__(self, cfg: ConvBertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        self.LayerNorm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)

    def forward(self, seq):
        return self.LayerNorm(F.gelu(self.dense(seq)))  # (B, S, E)


class ConvBertForTask(EncoderForTask):
    """EncoderForTask with ConvBERT's heads: `classifier.{dense,out_proj}`, the MLM head at the top
    level (`generator_predictions`, `generator_lm_head` tied to the word embeddings), and multiple-choice's
    `sequence_summary` + `classifier` (Linear(H, 1)) on the sequence: (B, C, S) inputs -> (B, C) logits."""

    HEAD_PREFIXES = EncoderForTask.HEAD_PREFIXES + ("generator_predictions.", "generator_lm_head.",
                                                    "sequence_summary.")

    def __init__(self, cfg: ConvBertConfig, task: str):
        backbone = ConvBert(cfg)
        backbone.cls_only = task == "text-classification"
        heads = {task: HEADS[task](cfg, backbone)} if task in HEADS else None
        super().__init__("convbert", backbone, task, cfg.hidden_size, cfg.num_labels, heads=heads)
        if task == "multiple-choice":  # its summary picks the vector from the whole sequence
            self.head = dataclasses.replace(self.head, reads="sequence")


# ConvBERT's own heads (heads.py defaults for the other tasks): task -> (cfg, backbone) -> [(attribute, module)]
HEADS = {
    "text-classification": lambda cfg, bb: [("classifier", ClassificationHead(cfg))],
    "fill-mask": lambda cfg, bb: [("generator_predictions", GeneratorPredictions(cfg)),
                                  ("generator_lm_head", TiedDecoder(bb.embeddings.word_embeddings))],
    "multiple-choice": lambda cfg, bb: [("sequence_summary", SequenceSummary(cfg)),
                                        ("classifier", nn.Linear(cfg.hidden_size, 1))],
}


def _init_extra(model: nn.Module, std: float):
    """Random-preset init for what `init_weights` skips: grouped and conv weights (as transformers does)."""
    for m in model.modules():
        if isinstance(m, (GroupedLinearLayer, nn.Conv1d)):
            nn.init.normal_(m.weight, std=std)


# Measured in tests/test_convbert_padding.py (transformers' ConvBertModel shows the same effect).
PADDING_NOTE = ("ConvBERT's span-based convolution sees padding positions (as transformers' ConvBERT does): "
                "a padded row's outputs differ from the same text unpadded (a static-length TFLite export "
                "pads every text); batch texts of similar length, or use a dynamic-shape ONNX export")


@register_family("convbert", config=ConvBertConfig, presets=PRESETS, default_task="fill-mask",
                 tasks=ENCODER_TASKS + ("multiple-choice",), notes=(PADDING_NOTE,))
def build(cfg: ConvBertConfig, task: str) -> ConvBertForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    check_tied(cfg, task)
    model = ConvBertForTask(cfg, task)
    init_weights(model, cfg.initializer_range)
    _init_extra(model, cfg.initializer_range)
    return model.eval()
