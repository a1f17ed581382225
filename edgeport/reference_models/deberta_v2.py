"""DeBERTa-v2 and DeBERTa-v3 (https://arxiv.org/abs/2111.09543): DeBERTa plus log-bucket relative
positions, a key projection shared with the position table, a LayerNorm on that table and the nGiE
convolution after the first layer. Everything else is deberta.py's.

Module and parameter names follow transformers' DebertaV2* classes so HF checkpoints load as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.blocks import activation
from edgeport.reference_models.deberta import (TASKS, Deberta, DebertaConfig, DebertaForTask,
                                               DisentangledSelfAttention, Encoder, build_task_model, heads_first)
from edgeport.reference_models.registry import register_family

REL_EMBEDDING_NORMS = ("none", "layer_norm")


@dataclass
class DebertaV2Config(DebertaConfig):
    """Defaults are transformers' DebertaV2Config defaults (and its getattr defaults for the extras)."""

    model_type = "deberta-v2"
    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    attention_head_size: int = 0  # 0: hidden_size // num_attention_heads (v2-xlarge sets 64)
    position_buckets: int = -1  # > 0: log buckets, the position table has 2 * position_buckets rows
    share_att_key: bool = False  # positions projected by query_proj/key_proj instead of pos_*_proj
    norm_rel_ebd: str = "none"  # "layer_norm": LayerNorm on the position table before use
    conv_kernel_size: int = 0  # > 0: nGiE Conv1d over the embeddings, added after the first layer
    conv_groups: int = 1
    conv_act: str = "tanh"

    def __post_init__(self):
        super().__post_init__()
        self.position_buckets = max(self.position_buckets, 0)  # -1 in configs: no buckets
        self.attention_head_size = self.attention_head_size or self.hidden_size // self.num_attention_heads

    def validate(self):
        """EdgeportError naming the first value that cannot build a model."""
        super().validate()
        norms = [n.strip() for n in self.norm_rel_ebd.lower().split("|")]
        if any(n not in REL_EMBEDDING_NORMS for n in norms):
            raise EdgeportError(f"config: norm_rel_ebd '{self.norm_rel_ebd}' not supported; "
                                f"supported: {', '.join(REL_EMBEDDING_NORMS)}")
        if self.conv_kernel_size and (self.conv_kernel_size % 2 == 0 or self.hidden_size % self.conv_groups):
            raise EdgeportError("config: conv_kernel_size must be odd and conv_groups divide hidden_size")
        if self.num_attention_heads * self.attention_head_size != self.hidden_size:
            raise EdgeportError("config: num_attention_heads * attention_head_size must equal hidden_size "
                                "(the attention output projection is hidden_size square in transformers)")
        if self.position_buckets == 1:
            raise EdgeportError("config: position_buckets must be >= 2")
        activation(self.conv_act)

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.attention_head_size

    @property
    def span(self) -> int:
        """k: relative distances covered, position_buckets when bucketed, else max_relative_positions."""
        return self.position_buckets or self.max_relative_positions

    @property
    def bucket_max_position(self) -> int:
        """max_relative_positions when positions are log-bucketed, else -1."""
        return self.max_relative_positions if self.position_buckets else 0

    @property
    def rel_layer_norm(self) -> bool:
        """True when the relative embeddings go through a LayerNorm (norm_rel_ebd layer_norm)."""
        return "layer_norm" in self.norm_rel_ebd.lower()


_V3 = {"model_type": "deberta-v2", "vocab_size": 128100, "max_position_embeddings": 512,
       "relative_attention": True, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
       "share_att_key": True, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7,
       "max_relative_positions": -1, "position_biased_input": False, "type_vocab_size": 0}
# https://huggingface.co/microsoft/deberta-v3-base/blob/main/config.json
_V3_BASE = {**_V3, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
PRESETS = {
    "deberta-v3-base": _V3_BASE,
    "deberta-v2": _V3_BASE,  # the family's name: its most used architecture (v3 checkpoints are deberta-v2)
    # https://huggingface.co/microsoft/deberta-v2-xlarge/blob/main/config.json
    "deberta-v2-xlarge": {**_V3, "hidden_size": 1536, "num_hidden_layers": 24, "num_attention_heads": 24,
                          "attention_head_size": 64, "intermediate_size": 6144, "conv_kernel_size": 3,
                          "conv_act": "gelu"},
    # Every v2 switch on at 2 layers of width 32; buckets 8 over 16 positions so tests cross both.
    "deberta-v2-tiny": {**_V3, "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "intermediate_size": 37, "max_position_embeddings": 64,
                        "position_buckets": 8, "max_relative_positions": 16, "conv_kernel_size": 3,
                        "conv_act": "gelu"},
}


class V2SelfAttention(DisentangledSelfAttention):
    """Separate biased q/k/v projections; positions through them (share_att_key) or pos_*_proj."""

    def __init__(self, cfg: DebertaV2Config):
        super().__init__(cfg)
        H, A = cfg.hidden_size, cfg.num_attention_heads * cfg.head_size
        self.query_proj, self.key_proj, self.value_proj = nn.Linear(H, A), nn.Linear(H, A), nn.Linear(H, A)
        self.share_att_key = cfg.share_att_key
        if cfg.relative_attention and not cfg.share_att_key:
            if "c2p" in cfg.pos_att_type:
                self.pos_key_proj = nn.Linear(H, A)
            if "p2c" in cfg.pos_att_type:
                self.pos_query_proj = nn.Linear(H, A)

    def qkv(self, x):
        """x (B, S, hidden) -> q, k, v (B, H, S, D)."""
        return tuple(heads_first(p(x), self.heads) for p in (self.query_proj, self.key_proj, self.value_proj))

    def position_kq(self, rel):  # (2k, H) -> (H, 2k, D) each, or None
        """rel (2k, H) -> (pos_key, pos_query) (H, 2k, D) each, or None; shared key projections when
        share_att_key."""
        key_proj = self.key_proj if self.share_att_key else getattr(self, "pos_key_proj", None)
        query_proj = self.query_proj if self.share_att_key else getattr(self, "pos_query_proj", None)
        pos_key = heads_first(key_proj(rel), self.heads) if "c2p" in self.pos_att_type else None
        pos_query = heads_first(query_proj(rel), self.heads) if "p2c" in self.pos_att_type else None
        return pos_key, pos_query


class ConvLayer(nn.Module):
    """nGiE: LayerNorm(first layer's output + act(Conv1d(embeddings) zeroed at padding)), zeroed at padding."""

    def __init__(self, cfg: DebertaV2Config):
        super().__init__()
        k = cfg.conv_kernel_size
        self.conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, k, padding=(k - 1) // 2, groups=cfg.conv_groups)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = activation(cfg.conv_act)

    def forward(self, embedded, residual, mask):  # (B, S, H), (B, S, H), (B, S) float
        out = self.conv(embedded.transpose(1, 2)).transpose(1, 2)  # (B, S, H)
        out = self.act(out * mask[:, :, None])
        return self.LayerNorm(residual + out) * mask[:, :, None]


class V2Encoder(Encoder):
    """DeBERTa-v2's encoder: LayerNorm'd relative embeddings and the optional nGiE convolution after layer 0."""
    self_attention_cls = V2SelfAttention

    def __init__(self, cfg: DebertaV2Config):
        super().__init__(cfg)
        if cfg.rel_layer_norm:
            self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.conv_kernel_size > 0:
            self.conv = ConvLayer(cfg)

    def rel_embedding(self):
        """The relative-position table (2k, H), LayerNorm'd when configured, or None."""
        rel = super().rel_embedding()  # (2k, H)
        return self.LayerNorm(rel) if rel is not None and hasattr(self, "LayerNorm") else rel

    def after_first_layer(self, embedded, h, mask):
        """The nGiE convolution over the embeddings, added to layer 0's output (when configured)."""
        return self.conv(embedded, h, mask) if hasattr(self, "conv") else h


class DebertaV2(Deberta):
    """DeBERTa with the v2 encoder."""
    encoder_cls = V2Encoder


@register_family("deberta-v2", config=DebertaV2Config, presets=PRESETS, tasks=TASKS, default_task="fill-mask")
def build(cfg: DebertaV2Config, task: str) -> DebertaForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    return build_task_model(cfg, task, DebertaV2)
