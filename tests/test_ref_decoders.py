"""Decoder reference models (gpt2, mistral, mixtral) vs transformers on tiny configs with the same weights.

Checks: logits with left padding at two lengths (one past the sliding window), KV-cache decoding equal
to a no-cache pass, the sliding window itself, greedy generation equal to HF generate, the
classification head, the MoE op against its decomposition, and an ONNX export with past inputs.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers as T

from edgeport.ops.moe import moe, moe_dense, routing_matrix
from edgeport.reference_models import load_reference
from edgeport.reference_models.decoder import generate, positions_from_mask
from edgeport.ops.moe import swap_moe

ATOL = 1e-4
WINDOW = 5  # sliding window of the tiny Mistral/Mixtral configs: test sequences are longer
VOCAB = 97
PAD = 0

COMMON = dict(vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
MISTRAL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, sliding_window=WINDOW,
               rope_parameters={"rope_type": "default", "rope_theta": 500.0}, **COMMON)
CONFIGS = {
    "gpt2": lambda: T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **COMMON),
    "mistral": lambda: T.MistralConfig(**MISTRAL),
    "mixtral": lambda: T.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, experts_implementation="eager",
                                       **MISTRAL),
}
LM = {"gpt2": T.GPT2LMHeadModel, "mistral": T.MistralForCausalLM, "mixtral": T.MixtralForCausalLM}
CLS = {"gpt2": T.GPT2ForSequenceClassification, "mistral": T.MistralForSequenceClassification,
       "mixtral": T.MixtralForSequenceClassification}
FAMILIES = list(CONFIGS)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


def hf_and_ours(tmp_path, family: str, task: str = "text-generation", **overrides):
    """The HF model (params perturbed so norms and biases are not trivial), saved, and ours loaded from it."""
    torch.manual_seed(0)
    cfg = CONFIGS[family]()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    hf = (LM if task == "text-generation" else CLS)[family](cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = load_reference(str(tmp_path), task).model
    return hf, ours


def batch(lengths: list[int], total: int, left: bool = True):
    """Token ids (tokens >= 3, never PAD) and a mask, rows padded to `total` (left or right)."""
    g = torch.Generator().manual_seed(sum(lengths) + total)
    ids = torch.full((len(lengths), total), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        sl = slice(total - n, total) if left else slice(0, n)
        ids[r, sl] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[r, sl] = 1
    return ids, mask


def hf_logits(hf, ids, mask):
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask, ids.shape[1])).logits


def max_diff_valid(a, b, mask):
    """Max abs difference over real (unpadded) positions of (B, S, V) logits."""
    keep = mask.bool()
    return (a[keep] - b[keep]).abs().max().item()


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_with_left_padding(tmp_path, family):
    hf, ours = hf_and_ours(tmp_path, family)
    for total in (7, 13):  # 13 > WINDOW: the window is crossed
        ids, mask = batch([total, total - 3], total)
        with torch.no_grad():
            logits = ours(ids, mask)[0]
            alone = ours(ids[1:, 3:], mask[1:, 3:])[0]  # the padded row without its padding
        assert max_diff_valid(logits, hf_logits(hf, ids, mask), mask) <= ATOL
        assert (logits[1, 3:] - alone[0]).abs().max().item() <= ATOL


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_equals_no_cache(tmp_path, family):
    """Prefill 8 tokens (one row left-padded), then 3 one-token steps: logits equal the full pass's."""
    _, ours = hf_and_ours(tmp_path, family)
    ids, mask = batch([11, 9], 11)
    with torch.no_grad():
        full = ours(ids, mask)[0]  # (B, 11, V)
        logits, pk, pv = ours(ids[:, :8], mask[:, :8])
        steps = [logits]
        for t in range(8, 11):
            logits, pk, pv = ours(ids[:, t:t + 1], mask[:, :t + 1], None, pk, pv)
            steps.append(logits)
    assert pk.shape[3] == 11 and pv.shape == pk.shape
    assert max_diff_valid(torch.cat(steps, dim=1), full, mask) <= ATOL


@pytest.mark.parametrize("family", ["mistral", "mixtral"])
def test_sliding_window(tmp_path, family):
    """A sequence 5x the window matches HF; a model without the window does not (the test can fail)."""
    hf, ours = hf_and_ours(tmp_path, family)
    ids, mask = batch([25, 21], 25)
    with torch.no_grad():
        logits = ours(ids, mask)[0]
        ref = hf_logits(hf, ids, mask)
        ours.model.sliding_window = None
        unwindowed = ours(ids, mask)[0]
    assert max_diff_valid(logits, ref, mask) <= ATOL
    assert max_diff_valid(unwindowed, ref, mask) > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generate_matches_hf(tmp_path, family):
    hf, ours = hf_and_ours(tmp_path, family)
    ids, mask = batch([6, 4], 6)
    with torch.no_grad():
        expected = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=20,
                               eos_token_id=2, pad_token_id=PAD)
    got = generate(ours, ids, mask, max_new_tokens=20, eos_token_id=2, pad_token_id=PAD)
    assert got.shape[1] == expected.shape[1] and torch.equal(got, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_classification(tmp_path, family):
    """The `score` head on the last real token: left-padded, right-padded and full rows."""
    hf, ours = hf_and_ours(tmp_path, family, "text-classification", num_labels=3)
    for left in (True, False):
        ids, mask = batch([9, 6, 3], 9, left=left)
        with torch.no_grad():
            got = ours(ids, mask)[0]
        assert got.shape == (3, 3)
        assert (got - hf_logits(hf, ids, mask)).abs().max().item() <= ATOL


@pytest.mark.parametrize("family", FAMILIES)
def test_text_classification_picks_last_non_pad_id(tmp_path, family):
    """transformers' rule with a config pad_token_id: the rightmost token whose id is not the pad id, mask
    aside (a real token spelled as the pad id is skipped); plain HF forward on right-padded rows."""
    hf, ours = hf_and_ours(tmp_path, family, "text-classification", num_labels=3)
    ids, mask = batch([9, 6, 3], 9, left=False)
    ids[0, 8] = PAD  # a real (mask 1) token with the pad id: transformers scores token 7
    with torch.no_grad():
        got, want = ours(ids, mask)[0], hf(input_ids=ids, attention_mask=mask).logits
        moved = ours(ids[:1, :8], mask[:1, :8])[0]
    assert (got - want).abs().max().item() <= ATOL
    assert (got[0] - moved[0]).abs().max().item() <= ATOL  # same token scored as without the trailing pad id


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
def test_text_classification_without_pad_id(tmp_path, family):
    """No pad_token_id in the config: transformers scores the last token (batch 1 only); ours too, and on
    padded batches the last token the attention mask marks real."""
    hf, ours = hf_and_ours(tmp_path, family, "text-classification", num_labels=3, pad_token_id=None)
    ids, mask = batch([7], 7)
    with torch.no_grad():
        assert (ours(ids, mask)[0] - hf(input_ids=ids).logits).abs().max().item() <= ATOL
        ids3, mask3 = batch([7, 4, 2], 7, left=False)
        rows = torch.cat([ours(ids3[r:r + 1, :n], mask3[r:r + 1, :n])[0] for r, n in enumerate((7, 4, 2))])
        assert (ours(ids3, mask3)[0] - rows).abs().max().item() <= ATOL


def moe_inputs(T_=64, H=16, I=24, E=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T_, H, generator=g)
    logits = torch.randn(T_, E, generator=g) * 2
    w1, w3 = torch.randn(E, I, H, generator=g) * 0.2, torch.randn(E, I, H, generator=g) * 0.2
    w2 = torch.randn(E, H, I, generator=g) * 0.2
    return x, logits, w1, w3, w2


def moe_per_token(x, logits, w1, w3, w2, k):
    """Independent loop reference: each token, its top-k experts, renormalised softmax weights."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        p = torch.softmax(logits[t], -1)
        top = torch.topk(p, k)
        for w, e in zip(top.values / top.values.sum(), top.indices):
            h = torch.nn.functional.silu(w1[e] @ x[t]) * (w3[e] @ x[t])
            out[t] += w * (w2[e] @ h)
    return out


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_moe_op_matches_decomposition(top_k):
    x, logits, w1, w3, w2 = moe_inputs()
    used = routing_matrix(logits, top_k) > 0  # (T, E)
    assert used.any(0).all(), "routing must use every expert"
    assert (used.sum(1) == top_k).all()
    ref = moe_per_token(x, logits, w1, w3, w2, top_k)
    assert (moe(x, logits, w1, w3, w2, top_k) - ref).abs().max().item() <= 1e-5
    assert (moe_dense(x, logits, w1, w3, w2, top_k) - ref).abs().max().item() <= 1e-5


def test_moe_op_fake_kernel():
    """Schema, fake kernel and autograd registration of edgeport::moe are consistent."""
    x, logits, w1, w3, w2 = moe_inputs(T_=8)
    torch.library.opcheck(moe, (x, logits, w1, w3, w2, 2), test_utils=("test_schema", "test_faketensor"))


def test_mixtral_moe_swap(tmp_path):
    """Swapping every block_sparse_moe to the custom op keeps HF's logits; swapping back restores the dense form."""
    hf, ours = hf_and_ours(tmp_path, "mixtral")
    ids, mask = batch([10, 7], 10)
    ref = hf_logits(hf, ids, mask)
    assert swap_moe(ours, "op") == ["model.layers.0.block_sparse_moe", "model.layers.1.block_sparse_moe"]
    with torch.no_grad():
        via_op = ours(ids, mask)[0]
    swap_moe(ours, "dense")
    with torch.no_grad():
        dense = ours(ids, mask)[0]
    assert max_diff_valid(via_op, ref, mask) <= ATOL
    assert max_diff_valid(dense, via_op, mask) <= 1e-5


@pytest.mark.parametrize("family", ["mistral", "mixtral"])
def test_skip_norm_swap(tmp_path, family):
    """The residual adds inside skip_rms_norm: the reference's logits bit for bit (float32), HF's within ATOL,
    with and without a cache; swapping back restores every class."""
    from edgeport.ops.skip_norm import swap_norms

    hf, ours = hf_and_ours(tmp_path, family)
    ids, mask = batch([10, 7], 10)
    classes = {name: type(m) for name, m in ours.named_modules()}
    with torch.no_grad():
        ref = ours(ids, mask)[0]
        _, pk, pv = ours(ids[:, :6], mask[:, :6])
        ref_step = ours(ids[:, 6:], mask, None, pk, pv)[0]
        assert swap_norms(ours, "skip") == ["model.layers.0", "model.layers.1"]
        fused, fused_step = ours(ids, mask)[0], ours(ids[:, 6:], mask, None, pk, pv)[0]
        assert swap_norms(ours, "reference") == ["model.layers.0", "model.layers.1"]
    assert torch.equal(fused, ref) and torch.equal(fused_step, ref_step)
    assert max_diff_valid(fused, hf_logits(hf, ids, mask), mask) <= ATOL
    assert {name: type(m) for name, m in ours.named_modules()} == classes


def test_skip_norm_op_fake_kernel():
    """Schema and fake kernel of edgeport::skip_rms_norm are consistent."""
    from edgeport.ops.skip_norm import skip_rms_norm

    x, skip, w = torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(8)
    torch.library.opcheck(skip_rms_norm, (x, skip, w, 1e-5), test_utils=("test_schema", "test_faketensor"))


def test_mistral_onnx_export_with_past(tmp_path):
    """Legacy export (opset 17) with a cache, run in onnxruntime at another batch, length and past length."""
    ort = pytest.importorskip("onnxruntime")
    _, ours = hf_and_ours(tmp_path / "hf", "mistral")
    ids, mask = batch([9, 7], 9)
    with torch.no_grad():
        _, pk, pv = ours(ids[:, :5], mask[:, :5])
    args = (ids[:, 5:], mask, positions_from_mask(mask, 4), pk, pv)  # S=4 new tokens on P=5 past
    path = str(tmp_path / "mistral.onnx")
    names = ["input_ids", "attention_mask", "position_ids", "past_keys", "past_values"]
    outs = ["logits", "present_keys", "present_values"]
    axes = {"input_ids": {0: "B", 1: "S"}, "attention_mask": {0: "B", 1: "T"}, "position_ids": {0: "B", 1: "S"},
            "past_keys": {1: "B", 3: "P"}, "past_values": {1: "B", 3: "P"}, "logits": {0: "B", 1: "S"},
            "present_keys": {1: "B", 3: "T"}, "present_values": {1: "B", 3: "T"}}
    torch.onnx.export(ours, args, path, input_names=names, output_names=outs, dynamic_axes=axes, opset_version=17,
                      dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    ids, mask = batch([16, 12, 14], 16)  # second shape: B=3, P=13 (past the window), S=3
    with torch.no_grad():
        _, pk, pv = ours(ids[:, :13], mask[:, :13])
        expected = ours(ids[:, 13:], mask, None, pk, pv)
    feed = dict(zip(names, [ids[:, 13:], mask, positions_from_mask(mask, 3), pk, pv]))
    got = sess.run(outs, {k: v.numpy() for k, v in feed.items()})
    for name, g, e in zip(outs, got, expected):
        assert g.shape == tuple(e.shape), name
        assert abs(g - e.numpy()).max() <= ATOL, name
    # The prefill call: an empty past (P=0), 13 new tokens.
    empty = ours.empty_cache(3)
    feed = dict(zip(names, [ids[:, :13], mask[:, :13], positions_from_mask(mask[:, :13], 13), *empty]))
    got = sess.run(["present_keys"], {k: v.numpy() for k, v in feed.items()})[0]
    assert abs(got - pk.numpy()).max() <= ATOL
