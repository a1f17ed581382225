"""Manifest faults (issue 16 leftovers), each field checked against something other than the code that
writes it: the artifact's own graph (onnx's protobuf, LiteRT's signature list) or transformers.

- inputs: the manifest lists exactly the graph's inputs, every family (MEGA listed token_type_ids its
  graph lacks); ONNX for every family's tiny preset, TFLite on the litert-torch, Keras and decoder routes
  (the slow walk in test_list_offers checks every offer of `edgeport list`).
- signature_key: a TFLite encoder manifest names the signature to run (the mobile demo runs it by key).
- quantization.float_artifact: relative to the quantized folder, so moving both folders keeps it;
  manifests that held an absolute path still read.
- max_sequence_length of word-only LUKE exports: what transformers' LukeModel embeds (RoBERTa-style
  positions start after the pad id: 514 rows hold 512 words), not the table length.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest

from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.reference_models import families


def tiny(name: str) -> str:
    return next(p for p in families()[name].presets if p.endswith("-tiny"))


def _export(model, target, task, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight presets warn
        return export(model, target, task=task, out_dir=out, quiet=True, **kw)


def _manifest(folder) -> dict:
    return json.loads((folder / "edgeport.json").read_text())


def onnx_graph_inputs(path) -> list:
    """[(name, numpy dtype name, rank)] of the graph's inputs, read with onnx (initializers excluded)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [(i.name, onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name,
             len(i.type.tensor_type.shape.dim)) for i in graph.input if i.name not in weights]


def litert_signatures(path) -> dict:
    """{signature key: {input name: (numpy dtype name, shape)}} as LiteRT's Interpreter reads the file."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return {key: {n: (np.dtype(d["dtype"]).name, [int(x) for x in d["shape"]])
                  for n, d in interp.get_signature_runner(key).get_input_details().items()}
            for key in interp.get_signature_list()}


@pytest.fixture(scope="module")
def onnx_exports(tmp_path_factory):
    """family -> its tiny preset's default-task ONNX export folder (made on first use)."""
    made = {}

    def get(family):
        if family not in made:
            out = tmp_path_factory.mktemp("onnx") / family
            made[family] = _export(tiny(family), "onnx", families()[family].default_task, out)
        return made[family]

    return get


@pytest.fixture(scope="module")
def tflite_exports(tmp_path_factory):
    """(preset, task) -> its TFLite export folder at (1, 16) (made on first use)."""
    made = {}

    def get(preset, task):
        if (preset, task) not in made:
            out = tmp_path_factory.mktemp("tflite") / preset
            made[preset, task] = _export(preset, "tflite", task, out, seq_len=16)
        return made[preset, task]

    return get


@pytest.mark.parametrize("family", sorted(families()))
def test_manifest_inputs_are_the_onnx_graph_inputs(family, onnx_exports):
    """Names, order, dtypes and ranks of the manifest's inputs equal the ONNX graph's (MEGA's graph has
    no token_type_ids: its config has no token type embedding)."""
    folder = onnx_exports(family)
    m = _manifest(folder)
    recorded = [(s["name"], s["dtype"], len(s["shape"])) for s in m["inputs"]]
    assert recorded == onnx_graph_inputs(folder / m["artifact"])
    assert m["signature_key"] is None


@pytest.mark.parametrize("preset,task,route", [
    ("mega-tiny", "fill-mask", "litert-torch"),
    ("mobilebert-tiny", "question-answering", "keras"),
    ("gpt2-tiny", "text-generation", "decoder"),
])
def test_tflite_manifest_inputs_and_signature_key(preset, task, route, tflite_exports):
    """Each signature LiteRT lists takes exactly the manifest's inputs; an encoder's manifest names its one
    signature (dtype and static shape as LiteRT reports them), a decoder's names prefill and decode in its
    `decoder` block."""
    folder = tflite_exports(preset, task)
    m = _manifest(folder)
    sigs = litert_signatures(folder / m["artifact"])
    for inputs in sigs.values():
        assert sorted(inputs) == sorted(s["name"] for s in m["inputs"])
    if route == "decoder":
        assert m["signature_key"] is None and sorted(sigs) == sorted(m["decoder"]["signatures"])
        return
    assert [m["signature_key"]] == list(sigs)
    assert {s["name"]: (s["dtype"], s["shape"]) for s in m["inputs"]} == sigs[m["signature_key"]]


def test_runtime_runs_the_recorded_signature(tflite_exports):
    """The runtime opens the manifest's signature; a key the file lacks is a one-line EdgeportError."""
    from edgeport.runtime import load
    from edgeport.runtime.session import LiteRTSession

    folder = tflite_exports("mega-tiny", "fill-mask")
    m = _manifest(folder)
    sess = load(folder)
    assert sess.manifest.signature_key == m["signature_key"]
    assert sorted(s.name for s in sess.inputs) == sorted(s["name"] for s in m["inputs"])
    with pytest.raises(EdgeportError, match="no signature 'decode'"):
        LiteRTSession(folder / m["artifact"], signature_key="decode")


def test_quantized_manifest_survives_moving_the_folders(onnx_exports, tmp_path, monkeypatch):
    """float_artifact is relative to the quantized folder: after moving both folders it still names the
    float artifact (same bytes as the float manifest's sha256 says); `inspect` shows it."""
    from edgeport.manifest import float_artifact_path, read_manifest
    from edgeport.quantize import quantize_artifact

    monkeypatch.setattr("edgeport.quantize.EVAL_TEXTS", 24)
    shutil.copytree(onnx_exports("bert"), tmp_path / "a" / "bert")
    quantized = quantize_artifact(tmp_path / "a" / "bert", "int8", quiet=True)  # a/bert-<scheme tag>
    recorded = _manifest(quantized)["quantization"]["float_artifact"]
    assert recorded == "../bert/model.onnx"
    shutil.move(tmp_path / "a", tmp_path / "b")
    m, folder = read_manifest(tmp_path / "b" / quantized.name)
    found = float_artifact_path(m, folder)
    assert found is not None and found.samefile(tmp_path / "b" / "bert" / "model.onnx")
    assert hashlib.sha256(found.read_bytes()).hexdigest() == _manifest(tmp_path / "b" / "bert")["sha256"]
    out = subprocess.run([sys.executable, "-m", "edgeport.cli", "inspect", str(folder)], capture_output=True,
                         text=True, check=True).stdout
    assert f"from: {tmp_path / 'b' / 'bert' / 'model.onnx'}" in out  # normalised: no "quantized/../bert"


def test_old_absolute_float_artifact_still_reads(onnx_exports, tmp_path):
    """Manifests written before held the path as given (absolute here): it is used while that file still
    holds the float bytes, and reads as not found (no error) once the folder moved."""
    from edgeport.manifest import Manifest, float_artifact_path

    src = onnx_exports("bert")
    m = Manifest.from_dict(_manifest(src))
    old = Manifest.from_dict({**_manifest(src), "quantization": {
        "tag": "int8", "float_artifact": str(src / "model.onnx"), "float_sha256": m.sha256}})
    assert float_artifact_path(old, tmp_path) == src / "model.onnx"
    moved = Manifest.from_dict({**_manifest(src), "quantization": {
        "tag": "int8", "float_artifact": str(tmp_path / "gone" / "model.onnx"), "float_sha256": m.sha256}})
    assert float_artifact_path(moved, tmp_path) is None
    other = Manifest.from_dict({**_manifest(src), "quantization": {
        "tag": "int8", "float_artifact": str(src / "model.onnx"), "float_sha256": "0" * 64}})
    assert float_artifact_path(other, tmp_path) is None  # same path, different bytes: not it


def test_luke_word_only_length_is_what_transformers_embeds(tmp_path):
    """A word-only LUKE export records the longest input transformers' own LukeModel (same config) embeds:
    that length runs there, one more token is out of its position table. The pipeline truncates to it."""
    import torch
    import transformers

    from edgeport.runtime import pipeline

    folder = _export("luke-tiny", "onnx", "text-classification", tmp_path / "l")
    longest = _manifest(folder)["max_sequence_length"]
    from edgeport.reference_models.luke import PRESETS

    fields = {k: v for k, v in PRESETS["luke-tiny"].items() if k != "model_type"}
    hf = transformers.LukeModel(transformers.LukeConfig(**fields, pad_token_id=1)).eval()
    with torch.inference_mode():
        hf(input_ids=torch.full((1, longest), 5))
        with pytest.raises(IndexError):
            hf(input_ids=torch.full((1, longest + 1), 5))
    [result] = pipeline(folder, truncate=True)("word " * (2 * longest))  # one text: a list of one, as transformers'
    assert result["score"] == max(result["scores"].values())  # ran: before, 130 ids overran the table
