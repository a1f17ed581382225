"""fp16 decoders (README support matrix, fp16 column): `edgeport quantize DECODER --scheme fp16` on the ONNX
export of gpt2, mistral and mixtral loads in onnxruntime, keeps float32 I/O (the runtime's KV cache is
float32), holds fp16 weights, and generates what the float artifact generates (which the export validated
against the reference)."""

import numpy as np
import onnx
import pytest

from edgeport.export import export
from edgeport.manifest import read_manifest
from edgeport.quantize import quantize_artifact
from edgeport.runtime.generate import TextGenerator


@pytest.mark.parametrize("preset", ["gpt2-tiny", "mistral-tiny", "mixtral-tiny"])
def test_fp16_decoder_generates_as_its_float_export(preset, tmp_path, monkeypatch):
    monkeypatch.setattr("edgeport.quantize.perplexity.MAX_TOKENS", 2048)  # 16 windows: seconds, not a minute
    f = export(preset, target="onnx", out_dir=tmp_path / "f", quiet=True)
    q = quantize_artifact(f, "fp16", out_dir=tmp_path / "q", quiet=True)
    m = read_manifest(q)[0]
    g = onnx.load(str(q / m.artifact))
    f16 = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in g.graph.initializer)
    assert f16 >= len(g.graph.initializer) // 2, (f16, len(g.graph.initializer))  # the weights really are fp16
    assert {o.name: o.type.tensor_type.elem_type for o in g.graph.output}["logits"] == onnx.TensorProto.FLOAT
    acc = m.quantization["accuracy"]
    # random weights, random ids: measured 99.93-99.99% agreement, logits within 5e-2 of ~0.9 (mixtral's MoE)
    assert acc["greedy_next_token_agreement"] >= 0.99 and acc["max_abs_logit_diff"] < 0.1, acc
    assert abs(acc["perplexity_relative_delta"]) < 1e-3, acc
    prompts = ["hello world", "a b c d"]
    want = TextGenerator(f).generate(prompts, max_new_tokens=8)
    got = TextGenerator(q).generate(prompts, max_new_tokens=8)
    assert got == want and all(w for w in want)
    float_logits = np.abs(acc["reference_absmax"])
    assert float_logits > 0.1  # the comparison is not between two all-zero outputs
