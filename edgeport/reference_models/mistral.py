"""Mistral (https://arxiv.org/abs/2310.06825): GQA, RoPE, sliding-window attention, RMSNorm, SwiGLU MLP.

Module and parameter names follow transformers' Mistral* classes (`model.layers.N.self_attn.q_proj`,
`model.layers.N.mlp.gate_proj`, `lm_head`, `score`) so HF checkpoints load as is. The feed-forward
is pluggable (`ffn`): Mixtral reuses everything here with a mixture-of-experts FFN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.blocks import activation, init_weights
from edgeport.reference_models.config import ModelConfig
from edgeport.reference_models.decoder import (DECODER_TASKS, DecoderForTask, GQAttention, RMSNorm, RotaryEmbedding,
                                               decoder_bias, run_layers)
from edgeport.reference_models.registry import register_family


@dataclass
class MistralConfig(ModelConfig):
    """Mistral's config.json fields (transformers' MistralConfig names and defaults)."""
    model_type = "mistral"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336  # SwiGLU inner width
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # GQA: query heads share kv heads; None -> num_attention_heads
    head_dim: int | None = None  # None -> hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768  # length of the precomputed RoPE cos/sin tables
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0  # HF 5 writes it inside `rope_parameters`; older configs at top level
    sliding_window: int | None = 4096  # key j visible from query i iff 0 <= i - j < window; None: full causal
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    pad_token_id: int | None = None  # sequence classification scores the last token that is not this id

    @classmethod
    def from_hf(cls, d: dict) -> "MistralConfig":
        """As ModelConfig.from_hf; an explicit null sliding_window means full causal attention."""
        d = dict(d)
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind != "default":
            raise EdgeportError(f"config: rope_type '{kind}' is not supported (only the default RoPE)")
        if rope.get("rope_theta") is not None:
            d["rope_theta"] = rope["rope_theta"]
        cfg = super().from_hf(d)
        if "sliding_window" in d and d["sliding_window"] is None:  # explicit null: full causal attention
            cfg.sliding_window = None
        return cfg

    @property
    def kv_heads(self) -> int:
        """Key/value heads (num_key_value_heads, else num_attention_heads)."""
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def dim_per_head(self) -> int:
        """head_dim, else hidden_size // num_attention_heads."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def validate(self):
        """EdgeportError naming the first value that cannot build a model."""
        super().validate()
        activation(self.hidden_act)
        if self.num_attention_heads % self.kv_heads:
            raise EdgeportError("config: num_attention_heads must be a multiple of num_key_value_heads")
        if self.dim_per_head % 2:
            raise EdgeportError("config: RoPE needs an even head_dim")


PRESETS = {
    # https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
    "mistral-7b": {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                   "sliding_window": 4096, "tie_word_embeddings": False},
    # 2 layers, GQA 4:2, a window of 8 so short test sequences cross it.
    "mistral-tiny": {"model_type": "mistral", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "sliding_window": 8},
}


class MLP(nn.Module):
    """SwiGLU: down(act(gate(x)) * up(x))."""

    def __init__(self, cfg: MistralConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


# An FFN factory: cfg -> (attribute name in the layer, i.e. the checkpoint key, module (B, S, H) -> (B, S, H)).
FFNFactory = Callable[[MistralConfig], "tuple[str, nn.Module]"]


def mlp_ffn(cfg: MistralConfig):
    """The dense SwiGLU feed-forward: (attribute name 'mlp', module)."""
    return "mlp", MLP(cfg)


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then h + ffn(norm(h))."""

    def __init__(self, cfg: MistralConfig, ffn: FFNFactory):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = GQAttention(cfg.hidden_size, cfg.num_attention_heads, cfg.kv_heads, cfg.dim_per_head)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.ffn_name, module = ffn(cfg)
        self.add_module(self.ffn_name, module)

    def forward(self, x, bias, rope, past_k, past_v):
        a, k, v = self.self_attn(self.input_layernorm(x), bias, rope, past_k, past_v)
        h = x + a  # (B, S, H)
        return h + getattr(self, self.ffn_name)(self.post_attention_layernorm(h)), k, v


class MistralModel(nn.Module):
    """The Mistral-architecture backbone (embeddings, layers, final RMSNorm; RoPE) with the decoder cache
    contract."""
    def __init__(self, cfg: MistralConfig, ffn: FFNFactory):
        super().__init__()
        self.sliding_window = cfg.sliding_window
        self.cache_dims = (cfg.num_hidden_layers, cfg.kv_heads, cfg.dim_per_head)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, ffn) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.dim_per_head, cfg.max_position_embeddings, cfg.rope_theta)

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The token embedding (embed_tokens)."""
        return self.embed_tokens

    def forward(self, input_ids, attention_mask, position_ids, past_keys, past_values):
        x = self.embed_tokens(input_ids)  # (B, S, H)
        bias = self.attention_bias(attention_mask, input_ids.shape[1], x.dtype)  # (B, 1, S, P+S)
        rope = self.rotary_emb(position_ids)  # cos, sin (B, 1, S, D)
        x, keys, values = run_layers(self.layers, x, past_keys, past_values, bias, rope)
        return self.norm(x), keys, values

    def attention_bias(self, attention_mask, new_tokens: int, dtype):
        """(B, P+S) 1/0 mask -> (B, 1, S, P+S) additive bias: padding, causality and the sliding window."""
        return decoder_bias(attention_mask, new_tokens, self.sliding_window, dtype)


def build_decoder(cfg: MistralConfig, task: str, ffn: FFNFactory) -> DecoderForTask:
    """The Mistral-architecture task model with the given feed-forward (shared with Mixtral)."""
    model = DecoderForTask("model", MistralModel(cfg, ffn), task, cfg.hidden_size, cfg.vocab_size,
                           cfg.num_labels, cfg.tie_word_embeddings, cfg.pad_token_id)
    init_weights(model, cfg.initializer_range)
    return model.eval()


@register_family("mistral", config=MistralConfig, presets=PRESETS, tasks=DECODER_TASKS,
                 default_task="text-generation")
def build(cfg: MistralConfig, task: str) -> DecoderForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    return build_decoder(cfg, task, mlp_ffn)
