"""Decoder artifacts (ONNX and TFLite) vs transformers, the ops' lowerings vs their eager references,
graph structure, and the torch-free generation runtime (greedy = HF generate, sampling, CLI).

Tiny HF checkpoints (window 5, so every test sequence crosses it) are exported once per module.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
import transformers as T

from edgeport.export import export
from edgeport.manifest import read_manifest
from edgeport.runtime.generate import (Sampling, TextGenerator, generate_ids, next_tokens, open_decoder,
                                       positions_from_mask)

VOCAB, PAD, EOS, WINDOW = 97, 0, 2, 5
ATOL = 1e-4
COMMON = dict(vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=1, eos_token_id=EOS)
MISTRAL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, sliding_window=WINDOW,
               rope_parameters={"rope_type": "default", "rope_theta": 500.0}, **COMMON)
HF = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **COMMON)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**MISTRAL)),
    "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(num_local_experts=4, num_experts_per_tok=2,
                                                            experts_implementation="eager", **MISTRAL)),
}
ONNX_ARTIFACTS = [("gpt2", "generic"), ("mistral", "default"), ("mistral", "generic"), ("mixtral", "default"),
                  ("mixtral", "generic")]
TFLITE_ARTIFACTS = [("gpt2", "tflite"), ("mistral", "tflite")]
TFLITE_BATCH, TFLITE_PREFILL = 2, 8


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


def write_tokenizer(folder):
    """A word-level tokenizer over the tiny vocab: '<pad>' 0, '<s>' 1, '</s>' 2, 'w3' .. 'w96'."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (HF model with perturbed weights, its checkpoint folder with a tokenizer)."""
    return make_checkpoints(tmp_path_factory, HF, seed=0)


def make_checkpoints(tmp_path_factory, families, seed: int) -> dict:
    """family -> (HF model of HF[family] with weights perturbed by N(0, 0.05) under `seed`, its
    save_pretrained folder with write_tokenizer's tokenizer), for each of `families`."""
    made = {}
    for family in families:
        torch.manual_seed(seed)
        hf = HF[family]().eval()
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        folder = tmp_path_factory.mktemp(family)
        hf.save_pretrained(folder)
        write_tokenizer(folder)
        made[family] = (hf, folder)
    return made


@pytest.fixture(scope="module")
def artifacts(checkpoints, tmp_path_factory):
    """(family, lowering or 'tflite') -> export folder, made on first use."""
    cache = {}

    def get(family, kind):
        if (family, kind) not in cache:
            out = tmp_path_factory.mktemp(f"{family}-{kind}") / "out"
            if kind == "tflite":
                export(str(checkpoints[family][1]), "tflite", out_dir=out, seq_len=TFLITE_PREFILL,
                       batch=TFLITE_BATCH, quiet=True)
            else:
                export(str(checkpoints[family][1]), "onnx", out_dir=out, lowering=kind, quiet=True)
            cache[(family, kind)] = out
        return cache[(family, kind)]

    return get


def left_padded(lengths, total, seed=0):
    g = np.random.default_rng(seed + total)
    ids, mask = np.full((len(lengths), total), PAD, np.int64), np.zeros((len(lengths), total), np.int64)
    for r, n in enumerate(lengths):
        ids[r, total - n:], mask[r, total - n:] = g.integers(3, VOCAB, n), 1
    return ids, mask


def hf_logits(hf, ids, mask):
    with torch.no_grad():
        return hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                  position_ids=torch.from_numpy(positions_from_mask(mask, ids.shape[1]))).logits.numpy()


def artifact_logits(folder, ids, mask, chunks):
    """Run the artifact chunk by chunk (first chunk without a cache); logits (B, S, V)."""
    m, _ = read_manifest(folder)
    dec = open_decoder(folder / m.artifact, m.decoder, threads=1)
    dec.reset(ids.shape[0])
    outs, t = [], 0
    for s in chunks:
        outs.append(dec.step(ids[:, t:t + s], mask[:, t:t + s], positions_from_mask(mask[:, :t + s], s)))
        t += s
    return np.concatenate(outs, axis=1)


def valid_diff(a, b, mask):
    keep = mask.astype(bool)
    return float(np.abs(a[keep] - b[keep]).max())


def no_window_logits(folder, ids, mask):
    """The same weights without the sliding window (our reference, itself tested against HF)."""
    from edgeport.reference_models import load_reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(str(folder))
    ref.model.backbone.sliding_window = None
    with torch.no_grad():
        return ref.model(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()


# ---------------------------------------------------------------- artifacts vs transformers

@pytest.mark.parametrize("family,lowering", ONNX_ARTIFACTS)
def test_onnx_vs_transformers_with_and_without_cache(checkpoints, artifacts, family, lowering):
    """Batch 2 (one row left-padded), 16 tokens > 3x the window: no cache, then decode on the cache."""
    hf, folder = checkpoints[family]
    out = artifacts(family, lowering)
    ids, mask = left_padded([16, 11], 16)
    want = hf_logits(hf, ids, mask)
    assert valid_diff(artifact_logits(out, ids, mask, [16]), want, mask) <= ATOL
    assert valid_diff(artifact_logits(out, ids, mask, [9, 1, 1, 1, 1, 1, 1, 1]), want, mask) <= ATOL
    one = slice(0, 1)  # chunks on a non-empty cache (GroupQueryAttention allows them at batch 1)
    assert valid_diff(artifact_logits(out, ids[one], mask[one], [6, 4, 6]), want[one], mask[one]) <= ATOL
    m, _ = read_manifest(out)
    assert m.parity_passed and {c.output for c in m.parity} == {"logits", "present_keys", "present_values"}
    assert any(c.shape[1] == 0 for c in m.parity) and any(c.shape[1] > 0 for c in m.parity)
    assert m.decoder["layers"] == 2 and m.decoder["padding_side"] == "left" and m.decoder["eos_token_ids"] == [EOS]
    if family != "gpt2":
        assert max(c.shape[1] + c.shape[2] for c in m.parity) > WINDOW  # validation crossed the window


@pytest.mark.parametrize("family,kind", TFLITE_ARTIFACTS)
def test_tflite_static_cache_vs_transformers(checkpoints, artifacts, family, kind):
    """Prompts left-padded into the prefill signature, then 14 decode steps (past the window)."""
    from edgeport.export.tflite import op_names

    hf, _ = checkpoints[family]
    out = artifacts(family, kind)
    ids, mask = left_padded([22, 17], 22)
    got = artifact_logits(out, ids, mask, [8, *[1] * 14])
    assert valid_diff(got, hf_logits(hf, ids, mask), mask) <= ATOL
    ops = op_names(out / "model.tflite")
    assert not [o for o in ops if o.startswith("Flex") or o == "CUSTOM"], ops
    m, _ = read_manifest(out)
    assert m.decoder["signatures"] == {"prefill": [TFLITE_BATCH, TFLITE_PREFILL], "decode": [TFLITE_BATCH, 1]}
    assert m.static_shapes and m.parity_passed


WINDOWED = [("mistral", "default"), ("mistral", "generic"), ("mixtral", "default"), ("mixtral", "generic"),
            ("mistral", "tflite")]


@pytest.mark.parametrize("family,kind", WINDOWED)
def test_sliding_window_is_honoured(checkpoints, artifacts, family, kind):
    """21 tokens, window 5: the artifact matches HF and differs from the same weights without a window."""
    hf, folder = checkpoints[family]
    ids, mask = left_padded([21, 18], 21, seed=3)
    chunks = [8] + [1] * 13 if kind == "tflite" else [21]
    got = artifact_logits(artifacts(family, kind), ids, mask, chunks)
    assert valid_diff(got, hf_logits(hf, ids, mask), mask) <= ATOL
    assert valid_diff(got, no_window_logits(folder, ids, mask), mask) > 1e-2


# ---------------------------------------------------------------- generation

@pytest.mark.parametrize("family,kind", ONNX_ARTIFACTS[:2] + [("mixtral", "default")] + TFLITE_ARTIFACTS)
def test_greedy_20_tokens_equal_hf_generate(checkpoints, artifacts, family, kind):
    hf, _ = checkpoints[family]
    ids, mask = left_padded([6, 4], 6, seed=1)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                           max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD).numpy()
    out = artifacts(family, kind)
    m, _ = read_manifest(out)
    got = generate_ids(open_decoder(out / m.artifact, m.decoder, threads=1), ids, mask, 20,
                       stop_token_ids=m.decoder["eos_token_ids"], pad_token_id=m.decoder["pad_token_id"])
    assert got.shape == want.shape and np.array_equal(got, want)


class FixedLogits:
    """A decoder stand-in whose next-token logits are always `logits` (B, V)."""

    def __init__(self, logits):
        self.logits, self.calls = logits, 0

    def reset(self, batch):
        self.calls = 0

    def step(self, ids, new_mask, pos):
        self.calls += 1
        return self.logits[:, None].repeat(ids.shape[1], axis=1)


def test_sampling_temperature_top_k_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    rng = np.random.default_rng(0)
    counts = lambda s: np.bincount(next_tokens(logits, s, rng), minlength=4) / len(logits)  # noqa: E731
    assert np.allclose(counts(Sampling(1.0)), [0.5, 0.3, 0.15, 0.05], atol=0.03)
    assert counts(Sampling(1.0, top_k=2))[2:].sum() == 0
    assert np.allclose(counts(Sampling(1.0, top_k=2))[:2], [0.625, 0.375], atol=0.03)
    assert counts(Sampling(1.0, top_p=0.75))[2:].sum() == 0  # 0.5 + 0.3 reaches 0.75
    assert counts(Sampling(0.05))[0] > 0.99  # low temperature -> nearly greedy
    assert np.array_equal(next_tokens(logits[:3], Sampling(0.0), rng), [0, 0, 0])


def test_stop_tokens_max_tokens_streaming_and_seed():
    logits = np.log(np.array([[0.2, 0.2, 0.3, 0.3], [0.01, 0.01, 0.97, 0.01]]))
    ids, mask = np.array([[5, 6], [0, 7]]), np.array([[1, 1], [0, 1]])
    seen = []
    out = generate_ids(FixedLogits(logits), ids, mask, 6, Sampling(), stop_token_ids=[2], pad_token_id=0,
                       on_token=lambda r, t: seen.append((r, t)))
    assert out[:, 2:].tolist() == [[2], [2]] and seen == [(0, 2), (1, 2)]  # both stop at once
    out = generate_ids(FixedLogits(logits), ids, mask, 6, Sampling(), stop_token_ids=[3], pad_token_id=0)
    assert out.shape == (2, 8) and out[1, 2:].tolist() == [2] * 6  # max tokens; row 0 stopped, row 1 ran on
    assert out[0, 2:].tolist() == [2] * 6  # argmax picks the first of the tied 0.3s: token 2, never 3
    a, b = (generate_ids(FixedLogits(logits), ids, mask, 8, Sampling(1.0, seed=7)) for _ in range(2))
    assert np.array_equal(a, b) and len(set(a[0, 2:].tolist())) > 1


# ---------------------------------------------------------------- op lowerings vs eager references

class MoEBlock(torch.nn.Module):
    def __init__(self, form: str, E=8, H=16, I=24, k=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.form, self.k = form, k
        self.router = torch.nn.Parameter(torch.randn(E, H, generator=g))
        self.w1, self.w3 = (torch.nn.Parameter(torch.randn(E, I, H, generator=g) * 0.2) for _ in range(2))
        self.w2 = torch.nn.Parameter(torch.randn(E, H, I, generator=g) * 0.2)

    def forward(self, x):
        from edgeport.ops.moe import moe, moe_dense

        fn = moe if self.form == "op" else moe_dense
        return fn(x, x @ self.router.t(), self.w1, self.w3, self.w2, self.k)


def to_onnx(module, args, path, names, axes, opset=17):
    from edgeport.ops import attention, moe, skip_norm

    attention.register_symbolics(opset)
    moe.register_symbolics(opset)
    skip_norm.register_symbolics(opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=names, opset_version=opset, dynamo=False,
                          dynamic_axes=axes,
                          custom_opsets={"com.microsoft": 1})
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return onnx.load(str(path)), ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_moe_lowerings_vs_eager_op(tmp_path):
    """8 experts, top-2, routing that uses every expert: com.microsoft.MoE and the decomposition."""
    from edgeport.ops.moe import moe, routing_matrix

    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    block = MoEBlock("op")
    with torch.no_grad():
        assert (routing_matrix(x @ block.router.t(), 2) > 0).any(0).all(), "routing must use every expert"
        want = moe(x, x @ block.router.t(), block.w1, block.w3, block.w2, 2).numpy()
    for form, op in (("op", "MoE"), ("dense", None)):
        proto, sess = to_onnx(MoEBlock(form), (x[:8],), tmp_path / f"{form}.onnx", ["x"], {"x": {0: "T"}})
        kinds = {(n.domain, n.op_type) for n in proto.graph.node}
        assert (("com.microsoft", "MoE") in kinds) == (op == "MoE")
        got = sess.run(None, {"x": x.numpy()})[0]
        assert np.abs(got - want).max() <= 1e-5, form


class CachedAttention(torch.nn.Module):
    def __init__(self, window):
        super().__init__()
        self.window = window

    def forward(self, q, k, v, past_k, past_v, pad_bias):
        from edgeport.ops.attention import attention_cached

        return attention_cached(q, k, v, past_k, past_v, pad_bias, 4, 2, self.window, 0.25)


def test_group_query_attention_lowering_vs_eager_op(tmp_path):
    """GroupQueryAttention (local_window_size) vs the eager op: prefill with padding, then a decode step."""
    from edgeport.ops.attention import attention_cached, padding_bias

    g = torch.Generator().manual_seed(0)
    B, D = 2, 16
    sample = (torch.randn(B, 3, 64), torch.randn(B, 3, 32), torch.randn(B, 3, 32), torch.zeros(B, 2, 2, D),
              torch.zeros(B, 2, 2, D), torch.zeros(B, 1, 3, 5))
    names = ["q", "k", "v", "past_k", "past_v", "pad_bias"]
    axes = {"q": [0, 1], "k": [0, 1], "v": [0, 1], "past_k": [0, 2], "past_v": [0, 2], "pad_bias": [0, 2, 3]}
    proto, sess = to_onnx(CachedAttention(WINDOW), sample, tmp_path / "gqa.onnx", names, axes)
    node = next(n for n in proto.graph.node if n.op_type == "GroupQueryAttention")
    assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "local_window_size")) == WINDOW
    mask = torch.ones(B, 12, dtype=torch.long)
    mask[1, :4] = 0
    for past, new in ((0, 11), (11, 1)):
        args = (torch.randn(B, new, 64, generator=g), torch.randn(B, new, 32, generator=g),
                torch.randn(B, new, 32, generator=g), torch.randn(B, 2, past, D, generator=g),
                torch.randn(B, 2, past, D, generator=g), padding_bias(mask[:, :past + new], new))
        want = attention_cached(*args, 4, 2, WINDOW, 0.25)
        got = sess.run(None, {n: a.numpy() for n, a in zip(names, args)})
        real = mask[:, past:past + new].bool().numpy()
        assert np.abs(got[0][real] - want[0].numpy()[real]).max() <= 1e-5
        assert np.abs(got[1] - want[1].numpy()).max() == 0.0


class PackedRotary(torch.nn.Module):
    def __init__(self, cos, sin, heads):
        super().__init__()
        self.cos, self.sin, self.heads = cos, sin, heads

    def forward(self, x, position_ids):
        from edgeport.ops.attention import rotary_packed

        return rotary_packed(x, position_ids, self.cos, self.sin, self.heads)


def test_rotary_embedding_lowering_vs_reference_rope(tmp_path):
    """com.microsoft.RotaryEmbedding on packed (B, S, N*D) vs the reference's apply_rope per head (left-padded
    positions, a prefill then a decode step), and the eager op equal to apply_rope bit for bit."""
    from edgeport.reference_models.decoder import RotaryEmbedding, apply_rope, split_heads

    rope, heads, D = RotaryEmbedding(16, 64, 500.0), 3, 16
    half = rope.cos[:, :D // 2], rope.sin[:, :D // 2]
    sample = (torch.randn(2, 4, heads * D), torch.zeros(2, 4, dtype=torch.long))
    proto, sess = to_onnx(PackedRotary(*half, heads), sample, tmp_path / "rope.onnx", ["x", "position_ids"],
                          {"x": [0, 1], "position_ids": [0, 1]})
    assert [n.op_type for n in proto.graph.node if n.domain == "com.microsoft"] == ["RotaryEmbedding"]
    g = torch.Generator().manual_seed(0)
    for pos in (torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 2]]), torch.tensor([[40], [37]])):
        x = torch.randn(2, pos.shape[1], heads * D, generator=g)
        cos, sin = rope(pos)
        want = apply_rope(split_heads(x, heads, D), cos, sin).transpose(1, 2).reshape(x.shape)
        assert torch.equal(PackedRotary(*half, heads)(x, pos), want)
        got = sess.run(None, {"x": x.numpy(), "position_ids": pos.numpy()})[0]
        assert np.abs(got - want.numpy()).max() <= 1e-5


class SkipNorm(torch.nn.Module):
    def __init__(self, weight, eps):
        super().__init__()
        self.weight, self.eps = torch.nn.Parameter(weight), eps

    def forward(self, x, skip):
        from edgeport.ops.skip_norm import skip_rms_norm

        return skip_rms_norm(x, skip, self.weight, self.eps)


def test_skip_norm_lowering_vs_transformers_rmsnorm(tmp_path):
    """com.microsoft.SkipSimplifiedLayerNormalization (output and input_skip_bias_sum) vs transformers'
    MistralRMSNorm of x + skip, at two shapes; the eager op equal to it bit for bit."""
    from transformers.models.mistral.modeling_mistral import MistralRMSNorm

    g = torch.Generator().manual_seed(0)
    hf = MistralRMSNorm(24, eps=1e-5)
    with torch.no_grad():
        hf.weight.copy_(1 + 0.1 * torch.randn(24, generator=g))
    sample = (torch.randn(2, 3, 24), torch.randn(2, 3, 24))
    proto, sess = to_onnx(SkipNorm(hf.weight.detach().clone(), 1e-5), sample, tmp_path / "skipnorm.onnx",
                          ["x", "skip"], {"x": [0, 1], "skip": [0, 1]})
    node = next(n for n in proto.graph.node if n.domain == "com.microsoft")
    assert node.op_type == "SkipSimplifiedLayerNormalization" and len(node.input) == 3
    assert abs(onnx.helper.get_attribute_value(node.attribute[0]) - 1e-5) < 1e-12
    for shape in ((2, 7, 24), (1, 1, 24)):
        x, skip = torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g)
        with torch.no_grad():
            want = hf(x + skip)
            eager = SkipNorm(hf.weight.detach().clone(), 1e-5)(x, skip)
        assert torch.equal(eager[0], want) and torch.equal(eager[1], x + skip)
        got = sess.run(None, {"x": x.numpy(), "skip": skip.numpy()})
        assert np.abs(got[0] - want.numpy()).max() <= 1e-5
        assert np.abs(got[1] - (x + skip).numpy()).max() == 0.0


# ---------------------------------------------------------------- structure

def nodes(folder):
    return onnx.load(str(folder / "model.onnx")).graph.node


@pytest.mark.parametrize("family,lowering", ONNX_ARTIFACTS)
def test_graph_structure(artifacts, family, lowering):
    out = artifacts(family, lowering)
    ms = [n for n in nodes(out) if n.domain == "com.microsoft"]
    if lowering == "generic":
        assert ms == []  # any runtime runs it
        return
    gqa = [n for n in ms if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == 2
    for n in gqa:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["local_window_size"] == WINDOW and attrs["num_heads"] == 4 and attrs["kv_num_heads"] == 2
    rope = [n for n in ms if n.op_type == "RotaryEmbedding"]
    assert len(rope) == 4  # q and k of both layers, on the packed projections
    assert not [n for n in nodes(out) if n.op_type == "Transpose"]  # no per-head layout around attention
    # residual add + RMSNorm fused: both norms of layer 1, layer 0's post-attention norm and the final norm
    # (layer 0's input norm has no residual before it); each reads the normed output and the sum.
    skip = [n for n in ms if n.op_type == "SkipSimplifiedLayerNormalization"]
    assert len(skip) == 4
    readers = {i for n in nodes(out) for i in n.input}
    graph_outputs = {o.name for o in onnx.load(str(out / "model.onnx")).graph.output}
    assert all(n.output[0] in readers | graph_outputs for n in skip)
    assert sum(n.output[3] in readers for n in skip) == 3  # the final norm's sum goes nowhere
    moes = [n for n in ms if n.op_type == "MoE"]
    assert len(moes) == (2 if family == "mixtral" else 0)
    for n in moes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["k"] == 2 and attrs["activation_type"] == b"swiglu" and attrs["swiglu_fusion"] == 1
    m = json.loads((out / "edgeport.json").read_text())
    assert {c["op_type"] for c in m["custom_ops"]} == {n.op_type for n in ms}


# ---------------------------------------------------------------- CLI

def test_cli_generate(artifacts, capsys):
    from edgeport.cli import main

    out = artifacts("gpt2", "generic")
    assert main(["generate", str(out), "--prompt", "w5 w9 w11 w3", "--max-new-tokens", "6"]) == 0
    text = capsys.readouterr().out.strip()
    assert text == TextGenerator(out, threads=1).generate("w5 w9 w11 w3", max_new_tokens=6).strip()
    assert 1 <= len(text.split()) <= 6 and all(w.startswith("w") for w in text.split())
    assert main(["generate", str(out), "--prompt", "w5", "--temperature", "0.7", "--top-k", "5", "--top-p", "0.9",
                 "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "w5", "--top-p", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeport: error:") and "\n" not in err
