"""DisentangledAttention lowerings: DeBERTa v1/v2/v3 on ONNX (generic, onnxruntime), TensorRT and TFLite.

Every lowering works on a deep copy of the reference model (export validates against the untouched
original) and is a named module swap (STYLE.md 5).
Each row below is a registered Lowering (edgeport/ops/registry.py): a swap, graph passes, or the custom-op
library validation needs; edgeport/export applies them.

    target     name       what the graph holds for the scores op
    onnx       default    = fast
    onnx       fast       "folded" and no Gather on activations: the constant position tables are gathered
                          by distance column (2S rows), one MatMul per term gives (B*H, S, 2S) scores by
                          distance, the skew (Slice + Reshape copies) makes them (S, S); the factor is folded
                          into the query projection, q/k/v are one MatMul
    onnx       generic    the pure-torch decomposition: Gather(Elements) with (N, S, S) indices, any runtime
    onnx       plain      "folded": relative-position projections folded once, c2p/p2c over only the
                          table rows length S can reach, relative->absolute by Gather + skew, MatMul/Softmax
    onnx       mha        folded, then com.microsoft.MultiHeadAttention with the position terms and the
                          padding mask as attention_bias
    tensorrt   default    DisentangledAttention_TRT plugin nodes (domain trt.plugins; span, factor), proven on
                          the CPU with an onnxruntime-extensions reference kernel (`TRT_REFERENCE`)
    tflite     default    = generic: the reference as is through litert-torch, builtin ops only
    tflite     folded     folded + plain at the static shape (relative indices and rows constants);
                          opt-in: drifts up to 6e-4 in LiteRT (see the TFLite registrations below)

Why "fast" is the default, profiles and measured latencies: benchmarks/deberta_notes.md
(benchmarks/bench_deberta.py reproduces them).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.ops.disentangled_attention import DisentangledAttention, disentangled_attention_torch, log_bucket
from edgeport.ops.registry import CustomOpLibrary, register_lowering

FAMILIES = ("deberta", "deberta-v2")
TRT_DOMAIN = "trt.plugins"  # the domain onnxruntime's TensorRT EP and TensorRT's parser take plugin nodes in
TRT_OP = "DisentangledAttention_TRT"
REFERENCE_DOMAIN = "ai.onnx.contrib"  # where onnxruntime-extensions Python ops live

# ---------------------------------------------------------------- relative -> absolute (traceable)


def distance_index(seq_len, span: int, max_position: int, device=None) -> tuple:
    """Column tables for `skew`: (2S,) int64 table rows for c2p and for p2c.

    c2p column c holds distance d_c = S - 1 - c (c = 0 .. 2S - 2); p2c column c holds -d_c (its rows are
    keys). The log buckets are odd, so the p2c table is the c2p table reversed. Column 2S - 1 is a
    spare (never read by skew; it repeats a real row so the tables stay within the reachable rows).
    """
    d = seq_len - 1 - torch.arange(2 * seq_len - 1, device=device)  # (2S - 1,)
    if max_position > 0:
        d = log_bucket(d, span, max_position)
    idx = torch.clamp(d + span, 0, 2 * span - 1)
    back = torch.clamp(span - d, 0, 2 * span - 1)  # idx(-d)
    return torch.cat([idx, idx[-1:]]), torch.cat([back, back[-1:]])


def skew(g: torch.Tensor) -> torch.Tensor:
    """(N, S, 2S) by distance column -> (N, S, S): out[n, i, j] = g[n, i, S - 1 - i + j].

    The relative shift as copies: row i of the flattened g starts at i * 2S; dropping the first S - 1
    values and reading rows of 2S - 1 moves each row one step left of the one above.
    """
    N, S, W = g.shape
    flat = g.reshape(N, S * W)[:, S - 1:S - 1 + S * (W - 1)]  # (N, S * (2S - 1))
    return flat.reshape(N, S, W - 1)[:, :, :S]


def relative_scores(c2p, p2c, idx_c2p, idx_p2c):
    """Position terms (N, S, R) each (or None) and their (2S,) column tables -> (N, S, S) | None.

    c2p: out[n, i, j] = c2p[n, i, idx(i - j)];  p2c: out[n, i, j] = p2c[n, j, idx(i - j)] (key rows).
    """
    out = None
    if c2p is not None:
        out = skew(torch.index_select(c2p, 2, idx_c2p))  # (N, S, S)
    if p2c is not None:
        t = skew(torch.index_select(p2c, 2, idx_p2c)).transpose(1, 2)  # (N, S, S): key rows -> query rows
        out = t if out is None else out + t
    return out


def disentangled_attention_skew(c2c, c2p, p2c, span: int, factor: float, max_position: int):
    """The op by Gather + skew (no (N, S, S) index tensors): the folded lowerings' core, op-level form."""
    idx, back = distance_index(c2c.shape[-1], span, max_position, c2c.device)  # (2S,) each
    rel = relative_scores(c2p, p2c, idx, back)
    return (c2c if rel is None else c2c + rel) * factor


class SkewScores(DisentangledAttention):
    """Scores module computing the op by Gather + skew (op-level tests export it alone)."""

    def forward(self, c2c, c2p=None, p2c=None):
        return disentangled_attention_skew(c2c, c2p, p2c, self.span, self.factor, self.max_position)


# ---------------------------------------------------------------- folded self-attention (onnx, tflite)

class _MultiHeadAttention(torch.autograd.Function):
    """softmax(scale * q k^T + bias) v over (B, S, A) projections; exports as com.microsoft
    MultiHeadAttention(query, key, value, attention_bias=bias) (`_mha_optional_inputs` places bias)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, heads: int, scale: float):
        B, S, A = q.shape
        qh, kh, vh = (t.view(B, S, heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
        probs = torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)) * scale + bias, dim=-1)
        return torch.matmul(probs, vh).transpose(1, 2).reshape(B, S, A)

    @staticmethod
    def symbolic(g, q, k, v, bias, heads, scale):
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, bias, num_heads_i=heads, scale_f=scale)
        out.setType(q.type())
        return out


def fused_qkv(att) -> nn.Linear:
    """One (H -> 3A) projection with output [q | k | v], each A = heads * D in (head, d) order."""
    if hasattr(att, "in_proj"):  # v1: per-head [q|k|v] rows, bias-free, separate q/v biases
        W = att.in_proj.weight.detach()  # (3A, H) with rows (head, 3, D)
        H, A = W.shape[1], W.shape[0] // 3
        W = W.view(att.heads, 3, A // att.heads, H).transpose(0, 1).reshape(3 * A, H)
        b = torch.cat([att.q_bias.detach(), torch.zeros(A), att.v_bias.detach()])
    else:  # v2/v3: separate biased projections
        W = torch.cat([p.weight.detach() for p in (att.query_proj, att.key_proj, att.value_proj)])
        b = torch.cat([p.bias.detach() for p in (att.query_proj, att.key_proj, att.value_proj)])
    lin = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    return lin


class FoldedSelfAttention(nn.Module):
    """Drop-in for DisentangledSelfAttention with the position projections folded to constants.

    pos_key/pos_query (H, 2k, D) are input-independent: computed once here, pre-multiplied by the
    op's factor. Per call only the table rows that length S reaches, [idx(-(S-1)), idx(S-1)], are
    multiplied (255 of 512 rows for deberta-v3-base at S = 128), then Gather + skew build the bias.

        x -> qkv (one MatMul) -> q, k, v (B, S, A)
        q  (B,H,S,D) @ pos_key[rows]^T   -> (B*H, S, R) --+
        k  (B,H,S,D) @ pos_query[rows]^T -> (B*H, S, R) --+-- relative_scores --> + mask bias (B,1,S,S)
                                                                               = bias (B, H, S, S)
        "mha":   MultiHeadAttention(q, k, v, attention_bias=bias, scale=factor)
        "plain": softmax(q k^T * factor + bias) v
        "fast":  q pre-scaled; softmax(q k^T + distance_bias(q, k)) v (see distance_bias)
    """

    def __init__(self, att, rel: torch.Tensor, mode: str, static_len: int | None = None):
        super().__init__()
        ops = att.disentangled
        self.heads, self.mode = att.heads, mode
        self.span, self.factor, self.max_position = ops.span, ops.factor, ops.max_position
        self.qkv = fused_qkv(att)
        with torch.no_grad():
            pos_key, pos_query = att.position_kq(rel)  # (H, 2k, D) each, or None
        self.has_c2p, self.has_p2c = pos_key is not None, pos_query is not None
        zero = torch.zeros(att.heads, 2 * self.span, 1)
        # "fast": the factor lives in the query rows of qkv, so q k^T and q pos_key^T come out scaled.
        key_scale = 1.0 if mode == "fast" else self.factor
        if mode == "fast":
            with torch.no_grad():
                A = self.qkv.weight.shape[0] // 3
                self.qkv.weight[:A] *= self.factor
                self.qkv.bias[:A] *= self.factor
        self.register_buffer("pos_key", (pos_key if self.has_c2p else zero) * key_scale)
        self.register_buffer("pos_query", (pos_query if self.has_p2c else zero) * self.factor)
        # Static shapes (TFLite): the column tables and reachable rows become constants of the graph.
        self.static_len = static_len
        if static_len is not None:
            for name, t in zip(("static_idx", "static_back", "static_rows"), self.tables(static_len)):
                self.register_buffer(name, t, persistent=False)

    def tables(self, S):
        """-> c2p columns (2S,), p2c columns (2S,) relative to the first reachable row, rows (R,)."""
        idx, back = distance_index(S, self.span, self.max_position, self.pos_key.device)  # idx decreasing
        lo = idx[-1:]  # (1,) first reachable row
        rows = lo + torch.arange(idx[0] - idx[-1] + 1, device=idx.device)  # (R,)
        return idx - lo, back - lo, rows

    def position_bias(self, q, k):  # (B, H, S, D) each -> (B, H, S, S) scaled position terms
        """q, k (B, H, S, D) -> (B, H, S, S) scaled c2p + p2c terms over the reachable table rows."""
        B, H, S, _ = q.shape
        if self.static_len is not None:
            torch._check(S == self.static_len, lambda: f"built for length {self.static_len}, got {S}")
            idx, back, rows = self.static_idx, self.static_back, self.static_rows
        else:
            idx, back, rows = self.tables(S)
        c2p = p2c = None
        if self.has_c2p:
            pk = torch.index_select(self.pos_key, 1, rows)  # (H, R, D)
            c2p = torch.matmul(q, pk.transpose(-1, -2)).flatten(0, 1)  # (B*H, S, R)
        if self.has_p2c:
            pq = torch.index_select(self.pos_query, 1, rows)
            p2c = torch.matmul(k, pq.transpose(-1, -2)).flatten(0, 1)
        return relative_scores(c2p, p2c, idx, back).view(B, H, S, S)

    def distance_bias(self, q, k):  # (B, H, S, D) each, q pre-scaled -> (B, H, S, S) scaled position terms
        """"fast": no Gather on activations. The constant tables are gathered by distance column first,
        one MatMul per term gives scores by distance, and skew turns them into (S, S):

            pos_key[:, idx] (H, 2S, D) ----+
            q (B, H, S, D) -------------- MatMul -> (B*H, S, 2S) -> skew -> (B*H, S, S) ----------+
            pos_query[:, back] (H, 2S, D) -+                                                      Add
            k (B, H, S, D) -------------- MatMul -> (B*H, S, 2S) -> skew -> Transpose(1, 2) ------+
        """
        B, H, S, _ = q.shape
        idx, back = distance_index(S, self.span, self.max_position, q.device)  # (2S,) each
        out = None
        if self.has_c2p:
            pk = torch.index_select(self.pos_key, 1, idx)  # (H, 2S, D)
            out = skew(torch.matmul(q, pk.transpose(-1, -2)).flatten(0, 1))  # (B*H, S, S)
        if self.has_p2c:
            pq = torch.index_select(self.pos_query, 1, back)  # (H, 2S, D)
            t = skew(torch.matmul(k, pq.transpose(-1, -2)).flatten(0, 1)).transpose(1, 2)  # (B*H, S, S)
            out = t if out is None else out + t
        return out.view(B, H, S, S)

    def fast_attention(self, q, k, v, pair_mask):  # (B, S, A) each (q pre-scaled), (B, 1, S, S) -> (B, S, A)
        """q (pre-scaled), k, v (B, S, A), pair_mask (B, 1, S, S) bool -> (B, S, A)."""
        B, S, _ = q.shape
        qh, kh, vh = (t.view(B, S, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) + self.distance_bias(qh, kh)  # (B, H, S, S)
        scores = scores.masked_fill(~pair_mask, torch.finfo(scores.dtype).min)
        return torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(1, 2).reshape(B, S, -1)

    def forward(self, x, pair_mask, rel):  # (B, S, H), (B, 1, S, S) bool, unused (folded)
        B, S, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, S, A) each
        if self.mode == "fast":
            return self.fast_attention(q, k, v, pair_mask)
        qh, kh = (t.view(B, S, self.heads, -1).transpose(1, 2) for t in (q, k))  # (B, H, S, D)
        bias = self.position_bias(qh, kh)
        bias = bias.masked_fill(~pair_mask, torch.finfo(bias.dtype).min)  # (B, H, S, S)
        if self.mode == "mha":
            return _MultiHeadAttention.apply(q, k, v, bias, self.heads, self.factor)
        return _MultiHeadAttention.forward(None, q, k, v, bias, self.heads, self.factor)


def fold_attention(model: nn.Module, mode: str, static_len: int | None = None) -> nn.Module:
    """A copy of `model` with every disentangled self-attention replaced by FoldedSelfAttention.

    Found by what they offer: an encoder has `rel_embedding()` and `layer`; each layer's
    `attention.self` has `disentangled` (the scores op) and `position_kq(rel)`. Raises EdgeportError
    when a layer has no relative attention.
    """
    model = copy.deepcopy(model)
    for encoder in [m for m in model.modules() if hasattr(m, "rel_embedding") and hasattr(m, "layer")]:
        with torch.no_grad():
            rel = encoder.rel_embedding()  # (2k, H) after the v2 LayerNorm
        for layer in encoder.layer:
            att = layer.attention.self
            if not hasattr(att, "disentangled") or not callable(getattr(att, "position_kq", None)):
                raise EdgeportError("folded attention needs relative attention (relative_attention: true)")
            layer.attention.self = FoldedSelfAttention(att, rel, mode, static_len)
    return model.eval()


def _mha_optional_inputs(path: Path) -> int:
    """Matcher: com.microsoft MultiHeadAttention(query, key, value, bias4) as torch.onnx emits it ->
    (query, key, value, "", "", attention_bias): the bias goes to input 5, bias/key_padding_mask empty."""
    import onnx

    proto = onnx.load(str(path))
    hits = 0
    for node in proto.graph.node:
        if node.domain == "com.microsoft" and node.op_type == "MultiHeadAttention":
            assert len(node.input) == 4, f"{node.name}: expected (q, k, v, bias), got {list(node.input)}"
            q, k, v, bias = node.input
            del node.input[:]
            node.input.extend([q, k, v, "", "", bias])
            hits += 1
    onnx.save(proto, str(path))
    return hits


def _folded(mode: str):
    """Swap: fold_attention(model, mode) on a copy (absolute-position DeBERTa: nothing to fold)."""
    @contextlib.contextmanager
    def swap(model, ctx):
        if not has_relative_attention(model):
            yield model, {"disentangled_attention": GENERIC_NOTE}
        else:
            yield fold_attention(model, mode, ctx.static_len), {"disentangled_attention": f"folded-{mode}"}

    return swap


def _mha_pass(path: Path, ctx) -> dict:
    _mha_optional_inputs(path)
    return {}


GENERIC_NOTE = "generic (Gather decomposition)"
register_lowering(FAMILIES, "onnx", "generic", converter={"disentangled_attention": GENERIC_NOTE})
register_lowering(FAMILIES, "onnx", "plain", swap=_folded("plain"))
register_lowering(FAMILIES, "onnx", "fast", swap=_folded("fast"))
register_lowering(FAMILIES, "onnx", "default", swap=_folded("fast"))
register_lowering(FAMILIES, "onnx", "mha", swap=_folded("mha"), graph_passes=(_mha_pass,))


# ---------------------------------------------------------------- TensorRT plugin nodes

def trt_plugin_exact(ops: DisentangledAttention) -> bool:
    """The plugin's kernel log-buckets with bucket size span over 2 * span positions: the op equals it
    for max_position == 2 * span (v2/v3 checkpoints). Plain positions (v1) agree only up to
    S - 1 <= span // 2, so those models keep the decomposition (see trt_plugins)."""
    return ops.max_position == 2 * ops.span


class _TrtPlugin(torch.autograd.Function):
    """The op's values in torch; exports as one DisentangledAttention_TRT(c2c, c2p, p2c) node."""

    @staticmethod
    def forward(ctx, c2c, c2p, p2c, span: int, factor: float, max_position: int):
        return disentangled_attention_torch(c2c, c2p, p2c, span, factor, max_position)

    @staticmethod
    def symbolic(g, c2c, c2p, p2c, span, factor, max_position):
        # plugin_version "2": the IPluginV3 form ("1" is deprecated); the parser reads it from this attribute
        out = g.op(f"{TRT_DOMAIN}::{TRT_OP}", c2c, c2p, p2c, span_i=span, factor_f=factor, plugin_version_s="2",
                   plugin_namespace_s="")
        out.setType(c2c.type())
        return out


class TrtPluginScores(DisentangledAttention):
    """Scores module that exports as the plugin; a missing c2p/p2c term is fed as zeros (N, S, 2k)."""

    def forward(self, c2c, c2p=None, p2c=None):
        N, S, _ = c2c.shape
        zeros = c2c.new_zeros(N, S, 2 * self.span) if c2p is None or p2c is None else None
        return _TrtPlugin.apply(c2c, zeros if c2p is None else c2p, zeros if p2c is None else p2c,
                                self.span, self.factor, self.max_position)


def trt_plugins(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `model` whose exact-for-the-plugin scores modules export as plugin nodes; -> (copy, n)."""
    model = copy.deepcopy(model)
    swaps = [(name, m) for name, m in model.named_modules()
             if isinstance(m, DisentangledAttention) and trt_plugin_exact(m)]
    for name, m in swaps:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, TrtPluginScores(m.span, m.factor, m.max_position))
    return model.eval(), len(swaps)


def plugin_reference(c2c, c2p, p2c, span: int, factor: float) -> np.ndarray:
    """DisentangledAttention_TRT's documented contract in numpy, written apart from the torch op:
    out[n, i, j] = factor * (c2c[n, i, j] + c2p[n, i, idx(i - j)] + p2c[n, j, idx(i - j)]),
    idx(d) = clip(bucket(d) + span, 0, 2 span - 1), the kernel's float32 log buckets over 2 * span."""
    N, S, _ = c2c.shape
    for name, t in (("data0 (c2c)", c2c), ("data1 (c2p)", c2p), ("data2 (p2c)", p2c)):
        want = (N, S, S) if t is c2c else (N, S, 2 * span)
        if t.shape != want:
            raise ValueError(f"{TRT_OP} {name}: shape {list(t.shape)}, the plugin takes {list(want)}")
    d = np.arange(S)[:, None] - np.arange(S)[None, :]  # (S, S) query minus key
    mid = span // 2
    log_mid = np.float32(np.log(np.float32(mid)))
    scale = np.float32((mid - 1) / (np.log(np.float32(2 * span - 1)) - log_mid) * np.float32(1 - 1e-7))
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.ceil((np.log(np.abs(d).astype(np.float32)) - log_mid) * scale)
    far = np.nan_to_num(far, posinf=0, neginf=0).astype(np.int64) + mid
    idx = np.clip(np.where(np.abs(d) <= mid, d, np.sign(d) * far) + span, 0, 2 * span - 1)  # (S, S)
    rows = np.arange(S)
    out = c2c + c2p[:, rows[:, None], idx] + p2c[:, rows[None, :], idx]
    return (out * np.float32(factor)).astype(np.float32)


_KERNEL_REGISTERED = False


def _register_reference_kernel():
    global _KERNEL_REGISTERED
    try:
        from onnxruntime_extensions import PyCustomOpDef, onnx_op
    except ImportError:
        raise EdgeportError("proving the TensorRT graph on the CPU needs onnxruntime-extensions: "
                            "pip install onnxruntime-extensions==0.15.2") from None
    if not _KERNEL_REGISTERED:
        f = PyCustomOpDef.dt_float

        @onnx_op(op_type=TRT_OP, inputs=[f, f, f], outputs=[f],
                 attrs={"span": PyCustomOpDef.dt_int64, "factor": PyCustomOpDef.dt_float})
        def _kernel(c2c, c2p, p2c, **attrs):
            return plugin_reference(c2c, c2p, p2c, int(attrs["span"]), float(attrs["factor"]))

        _KERNEL_REGISTERED = True


def _plugin_nodes_to_reference_domain(proto) -> int:
    """Matcher: every trt.plugins DisentangledAttention_TRT node -> the same node in ai.onnx.contrib
    (where the reference kernel is registered); inputs, outputs and attributes unchanged."""
    hits = 0
    for node in proto.graph.node:
        if node.domain == TRT_DOMAIN and node.op_type == TRT_OP:
            node.domain = REFERENCE_DOMAIN
            hits += 1
    imports = {o.domain for o in proto.opset_import}
    if hits and REFERENCE_DOMAIN not in imports:
        proto.opset_import.add(domain=REFERENCE_DOMAIN, version=1)
    return hits


def _prepare_reference_kernel(proto) -> int:
    """CustomOpLibrary.prepare: register the reference kernel, move plugin nodes to its domain."""
    _register_reference_kernel()
    return _plugin_nodes_to_reference_domain(proto)


def _extensions_library() -> str:
    from onnxruntime_extensions import get_library_path

    return get_library_path()


# Validation runs TensorRT-targeted graphs in onnxruntime with this library (plugin nodes -> reference kernel).
TRT_REFERENCE = CustomOpLibrary(prepare=_prepare_reference_kernel, library_path=_extensions_library)


@contextlib.contextmanager
def _trt_swap(model, ctx):
    """ONNX for TensorRT's parser: one DisentangledAttention_TRT node per layer where the plugin is exact."""
    model, n = trt_plugins(model)
    # v1 / unbucketed positions: the plugin's log buckets would change the result past span // 2
    yield model, {"disentangled_attention": "DisentangledAttention_TRT plugin" if n else
                  "decomposed (the plugin log-buckets positions; this model uses plain relative positions)"}


register_lowering(FAMILIES, "tensorrt", "default", swap=_trt_swap, validation=TRT_REFERENCE)


# ---------------------------------------------------------------- TFLite (litert-torch, builtin ops)

# TFLite "folded": folded position projections and constant relative indices at the static shape.
# Not the default: converted by litert-torch and run in LiteRT (XNNPACK), the folded graph drifts
# 2.6e-4 (v3, multiple-choice 1 x 24, not every run) to 6e-4 (v1, fill-mask 2 x 20) from the
# reference, while torch runs the same folded module to 3e-7 (cause not found); the generic graph
# matches to 5e-7.
register_lowering(FAMILIES, "tflite", "folded", swap=_folded("plain"))
register_lowering(FAMILIES, "tflite", "generic", converter={"disentangled_attention": "generic"})
register_lowering(FAMILIES, "tflite", "default", converter={"disentangled_attention": "generic"})


def has_relative_attention(model: nn.Module) -> bool:
    """True when any module of `model` is a DisentangledAttention scores op."""
    return any(isinstance(m, DisentangledAttention) for m in model.modules())
