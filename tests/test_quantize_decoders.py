"""Quantized decoders: int4 (MatMulNBits) and int8 dynamic on a Mistral export with a tokenizer (the
GroupQueryAttention lowering) run through TextGenerator; QMoE on a mixtral-tiny export against its fp32
artifact; and the runtime's perplexity against transformers' MistralForCausalLM on the same tokens."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.quantize import perplexity, quantize_artifact

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, sliding_window=None,
            tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@pytest.fixture(autouse=True)
def few_tokens(monkeypatch):
    monkeypatch.setattr(perplexity, "MAX_TOKENS", 1024)


def _trainer():
    spec = importlib.util.spec_from_file_location("train_tiny_decoder", ROOT / "scripts" / "train_tiny_decoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny MistralForCausalLM (random weights, a few training-free scales) with the script's tokenizer."""
    import torch
    import transformers

    from edgeport.quantize.text import passages

    train = _trainer()
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(transformers.MistralConfig(**TINY)).eval()
    tok = train.train_tokenizer(passages("train")[:60000], TINY["vocab_size"])
    out = tmp_path_factory.mktemp("dec") / "hf"
    train.save(model, tok, out, {})
    return out


@pytest.fixture(scope="module")
def mistral_onnx(hf_folder, tmp_path_factory):
    from edgeport.export import export

    return export(str(hf_folder), target="onnx", task="text-generation",
                  out_dir=tmp_path_factory.mktemp("dec") / "onnx", quiet=True)


def _manifest(folder):
    return json.loads((Path(folder) / "edgeport.json").read_text())


def _op_types(folder):
    import onnx

    m = _manifest(folder)
    return {n.op_type for n in onnx.load(str(Path(folder) / m["artifact"])).graph.node}


def _first_logits(folder, ids):
    from edgeport.runtime.generate import open_decoder

    m = _manifest(folder)
    dec = open_decoder(Path(folder) / m["artifact"], m["decoder"])
    dec.reset(ids.shape[0])
    pos = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    return dec.step(ids, np.ones_like(ids), pos)  # (B, S, V)


@pytest.mark.parametrize("scheme,op,tag", [("int4", "MatMulNBits", "int4-b32-a8"), ("int4-b32", "MatMulNBits", "int4-b32"),
                                           ("int8", "MatMulInteger", "int8-dyn-pc")])
def test_quantized_decoder_generates(tmp_path, mistral_onnx, scheme, op, tag):
    """`int4` on an ONNX decoder means int8 compute on int4 weights (accuracy_level 4: the fast CPU form);
    int4-b32 asks for fp32 compute."""
    import onnx

    from edgeport.runtime.generate import TextGenerator

    out = quantize_artifact(mistral_onnx, scheme, out_dir=tmp_path / scheme, quiet=True)
    m, src = _manifest(out), _manifest(mistral_onnx)
    assert m["quantization"]["tag"] == tag
    if op == "MatMulNBits":
        levels = {a.i for n in onnx.load(str(out / m["artifact"])).graph.node if n.op_type == op
                  for a in n.attribute if a.name == "accuracy_level"}
        assert levels == {4} if tag.endswith("-a8") else levels <= {0}, levels  # 0 (the default) may be omitted
    assert m["decoder"] == src["decoder"]  # cache layout and special tokens carried over
    ops = _op_types(out)
    assert op in ops and "GroupQueryAttention" in ops, ops
    acc = m["quantization"]["accuracy"]
    assert acc["text"].startswith("pydoc_data") and acc["tokens"] >= 1000
    assert abs(acc["perplexity_relative_delta"]) < 0.02, acc  # random weights: near-uniform outputs
    # hidden 64: fp32 scales per 32 weights, norms and RoPE tables weigh more than at real sizes
    assert m["quantization"]["size_ratio"] < (0.3 if scheme.startswith("int4") else 0.5)
    gen, ref = TextGenerator(out), TextGenerator(mistral_onnx)
    ids = np.asarray([gen.tokenizer.encode("The import statement finds a module").ids])
    want, got = _first_logits(mistral_onnx, ids), _first_logits(out, ids)
    assert np.abs(got - want).max() <= 0.25 * np.abs(want).max()  # random weights: int8 per-tensor ranges
    text = gen.generate("The import statement", max_new_tokens=6)
    assert isinstance(text, str) and len(gen.tokenizer.encode(text).ids) >= 1
    assert ref.generate("The import statement", max_new_tokens=6) is not None


def test_int8_static_is_refused_for_decoders(tmp_path, mistral_onnx):
    with pytest.raises(EdgeportError, match="int8-static is not supported for text-generation"):
        quantize_artifact(mistral_onnx, "int8-static", out_dir=tmp_path / "s", quiet=True)
    assert not (tmp_path / "s").exists()


def test_runtime_perplexity_equals_transformers(hf_folder, mistral_onnx):
    """exp(mean NLL) through onnxruntime (GQA graph, numpy softmax) vs MistralForCausalLM in torch."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    from edgeport.runtime.generate import open_decoder

    tok = Tokenizer.from_file(str(mistral_onnx / "tokenizer.json"))
    tokens = perplexity.held_out_tokens(tok, TINY["eos_token_id"], 1024)
    m = _manifest(mistral_onnx)
    got = perplexity.perplexity(open_decoder(mistral_onnx / m["artifact"], m["decoder"]), tokens, 128)
    x, y = (torch.from_numpy(a) for a in perplexity.windows(tokens, 128))
    hf = transformers.MistralForCausalLM.from_pretrained(str(hf_folder)).eval()
    with torch.inference_mode():
        nll = torch.nn.functional.cross_entropy(hf(x).logits.flatten(0, 1).double(), y.flatten(), reduction="mean")
    want = math.exp(nll.item())
    assert abs(got / want - 1) < 1e-4, (got, want)


@pytest.fixture(scope="module")
def mixtral_onnx(tmp_path_factory):
    from edgeport.export import export

    return export("mixtral-tiny", target="onnx", task="text-generation",
                  out_dir=tmp_path_factory.mktemp("moe") / "onnx", quiet=True)


@pytest.mark.parametrize("scheme,rel", [("int8", 0.02), ("int4", 0.1)])
def test_qmoe_alone_close_to_fp32(tmp_path, mixtral_onnx, scheme, rel):
    """Only the experts quantized (every other weight fp32): the QMoE error on the real export's logits."""
    import shutil

    import onnx

    from edgeport.quantize import qmoe
    from edgeport.schemes import resolve

    out = tmp_path / "qmoe"
    shutil.copytree(mixtral_onnx, out)
    model = onnx.load(str(out / "model.onnx"))
    assert qmoe.convert_moe_nodes(model, resolve(scheme, "onnx")) == 2  # one per layer
    onnx.save(model, str(out / "model.onnx"))
    ids = np.random.default_rng(1).integers(3, 1024, (2, 12))
    want, got = _first_logits(mixtral_onnx, ids), _first_logits(out, ids)
    assert 0 < np.abs(got - want).max() <= rel * np.abs(want).max(), np.abs(got - want).max()


# whole-artifact schemes: MatMuls int8-dynamic / int4 MatMulNBits plus QMoE experts (random weights)
@pytest.mark.parametrize("scheme,bits,rel", [("int8", 8, 0.3), ("int4", 4, 0.3)])
def test_qmoe_mixtral_close_to_fp32(tmp_path, mixtral_onnx, scheme, bits, rel):
    import onnx

    out = quantize_artifact(mixtral_onnx, scheme, out_dir=tmp_path / scheme, quiet=True)
    m = _manifest(out)
    nodes = onnx.load(str(out / m["artifact"])).graph.node
    qmoe = [n for n in nodes if n.op_type == "QMoE"]
    assert qmoe and not any(n.op_type == "MoE" for n in nodes)
    assert all(a.i == bits for n in qmoe for a in n.attribute if a.name == "expert_weight_bits")
    assert m["converter"]["quantizer"]["qmoe_nodes"] == len(qmoe)
    ids = np.random.default_rng(1).integers(3, 1024, (2, 12))
    want, got = _first_logits(mixtral_onnx, ids), _first_logits(out, ids)
    assert np.abs(got - want).max() <= rel * np.abs(want).max(), np.abs(got - want).max()
    assert m["quantization"]["accuracy"]["greedy_next_token_agreement"] > 0.5


@pytest.mark.parametrize("scheme,op,tag", [("int8", "MatMulInteger", "int8-dyn-pc"), ("int4", "MatMulNBits", "int4-b32-a8")])
def test_gpt2_decoder_quantizes(tmp_path, scheme, op, tag):
    """GPT-2 / MegatronGPT2 (no tokenizer in the tiny preset: scored on seeded random ids)."""
    from edgeport.export import export

    src = export("gpt2-tiny", target="onnx", task="text-generation", out_dir=tmp_path / "f", quiet=True)
    out = quantize_artifact(src, scheme, out_dir=tmp_path / scheme, quiet=True)
    m = _manifest(out)
    assert m["quantization"]["tag"] == tag and op in _op_types(out) and m["decoder"] == _manifest(src)["decoder"]
    acc = m["quantization"]["accuracy"]
    assert acc["text"].startswith("random token ids") and acc["tokens"] >= 1000
    assert abs(acc["perplexity_relative_delta"]) < 0.01 and acc["greedy_next_token_agreement"] >= 0.7, acc
