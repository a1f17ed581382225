"""MEGA (https://arxiv.org/abs/2209.10655): multi-dimensional damped EMA + single-head gated attention.

Module and parameter names follow transformers 4.x's Mega* classes (removed in 5.x; the golden tests
were made with 4.57.6 by scripts/make_mega_golden.py), so HF checkpoints load as is.

Export-friendly forms of what HF computes with data-dependent code:
- the EMA is a causal (and, bidirectional, anti-causal) convolution: HF runs it through an FFT; here
  the kernel (D, L) is built from `arange(L)` and applied as an (L, L) Toeplitz matmul (a Gather
  with static lag indices + MatMul: ONNX opset 17 and TFLite builtins, no DFT op needed);
- chunked attention (HF reshapes into chunk_size blocks) is full attention with a block-diagonal
  mask and within-chunk positions, so one graph serves every length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.blocks import EncoderForTask, activation, init_weights
from edgeport.reference_models.config import ModelConfig
from edgeport.reference_models.registry import register_family

NORMALIZATIONS = ("layernorm", "scalenorm", "rmsnorm", "batchnorm", "syncbatchnorm")
ATTENTION_ACTIVATIONS = ("softmax", "laplace", "relu2")
POSITION_BIASES = ("simple", "rotary")
TASKS = ("feature-extraction", "fill-mask", "text-classification", "token-classification", "question-answering",
         "multiple-choice", "causal-lm")


@dataclass
class MegaConfig(ModelConfig):
    """MEGA's config.json fields (transformers 4.57.6's MegaConfig names and defaults)."""
    model_type = "mega"
    vocab_size: int = 30522
    hidden_size: int = 128
    num_hidden_layers: int = 4
    intermediate_size: int = 256  # value and gated-attention width (E); attention is single-head
    ema_projection_size: int = 16  # EMA dimensions per channel (N)
    bidirectional: bool = True  # EMA in both directions: kernels for 2 * hidden_size channels
    shared_representation_size: int = 64  # query/key width (Z)
    use_chunking: bool = False  # attention only within blocks of chunk_size tokens
    chunk_size: int = -1  # -1: none; also caps the "simple" position bias range when >= 0
    truncation: int | None = None  # EMA kernel length cap; None: as long as the sequence
    normalize_before_mega: bool = True  # pre-norm (True) or post-norm of the attention sub-layer
    normalization_type: str = "scalenorm"
    norm_affine: bool = True  # norms have learned scale (and bias)
    activation: str = "silu"  # values, attention output and the NFFN
    attention_activation: str = "softmax"  # "laplace"/"relu2": element-wise attention, no softmax
    use_normalized_ffn: bool = True  # a normalised FFN after each attention sub-layer
    nffn_hidden_size: int = 256
    normalize_before_ffn: bool = True
    max_positions: int = 2048  # "simple" bias table is 2 * max_positions - 1 long
    add_token_type_embeddings: bool = False
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    ema_delta_alpha_range: float = 0.2  # init std of the EMA damping/decay logits
    ema_beta_range: float = 0.02  # init std of the EMA expansion (around +-1)
    ema_gamma_omega_range: float = 1.0  # init std of the EMA projection and residual weight
    relative_positional_bias: str = "rotary"
    add_lm_hidden_dense_layer: bool = True  # fill-mask: dense + tanh before the vocab projection
    is_decoder: bool = False  # causal attention (use with bidirectional=False)
    tie_word_embeddings: bool = True  # fill-mask projection shares the word embedding matrix
    pad_token_id: int = 1

    @property
    def input_names(self) -> tuple:
        """What the task model's forward uses: token_type_ids only with `add_token_type_embeddings`
        (transformers' MegaEmbeddings ignores them otherwise; the exported graph then has no such input)."""
        return ("input_ids", "attention_mask") + (("token_type_ids",) if self.add_token_type_embeddings else ())

    def validate(self):
        # The base check rejects negative ints; chunk_size uses -1 for "none", so check by hand.
        """EdgeportError naming the first value that cannot build a model."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
                     "ema_projection_size", "shared_representation_size", "nffn_hidden_size", "max_positions"):
            if getattr(self, name) <= 0:
                raise EdgeportError(f"config: {name} must be > 0, got {getattr(self, name)}")
        for name, value, allowed in (("normalization_type", self.normalization_type, NORMALIZATIONS),
                                     ("attention_activation", self.attention_activation, ATTENTION_ACTIVATIONS),
                                     ("relative_positional_bias", self.relative_positional_bias, POSITION_BIASES)):
            if value not in allowed:
                raise EdgeportError(f"config: {name} must be one of {allowed}, got '{value}'")
        if self.use_chunking and self.chunk_size <= 0:
            raise EdgeportError("config: use_chunking needs chunk_size > 0")
        if self.relative_positional_bias == "rotary" and self.shared_representation_size % 2:
            raise EdgeportError("config: rotary position bias needs an even shared_representation_size")
        if self.truncation is not None and self.truncation <= 0:
            raise EdgeportError("config: truncation must be > 0 or null")
        activation(self.activation)

    @property
    def chunk(self) -> int | None:
        """Chunk length when chunking is on, else None."""
        return self.chunk_size if self.use_chunking else None


PRESETS = {
    # https://huggingface.co/mnaylor/mega-base-wikitext/blob/main/config.json
    "mega": {"model_type": "mega", "vocab_size": 50265, "hidden_size": 128, "num_hidden_layers": 4,
             "intermediate_size": 256, "ema_projection_size": 16, "shared_representation_size": 64,
             "nffn_hidden_size": 256, "max_positions": 10000, "normalization_type": "scalenorm",
             "relative_positional_bias": "rotary", "add_lm_hidden_dense_layer": False, "pad_token_id": 1},
    # A 2-layer bidirectional encoder for tests.
    "mega-tiny": {"model_type": "mega", "vocab_size": 1024, "hidden_size": 32, "num_hidden_layers": 2,
                  "intermediate_size": 48, "ema_projection_size": 4, "shared_representation_size": 16,
                  "nffn_hidden_size": 64, "max_positions": 256, "pad_token_id": 1},
    # The same as a decoder (causal attention, unidirectional EMA), for causal-lm tests.
    "mega-decoder-tiny": {"model_type": "mega", "vocab_size": 1024, "hidden_size": 32, "num_hidden_layers": 2,
                          "intermediate_size": 48, "ema_projection_size": 4, "shared_representation_size": 16,
                          "nffn_hidden_size": 64, "max_positions": 256, "pad_token_id": 1, "is_decoder": True,
                          "bidirectional": False},
}


# ---- normalisations (HF wraps each in MegaSequenceNorm: keys are `norm.norm.*`) --------------------

class ScaleNorm(nn.Module):
    """x * scalar / rms(x): one learned scalar."""

    def __init__(self, eps: float, affine: bool):
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1)) if affine else None

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y if self.scalar is None else y * self.scalar


class RMSNorm(nn.Module):
    """HF's MegaRMSNorm as it computes: x * weight. Its rsqrt result is discarded (an HF bug that
    checkpoints trained with it rely on), so no normalisation happens."""

    def __init__(self, size: int, affine: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size)) if affine else None

    def forward(self, x):
        return x if self.weight is None else x * self.weight


class BatchNorm(nn.Module):
    """BatchNorm1d over channels at inference: running statistics, an elementwise affine map."""

    def __init__(self, size: int, eps: float, affine: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size)) if affine else None
        self.bias = nn.Parameter(torch.zeros(size)) if affine else None
        self.register_buffer("running_mean", torch.zeros(size))
        self.register_buffer("running_var", torch.ones(size))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        y = (x - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
        return y if self.weight is None else y * self.weight + self.bias


class SequenceNorm(nn.Module):
    """The configured normalisation (layernorm, scalenorm, rmsnorm, batchnorm) over (B, L, H)."""
    def __init__(self, cfg: MegaConfig, eps: float = 1e-5):
        super().__init__()
        kind, h, affine = cfg.normalization_type, cfg.hidden_size, cfg.norm_affine
        if kind == "layernorm":
            self.norm = nn.LayerNorm(h, eps=eps, elementwise_affine=affine)
        elif kind == "scalenorm":
            self.norm = ScaleNorm(eps, affine)
        elif kind == "rmsnorm":
            self.norm = RMSNorm(h, affine)
        else:  # batchnorm, syncbatchnorm: identical at inference
            self.norm = BatchNorm(h, eps, affine)

    def forward(self, x):
        return self.norm(x)


# ---- positions and masks, shared by every layer -----------------------------------------------------

@dataclass
class Layout:
    """Where attention may look, for one (batch, length)."""

    local: torch.Tensor  # (L,) position inside its chunk (= position without chunking)
    blocked: torch.Tensor  # (B, L, L) bool: softmax attention may not look here
    allowed: torch.Tensor  # (B, L, L) float 1/0: element-wise attention keeps these
    lengths: torch.Tensor  # (B, L, 1) element-wise attention's normaliser per query


def layout(attention_mask: torch.Tensor, cfg: MegaConfig) -> Layout:
    """attention_mask (B, L) 1/0 -> the Layout (chunk positions, blocked/allowed pairs, lengths) every layer
    shares."""
    pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (L,)
    chunk, local = (pos // cfg.chunk, pos % cfg.chunk) if cfg.chunk else (pos * 0, pos)
    same = chunk[:, None] == chunk[None, :]  # (L, L) same chunk
    causal = local[:, None] >= local[None, :] if cfg.is_decoder else torch.ones_like(same)
    keep = attention_mask.to(torch.float32)  # (B, L)
    count = torch.matmul(keep, same.to(torch.float32))  # (B, L) real tokens in each position's chunk
    # HF masks padded keys only where the chunk holds at least one real token.
    padded = (keep == 0) & (count > 0)  # (B, L) over keys
    blocked = ~(same & causal)[None] | padded[:, None, :]  # (B, L, L)
    allowed = ((same & causal)[None] & (keep > 0)[:, None, :]).to(torch.float32)
    lengths = (local + 1).to(torch.float32)[None, :, None] if cfg.is_decoder else count.clamp(min=1.0)[..., None]
    return Layout(local, blocked, allowed, lengths)


class SimpleRelativePositionalBias(nn.Module):
    """bias[i, j] = rel_pos_bias[span - 1 + j - i], span = chunk_size if >= 0 else max_positions."""

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.span = cfg.chunk_size if cfg.chunk_size >= 0 else cfg.max_positions
        self.rel_pos_bias = nn.Parameter(torch.randn(2 * cfg.max_positions - 1) * cfg.initializer_range)

    def forward(self, local):  # (L,) -> (L, L)
        # Pairs in different chunks fall outside the table: clamped here, masked by the caller.
        # (HF refuses chunks longer than span; here they would read clamped entries.)
        idx = (self.span - 1 + local[None, :] - local[:, None]).clamp(0, self.rel_pos_bias.shape[0] - 1)
        return self.rel_pos_bias[idx]


class RotaryRelativePositionalBias(nn.Module):
    """bias[i, j] = <rotate(alpha, i), rotate(b_param, j)>, sinusoids over within-chunk positions."""

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        z = cfg.shared_representation_size
        self.alpha = nn.Parameter(torch.randn(1, z) * cfg.initializer_range)
        self.b_param = nn.Parameter(torch.randn(1, z) * cfg.initializer_range)

    def rotate(self, v, sin, cos):  # v (1, Z); sin, cos (L, Z/2) -> (L, Z)
        """v (1, Z) rotated by sin/cos (L, Z/2) -> (L, Z)."""
        v1, v2 = v.chunk(2, dim=-1)
        return torch.cat([v1 * cos - v2 * sin, v2 * cos + v1 * sin], dim=-1)

    def forward(self, local):  # (L,) -> (L, L)
        half = self.alpha.shape[1] // 2
        freq = torch.exp(torch.arange(half, device=local.device).float() * -(math.log(10000) / half))
        angle = local.float()[:, None] * freq[None, :]  # (L, Z/2)
        sin, cos = torch.sin(angle), torch.cos(angle)
        return self.rotate(self.alpha, sin, cos) @ self.rotate(self.b_param, sin, cos).t()


# ---- the EMA -------------------------------------------------------------------------------------

class MultiDimensionDampedEma(nn.Module):
    """Per channel h: y_t = sum_{m<=t} k[h, t-m] x_m (+ sum_{m>=t} k[H+h, m-t] x_m when bidirectional).

    k[d, l] = scale * sum_n gamma[d, n] * p[d, n] * beta[d, n] * q[d, n]^l (0 for l >= truncation),
    with p = sigmoid(delta), q = 1 - p * sigmoid(alpha). Output: silu(y + omega * x). The (H, L, L)
    Toeplitz matrix costs H * L^2 floats per layer (128 MiB at H=128, L=512): a reference, not a kernel.
    """

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        h, n = cfg.hidden_size, cfg.ema_projection_size
        d = 2 * h if cfg.bidirectional else h
        self.bidirectional, self.truncation, self.scale = cfg.bidirectional, cfg.truncation, math.sqrt(1.0 / n)
        sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n)])  # beta starts at +-1
        self.damping_factor = nn.Parameter(torch.randn(d, n, 1) * cfg.ema_delta_alpha_range)  # delta
        self.decay_factor = nn.Parameter(torch.randn(d, n, 1) * cfg.ema_delta_alpha_range)  # alpha
        self.ema_expansion_matrix = nn.Parameter(sign[:, None] + torch.randn(d, n, 1) * cfg.ema_beta_range)  # beta
        self.kernel_projection_matrix = nn.Parameter(torch.randn(d, n) * cfg.ema_gamma_omega_range)  # gamma
        self.residual_weight = nn.Parameter(torch.randn(h) * cfg.ema_gamma_omega_range)  # omega

    def kernel(self, steps):  # steps (L,) float 0..L-1 -> (D, L)
        """steps (L,) -> the EMA kernel (D, L) over time lags 0..L-1."""
        p = torch.sigmoid(self.damping_factor)  # (D, N, 1)
        q = 1.0 - p * torch.sigmoid(self.decay_factor)
        k = (p * self.ema_expansion_matrix) * torch.exp(steps * torch.log(q))  # (D, N, L)
        k = (k * (self.kernel_projection_matrix * self.scale)[..., None]).sum(1)  # (D, L)
        if self.truncation is not None:
            k = k * (steps < self.truncation).to(k.dtype)
        return k

    def lag_kernel(self, steps):  # steps (L,) -> (H, 2L - 1): weights of lags t - m = -(L-1) .. L-1
        """steps (L,) -> (H, 2L - 1) weights of lags -(L-1)..L-1 (bidirectional: both directions)."""
        k = self.kernel(steps)  # (D, L)
        fwd, bwd = k.chunk(2, dim=0) if self.bidirectional else (k, torch.zeros_like(k))
        # [bwd[L-1] .. bwd[1] | fwd[0] + bwd[0] | fwd[1] .. fwd[L-1]]: bwd weighs later tokens
        return torch.cat([bwd[:, 1:].flip(-1), fwd[:, :1] + bwd[:, :1], fwd[:, 1:]], dim=-1)

    def toeplitz(self, x):  # x (B, L, H): only its length is used -> (H, L, L), y[:, t] = T[:, t] @ x[:, :]
        """x (B, L, H) (its length only) -> (H, L, L) Toeplitz matrix T, y[:, t] = T[:, t] @ x."""
        pos = torch.arange(x.shape[1], device=x.device)  # (L,)
        lags = pos[:, None] - pos[None, :] + pos[-1]  # (L, L): t - m + L - 1, in 0 .. 2L - 2
        # One Gather of whole rows (lag-major table, axis 0), then one transpose: onnxruntime's Gather
        # along the last axis copies element by element and took 80% of the ONNX graph's time.
        return self.lag_kernel(pos.to(x.dtype)).t()[lags].permute(2, 0, 1)  # (L, L, H) -> (H, L, L)

    def forward(self, x, keep):  # x (B, L, H), keep (B, L) float
        residual = x * self.residual_weight
        masked = (x * keep[..., None]).transpose(1, 2).unsqueeze(-1)  # (B, H, L, 1), padding zeroed
        y = torch.matmul(self.toeplitz(x), masked).squeeze(-1).transpose(1, 2)  # (B, L, H)
        return F.silu(y + residual)


# ---- the layer -----------------------------------------------------------------------------------

def laplace(x, mu=0.707107, sigma=0.282095):
    """MEGA's laplace attention function: 0.5 * (1 + erf((x - mu) / (sigma sqrt 2)))."""
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


class MovingAverageGatedAttention(nn.Module):
    """MEGA's layer: damped EMA, single-head gated attention with relative bias, gated residual."""
    def __init__(self, cfg: MegaConfig):
        super().__init__()
        h, e, z = cfg.hidden_size, cfg.intermediate_size, cfg.shared_representation_size
        self.sizes, self.cfg = (h, e, z), cfg
        self.act = activation(cfg.activation)
        self.norm = SequenceNorm(cfg)
        self.ema_gate = MultiDimensionDampedEma(cfg)
        self.v_proj = nn.Linear(h, e)
        self.mx_proj = nn.Linear(h, z + e + 2 * h)
        self.h_proj = nn.Linear(e, h)
        self.qk_weight = nn.Parameter(torch.randn(2, z) * cfg.initializer_range)
        self.qk_bias = nn.Parameter(torch.zeros(2, z))
        bias_cls = SimpleRelativePositionalBias if cfg.relative_positional_bias == "simple" else \
            RotaryRelativePositionalBias
        self.rel_pos_bias = bias_cls(cfg)

    def weights(self, q, k, lay: Layout):  # q, k (B, L, Z) -> (B, L, L)
        """q, k (B, L, Z) -> attention weights (B, L, L) (softmax, laplace or relu2 by the config)."""
        bias = self.rel_pos_bias(lay.local)  # (L, L)
        if self.cfg.attention_activation == "softmax":
            scores = torch.matmul(q * self.sizes[2] ** -0.5, k.transpose(1, 2)) + bias
            scores = torch.where(lay.blocked, torch.finfo(scores.dtype).min, scores)
            return torch.softmax(scores, dim=-1)
        scores = torch.matmul(q, k.transpose(1, 2)) / lay.lengths + bias
        act = laplace if self.cfg.attention_activation == "laplace" else lambda s: F.relu(s).square()
        return act(scores) * lay.allowed

    def forward(self, x, keep, lay: Layout):  # x (B, L, H)
        h, e, z = self.sizes
        residual = x
        if self.cfg.normalize_before_mega:
            x = self.norm(x)
        v = self.act(self.v_proj(x))  # (B, L, E)
        u, zr, hx = self.mx_proj(self.ema_gate(x, keep)).split([h, z + e, h], dim=-1)
        qk, r = F.silu(zr).split([z, e], dim=-1)  # (B, L, Z), (B, L, E)
        q, k = (qk.unsqueeze(2) * self.qk_weight + self.qk_bias).unbind(2)  # (B, L, Z) each
        attn = torch.matmul(self.weights(q, k, lay), v)  # (B, L, E)
        out = self.act(hx + self.h_proj(attn * r))  # (B, L, H)
        out = residual + torch.sigmoid(u) * (out - residual)
        return out if self.cfg.normalize_before_mega else self.norm(out)


class NormalizedFeedForwardNetwork(nn.Module):
    """fc1 -> activation -> fc2 with a residual, normalised before or after."""
    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.prenorm = cfg.normalize_before_ffn
        self.act = activation(cfg.activation)
        self.norm = SequenceNorm(cfg)
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.nffn_hidden_size)
        self.fc2 = nn.Linear(cfg.nffn_hidden_size, cfg.hidden_size)

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(self.norm(x) if self.prenorm else x))) + x
        return y if self.prenorm else self.norm(y)


class Block(nn.Module):
    """One MEGA layer: moving-average gated attention, then the normalised FFN when configured."""
    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.mega_layer = MovingAverageGatedAttention(cfg)
        if cfg.use_normalized_ffn:
            self.nffn = NormalizedFeedForwardNetwork(cfg)

    def forward(self, x, keep, lay):
        x = self.mega_layer(x, keep, lay)
        return self.nffn(x) if hasattr(self, "nffn") else x


class Embeddings(nn.Module):
    """Word (+ token type) embeddings; no absolute positions (the attention has relative bias)."""

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        if cfg.add_token_type_embeddings:
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)

    def forward(self, input_ids, token_type_ids):
        x = self.word_embeddings(input_ids)  # (B, L, H)
        if hasattr(self, "token_type_embeddings"):
            x = x + self.token_type_embeddings(token_type_ids)
        return x


class Mega(nn.Module):
    """The MEGA backbone: embeddings and blocks; (B, L) ids -> (B, L, H)."""
    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding_layer = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embedding_layer(input_ids, token_type_ids)
        lay = layout(attention_mask, self.cfg)
        keep = attention_mask.to(x.dtype)  # (B, L)
        for block in self.layers:
            x = block(x, keep, lay)
        return x  # (B, L, H)


# ---- task heads (HF's MegaFor* names) -------------------------------------------------------------

class MLMHead(nn.Module):
    """The vocab projection; with tie_word_embeddings its matrix is the word embedding matrix."""

    def __init__(self, cfg: MegaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        if cfg.tie_word_embeddings:
            self.tied = [word_embeddings]  # a list: tied, not registered twice
        else:
            self.weight = nn.Parameter(torch.randn(cfg.vocab_size, cfg.hidden_size) * cfg.initializer_range)

    def forward(self, x):
        w = self.tied[0].weight if hasattr(self, "tied") else self.weight
        return F.linear(x, w, self.bias)  # (B, L, V)


class ClassificationHead(nn.Module):
    """First token -> dense -> tanh -> out_proj."""

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, first):  # (B, H) first token
        return self.out_proj(torch.tanh(self.dense(first)))  # (B, num_labels)


class Pooler(nn.Module):
    """`mega.pooler` (MegaForMultipleChoice's MegaModel keeps it): tanh(dense(first token)), (B, L, H) -> (B, H)."""

    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, seq):
        return torch.tanh(self.dense(seq[:, 0]))


class MegaForTask(EncoderForTask):
    """The backbone under `mega` plus HF's head for the task (heads.py); pooled heads read the first token,
    multiple-choice the pooler (as MegaForMultipleChoice). causal-lm (MegaForCausalLM: optional dense + tanh,
    `lm_head`) needs a decoder config (is_decoder, unidirectional EMA) and gives full-sequence logits: no
    KV cache, since MEGA's state is the EMA's per-channel recurrence plus chunked attention, not a stack
    of keys and values (decoder.py's cache contract)."""

    HEAD_PREFIXES = ("mlm_head.", "dense.", "classifier.", "qa_outputs.", "lm_head.", "mega.pooler.")

    def __init__(self, cfg: MegaConfig, task: str):
        if task not in TASKS:
            raise EdgeportError(f"mega has no task '{task}'; tasks: {', '.join(TASKS)}")
        if task == "causal-lm" and (not cfg.is_decoder or cfg.bidirectional):
            raise EdgeportError("mega causal-lm needs a decoder config (is_decoder: true, bidirectional: false), "
                                "e.g. the preset mega-decoder-tiny")
        backbone = Mega(cfg)
        if task == "multiple-choice":
            backbone.pooler = Pooler(cfg)
        heads = {task: HEADS[task](cfg, backbone)} if task in HEADS else None
        super().__init__("mega", backbone, task, cfg.hidden_size, cfg.num_labels, heads=heads)
        self.input_names = cfg.input_names  # the export contract's inputs (MegaConfig.input_names)

    def head_prefixes(self) -> tuple:
        """Checkpoint key prefixes of the heads (mlm_head., dense., classifier., qa_outputs., lm_head.,
        mega.pooler.)."""
        return self.HEAD_PREFIXES

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """-> (sequence (B, L, H), pooled (B, H): the pooler's when it has one, else the first token)."""
        seq = self.mega(input_ids, attention_mask, token_type_ids)  # (B, L, H)
        return seq, (self.mega.pooler(seq) if hasattr(self.mega, "pooler") else seq[:, 0])


def _mlm(cfg: MegaConfig, backbone: Mega, name: str = "mlm_head") -> list:
    """HF's MegaForMaskedLM (`mlm_head`) and MegaForCausalLM (`lm_head`): an optional dense + tanh, then
    the vocabulary projection (tied to the word embeddings by default)."""
    dense = [("dense", nn.Linear(cfg.hidden_size, cfg.hidden_size)), ("dense_act", nn.Tanh())]
    return (dense if cfg.add_lm_hidden_dense_layer else []) + \
        [(name, MLMHead(cfg, backbone.embedding_layer.word_embeddings))]


# MEGA's own heads (heads.py defaults for the other tasks): task -> (cfg, backbone) -> [(attribute, module)]
HEADS = {"fill-mask": _mlm, "text-classification": lambda cfg, bb: [("classifier", ClassificationHead(cfg))],
         "causal-lm": lambda cfg, bb: _mlm(cfg, bb, "lm_head")}


@register_family("mega", config=MegaConfig, presets=PRESETS, tasks=TASKS, default_task="fill-mask")
def build(cfg: MegaConfig, task: str) -> MegaForTask:
    """The reference model for `task` in eval mode (random weights until a checkpoint is loaded into it);
    EdgeportError for a config or task it cannot build."""
    model = MegaForTask(cfg, task)
    init_weights(model, cfg.initializer_range)  # Linear/Embedding; MEGA's own parameters init themselves
    return model.eval()
