"""DisentangledAttention: DeBERTa's relative-position attention scores, one op for every target.

The op is the score stage of DeBERTa v1/v2/v3 self-attention, cut exactly where TensorRT's
`DisentangledAttention_TRT` plugin (version 2) cuts it, so that lowering is a one-node rewrite:

    c2c (N, S, S) ----------------------------------------+
    c2p (N, S, 2k) --gather(idx(i - j)) along last axis---+--> sum * factor --> scores (N, S, S)
    p2c (N, S, 2k) --gather(idx(i - j)) on key rows, T----+

Op: `torch.ops.edgeport.disentangled_attention(c2c, c2p, p2c, span, factor, max_position)`

Inputs (float32 or float16, N = batch * heads, S = sequence length, k = span):
    c2c  (N, S, S)    content-to-content scores  Qc Kc^T           (TRT data0)
    c2p  (N, S, 2k)   content-to-position scores Qc Kr^T, or None  (TRT data1; None: no "c2p")
    p2c  (N, S, 2k)   position-to-content scores Kc Qr^T, or None  (TRT data2; None: no "p2c")
    where Kr, Qr are the projected relative-position embeddings (2k rows, row r = distance r - k).
Attributes:
    span          int >= 1  k, the relative distance: DeBERTa v1 `max_relative_positions`, v2/v3
                            `position_buckets` (or `max_relative_positions` without buckets). TRT `span`.
    factor        float     1 / sqrt(d * scale_factor), d = head size, scale_factor = 1 + number of
                            position terms in `pos_att_type` (3 for c2p|p2c). TRT `factor`.
    max_position  int >= 0  0: plain relative positions (v1, v2 without buckets). > 0: log buckets of
                            size `span` over `max_position` (v2/v3 `max_relative_positions`), as
                            transformers' make_log_bucket_position(i - j, span, max_position).
Output:
    scores (N, S, S)  scores[n, i, j] = factor * (c2c[n, i, j] + c2p[n, i, idx(i - j)]
                                                   + p2c[n, j, idx(i - j)])
    with idx(d) = clamp(bucket(d) + k, 0, 2k - 1); padding masks and softmax come after the op.

Exact equivalence with transformers: v1 slices its position table to the data-dependent span
min(S, max_relative_positions); using the full table with k = max_relative_positions gives the same
indices (clamping never bites when S <= k) and keeps k static, as the plugin requires.

TensorRT lowering (for the exporter): the plugin has no `max_position` attribute; its v2 kernel
always log-buckets with bucket size `span` over 2 * span positions and keeps |i - j| <= span // 2
exact. So it equals this op when max_position == 2 * span (DeBERTa-v3 and v2: 512 = 2 * 256), and
for max_position == 0 only while S - 1 <= span // 2. Missing c2p/p2c become zero inputs there.

Forms in this file:
    disentangled_attention_torch(...)   pure torch, traceable (torch.onnx legacy + dynamo, litert-torch)
    DisentangledAttention (nn.Module)   the pure form, what the reference models hold by default
    DisentangledAttentionOp (nn.Module) calls the custom op; `use_custom_op(model)` swaps it in
"""

from typing import Optional

import torch
from torch import nn

OP_NAME = "edgeport::disentangled_attention"


# ---------------------------------------------------------------- relative positions (traceable)

def log_bucket(rel: torch.Tensor, span: int, max_position: int) -> torch.Tensor:
    """Relative distances (int64) -> log-bucketed distances (int64), in transformers' float32 steps.

    |d| <= span // 2 stays d; beyond, ceil(log(|d| / mid) / log((max_position - 1) / mid) * (mid - 1))
    + mid with the sign of d.
    """
    mid = span // 2
    near = (rel < mid) & (rel > -mid)
    abs_pos = torch.where(near, torch.full_like(rel, mid - 1), rel.abs())  # (S, S)
    log_scale = torch.log(torch.tensor((max_position - 1) / mid))  # float32, as transformers
    log_pos = torch.ceil(torch.log(abs_pos / mid) / log_scale * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, rel, (log_pos * torch.sign(rel)).to(rel.dtype))


def relative_index(seq_len, span: int, max_position: int, device=None) -> torch.Tensor:
    """(S, S) int64: idx[i, j] = clamp(bucket(i - j) + span, 0, 2 * span - 1), from static aranges."""
    pos = torch.arange(seq_len, device=device)
    rel = pos[:, None] - pos[None, :]  # (S, S): query i minus key j
    if max_position > 0:
        rel = log_bucket(rel, span, max_position)
    return torch.clamp(rel + span, 0, 2 * span - 1)


def _check_inputs(c2c, c2p, p2c, span):
    torch._check(c2c.dim() == 3 and c2c.shape[-1] == c2c.shape[-2], lambda: "c2c must be (N, S, S)")
    torch._check(span >= 1, lambda: f"span must be >= 1, got {span}")
    for name, t in (("c2p", c2p), ("p2c", p2c)):
        if t is not None:
            torch._check(t.dim() == 3, lambda: f"{name} must be (N, S, 2k)")
            torch._check(t.shape[0] == c2c.shape[0] and t.shape[1] == c2c.shape[1],
                         lambda: f"{name} must share (N, S) with c2c")
            torch._check(t.shape[2] == 2 * span, lambda: f"{name} last axis must be 2 * span = {2 * span}")


# ---------------------------------------------------------------- pure torch form

def disentangled_attention_torch(c2c: torch.Tensor, c2p: Optional[torch.Tensor], p2c: Optional[torch.Tensor],
                                 span: int, factor: float, max_position: int) -> torch.Tensor:
    """The op's contract in traceable torch ops: gathers with indices built from arange(S)."""
    N, S, _ = c2c.shape
    idx = relative_index(S, span, max_position, c2c.device)  # (S, S)
    scores = c2c
    if c2p is not None:
        scores = scores + torch.gather(c2p, -1, idx.expand(N, S, S))  # c2p[n, i, idx[i, j]]
    if p2c is not None:
        # rows of p2c are keys: out[n, j, i] = p2c[n, j, idx[i, j]], then transpose to (query, key)
        scores = scores + torch.gather(p2c, -1, idx.t().expand(N, S, S)).transpose(-1, -2)
    return scores * factor


# ---------------------------------------------------------------- custom op (eager + fake)

@torch.library.custom_op(OP_NAME, mutates_args=())
def disentangled_attention(c2c: torch.Tensor, c2p: Optional[torch.Tensor], p2c: Optional[torch.Tensor],
                           span: int, factor: float, max_position: int) -> torch.Tensor:
    """Eager reference: advanced indexing (no gather/transpose), written apart from the pure form."""
    _check_inputs(c2c, c2p, p2c, span)
    S = c2c.shape[-1]
    idx = relative_index(S, span, max_position, c2c.device)  # (S, S)
    rows = torch.arange(S, device=c2c.device)
    out = c2c.clone()
    if c2p is not None:
        out += c2p[:, rows[:, None], idx]  # query i reads its own row at idx[i, j]
    if p2c is not None:
        out += p2c[:, rows[None, :], idx]  # pair (i, j) reads key j's row at idx[i, j]
    return out * factor


@disentangled_attention.register_fake
def _(c2c, c2p, p2c, span, factor, max_position):
    _check_inputs(c2c, c2p, p2c, span)
    return c2c.new_empty(c2c.shape)


# ---------------------------------------------------------------- modules and the swap

class DisentangledAttention(nn.Module):
    """Pure-torch scores module (the reference models' default). Holds the op's attributes."""

    def __init__(self, span: int, factor: float, max_position: int):
        super().__init__()
        self.span, self.factor, self.max_position = int(span), float(factor), int(max_position)

    def extra_repr(self):
        """span, factor and max_position, for print(model)."""
        return f"span={self.span}, factor={self.factor:.6g}, max_position={self.max_position}"

    def forward(self, c2c, c2p=None, p2c=None):  # (N, S, S), (N, S, 2k) | None, (N, S, 2k) | None
        return disentangled_attention_torch(c2c, c2p, p2c, self.span, self.factor, self.max_position)


class DisentangledAttentionOp(DisentangledAttention):
    """The same attributes, computed by the `edgeport::disentangled_attention` custom op."""

    def forward(self, c2c, c2p=None, p2c=None):
        return torch.ops.edgeport.disentangled_attention(c2c, c2p, p2c, self.span, self.factor,
                                                         self.max_position)


def use_custom_op(model: nn.Module, enabled: bool = True) -> int:
    """Swap every DisentangledAttention in `model` (in place) to the custom-op form, or back with
    enabled=False. Returns how many modules were swapped. No parameters move: weights are untouched."""
    target = DisentangledAttentionOp if enabled else DisentangledAttention
    swaps = [(name, m) for name, m in model.named_modules()
             if isinstance(m, DisentangledAttention) and type(m) is not target]
    for name, m in swaps:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, target(m.span, m.factor, m.max_position))
    return len(swaps)


__all__ = ["OP_NAME", "DisentangledAttention", "DisentangledAttentionOp", "disentangled_attention",
           "disentangled_attention_torch", "log_bucket", "relative_index", "use_custom_op"]
