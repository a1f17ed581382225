"""Blocks shared by the decoder families (gpt2, mistral, mixtral): RMSNorm, RoPE, GQA attention with an
explicit KV cache, the causal / sliding-window mask, the task wrapper and a plain `generate()`.

KV cache contract (what the exported graphs take and give):
    past_keys, past_values        (L, B, KV, P, D)    one stacked tensor each, P = tokens already seen
    present_keys, present_values  (L, B, KV, P+S, D)  past with this call's S tokens appended
    attention_mask                (B, P+S)            1 = real token, 0 = padding (left padding is the rule)
    position_ids                  (B, S)              RoPE / learned-position index of each new token
One stacked tensor per direction keeps the signature fixed for any depth (five inputs, three outputs)
and exports with a single dynamic axis for P. The cache only grows; sliding-window attention masks
old keys out rather than dropping them (a rolling buffer is an export-time transform, not done here).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeport.errors import EdgeportError

DECODER_TASKS = ("text-generation", "text-classification")
DECODER_INPUTS = ("input_ids", "attention_mask", "position_ids", "past_keys", "past_values")
DECODER_TASK_OUTPUTS = {
    "text-generation": ("logits", "present_keys", "present_values"),
    "text-classification": ("logits",),
}


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (as HF's Llama/Mistral RMSNorm)."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE with cos/sin tables precomputed for positions 0 .. max_positions - 1."""

    def __init__(self, head_dim: int, max_positions: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))  # (D/2,)
        freqs = torch.arange(max_positions, dtype=torch.float)[:, None] * inv_freq[None]  # (N, D/2)
        angles = torch.cat([freqs, freqs], dim=-1)  # (N, D)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, position_ids):
        """(B, S) int -> cos, sin (B, 1, S, D), ready to broadcast over heads."""
        return self.cos[position_ids][:, None], self.sin[position_ids][:, None]


def rotate_half(x):
    """x (..., D) -> (..., D): [-x2, x1] over the two halves of the last axis (RoPE's rotate-half)."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x (B, H, S, D) rotated by cos/sin (B, 1, S, D)."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def positions_from_mask(attention_mask, new_tokens: int):
    """(B, P+S) mask -> (B, S) positions: running count of real tokens minus one, 0 on padding (as HF generate)."""
    pos = attention_mask.long().cumsum(-1) - 1
    pos = torch.where(attention_mask == 0, torch.zeros_like(pos), pos)
    return pos[:, pos.shape[1] - new_tokens:]


def decoder_bias(attention_mask, new_tokens: int, sliding_window: int | None, dtype=torch.float32):
    """(B, P+S) 1/0 mask -> (B, 1, S, P+S) additive bias: 0 where visible, dtype-min elsewhere.

    Query i (absolute index P + i) sees key j iff j is a real token, 0 <= (P + i) - j, and, with a
    window W, (P + i) - j < W (HF Mistral's rule). Indices are cache slots, so left padding keeps the
    distances of real tokens. Built once as booleans, so a fully masked row is uniform, never NaN.
    """
    total = attention_mask.shape[1]
    q = torch.arange(new_tokens, device=attention_mask.device) + (total - new_tokens)  # (S,)
    k = torch.arange(total, device=attention_mask.device)  # (P+S,)
    dist = q[:, None] - k[None, :]  # (S, P+S)
    visible = dist >= 0
    if sliding_window is not None:
        visible = visible & (dist < sliding_window)
    visible = visible[None, None] & (attention_mask[:, None, None, :] != 0)  # (B, 1, S, P+S)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(visible, zero, torch.full((), torch.finfo(dtype).min, dtype=dtype))


def repeat_kv(x, groups: int):
    """(B, KV, L, D) -> (B, KV * groups, L, D): each key/value head serves `groups` query heads."""
    if groups == 1:
        return x
    return x[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)


def attend(q, k, v, bias, scale: float, groups: int = 1):
    """q (B, H, S, D), k/v (B, H / groups, P+S, D), bias (B, 1, S, P+S) -> (B, S, H*D); softmax in float32.

    `groups` (query heads per kv head) is a Python int from the config, never read from a shape.
    """
    B, H, S, D = q.shape
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, H, P+S, D)
    scores = torch.matmul(q, k.transpose(2, 3)) * scale + bias  # (B, H, S, P+S)
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v).transpose(1, 2).reshape(B, S, H * D)


def split_heads(x, heads: int, head_dim: int):
    """(B, S, heads*D) -> (B, heads, S, D)."""
    B, S, _ = x.shape
    return x.view(B, S, heads, head_dim).transpose(1, 2)


class GQAttention(nn.Module):
    """Grouped-query self-attention with RoPE and a KV cache (Llama/Mistral names: q_proj ... o_proj)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, bias: bool = False):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=bias)

    def project(self, x, rope):
        """x (B, S, hidden) -> q (B, H, S, D) and k (B, KV, S, D) rotated, v (B, KV, S, D)."""
        cos, sin = rope
        q = apply_rope(split_heads(self.q_proj(x), self.heads, self.head_dim), cos, sin)  # (B, H, S, D)
        k = apply_rope(split_heads(self.k_proj(x), self.kv_heads, self.head_dim), cos, sin)  # (B, KV, S, D)
        return q, k, split_heads(self.v_proj(x), self.kv_heads, self.head_dim)

    def forward(self, x, bias, rope, past_k, past_v):
        """x (B, S, hidden), past (B, KV, P, D) -> (out (B, S, hidden), present_k, present_v (B, KV, P+S, D))."""
        q, k, v = self.project(x, rope)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, KV, P+S, D)
        out = attend(q, k, v, bias, 1.0 / math.sqrt(self.head_dim), self.heads // self.kv_heads)
        return self.o_proj(out), k, v


def run_layers(layers, x, past_keys, past_values, *args):
    """Each layer(x, *args, past_k, past_v) -> (x, k, v); returns x and the stacked (L, B, KV, P+S, D) cache."""
    keys, values = [], []
    for i, layer in enumerate(layers):
        x, k, v = layer(x, *args, past_keys[i], past_values[i])
        keys.append(k)
        values.append(v)
    return x, torch.stack(keys), torch.stack(values)


class DecoderForTask(nn.Module):
    """A decoder backbone under `prefix` (HF's attribute name: `transformer`, `model`) plus a task head.

    The backbone: forward(input_ids, attention_mask, position_ids, past_keys, past_values)
    -> (hidden (B, S, H) after the final norm, present_keys, present_values); attributes
    `cache_dims` = (layers, kv_heads, head_dim) and `input_embeddings` (the token nn.Embedding).
    text-generation: lm_head (B, S, V), tied to the input embeddings when `tie_embeddings`.
    text-classification: HF's *ForSequenceClassification `score` (no bias) on the last non-pad token:
    with `pad_token_id` (the config's), the rightmost token whose id is not the pad id, as transformers
    picks it (ignoring the mask); without one, the rightmost token the attention mask marks real
    (transformers refuses batches > 1 then; both take the last token of an unpadded row).
    """

    HEAD_PREFIXES = ("lm_head.", "score.")

    def __init__(self, prefix: str, backbone: nn.Module, task: str, hidden_size: int, vocab_size: int,
                 num_labels: int, tie_embeddings: bool, pad_token_id: int | None = None,
                 lm_head: tuple | None = None):
        super().__init__()
        self.pad_token_id = pad_token_id
        self.head_module = None  # text-generation with the family's own LM head: (attribute, module (B,S,H)->(B,S,V))
        if lm_head is not None:
            self.head_module = lm_head[0]
            self.add_module(*lm_head)
        if task not in DECODER_TASKS:
            raise EdgeportError(f"unknown decoder task '{task}'; tasks: {', '.join(DECODER_TASKS)}")
        self.prefix, self.task, self.tied = prefix, task, tie_embeddings and task == "text-generation"
        self.add_module(prefix, backbone)
        if task == "text-classification":
            self.score = nn.Linear(hidden_size, num_labels, bias=False)
        elif not self.tied and lm_head is None:
            self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)

    @property
    def backbone(self) -> nn.Module:
        """The backbone module (registered under `prefix`)."""
        return getattr(self, self.prefix)

    def head_prefixes(self) -> tuple:
        """Checkpoint key prefixes of the task heads (lm_head., score., and the family's own head's)."""
        return self.HEAD_PREFIXES + ((f"{self.head_module}.",) if self.head_module else ())

    def empty_cache(self, batch: int, dtype=torch.float32, device=None):
        """past_keys / past_values for a first call: (L, B, KV, 0, D)."""
        L, KV, D = self.backbone.cache_dims
        return tuple(torch.zeros(L, batch, KV, 0, D, dtype=dtype, device=device) for _ in range(2))

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_keys=None, past_values=None):
        B, S = input_ids.shape
        if past_keys is None:
            weight = self.backbone.input_embeddings.weight
            past_keys, past_values = self.empty_cache(B, weight.dtype, weight.device)
        if attention_mask is None:
            attention_mask = torch.ones(B, past_keys.shape[3] + S, dtype=torch.long, device=input_ids.device)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, S)
        h, keys, values = self.backbone(input_ids, attention_mask, position_ids, past_keys, past_values)
        if self.task == "text-classification":
            real = attention_mask[:, -S:] if self.pad_token_id is None else input_ids != self.pad_token_id
            return (self.score(last_token(h, real)),)  # (B, num_labels)
        if self.head_module is not None:
            return getattr(self, self.head_module)(h), keys, values  # (B, S, V)
        w = self.backbone.input_embeddings.weight if self.tied else self.lm_head.weight
        return torch.matmul(h, w.t()), keys, values  # (B, S, V)


def last_token(h, mask):
    """h (B, S, H), mask (B, S) -> (B, H): the rightmost real token of each row (position 0 if none)."""
    # int32: TFLite's ARG_MAX takes no int64 input
    idx = (torch.arange(mask.shape[1], dtype=torch.int32, device=mask.device) * (mask != 0).int()).argmax(-1)  # (B,)
    return h.gather(1, idx[:, None, None].expand(-1, 1, h.shape[2]))[:, 0]


@torch.no_grad()
def generate(model: DecoderForTask, input_ids, attention_mask=None, max_new_tokens: int = 20,
             do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, eos_token_id: int | None = None,
             pad_token_id: int = 0, generator: torch.Generator | None = None):
    """Greedy or sampled continuation with the KV cache: (B, S) prompt -> (B, S + new) tokens.

    One prefill call, then one call per new token. Rows that emitted `eos_token_id` continue with
    `pad_token_id`; generation stops early when every row has finished (as HF generate).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    tokens, step, mask = input_ids, input_ids, attention_mask
    pos = positions_from_mask(mask, step.shape[1])
    past_k = past_v = None
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits, past_k, past_v = model(step, mask, pos, past_k, past_v)
        nxt = next_token(logits[:, -1], do_sample, temperature, top_k, generator)  # (B,)
        if eos_token_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            done = done | (nxt == eos_token_id)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        step, pos = nxt[:, None], pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if bool(done.all()):
            break
    return tokens


def next_token(logits, do_sample: bool, temperature: float, top_k: int, generator):
    """(B, V) logits -> (B,) token ids: argmax, or a sample from softmax(logits / T) over the top k."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / max(temperature, 1e-6)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
