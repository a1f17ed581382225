"""MobileBERT in Keras 3 (TensorFlow backend): the TF route to TFLite.

Loads the same weights as the PyTorch reference (its state dict, as numpy). Written for the TFLite
graph it converts to: activations stay 2-D (B*S, width) between blocks so every projection is one
FULLY_CONNECTED op, the attention scale is folded into the queries, the MLM output matrix is one
constant, and the padding bias is built once for all layers. Static batch and sequence sizes.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from edgeport.reference_models.mobilebert import MobileBertConfig  # noqa: E402


class Weights:
    """Reads torch state-dict tensors (as numpy) by name into non-trainable Keras variables."""

    def __init__(self, layer: keras.layers.Layer, sd: dict):
        self.layer, self.sd = layer, sd

    def var(self, name: str, value: np.ndarray):
        v = np.ascontiguousarray(value, dtype=np.float32)
        return self.layer.add_weight(name=name.replace(".", "_"), shape=v.shape, trainable=False,
                                     initializer=keras.initializers.Constant(v))

    def linear(self, name: str):
        """(kernel (in, out), bias or None) for a torch Linear `name`."""
        w = self.var(f"{name}.kernel", self.sd[f"{name}.weight"].T)
        b = self.sd.get(f"{name}.bias")
        return w, (self.var(f"{name}.bias", b) if b is not None else None)

    def norm(self, name: str, kind: str, eps: float):
        return (self.var(f"{name}.weight", self.sd[f"{name}.weight"]),
                self.var(f"{name}.bias", self.sd[f"{name}.bias"]), kind, eps)


def dense(x, wb):
    w, b = wb
    y = ops.matmul(x, w)  # (N, in) @ (in, out): FULLY_CONNECTED
    return y if b is None else y + b


def apply_norm(x, n):
    g, b, kind, eps = n
    if kind == "no_norm":
        return x * g + b
    mean = ops.mean(x, axis=-1, keepdims=True)
    var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * ops.rsqrt(var + eps) * g + b


ACTS = {"relu": ops.relu, "gelu": lambda x: ops.gelu(x, approximate=False),
        "gelu_new": lambda x: ops.gelu(x, approximate=True), "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
        "silu": ops.silu, "swish": ops.silu, "tanh": ops.tanh}


class MobileBertKeras(keras.Model):
    def __init__(self, cfg: MobileBertConfig, task: str, sd: dict, batch: int, seq: int, num_labels: int):
        super().__init__(name="mobilebert")
        self.cfg, self.task, self.B, self.S = cfg, task, batch, seq
        self.act = ACTS[cfg.hidden_act]
        W = Weights(self, sd)
        p = "mobilebert."
        kind, eps = cfg.normalization_type, cfg.layer_norm_eps
        self.word = W.var("word", sd[p + "embeddings.word_embeddings.weight"])
        self.pos = W.var("pos", sd[p + "embeddings.position_embeddings.weight"][:seq])  # (S, H)
        self.types = W.var("types", sd[p + "embeddings.token_type_embeddings.weight"])
        self.emb_proj = (W.linear(p + "embeddings.embedding_transformation")
                         if cfg.trigram_input or cfg.embedding_size != cfg.hidden_size else None)
        self.emb_norm = W.norm(p + "embeddings.LayerNorm", kind, 1e-5)
        self.layers_ = [self._layer(W, f"{p}encoder.layer.{i}.", kind, eps) for i in range(cfg.num_hidden_layers)]
        self._head(W, sd, num_labels)

    def _layer(self, W, p, kind, eps):
        cfg = self.cfg
        L = {"q": W.linear(p + "attention.self.query"), "k": W.linear(p + "attention.self.key"),
             "v": W.linear(p + "attention.self.value"),
             "attn_out": (W.linear(p + "attention.output.dense"), W.norm(p + "attention.output.LayerNorm", kind, eps)),
             "inter": W.linear(p + "intermediate.dense"),
             "out": (W.linear(p + "output.dense"), W.norm(p + "output.LayerNorm", kind, 1e-5)),
             "ffn": [(W.linear(f"{p}ffn.{j}.intermediate.dense"), W.linear(f"{p}ffn.{j}.output.dense"),
                      W.norm(f"{p}ffn.{j}.output.LayerNorm", kind, eps))
                     for j in range(cfg.num_feedforward_networks - 1)]}
        if cfg.use_bottleneck:
            L["out_bn"] = (W.linear(p + "output.bottleneck.dense"), W.norm(p + "output.bottleneck.LayerNorm", kind, eps))
            L["bn_in"] = (W.linear(p + "bottleneck.input.dense"), W.norm(p + "bottleneck.input.LayerNorm", kind, eps))
            if cfg.key_query_shared_bottleneck and not cfg.use_bottleneck_attention:
                L["bn_att"] = (W.linear(p + "bottleneck.attention.dense"),
                               W.norm(p + "bottleneck.attention.LayerNorm", kind, eps))
        return L

    def _head(self, W, sd, num_labels):
        cfg, t = self.cfg, self.task
        if t == "text-classification":
            self.pool = W.linear("mobilebert.pooler.dense") if cfg.classifier_activation else None
            self.classifier = W.linear("classifier")
        elif t == "token-classification":
            self.classifier = W.linear("classifier")
        elif t == "question-answering":
            self.qa = W.linear("qa_outputs")
        elif t == "fill-mask":
            self.mlm_dense = W.linear("cls.predictions.transform.dense")
            self.mlm_norm = W.norm("cls.predictions.transform.LayerNorm", "layer_norm", cfg.layer_norm_eps)
            # Scores = h[:, :E] @ word^T + h[:, E:] @ extra + bias. Reusing the gather table as the
            # FULLY_CONNECTED weights (both are (V, E)) stores the embeddings once in the .tflite.
            self.mlm_extra = W.var("mlm_extra", sd["cls.predictions.dense.weight"])  # (H - E, V)
            self.mlm_bias = W.var("mlm_bias", sd["cls.predictions.bias"])

    def embed(self, ids, types):
        cfg, B, S = self.cfg, self.B, self.S
        x = tf.gather(self.word, ids)  # ids are never negative: no SELECT  # (B, S, E)
        if cfg.trigram_input:
            nxt = ops.pad(x[:, 1:], [[0, 0], [0, 1], [0, 0]])
            prv = ops.pad(x[:, :-1], [[0, 0], [1, 0], [0, 0]])
            x = ops.concatenate([nxt, x, prv], axis=-1)  # (B, S, 3E)
        x = ops.reshape(x, (B * S, -1))
        if self.emb_proj is not None:
            x = dense(x, self.emb_proj)  # (B*S, H)
        x = ops.reshape(x, (B, S, -1)) + self.pos + tf.gather(self.types, types)
        return apply_norm(ops.reshape(x, (B * S, -1)), self.emb_norm)  # (B*S, H)

    def attend(self, q, k, v, bias):
        B, S, H = self.B, self.S, self.cfg.num_attention_heads
        D = q.shape[-1] // H

        def heads(t):  # (B*S, H*D) -> (B, H, S, D)
            return ops.transpose(ops.reshape(t, (B, S, H, D)), (0, 2, 1, 3))

        scores = ops.matmul(heads(q * (1.0 / float(np.sqrt(D)))), ops.transpose(heads(k), (0, 1, 3, 2))) + bias
        ctx = ops.matmul(ops.softmax(scores, axis=-1), heads(v))  # (B, H, S, D)
        return ops.reshape(ops.transpose(ctx, (0, 2, 1, 3)), (B * S, H * D))

    def block(self, x, L, bias):
        cfg = self.cfg
        if cfg.use_bottleneck:
            b = apply_norm(dense(x, L["bn_in"][0]), L["bn_in"][1])
            if cfg.use_bottleneck_attention:
                q_in = k_in = v_in = b
            elif "bn_att" in L:
                q_in = k_in = apply_norm(dense(x, L["bn_att"][0]), L["bn_att"][1])
                v_in = x
            else:
                q_in = k_in = v_in = x
            block_in = b
        else:
            q_in = k_in = v_in = block_in = x
        ctx = self.attend(dense(q_in, L["q"]), dense(k_in, L["k"]), dense(v_in, L["v"]), bias)
        h = apply_norm(dense(ctx, L["attn_out"][0]) + block_in, L["attn_out"][1])
        for w1, w2, n in L["ffn"]:
            h = apply_norm(dense(self.act(dense(h, w1)), w2) + h, n)
        y = apply_norm(dense(self.act(dense(h, L["inter"])), L["out"][0]) + h, L["out"][1])
        if cfg.use_bottleneck:
            y = apply_norm(dense(y, L["out_bn"][0]) + x, L["out_bn"][1])
        return y

    def call(self, inputs):
        ids, mask = inputs[0], inputs[1]
        types = inputs[2] if len(inputs) > 2 else ops.zeros_like(ids)
        B, S = self.B, self.S
        bias = (1.0 - ops.cast(ops.reshape(mask, (B, 1, 1, S)), "float32")) * np.finfo(np.float32).min
        x = self.embed(ids, types)
        for L in self.layers_:
            x = self.block(x, L, bias)
        return self.head(x)

    def head(self, x):
        B, S, t = self.B, self.S, self.task
        if t == "feature-extraction":
            return (ops.reshape(x, (B, S, -1)),)
        if t == "text-classification":
            first = ops.reshape(x, (B, S, -1))[:, 0]  # (B, H)
            pooled = ops.tanh(dense(first, self.pool)) if self.pool is not None else first
            return (dense(pooled, self.classifier),)
        if t == "token-classification":
            return (ops.reshape(dense(x, self.classifier), (B, S, -1)),)
        if t == "question-answering":
            se = ops.reshape(dense(x, self.qa), (B, S, 2))
            return (se[..., 0], se[..., 1])
        h = apply_norm(self.act(dense(x, self.mlm_dense)), self.mlm_norm)  # (B*S, H)
        E = self.cfg.embedding_size
        scores = ops.matmul(h[:, :E], ops.transpose(self.word)) + ops.matmul(h[:, E:], self.mlm_extra)
        return (ops.reshape(scores + self.mlm_bias, (B, S, -1)),)


def build_keras(cfg: MobileBertConfig, task: str, state_dict: dict, batch: int, seq: int) -> keras.Model:
    """`state_dict`: the PyTorch reference's tensors as numpy arrays, keyed by HF names."""
    return MobileBertKeras(cfg, task, state_dict, batch, seq, cfg.num_labels)
