"""GPT-2 (https://openai.com/research/better-language-models): learned positions, pre-LayerNorm blocks.

Module and parameter names follow transformers' GPT2* classes (`transformer.h.N.attn.c_attn.weight`,
`transformer.wte`, `score`). Projections keep GPT-2's Conv1D semantics: weight (in, out), y = x W + b,
so checkpoints load without transposes. `lm_head` is tied to `transformer.wte` (no tensor of its own).
MegatronGPT2 checkpoints converted by transformers' convert_megatron_gpt2_checkpoint.py are this
architecture (model_type "gpt2"); their `gelu_fast` activation is the tanh GELU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.blocks import activation, init_weights
from edgeport.reference_models.config import ModelConfig
from edgeport.reference_models.decoder import (DECODER_TASKS, DecoderForTask, attend, decoder_bias, run_layers,
                                               split_heads)
from edgeport.reference_models.registry import register_family

# HF's GELUFastActivation is the tanh approximation written differently (equal to ~1e-7).
EXTRA_ACTIVATIONS = {"gelu_fast": lambda x: F.gelu(x, approximate="tanh")}


def gpt2_activation(name: str):
    """GPT-2's activation_function names (gelu_new, gelu_fast, ...) -> the function; EdgeportError when
    unknown."""
    return EXTRA_ACTIVATIONS[name] if name in EXTRA_ACTIVATIONS else activation(name)


@dataclass
class GPT2Config(ModelConfig):
    """GPT-2's config.json fields (transformers' GPT2Config names and defaults; MegatronGPT2 checkpoints
    too)."""
    model_type = "gpt2"
    vocab_size: int = 50257
    n_positions: int = 1024  # learned position embeddings: the longest sequence (past + new)
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None -> 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True  # scores / sqrt(head_dim)
    scale_attn_by_inverse_layer_idx: bool = False  # also / (layer index + 1) (Mistral-style stability trick)
    add_cross_attention: bool = False  # encoder-decoder use: not supported
    tie_word_embeddings: bool = True
    pad_token_id: int | None = None  # sequence classification scores the last token that is not this id

    def validate(self):
        """EdgeportError naming the first value that cannot build a model."""
        super().validate()
        gpt2_activation(self.activation_function)
        if self.n_embd % self.n_head:
            raise EdgeportError("config: n_embd must be divisible by n_head")
        if self.add_cross_attention:
            raise EdgeportError("config: add_cross_attention (GPT-2 as an encoder-decoder's decoder) is not supported")


PRESETS = {
    # https://huggingface.co/openai-community/gpt2/blob/main/config.json
    "gpt2": {"model_type": "gpt2"},
    # https://huggingface.co/nvidia/megatron-gpt2-345m, as transformers' convert_megatron_gpt2_checkpoint.py writes it
    "megatron-gpt2-345m": {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 1024,
                           "n_layer": 24, "n_head": 16, "n_inner": 4096, "activation_function": "gelu_new"},
    "gpt2-tiny": {"model_type": "gpt2", "vocab_size": 1024, "n_positions": 128, "n_embd": 64, "n_layer": 2,
                  "n_head": 4},
}


class Conv1D(nn.Module):
    """GPT-2's linear layer with the weight stored (in, out)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


class Attention(nn.Module):
    """Causal self-attention with the packed c_attn projection and a KV cache."""
    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.heads, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.scale = (1.0 / math.sqrt(self.head_dim)) if cfg.scale_attn_weights else 1.0
        if cfg.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_idx + 1
        self.c_attn = Conv1D(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)

    def forward(self, x, bias, past_k, past_v):
        q, k, v = (split_heads(t, self.heads, self.head_dim) for t in self.c_attn(x).chunk(3, dim=-1))  # (B, H, S, D)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, H, P+S, D)
        return self.c_proj(attend(q, k, v, bias, self.scale)), k, v


class MLP(nn.Module):
    """c_fc -> activation -> c_proj."""
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        inner = cfg.n_inner or 4 * cfg.n_embd
        self.c_fc = Conv1D(cfg.n_embd, inner)
        self.c_proj = Conv1D(inner, cfg.n_embd)
        self.act = gpt2_activation(cfg.activation_function)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then h + mlp(ln_2(h))."""
    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = Attention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x, bias, past_k, past_v):
        a, k, v = self.attn(self.ln_1(x), bias, past_k, past_v)
        h = x + a
        return h + self.mlp(self.ln_2(h)), k, v


class GPT2Model(nn.Module):
    """Token + learned position embeddings, blocks, ln_f; the decoder backbone contract of
    decoder.DecoderForTask."""
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.cache_dims = (cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The token embedding (wte), which the tied lm_head reuses."""
        return self.wte

    def forward(self, input_ids, attention_mask, position_ids, past_keys, past_values):
        x = self.wte(input_ids) + self.wpe(position_ids)  # (B, S, H)
        bias = decoder_bias(attention_mask, input_ids.shape[1], None, x.dtype)  # (B, 1, S, P+S)
        x, keys, values = run_layers(self.h, x, past_keys, past_values, bias)
        return self.ln_f(x), keys, values


@register_family("gpt2", config=GPT2Config, presets=PRESETS, tasks=DECODER_TASKS, default_task="text-generation")
def build(cfg: GPT2Config, task: str) -> DecoderForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    model = DecoderForTask("transformer", GPT2Model(cfg), task, cfg.n_embd, cfg.vocab_size, cfg.num_labels,
                           cfg.tie_word_embeddings, cfg.pad_token_id)
    init_weights(model, cfg.initializer_range)
    for m in model.modules():
        if isinstance(m, Conv1D):
            nn.init.normal_(m.weight, std=cfg.initializer_range)
    return model.eval()
