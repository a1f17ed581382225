"""Mixtral (https://arxiv.org/abs/2401.04088): Mistral with a sparse top-k mixture-of-experts feed-forward.

Everything but the FFN is mistral.py's. Checkpoint keys are the original Mixtral ones, which
transformers 5 still writes (it fuses them into `mlp.experts.gate_up_proj` only in memory):
`model.layers.N.block_sparse_moe.gate.weight` (E, H) and
`model.layers.N.block_sparse_moe.experts.M.{w1,w2,w3}.weight` (gate (I, H), down (H, I), up (I, H)).

The MoE runs as `ops.moe.moe_dense` (traceable, every expert on every token) by default;
`swap_moe(model, "op")` (edgeport.ops.moe) switches every `block_sparse_moe` to the `edgeport::moe`
custom op, and `swap_moe(model, "dense")` switches back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.ops.moe import moe_dense
from edgeport.reference_models.decoder import DECODER_TASKS, DecoderForTask
from edgeport.reference_models.mistral import MistralConfig, build_decoder
from edgeport.reference_models.registry import register_family


@dataclass
class MixtralConfig(MistralConfig):
    """Mixtral's config.json fields: Mistral's plus the experts (num_local_experts, num_experts_per_tok)."""
    model_type = "mixtral"
    num_local_experts: int = 8  # experts per layer (E)
    num_experts_per_tok: int = 2  # top-k experts each token is routed to
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6
    sliding_window: int | None = None

    def validate(self):
        """EdgeportError naming the first value that cannot build a model."""
        super().validate()
        if not 1 <= self.num_experts_per_tok <= self.num_local_experts:
            raise EdgeportError("config: num_experts_per_tok must be between 1 and num_local_experts")


PRESETS = {
    # https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
    "mixtral-8x7b": {"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
                     "sliding_window": None, "num_local_experts": 8, "num_experts_per_tok": 2,
                     "tie_word_embeddings": False},
    # 2 layers, 4 experts top-2, a window of 8 so short test sequences cross it.
    "mixtral-tiny": {"model_type": "mixtral", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 96,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 256, "sliding_window": 8, "num_local_experts": 4,
                     "num_experts_per_tok": 2},
}


class Expert(nn.Module):
    """One SwiGLU expert with Mixtral's names: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: MixtralConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)


class SparseMoe(nn.Module):
    """Router `gate` + experts; computed with the dense decomposition (traceable for any routing)."""

    def __init__(self, cfg: MixtralConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_local_experts, bias=False)
        self.experts = nn.ModuleList(Expert(cfg) for _ in range(cfg.num_local_experts))

    def stacked(self):
        """Expert weights stacked: w1 (E, I, H), w3 (E, I, H), w2 (E, H, I)."""
        return tuple(torch.stack([getattr(e, n).weight for e in self.experts]) for n in ("w1", "w3", "w2"))

    def moe(self, x, logits):
        """x (T, H), router logits (T, E) -> (T, H) by the dense decomposition (ops.moe.moe_dense)."""
        return moe_dense(x, logits, *self.stacked(), self.top_k)

    def forward(self, x):
        B, S, H = x.shape
        flat = x.reshape(B * S, H)  # (T, H)
        return self.moe(flat, self.gate(flat)).reshape(B, S, H)


def moe_ffn(cfg: MixtralConfig):
    """The sparse MoE feed-forward: (attribute name 'block_sparse_moe', module)."""
    return "block_sparse_moe", SparseMoe(cfg)


@register_family("mixtral", config=MixtralConfig, presets=PRESETS, tasks=DECODER_TASKS,
                 default_task="text-generation")
def build(cfg: MixtralConfig, task: str) -> DecoderForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    return build_decoder(cfg, task, moe_ffn)
