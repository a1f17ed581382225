"""DeBERTa (https://arxiv.org/abs/2006.03654): disentangled attention over content and relative position.

Also the shared body of DeBERTa-v2/v3 (deberta_v2.py subclasses the config, the attention projections
and the encoder). Module and parameter names follow transformers' Deberta* classes so HF checkpoints
load as is. The attention scores go through `edgeport.ops.disentangled_attention.DisentangledAttention`
(pure torch); `use_custom_op(model)` swaps in the custom op for the exporters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.ops.disentangled_attention import DisentangledAttention
from edgeport.reference_models.blocks import EncoderForTask, activation, init_weights
from edgeport.reference_models.config import EncoderConfig
from edgeport.reference_models.heads import head_for
from edgeport.reference_models.registry import ENCODER_TASKS, register_family

TASKS = ENCODER_TASKS + ("multiple-choice",)
POS_ATT_TYPES = ("c2p", "p2c")  # content->position, position->content
# Checkpoint key prefixes of the task heads (everything else is the backbone under "deberta.").
HEAD_PREFIXES = ("cls.", "lm_predictions.", "pooler.", "classifier.", "qa_outputs.")


@dataclass
class DebertaConfig(EncoderConfig):
    """Defaults are transformers' DebertaConfig defaults: keys missing from config.json mean these."""

    model_type = "deberta"
    vocab_size: int = 50265
    type_vocab_size: int = 0  # 0: no token type embedding, the model takes no token_type_ids
    layer_norm_eps: float = 1e-7
    relative_attention: bool = False  # disentangled c2p/p2c terms from a relative-position table
    max_relative_positions: int = -1  # < 1: max_position_embeddings (normalised in __post_init__)
    position_biased_input: bool = True  # add absolute position embeddings to the input
    pos_att_type: tuple = ()  # subset of ("c2p", "p2c"); old configs give "c2p|p2c"
    embedding_size: int = 0  # word embedding width; 0: hidden_size (else embed_proj maps it up)
    pooler_hidden_size: int = 0  # ContextPooler width; 0: hidden_size (transformers needs them equal)
    pooler_hidden_act: str = "gelu"
    legacy: bool = True  # fill-mask head: True "cls.predictions.*", False "lm_predictions.lm_head.*"
    tie_word_embeddings: bool = True  # the MLM decoder is the word embedding matrix
    talking_head: bool = False  # not supported (no released checkpoint uses it)

    def __post_init__(self):
        if isinstance(self.pos_att_type, str):
            self.pos_att_type = [t for t in self.pos_att_type.lower().split("|") if t.strip()]
        self.pos_att_type = tuple(str(t).strip().lower() for t in self.pos_att_type)
        if self.max_relative_positions < 1:
            self.max_relative_positions = self.max_position_embeddings
        self.embedding_size = self.embedding_size or self.hidden_size
        self.pooler_hidden_size = self.pooler_hidden_size or self.hidden_size

    def validate(self):
        """EdgeportError naming the first value that cannot build a model."""
        super().validate()
        bad = [t for t in self.pos_att_type if t not in POS_ATT_TYPES]
        if bad:
            raise EdgeportError(f"config: pos_att_type {bad} not supported; supported: {', '.join(POS_ATT_TYPES)}")
        if self.talking_head:
            raise EdgeportError("config: talking_head attention is not supported")
        if self.hidden_size % self.num_attention_heads:
            raise EdgeportError("config: hidden_size is not divisible by num_attention_heads")
        if self.pooler_hidden_size != self.hidden_size:
            raise EdgeportError("config: pooler_hidden_size must equal hidden_size (the classifier reads it)")
        activation(self.hidden_act), activation(self.pooler_hidden_act)

    @property
    def head_size(self) -> int:
        """Width of one attention head: hidden_size // num_attention_heads."""
        return self.hidden_size // self.num_attention_heads

    @property
    def scale_factor(self) -> int:
        """1 + number of position terms (c2p, p2c): the divisor inside the attention scale."""
        return 1 + len(self.pos_att_type)

    @property
    def span(self) -> int:
        """k: the relative-position table has 2k rows (distance r - k at row r)."""
        return self.max_relative_positions

    @property
    def bucket_max_position(self) -> int:
        """0: plain clamped relative positions; > 0: log buckets over this many positions."""
        return 0

    @property
    def input_names(self) -> tuple:
        """What the task model's forward uses (token_type_ids only with a token type embedding)."""
        return ("input_ids", "attention_mask") + (("token_type_ids",) if self.type_vocab_size else ())


PRESETS = {
    # https://huggingface.co/microsoft/deberta-base/blob/main/config.json
    "deberta": {"model_type": "deberta", "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
                "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
                "relative_attention": True, "pos_att_type": "c2p|p2c", "max_relative_positions": -1,
                "position_biased_input": False, "type_vocab_size": 0, "layer_norm_eps": 1e-7},
    # deberta-base's switches at 2 layers of width 32; max_relative_positions 16 so tests cross it.
    "deberta-tiny": {"model_type": "deberta", "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "intermediate_size": 37, "max_position_embeddings": 64,
                     "relative_attention": True, "pos_att_type": "c2p|p2c", "max_relative_positions": 16,
                     "position_biased_input": False, "type_vocab_size": 0, "layer_norm_eps": 1e-7},
}


# ---------------------------------------------------------------- embeddings and dense blocks

class Embeddings(nn.Module):
    """word (+ absolute position) (+ token type) -> [embed_proj] -> LayerNorm -> zero padded rows."""

    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        E = cfg.embedding_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, E, padding_idx=cfg.pad_token_id)
        if cfg.position_biased_input:
            self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, E)
            self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None], persistent=False)
        if cfg.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, E)
        if E != cfg.hidden_size:
            self.embed_proj = nn.Linear(E, cfg.hidden_size, bias=False)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, mask):  # (B, S) int, (B, S) int | None, (B, S) float
        x = self.word_embeddings(input_ids)  # (B, S, E)
        if hasattr(self, "position_embeddings"):
            x = x + self.position_embeddings(self.position_ids[:, :input_ids.shape[1]])
        if hasattr(self, "token_type_embeddings"):
            tt = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type_embeddings(tt)
        if hasattr(self, "embed_proj"):
            x = self.embed_proj(x)  # (B, S, H)
        return self.LayerNorm(x) * mask[:, :, None]


class DenseNorm(nn.Module):
    """LayerNorm(dense(x) + residual): the attention output and the FFN output."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class Intermediate(nn.Module):
    """dense (hidden -> intermediate) + hidden_act."""
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


# ---------------------------------------------------------------- disentangled self-attention

def heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., L, H*D) -> (..., H, L, D)."""
    x = x.view(*x.shape[:-1], heads, -1)
    return x.transpose(-2, -3)


class DisentangledSelfAttention(nn.Module):
    """Scores = c2c + c2p + p2c (through the DisentangledAttention op), masked softmax, context.

    Subclasses give the projections: `qkv(x)` -> q, k, v (B, H, S, D) and
    `position_kq(rel)` -> pos_key (H, 2k, D) | None, pos_query (H, 2k, D) | None.
    """

    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.pos_att_type = cfg.pos_att_type
        factor = 1.0 / math.sqrt(cfg.head_size * cfg.scale_factor)
        if cfg.relative_attention:
            self.disentangled = DisentangledAttention(cfg.span, factor, cfg.bucket_max_position)
        else:
            self.factor = factor

    def scores(self, q, k, rel):
        """q, k (B, H, S, D) and the relative embeddings (2k, H) or None -> (B*H, S, S) scaled scores."""
        B, H, S, _ = q.shape
        c2c = torch.matmul(q, k.transpose(-1, -2))  # (B, H, S, S)
        if not hasattr(self, "disentangled"):
            return c2c * self.factor
        pos_key, pos_query = self.position_kq(rel)  # (H, 2k, D) each, or None
        c2p = torch.matmul(q, pos_key.transpose(-1, -2)).flatten(0, 1) if pos_key is not None else None
        p2c = torch.matmul(k, pos_query.transpose(-1, -2)).flatten(0, 1) if pos_query is not None else None
        return self.disentangled(c2c.flatten(0, 1), c2p, p2c).view(B, H, S, S)  # (B*H, S, 2k) in

    def forward(self, x, pair_mask, rel):  # (B, S, H), (B, 1, S, S) bool, (2k, H) | None
        q, k, v = self.qkv(x)  # (B, H, S, D)
        scores = self.scores(q, k, rel)
        scores = scores.masked_fill(~pair_mask, torch.finfo(scores.dtype).min)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, S, D)
        return ctx.transpose(1, 2).flatten(2)  # (B, S, H*D)


class V1SelfAttention(DisentangledSelfAttention):
    """DeBERTa v1 projections: one bias-free in_proj, per-head [q|k|v] layout, separate q/v biases."""

    def __init__(self, cfg: DebertaConfig):
        super().__init__(cfg)
        H = cfg.hidden_size
        self.in_proj = nn.Linear(H, 3 * H, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(H))
        self.v_bias = nn.Parameter(torch.zeros(H))
        if cfg.relative_attention and "c2p" in cfg.pos_att_type:
            self.pos_proj = nn.Linear(H, H, bias=False)
        if cfg.relative_attention and "p2c" in cfg.pos_att_type:
            self.pos_q_proj = nn.Linear(H, H)

    def qkv(self, x):
        """x (B, S, hidden) -> q, k, v (B, H, S, D) from the packed in_proj with the q/v biases."""
        q, k, v = heads_first(self.in_proj(x), self.heads).chunk(3, dim=-1)  # (B, H, S, D) each
        return q + heads_first(self.q_bias[None], self.heads), k, v + heads_first(self.v_bias[None], self.heads)

    def position_kq(self, rel):
        """rel (2k, H) -> (pos_key, pos_query) (H, 2k, D) each, or None for an absent term."""
        pos_key = heads_first(self.pos_proj(rel), self.heads) if hasattr(self, "pos_proj") else None
        pos_query = heads_first(self.pos_q_proj(rel), self.heads) if hasattr(self, "pos_q_proj") else None
        return pos_key, pos_query


class Attention(nn.Module):
    """Self-attention + output dense/LayerNorm; with `rows`, only the first rows go on (cls_only)."""
    def __init__(self, cfg, self_attention_cls):
        super().__init__()
        self.self = self_attention_cls(cfg)
        width = cfg.num_attention_heads * cfg.head_size
        self.output = DenseNorm(width, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x, pair_mask, rel, rows: int | None = None):
        ctx = self.self(x, pair_mask, rel)  # (B, S, H): every lowering's self-attention, whole
        if rows is not None:  # only the first `rows` positions go on (Deberta.cls_only)
            ctx, x = ctx[:, :rows], x[:, :rows]
        return self.output(ctx, x)


class Layer(nn.Module):
    """One encoder layer: attention, intermediate, output."""
    def __init__(self, cfg, self_attention_cls):
        super().__init__()
        self.attention = Attention(cfg, self_attention_cls)
        self.intermediate = Intermediate(cfg)
        self.output = DenseNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x, pair_mask, rel, rows: int | None = None):
        h = self.attention(x, pair_mask, rel, rows)  # (B, S or rows, H)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    """Layers sharing one relative-position table `rel_embeddings` (2k, H)."""

    self_attention_cls = V1SelfAttention

    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg, self.self_attention_cls) for _ in range(cfg.num_hidden_layers))
        if cfg.relative_attention:
            self.rel_embeddings = nn.Embedding(2 * cfg.span, cfg.hidden_size)

    def rel_embedding(self):
        """The relative-position table (2k, H), or None without relative attention."""
        return self.rel_embeddings.weight if hasattr(self, "rel_embeddings") else None  # (2k, H)

    def after_first_layer(self, embedded, h, mask):
        """Hook after layer 0 (v1: identity; v2 adds its convolution)."""
        return h  # DeBERTa-v2 adds its convolution here

    def forward(self, x, mask, last_rows: int | None = None):  # (B, S, H), (B, S) float 1/0
        m = mask.bool()
        pair_mask = (m[:, None, :, None] & m[:, None, None, :])  # (B, 1, S, S): query and key real
        rel = self.rel_embedding()
        h = x
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):  # the first layer's output feeds v2's conv: never cut
            h = layer(h, pair_mask, rel, last_rows if i == last and i > 0 else None)
            if i == 0:
                h = self.after_first_layer(x, h, mask)
        return h


class Deberta(nn.Module):
    """Backbone -> (B, S, H). `cls_only` (set for heads that read only position 0: text-classification,
    multiple-choice): the last layer's attention output projection and feed-forward run on position 0
    alone, and the output is (B, 1, H); the pooled vector is unchanged. Its self-attention still runs
    whole, so every DisentangledAttention lowering applies as is (deberta-v3-base: ~5% fewer FLOPs)."""

    encoder_cls = Encoder
    cls_only = False

    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = self.encoder_cls(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        mask = attention_mask.to(self.embeddings.LayerNorm.weight.dtype)  # (B, S)
        return self.encoder(self.embeddings(input_ids, token_type_ids, mask), mask, 1 if self.cls_only else None)


# ---------------------------------------------------------------- task heads

class LegacyMLMHead(nn.Module):
    """`cls.predictions`: dense -> act -> LayerNorm (to embedding_size), decoder tied to word embeddings."""

    def __init__(self, cfg: DebertaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = nn.Module()
        self.predictions.transform = nn.Module()
        self.predictions.transform.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        self.predictions.transform.LayerNorm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.predictions.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.act = activation(cfg.hidden_act)
        self.word_embeddings = [word_embeddings]  # a list: tied, not registered twice

    def forward(self, seq):
        t = self.predictions.transform
        h = t.LayerNorm(self.act(t.dense(seq)))  # (B, S, E)
        return torch.matmul(h, self.word_embeddings[0].weight.t()) + self.predictions.bias  # (B, S, V)


class MLMHead(nn.Module):
    """`lm_predictions.lm_head` (legacy=False, the original DeBERTa head): same math at hidden width."""

    def __init__(self, cfg: DebertaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.lm_head = nn.Module()
        self.lm_head.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.lm_head.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.lm_head.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.act = activation(cfg.hidden_act)
        self.word_embeddings = [word_embeddings]

    def forward(self, seq):
        p = self.lm_head
        h = p.LayerNorm(self.act(p.dense(seq)))  # (B, S, H)
        return torch.matmul(h, self.word_embeddings[0].weight.t()) + p.bias  # (B, S, V)


class ContextPooler(nn.Module):
    """`pooler`: act(dense([CLS])) with pooler_hidden_act (gelu by default, not tanh)."""

    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.pooler_hidden_size, cfg.pooler_hidden_size)
        self.act = activation(cfg.pooler_hidden_act)

    def forward(self, seq):
        return self.act(self.dense(seq[:, 0]))  # (B, H)


class DebertaForTask(EncoderForTask):
    """The backbone under `deberta` plus one task head (heads.py), with transformers' head names: the
    MLM head as `cls` (legacy v1 checkpoints) or `lm_predictions`; pooled heads read `pooler` ([CLS] ->
    dense -> pooler_hidden_act). multiple-choice takes (B, C, S) inputs and returns logits (B, C).
    """

    HEAD_PREFIXES = HEAD_PREFIXES

    def __init__(self, cfg: DebertaConfig, backbone: Deberta, task: str):
        if task not in TASKS:
            raise EdgeportError(f"unknown task '{task}'")
        heads = {"fill-mask": [mlm_head(cfg, backbone.embeddings.word_embeddings)]} if task == "fill-mask" else None
        super().__init__("deberta", backbone, task, cfg.hidden_size, cfg.num_labels, heads=heads)
        self.input_names = cfg.input_names
        if self.head.reads == "pooled":
            self.pooler = ContextPooler(cfg)

    def head_prefixes(self) -> tuple:
        """Checkpoint key prefixes of the heads (cls., lm_predictions., pooler., classifier., qa_outputs.)."""
        return HEAD_PREFIXES

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """-> (sequence (B, S, H), pooled (B, H) for pooled heads else None)."""
        seq = self.deberta(input_ids, attention_mask, token_type_ids)  # (B, S, H)
        return seq, (self.pooler(seq) if self.head.reads == "pooled" else None)


def mlm_head(cfg: DebertaConfig, word: nn.Embedding) -> tuple:
    """(attribute, module) of the MLM head tied to `word`; EdgeportError for an untied config."""
    if not cfg.tie_word_embeddings:
        raise EdgeportError("fill-mask with tie_word_embeddings=false is not supported")
    return ("cls", LegacyMLMHead(cfg, word)) if cfg.legacy else ("lm_predictions", MLMHead(cfg, word))


def build_task_model(cfg: DebertaConfig, task: str, backbone_cls) -> DebertaForTask:
    """DebertaForTask over `backbone_cls` (v1 or v2) for `task`, random-initialised, eval mode."""
    backbone = backbone_cls(cfg)
    backbone.cls_only = head_for(task).reads == "pooled"
    model = DebertaForTask(cfg, backbone, task)
    init_weights(model, cfg.initializer_range)
    return model.eval()


@register_family("deberta", config=DebertaConfig, presets=PRESETS, tasks=TASKS, default_task="fill-mask")
def build(cfg: DebertaConfig, task: str) -> DebertaForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    return build_task_model(cfg, task, Deberta)
