"""Layers 2 and 3: artifacts vs reference over a shape grid, manifest contents, graph structure."""

import json
import warnings

import numpy as np
import pytest

from edgeport.errors import ParityError
from edgeport.export import export
from edgeport.export.contracts import encoder_contract
from edgeport.export.validate import reference_outputs, sample_inputs
from edgeport.manifest import read_manifest, sha256_of
from edgeport.reference_models import load_reference
from edgeport.runtime import load

TASKS = ["feature-extraction", "fill-mask", "text-classification", "token-classification", "question-answering"]


def reference(folder, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_reference(str(folder), task)


def assert_matches(sess, ref, contract, batch, seq, padded, atol=1e-4):
    feeds = sample_inputs(contract, batch, seq, padded, seed=123)  # not the seed export validated with
    want = reference_outputs(ref.model, contract, feeds)
    got = sess.run(feeds)
    for name, w in want.items():
        assert got[name].shape == w.shape, (name, batch, seq)
        diff = np.abs(got[name] - w).max()
        assert diff <= atol * max(1.0, np.abs(w).max()), (name, batch, seq, diff)


@pytest.mark.parametrize("task", TASKS)
def test_onnx_matches_reference_over_grid(tmp_path, mobilebert_ckpt, task):
    folder, _ = mobilebert_ckpt(task)
    out = export(str(folder), target="onnx", task=task, out_dir=tmp_path / "o", quiet=True)
    ref = reference(folder, task)
    contract = encoder_contract(ref.config, task, ref.config.hidden_size)
    sess = load(out / "model.onnx")
    for batch, seq, padded in [(1, 8, 0), (3, 37, 2), (3, 128, 1), (2, 150, 1)]:
        assert_matches(sess, ref, contract, batch, seq, padded)
    m, _ = read_manifest(out)
    assert m.parity_passed and len(m.parity) == 6 * len(contract.outputs)
    assert {tuple(c.shape) for c in m.parity} == {(1, 8), (1, 37), (1, 128), (3, 8), (3, 37), (3, 128)}
    assert all(c.max_abs_diff <= c.tolerance for c in m.parity)
    assert m.inputs[0].shape == ["batch", "sequence"] and m.sha256 == sha256_of([out / "model.onnx"])
    assert (out / "tokenizer.json").is_file() and m.tokenizer.mask_token == "[MASK]"
    if task.endswith("classification"):
        assert m.labels == {"0": "negative", "1": "positive", "2": "neutral"}


@pytest.mark.parametrize("task,batch,seq", [("fill-mask", 1, 32), ("question-answering", 2, 48),
                                            ("text-classification", 1, 16), ("feature-extraction", 1, 24),
                                            ("token-classification", 1, 16)])
def test_tflite_matches_reference_builtin_ops_only(tmp_path, mobilebert_ckpt, task, batch, seq):
    from edgeport.export.tflite import op_names

    folder, _ = mobilebert_ckpt(task)
    out = export(str(folder), target="tflite", task=task, out_dir=tmp_path / "t", seq_len=seq, batch=batch,
                 quiet=True)
    ref = reference(folder, task)
    contract = encoder_contract(ref.config, task, ref.config.hidden_size)
    sess = load(out)
    assert [s.shape for s in sess.inputs] == [[batch, seq]] * len(contract.inputs)
    assert all(s.dtype == "int32" for s in sess.inputs)
    assert_matches(sess, ref, contract, batch, seq, 0)
    assert_matches(sess, ref, contract, batch, seq, batch)
    ops = op_names(out / "model.tflite")
    assert not [o for o in ops if o.startswith("Flex") or o == "CUSTOM" or o.startswith("DELEGATE")], ops
    assert "FULLY_CONNECTED" in ops and "BATCH_MATMUL" in ops
    m = json.loads((out / "edgeport.json").read_text())
    assert m["static_shapes"] and m["inputs"][0]["shape"] == [batch, seq] and m["parity_passed"]


def test_parity_failure_is_loud_and_leaves_no_output(tmp_path, mobilebert_ckpt, monkeypatch):
    """A drifted artifact fails export: the reference is nudged after the graph is written."""
    import edgeport.export.onnx as onnx_export

    folder, _ = mobilebert_ckpt("question-answering")
    real = onnx_export.export_onnx

    def drifting(model, *a, **kw):
        result = real(model, *a, **kw)
        with __import__("torch").no_grad():
            model.qa_outputs.bias.add_(0.01)
        return result

    monkeypatch.setattr(onnx_export, "export_onnx", drifting)
    with pytest.raises(ParityError, match="start_logits|end_logits"):
        export(str(folder), target="onnx", task="question-answering", out_dir=tmp_path / "bad", quiet=True)
    assert not (tmp_path / "bad").exists()
    assert not list(tmp_path.glob(".bad*"))  # no temp folder left behind


def test_reexport_replaces_previous_output(tmp_path, mobilebert_ckpt):
    folder, _ = mobilebert_ckpt("feature-extraction")
    out = tmp_path / "o"
    export(str(folder), target="onnx", task="feature-extraction", out_dir=out, quiet=True)
    first = read_manifest(out)[0].sha256
    export(str(folder), target="onnx", task="feature-extraction", out_dir=out, opset=18, quiet=True)
    m = read_manifest(out)[0]
    assert m.converter["opset"] == 18 and m.sha256 != first


def test_tied_embeddings_stored_once(tmp_path, mobilebert_ckpt):
    """The MLM head scores against the word embeddings: ONNX and TFLite files hold that matrix once."""
    import onnx
    from onnx import numpy_helper

    folder, hf = mobilebert_ckpt("fill-mask")
    out = export(str(folder), target="onnx", task="fill-mask", out_dir=tmp_path / "o", quiet=True)
    words = hf.mobilebert.embeddings.word_embeddings.weight.detach().numpy()
    copies = [t.name for t in onnx.load(str(out / "model.onnx")).graph.initializer
              if tuple(t.dims) in (words.shape, words.shape[::-1])
              and np.allclose(np.abs(numpy_helper.to_array(t)).sum(), np.abs(words).sum(), rtol=1e-5)]
    assert len(copies) == 1, copies


@pytest.mark.parametrize("model", ["mobilebert", "bert-tiny-generic"])
def test_attention_reshapes_fold_to_constant_shapes(tmp_path, mobilebert_ckpt, model):
    """The head split/merge reshapes read their sizes from the reshaped tensor and leave the head width to -1,
    so onnxruntime's load-time ReshapeFusion turns every Reshape's shape into a constant: no per-layer
    Shape/Gather/Unsqueeze/Div/Concat chain is left to run (MobileBERT had 264 such nodes after them)."""
    import onnx
    import onnxruntime as ort

    if model == "mobilebert":
        src, kw = str(mobilebert_ckpt("question-answering")[0]), {"task": "question-answering"}
    else:
        src, kw = "bert-tiny", {"task": "text-classification", "lowering": "generic"}
    out = export(src, target="onnx", out_dir=tmp_path / "o", quiet=True, **kw)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out / "model.onnx"), so, providers=["CPUExecutionProvider"])
    g = onnx.load(str(tmp_path / "optimized.onnx")).graph
    consts = {t.name for t in g.initializer}
    reshapes = [n for n in g.node if n.op_type == "Reshape"]
    assert len(reshapes) == 4 * sum(n.op_type == "Softmax" for n in g.node)  # q, k, v split + merge per layer
    assert [n.name for n in reshapes if n.input[1] not in consts] == []
    from_shapes = _shape_outputs(g)
    assert [n.name for n in g.node if n.op_type in ("Div", "Concat") and set(n.input) & from_shapes] == []


def _shape_outputs(g) -> set:
    """Names of tensors computed from a Shape node (Shape -> Gather/Unsqueeze/Div chains)."""
    names = {o for n in g.node if n.op_type == "Shape" for o in n.output}
    for n in g.node:
        if n.op_type in ("Gather", "Unsqueeze", "Div", "Concat", "Squeeze", "Cast") and set(n.input) & names:
            names.update(n.output)
    return names
