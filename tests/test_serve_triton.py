"""`edgeport triton-repo`: every config.pbtxt parsed with Triton's own model-config protobuf (from
tritonclient), the tokenizer model's tensors fed to the copied ONNX model give the pipeline's logits."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnxruntime as ort
import pytest

from edgeport.errors import EdgeportError
from edgeport.runtime import pipeline
from edgeport.serve.triton_repo import write_repository

pytest.importorskip("fastapi")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_configs_parse_with_tritons_schema(serve_exports, tmp_path):
    repo = tmp_path / "repo"
    names = write_repository({"cls": serve_exports["cls"], "fm": serve_exports["fm"]}, repo, max_batch=16,
                             max_queue_delay_us=2000, instances=2)
    assert names == ["cls", "cls_tokenizer", "cls_text", "fm", "fm_tokenizer", "fm_text"]
    c = parse(repo / "cls" / "config.pbtxt")
    assert c.name == "cls" and c.platform == "onnxruntime_onnx" and c.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in c.input] == \
        [(n, model_config_pb2.TYPE_INT64, [-1]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    assert [(o.name, o.data_type, list(o.dims)) for o in c.output] == [("logits", model_config_pb2.TYPE_FP32, [2])]
    assert list(c.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8, 16]
    assert c.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, g.kind) for g in c.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert list(parse(repo / "fm" / "config.pbtxt").output[0].dims) == [-1, 30522]  # (sequence, vocab)
    assert (repo / "cls" / "1" / "model.onnx").read_bytes() == (serve_exports["cls"] / "model.onnx").read_bytes()

    tok = parse(repo / "cls_tokenizer" / "config.pbtxt")
    assert tok.backend == "python" and tok.input[0].data_type == model_config_pb2.TYPE_STRING
    assert [o.name for o in tok.output] == [i.name for i in c.input]
    ens = parse(repo / "cls_text" / "config.pbtxt")
    assert ens.platform == "ensemble" and (repo / "cls_text" / "1").is_dir()
    first, second = ens.ensemble_scheduling.step
    assert first.model_name == "cls_tokenizer" and dict(first.input_map) == {"TEXT": "TEXT"}
    assert dict(first.output_map) == dict(second.input_map) == {i.name: i.name for i in c.input}
    assert second.model_name == "cls" and dict(second.output_map) == {"logits": "logits"}
    assert [o.name for o in ens.output] == ["logits"]


def test_tokenizer_model_feeds_the_onnx_model_like_the_pipeline(serve_exports, tmp_path):
    repo = tmp_path / "repo"
    write_repository({"cls": serve_exports["cls"]}, repo)
    spec = importlib.util.spec_from_file_location("triton_tok", repo / "cls_tokenizer" / "1" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # runs outside Triton: pb_utils is None, the tokenization is plain
    tokenizer, settings = mod.load_settings(str(repo / "cls_tokenizer" / "1"))
    texts = ["the cat sat on the mat.", "alice met bob in paris, the capital of france, and they read a book."]
    tensors = mod.encode(tokenizer, texts, settings)
    assert tensors["input_ids"].shape[1] % 16 == 0 and tensors["input_ids"].dtype == np.int64
    sess = ort.InferenceSession(str(repo / "cls" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], tensors)[0]
    p = pipeline(serve_exports["cls"], threads=1)
    np.testing.assert_allclose(logits, p.session.run(p.encode(texts).feeds)["logits"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="longer than 512"):
        mod.encode(tokenizer, ["word " * 600], settings)


def test_refusals_leave_no_repository(serve_exports, tmp_path):
    for name in ("cls-tfl", "gen"):
        with pytest.raises(EdgeportError, match="tflite export|decoder"):
            write_repository({"m": serve_exports["cls"], name: serve_exports[name]}, tmp_path / "r")
        assert not (tmp_path / "r").exists()
    with pytest.raises(EdgeportError, match="preferred batch"):
        write_repository({"m": serve_exports["cls"]}, tmp_path / "r", max_batch=4, preferred_batch=[8])
    assert not (tmp_path / "r").exists()


def test_cli(serve_exports, tmp_path, capsys):
    from edgeport.cli import main

    assert main(["triton-repo", f"clf={serve_exports['cls']}", "-o", str(tmp_path / "r"), "--max-batch", "4"]) == 0
    assert parse(tmp_path / "r" / "clf" / "config.pbtxt").max_batch_size == 4
    assert main(["triton-repo", str(serve_exports["cls-tfl"]), "-o", str(tmp_path / "r2")]) == 2
    assert capsys.readouterr().err.startswith("edgeport: error: triton-repo:")
