"""Per-layer KV-cache layout (`--kv-layout per-layer`, edgeport/export/kv_layout.py) against the stacked
graph it is rewritten from and against transformers.

Tiny HF checkpoints (window 5: generation crosses it), exported once per module in both layouts:
- the per-layer graph's logits and presents equal the stacked graph's on the same feeds (onnxruntime
  directly, the stacked past split per layer), and its layers read their past straight from the graph
  inputs (no Gather, no final Concat);
- greedy generation through the runtime equals transformers' generate;
- int4 (edgeport quantize, and --streaming --quantize): same tokens and cache as the stacked int4 artifact;
- the rewrite refuses a graph whose stacked cache is read in a way it does not know.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import save_mistral_checkpoint
from test_export_decoders import EOS, PAD, VOCAB, left_padded, make_checkpoints

from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.export.kv_layout import per_layer_names, to_per_layer
from edgeport.manifest import read_manifest
from edgeport.quantize import quantize_artifact
from edgeport.runtime.generate import TextGenerator, generate_ids, open_decoder, positions_from_mask

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread

ARTIFACTS = [("gpt2", "generic"), ("mistral", "default"), ("mistral", "generic"), ("mixtral", "default")]
LAYERS = 2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (HF model with perturbed weights, its checkpoint folder with a tokenizer)."""
    return make_checkpoints(tmp_path_factory, ("gpt2", "mistral", "mixtral"), seed=1)


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """(family, lowering, layout) -> export folder, made on first use."""
    cache = {}

    def get(family, lowering, layout):
        key = (family, lowering, layout)
        if key not in cache:
            out = tmp_path_factory.mktemp("-".join(key)) / "out"
            cache[key] = export(str(checkpoints[family][1]), "onnx", out_dir=out, lowering=lowering,
                                kv_layout=layout, quiet=True)
        return cache[key]

    return get


def session(folder):
    m, _ = read_manifest(folder)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(folder / m.artifact), so, providers=["CPUExecutionProvider"])


def cache_feeds(batch: int, new: int, past: int, kv_heads: int, head_dim: int, seed: int) -> dict:
    """Stacked feeds with a random non-empty past (L, B, KV, P, D); row 1 left-padded by 2 slots."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, past + new), np.int64)
    mask[1:, :2] = 0
    shape = (LAYERS, batch, kv_heads, past, head_dim)
    return {"input_ids": rng.integers(3, VOCAB, (batch, new)), "attention_mask": mask,
            "position_ids": positions_from_mask(mask, new),
            "past_keys": rng.standard_normal(shape, dtype=np.float32),
            "past_values": rng.standard_normal(shape, dtype=np.float32)}


def split(feeds: dict) -> dict:
    """Stacked past_keys/past_values -> past_key_values.{i}.key/.value (B, KV, P, D)."""
    past = per_layer_names(LAYERS)[0]
    out = {k: v for k, v in feeds.items() if not k.startswith("past_")}
    for i in range(LAYERS):
        out[past[2 * i]], out[past[2 * i + 1]] = feeds["past_keys"][i], feeds["past_values"][i]
    return out


@pytest.mark.parametrize("family,lowering", ARTIFACTS)
def test_per_layer_graph_equals_stacked_graph(exports, family, lowering):
    """Same feeds, past non-empty (decode: 1 new token; a chunk: 4 at batch 1), prefill with an empty
    past: logits and every layer's present equal the stacked graph's bit for bit."""
    stacked, per_layer = exports(family, lowering, "stacked"), exports(family, lowering, "per_layer")
    m, _ = read_manifest(per_layer)
    d = m.decoder
    assert d["layout"] == "per_layer" and d["inputs"] == per_layer_names(LAYERS)[0]
    assert d["outputs"] == [f"present.{i}.{k}" for i in range(LAYERS) for k in ("key", "value")]
    assert [s.name for s in m.inputs][3:] == d["inputs"] and [s.name for s in m.outputs][1:] == d["outputs"]
    assert m.parity_passed and {c.output for c in m.parity} == {"logits", "present_keys", "present_values"}
    a, b = session(stacked), session(per_layer)
    for batch, new, past in ((2, 1, 7), (1, 4, 6), (2, 5, 0)):
        feeds = cache_feeds(batch, new, past, d["kv_heads"], d["head_dim"], seed=batch + new + past)
        want = dict(zip([o.name for o in a.get_outputs()], a.run(None, feeds)))
        got = dict(zip([o.name for o in b.get_outputs()], b.run(None, split(feeds))))
        assert np.array_equal(got["logits"], want["logits"])
        for i in range(LAYERS):
            assert np.array_equal(got[f"present.{i}.key"], want["present_keys"][i]), (batch, new, past, i)
            assert np.array_equal(got[f"present.{i}.value"], want["present_values"][i]), (batch, new, past, i)


@pytest.mark.parametrize("family,lowering", ARTIFACTS)
def test_layers_read_their_past_from_the_graph_inputs(exports, family, lowering):
    """No Gather on the cache inputs, no Concat stacking the presents: the attention (GroupQueryAttention,
    or the generic lowering's Concat of past and new keys) reads each input, and each present is
    written by that layer's node."""
    g = onnx.load(str(exports(family, lowering, "per_layer") / "model.onnx")).graph
    past, present = per_layer_names(LAYERS)
    reader = "GroupQueryAttention" if lowering == "default" else "Concat"
    for name in past:
        assert [n.op_type for n in g.node if name in n.input] == [reader], name
    for name in present:
        assert [n.op_type for n in g.node if name in n.output] == [reader], name
    assert not {"past_keys", "past_values"} & {i for n in g.node for i in n.input}
    m, _ = read_manifest(exports(family, lowering, "per_layer"))
    assert m.converter["kv_layout_nodes_removed"] == 2 * LAYERS + 2 * (LAYERS + 1)  # Gathers; Unsqueezes + Concat


@pytest.mark.parametrize("family,lowering", [("gpt2", "generic"), ("mistral", "default"), ("mixtral", "default")])
def test_greedy_20_tokens_equal_hf_generate(checkpoints, exports, family, lowering):
    hf, _ = checkpoints[family]
    ids, mask = left_padded([6, 4], 6, seed=2)
    with torch.no_grad():
        want = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                           max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD).numpy()
    out = exports(family, lowering, "per_layer")
    m, _ = read_manifest(out)
    got = generate_ids(open_decoder(out / m.artifact, m.decoder, threads=1), ids, mask, 20,
                       stop_token_ids=m.decoder["eos_token_ids"], pad_token_id=m.decoder["pad_token_id"])
    assert got.shape == want.shape and np.array_equal(got, want)
    text = TextGenerator(out, threads=1).generate("w5 w9 w11", max_new_tokens=5)  # the serving path's entry
    assert 1 <= len(text.split()) <= 5


def run_greedy(folder):
    """(tokens (2, 9 + 12), stacked cache (keys, values)) of greedy generation through the runtime."""
    m, _ = read_manifest(folder)
    dec = open_decoder(folder / m.artifact, m.decoder, threads=1)
    ids = np.random.default_rng(0).integers(3, 200, (2, 9))
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    return m, generate_ids(dec, ids, mask, 12), dec.cache()


@pytest.fixture(scope="module")
def mistral_safetensors(tmp_path_factory):
    return save_mistral_checkpoint(tmp_path_factory.mktemp("mistral-st"), seed=3)


@pytest.mark.parametrize("streaming", [False, True])
def test_int4_per_layer_equals_int4_stacked(mistral_safetensors, tmp_path, streaming):
    """int4 (edgeport quantize of the fp32 export; --streaming --quantize int4 from the checkpoint): the
    per-layer artifact generates the stacked int4 artifact's tokens with the same cache."""
    got = {}
    for layout in ("stacked", "per-layer"):
        out = export(str(mistral_safetensors), "onnx", out_dir=tmp_path / layout, quiet=True, quantize="int4",
                     streaming=streaming, kv_layout=layout)
        if not streaming:
            out = quantize_artifact(out, "int4", out_dir=tmp_path / f"{layout}-int4", quiet=True)
        got[layout] = (out, *run_greedy(out))
    (_, m_s, tok_s, cache_s), (out_p, m_p, tok_p, cache_p) = got["stacked"], got["per-layer"]
    assert m_p.decoder["layout"] == "per_layer" and m_s.decoder["layout"] == "stacked"
    assert m_p.artifact == m_s.artifact and m_p.artifact.startswith("model.int4")
    ops = {n.op_type for n in onnx.load(str(out_p / m_p.artifact), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops and "past_key_values.0.key" in [i.name for i in m_p.inputs]
    assert np.array_equal(tok_p, tok_s)
    for x, y in zip(cache_p, cache_s):
        assert x.shape == y.shape and np.array_equal(x, y)


# ---------------------------------------------------------------- refusals

def stacked_graph(extra_reader: bool):
    """A 2-layer stacked-cache graph by hand: past_* -> Gather per layer -> Concat with a new key ->
    Unsqueeze -> Concat -> present_*; `extra_reader` adds a Shape of past_keys (a pattern the rewrite does
    not know)."""
    from onnx import TensorProto, helper

    nodes, f = [], TensorProto.FLOAT
    for kind, src, dst in (("k", "past_keys", "present_keys"), ("v", "past_values", "present_values")):
        for i in range(2):
            nodes += [helper.make_node("Constant", [], [f"{kind}i{i}"], value=helper.make_tensor("", 7, [], [i])),
                      helper.make_node("Gather", [src, f"{kind}i{i}"], [f"{kind}g{i}"], axis=0),
                      helper.make_node("Concat", [f"{kind}g{i}", "new"], [f"{kind}t{i}"], axis=2),
                      helper.make_node("Constant", [], [f"{kind}a{i}"], value=helper.make_tensor("", 7, [1], [0])),
                      helper.make_node("Unsqueeze", [f"{kind}t{i}", f"{kind}a{i}"], [f"{kind}u{i}"])]
        nodes.append(helper.make_node("Concat", [f"{kind}u0", f"{kind}u1"], [dst], axis=0))
    if extra_reader:
        nodes.append(helper.make_node("Shape", ["past_keys"], ["shape"]))
    ins = [helper.make_tensor_value_info(n, f, [2, "b", 1, "p", 4]) for n in ("past_keys", "past_values")]
    ins.append(helper.make_tensor_value_info("new", f, ["b", 1, "s", 4]))
    outs = [helper.make_tensor_value_info(n, f, [2, "b", 1, "t", 4]) for n in ("present_keys", "present_values")]
    outs += [helper.make_tensor_value_info("shape", TensorProto.INT64, [5])] if extra_reader else []
    return helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)])


def test_rewrite_of_a_hand_built_graph_and_its_refusal():
    proto = stacked_graph(False)
    assert to_per_layer(proto, 2)["kv_layout_nodes_removed"] == 10
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    past = {n: rng.standard_normal((1, 1, 3, 4), dtype=np.float32) for n in per_layer_names(2)[0]}
    new = rng.standard_normal((1, 1, 2, 4), dtype=np.float32)
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {**past, "new": new})))
    assert [i.name for i in proto.graph.input] == [*per_layer_names(2)[0], "new"]
    assert not [n for n in proto.graph.node if n.op_type in ("Gather", "Unsqueeze", "Constant")]
    for i in range(2):
        for kind in ("key", "value"):
            want = np.concatenate([past[f"past_key_values.{i}.{kind}"], new], axis=2)
            assert np.array_equal(out[f"present.{i}.{kind}"], want)
    with pytest.raises(EdgeportError, match="past_keys' feeds Shape"):
        to_per_layer(stacked_graph(True), 2)


def test_layouts_refused_where_they_do_not_apply(tmp_path):
    with pytest.raises(EdgeportError, match="--kv-layout for tflite: stacked"):
        export("mistral-tiny", "tflite", out_dir=tmp_path / "t", kv_layout="per-layer", quiet=True)
    with pytest.raises(EdgeportError, match=re.escape("--kv-layout for onnx: per-layer | stacked")):
        export("mistral-tiny", "onnx", out_dir=tmp_path / "o", kv_layout="rolling", quiet=True)
    with pytest.raises(EdgeportError, match="applies to text-generation decoders"):
        export("mistral-tiny", "onnx", task="text-classification", out_dir=tmp_path / "c", kv_layout="per-layer",
               quiet=True, allow_random_head=True)
    assert not any(tmp_path.iterdir())


def test_default_layout_per_target():
    """ONNX exports default to per-layer (measured faster, README "KV-cache layout"); TFLite and TensorRT
    take stacked only; an encoder has no layout."""
    from edgeport.export.contracts import DecoderContract
    from edgeport.export.targets import get_target, kv_layout_for

    c = DecoderContract(2, 2, 16, 97, 64, None)
    assert kv_layout_for(get_target("onnx"), c, None) == "per_layer"
    assert kv_layout_for(get_target("onnx"), c, "stacked") == "stacked"
    assert kv_layout_for(get_target("tflite"), c, None) == kv_layout_for(get_target("tensorrt"), c, None) == "stacked"
    assert kv_layout_for(get_target("onnx"), object(), None) is None
