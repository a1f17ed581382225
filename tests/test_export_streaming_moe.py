"""Streaming export of Mixtral (edgeport/export/streaming_fold.py folds the stacked experts slice by slice)
against the in-memory export of the same checkpoint and against transformers' MixtralForCausalLM.

The in-memory export stores each layer's experts as torch.onnx's constant folding computes them (stacked,
for com.microsoft.MoE as fc1 (E, 2I, H) with gate/up rows interleaved; for the generic lowering transposed
(E, H, I)); the streamed artifact must hold the same tensors byte for byte, written one expert at a time,
and give bit-identical outputs in onnxruntime (same nodes, same weights).
"""

from __future__ import annotations

import collections
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import decoder_cache_feeds, save_mixtral_checkpoint

from edgeport.export import streaming
import edgeport.export.streaming_fold as fold
from edgeport.export import export
from edgeport.reference_models.mixtral import PRESETS

C = PRESETS["mixtral-tiny"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(transformers' MixtralForCausalLM with perturbed weights, its save_pretrained folder)."""
    return save_mixtral_checkpoint(tmp_path_factory.mktemp("mixtral-ckpt"), seed=3)


def _initializers(path) -> collections.Counter:
    """Counter of (sha256 of the bytes, dims) over every initializer, external data loaded."""
    proto = onnx.load(str(path), load_external_data=True)
    return collections.Counter((hashlib.sha256(onnx.numpy_helper.to_array(t).tobytes()).hexdigest(), tuple(t.dims))
                               for t in proto.graph.initializer)


def _feeds(batch: int, new: int, past: int, seed: int) -> dict:
    return decoder_cache_feeds(C, batch, new, past, seed)


@pytest.mark.parametrize("lowering", ["default", "generic"])
def test_streamed_mixtral_equals_in_memory_and_transformers(checkpoint, tmp_path, monkeypatch, lowering):
    hf, folder = checkpoint
    mem = export(str(folder), "onnx", out_dir=tmp_path / "mem", lowering=lowering, quiet=True)

    chunks = collections.defaultdict(list)  # initializer name -> bytes of each chunk appended
    append = streaming.append_tensor

    def recording(proto, f, path, name, dims, dtype, nbytes, parts):
        def seen():
            for c in parts:
                chunks[name].append(len(c))
                yield c
        return append(proto, f, path, name, dims, dtype, nbytes, seen())

    monkeypatch.setattr(streaming, "append_tensor", recording)
    real, folded = fold.fold_weight_subgraphs, {}
    monkeypatch.setattr(fold, "fold_weight_subgraphs", lambda proto, params: folded.setdefault(0, real(proto, params)))
    st = export(str(folder), "onnx", out_dir=tmp_path / "st", lowering=lowering, quiet=True, streaming=True)

    assert _initializers(st / "model.onnx") == _initializers(mem / "model.onnx")
    proto = onnx.load(str(st / "model.onnx"), load_external_data=False)
    stacked = [t for t in proto.graph.initializer if len(t.dims) == 3]
    assert len(stacked) == C["num_hidden_layers"] * (2 if lowering == "default" else 3)
    for t in stacked:  # written one expert at a time, never the layer's stack at once
        assert t.dims[0] == C["num_local_experts"] and len(chunks[t.name]) == C["num_local_experts"]
        assert max(chunks[t.name]) * C["num_local_experts"] == 4 * int(np.prod(t.dims))
    lazies = dict(folded[0])
    assert all(len(lazies[t.name].params()) == C["num_local_experts"] * (2 if t.dims[1] == 2 * C["intermediate_size"]
                                                                          else 1) for t in stacked)  # read lazily
    assert not any(i.name.startswith("model.") for i in proto.graph.input)  # no weight left as a graph input

    sessions = [ort.InferenceSession(str(f / "model.onnx"), providers=["CPUExecutionProvider"]) for f in (mem, st)]
    for batch, new, past in ((1, 11, 0), (1, 1, 9)):  # 11 tokens cross the window of 8
        a, b = (s.run(None, _feeds(batch, new, past, seed=new + past)) for s in sessions)
        for x, y in zip(a, b):
            assert x.shape == y.shape and np.array_equal(x, y), float(np.max(np.abs(x - y)))

    ids = np.random.default_rng(5).integers(3, C["vocab_size"], (1, 11))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    feeds = _feeds(1, 11, 0, seed=0)
    feeds["input_ids"] = ids
    got = sessions[1].run(["logits"], feeds)[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)  # fp32, the same math in another order

    m = json.loads((st / "edgeport.json").read_text())
    assert m["parity_passed"] and m["converter"]["validation"] == streaming.VALIDATION
    assert {c["output"] for c in m["parity"]} == {"logits", "present_keys", "present_values"}


def test_streamed_mixtral_validation_catches_swapped_experts(checkpoint, tmp_path, monkeypatch):
    """Layer 1's expert 0 and 1 swapped in the written stack (the router then sends tokens to the wrong
    weights): the two-pass validation fails it and leaves no folder."""
    from edgeport.errors import ParityError

    real = fold.fold_weight_subgraphs

    def swapped(proto, params):
        out = real(proto, params)
        for _, lazy in out:
            if "layers.1." in next(iter(lazy.params()), ""):
                rows = lazy.rows
                lazy.rows = lambda e, rows=rows: rows({0: 1, 1: 0}.get(e, e))
        return out

    monkeypatch.setattr(fold, "fold_weight_subgraphs", swapped)
    with pytest.raises(ParityError, match="logits"):
        export(str(checkpoint[1]), "onnx", out_dir=tmp_path / "bad", quiet=True, streaming=True)
    assert not (tmp_path / "bad").exists()


def _typed_initializers(path) -> collections.Counter:
    """Counter of (sha256 of the bytes, dims, data type) over every initializer, external data loaded."""
    proto = onnx.load(str(path), load_external_data=True)
    return collections.Counter((hashlib.sha256(t.raw_data or onnx.numpy_helper.to_array(t).tobytes()).hexdigest(),
                                tuple(t.dims), t.data_type) for t in proto.graph.initializer)


def test_streamed_int4_mixtral_equals_quantizing_the_fp32_export(checkpoint, tmp_path, monkeypatch):
    """`export --streaming --quantize int4` vs the in-memory export quantized by `edgeport quantize --scheme
    int4`: attention, router and head as MatMulNBits, embeddings as GatherBlockQuantized, experts as QMoE
    (4-bit, blocks of 32); the same bytes and bit-identical outputs."""
    from edgeport.export import streaming_int4 as s4
    from edgeport.quantize import quantize_artifact

    monkeypatch.setattr(s4, "CHUNK_BYTES", 4 * 96 * 40)  # 40 rows of an expert per slice: slicing exercised
    folder = checkpoint[1]
    mem = export(str(folder), "onnx", out_dir=tmp_path / "mem", quiet=True, quantize="int4")
    two_step = quantize_artifact(mem, "int4", out_dir=tmp_path / "q", quiet=True)
    st = export(str(folder), "onnx", out_dir=tmp_path / "st", quiet=True, quantize="int4", streaming=True)
    m_q, m_st = (json.loads((f / "edgeport.json").read_text()) for f in (two_step, st))
    a_q, a_st = two_step / m_q["artifact"], st / m_st["artifact"]
    assert m_st["artifact"] == m_q["artifact"] and not (st / "model.onnx").exists()

    ops = [collections.Counter((n.domain, n.op_type) for n in onnx.load(str(a), load_external_data=False).graph.node
                               if n.domain == "com.microsoft") for a in (a_q, a_st)]
    assert ops[0] == ops[1] and ops[1][("com.microsoft", "QMoE")] == C["num_hidden_layers"]
    assert ("com.microsoft", "MoE") not in ops[1]
    streamed, two = _typed_initializers(a_st), _typed_initializers(a_q)
    assert streamed - two == collections.Counter()
    big = {k: n for k, n in two.items() if np.prod(k[1]) >= 256}
    assert {k: n for k, n in streamed.items() if k in big} == big

    sessions = [ort.InferenceSession(str(a), providers=["CPUExecutionProvider"]) for a in (a_q, a_st)]
    for batch, new, past in ((1, 11, 0), (1, 1, 9)):
        feeds = _feeds(batch, new, past, seed=new + past)
        for x, y in zip(*(s.run(None, feeds) for s in sessions)):
            assert x.shape == y.shape and np.array_equal(x, y), float(np.max(np.abs(x - y)))
    acc = m_st["quantization"]["accuracy"]
    assert m_st["converter"]["quantized_nodes"]["qmoe"] == C["num_hidden_layers"]
    assert acc["greedy_next_token_agreement"] > 0.5  # against the float reference on the mapped checkpoint
