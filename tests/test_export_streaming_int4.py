"""`export --streaming --quantize int4` (edgeport/export/streaming_int4.py) against the two-step path:
the in-memory fp32 export quantized by `edgeport quantize --scheme int4` (onnxruntime's
MatMulNBitsQuantizer on the whole graph).

Both must hold the same int4 weights byte for byte (packed MatMulNBits B, scales, GatherBlockQuantized
table) and give bit-identical outputs in onnxruntime: the same quantizer code on the same tensors,
here one slice of rows at a time. No fp32 artifact may appear in the streamed folder.
"""

from __future__ import annotations

import collections
import hashlib
import json

import numpy as np
import onnx
import pytest
from conftest import decoder_cache_feeds, save_mistral_checkpoint

import edgeport.export.streaming_int4 as s4
from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.quantize import quantize_artifact
from edgeport.reference_models.mistral import PRESETS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """mistral-tiny with random weights saved as safetensors (hidden 64: two int4 blocks of 32 per row)."""
    return save_mistral_checkpoint(tmp_path_factory.mktemp("mistral-ckpt-int4"), seed=2)


def _initializers(path) -> collections.Counter:
    """Counter of (sha256 of raw bytes, dims, data type) over every initializer, external data loaded."""
    proto = onnx.load(str(path), load_external_data=True)
    return collections.Counter((hashlib.sha256(t.raw_data or onnx.numpy_helper.to_array(t).tobytes()).hexdigest(),
                                tuple(t.dims), t.data_type) for t in proto.graph.initializer)


def _ops(path) -> collections.Counter:
    return collections.Counter((n.domain, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node)


def _feeds(batch: int, new: int, past: int, seed: int) -> dict:
    return decoder_cache_feeds(PRESETS["mistral-tiny"], batch, new, past, seed)


@pytest.mark.parametrize("scheme", ["int4", "int4-b16-asym"])
def test_streamed_int4_equals_quantizing_the_fp32_export(checkpoint, tmp_path, monkeypatch, scheme):
    import onnxruntime as ort

    monkeypatch.setattr(s4, "CHUNK_BYTES", 4 * 64 * 100)  # 100 rows per slice: the slicing is exercised
    mem = export(str(checkpoint), "onnx", out_dir=tmp_path / "mem", quiet=True, quantize=scheme)
    two_step = quantize_artifact(mem, scheme, out_dir=tmp_path / "q", quiet=True)
    st = export(str(checkpoint), "onnx", out_dir=tmp_path / "st", quiet=True, quantize=scheme, streaming=True)

    m_q, m_st = (json.loads((f / "edgeport.json").read_text()) for f in (two_step, st))
    assert m_st["artifact"] == m_q["artifact"] and m_st["precision"] == m_q["precision"]
    assert sorted(p.name for p in st.iterdir() if "onnx" in p.name) == [m_st["artifact"], m_st["artifact"] + ".data"]
    a_q, a_st = two_step / m_q["artifact"], st / m_st["artifact"]

    ops, ops_q = _ops(a_st), _ops(a_q)  # shape subgraphs differ (the in-memory export folds them)
    for key in set(ops) | set(ops_q):
        if key[0] == "com.microsoft" or key[1] in ("MatMul", "Gather", "Softmax", "Mul", "Add"):
            assert ops[key] == ops_q[key], key
    assert ops[("com.microsoft", "MatMulNBits")] == 2 * 7 + 1 and ops[("com.microsoft", "GatherBlockQuantized")] == 1
    streamed, two = _initializers(a_st), _initializers(a_q)
    assert streamed - two == collections.Counter()  # every streamed tensor is in the two-step artifact
    big = {k: n for k, n in two.items() if np.prod(k[1]) >= 256}
    assert {k: n for k, n in streamed.items() if k in big} == big  # and it has no weight the stream lacks

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (a_q, a_st)]
    for batch, new, past in ((1, 7, 0), (1, 1, 9)):
        feeds = _feeds(batch, new, past, seed=new + past)
        for x, y in zip(*(s.run(None, feeds) for s in sessions)):
            assert x.shape == y.shape and np.array_equal(x, y), float(np.max(np.abs(x - y)))

    q = m_st["quantization"]
    assert q["tag"] == m_q["quantization"]["tag"] and q["from_checkpoint"] and q["float_artifact"] is None
    acc = q["accuracy"]
    assert 0 < acc["tokens"] <= s4.EVAL_TOKENS and acc["greedy_next_token_agreement"] > 0.5
    assert m_st["parity"] == [] and not m_st["parity_passed"]  # no fp32 parity: said in converter.validation
    assert "no float artifact" in m_st["converter"]["validation"]
    data = a_st.with_name(a_st.name + ".data")  # hashed in the background while scoring: the files' digest
    assert m_st["sha256"] == hashlib.sha256(a_st.read_bytes() + data.read_bytes()).hexdigest()


def test_accuracy_report_sees_a_broken_artifact(checkpoint, tmp_path, monkeypatch):
    """The report compares with the float reference: zeroed int4 scales (a wrong artifact) show up as
    near-chance greedy agreement (the intact artifact: > 50%, above)."""
    real = s4.quantize_matmul_weight

    def zero_scales(w, transposed, q, *scratch):
        (packed, scales, zp), kn = real(w, transposed, q, *scratch)
        return (packed, np.zeros_like(scales), zp), kn

    monkeypatch.setattr(s4, "quantize_matmul_weight", zero_scales)
    st = export(str(checkpoint), "onnx", out_dir=tmp_path / "st", quiet=True, quantize="int4", streaming=True)
    acc = json.loads((st / "edgeport.json").read_text())["quantization"]["accuracy"]
    assert acc["greedy_next_token_agreement"] < 0.05  # (perplexity on random weights and ids says little)


def test_streamed_quantize_refuses_other_schemes(checkpoint, tmp_path):
    with pytest.raises(EdgeportError, match="int4 ONNX weights from the checkpoint"):
        export(str(checkpoint), "onnx", out_dir=tmp_path / "x", quiet=True, quantize="int8", streaming=True)
    assert not (tmp_path / "x").exists()


def test_preflight_estimates_the_int4_path_apart():
    """Mistral-7B (28.97 GB of fp32 weights): the streamed int4 export fits in 16 GB, the streamed fp32
    one does not (PEAK_FACTOR: 0.3x vs 1.0x the weights, + 2x the 0.52 GB head + 0.5 GB)."""
    from edgeport.export.streaming import preflight

    need = preflight("mistral-7b", None, None, True, available=lambda: 16e9, quantize="int4")
    assert 10e9 < need < 11e9
    with pytest.raises(EdgeportError, match=r"streaming export: about 30\.5 GB needed"):
        preflight("mistral-7b", None, None, True, available=lambda: 16e9)
