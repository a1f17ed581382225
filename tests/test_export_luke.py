"""LUKE artifacts vs the reference over word and entity lengths (ONNX dynamic, TFLite static), their
manifest, the entity pipelines and `edgeport run --entity-spans`.

Checkpoint: tests/golden/luke/mluke-tiny-entity-classification, a tiny LukeForEntityClassification
saved by transformers 4.57.6 with its MLukeTokenizer files (scripts/make_luke_golden.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.export import export as export_any
from edgeport.reference_models import load_reference
from edgeport.runtime import pipeline
from edgeport.runtime.luke_tokenizer import LukeTokenizer

CKPT = Path(__file__).parent / "golden" / "luke" / "mluke-tiny-entity-classification"
TEXT = "Beyoncé lives in Los Angeles."
BEYONCE, LOS_ANGELES = (0, 7), (17, 28)


def reference(model: str, task: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random heads / preset weights
        return load_reference(model, task)


def export(tmp_path, model, task, target, **kw) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random heads / preset weights
        return export_any(model, target=target, task=task, out_dir=tmp_path / f"{task}-{target}", quiet=True, **kw)


@pytest.fixture(scope="module")
def onnx_ec(tmp_path_factory):
    return export(tmp_path_factory.mktemp("luke"), str(CKPT), "entity-classification", "onnx")


@pytest.fixture(scope="module")
def tflite_ec(tmp_path_factory):
    return export(tmp_path_factory.mktemp("luke"), str(CKPT), "entity-classification", "tflite", seq_len=24)


def test_onnx_manifest_records_entity_inputs_and_grid(onnx_ec):
    m = json.loads((onnx_ec / "edgeport.json").read_text())
    dims = {i["name"]: i["shape"] for i in m["inputs"]}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"],
                    "entity_ids": ["batch", "entities"], "entity_attention_mask": ["batch", "entities"],
                    "entity_position_ids": ["batch", "entities", "mention"]}
    shapes = {tuple(p["shape"]) for p in m["parity"]}
    assert len({s[1] for s in shapes}) >= 3 and len({s[2] for s in shapes}) >= 3  # word and entity lengths vary
    assert any(p["padded_rows"] for p in m["parity"]) and m["parity_passed"]
    assert m["tokenizer"]["kind"] == "luke" and "sentencepiece.bpe.model" in m["tokenizer"]["extra_files"]
    assert m["labels"] == {"0": "person", "1": "location", "2": "organization"}


@pytest.mark.parametrize("task", ["entity-pair-classification", "entity-span-classification", "fill-mask",
                                  "feature-extraction"])
def test_onnx_every_entity_task_passes_the_grid(tmp_path, task):
    out = export(tmp_path, "luke-tiny", task, "onnx")
    m = json.loads((out / "edgeport.json").read_text())
    assert m["parity_passed"] and len(m["parity"]) >= 6
    assert max(p["max_abs_diff"] for p in m["parity"]) < 1e-4
    names = [i["name"] for i in m["inputs"]]
    assert ("entity_start_positions" in names) == (task == "entity-span-classification")


def test_pipeline_matches_transformers_on_runtime_tokenizer_ids(onnx_ec):
    """The ONNX pipeline's scores vs transformers 5.23's LukeForEntityClassification on the same ids."""
    transformers = pytest.importorskip("transformers")
    got = pipeline(onnx_ec)(TEXT, LOS_ANGELES)
    assert got["entity"] == "Los Angeles" and set(got["scores"]) == {"person", "location", "organization"}
    enc = LukeTokenizer.from_folder(CKPT, task="entity_classification")(TEXT, entity_spans=[LOS_ANGELES])
    hf = transformers.LukeForEntityClassification.from_pretrained(str(CKPT)).eval()
    with torch.no_grad():
        logits = hf(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits[0].double().numpy()
    p = np.exp(logits - logits.max())
    p /= p.sum()
    want = {hf.config.id2label[i]: float(v) for i, v in enumerate(p)}
    assert max(abs(got["scores"][k] - want[k]) for k in want) < 1e-5


def test_tflite_is_static_builtin_and_agrees_with_onnx(onnx_ec, tflite_ec):
    from edgeport.export.tflite import op_names

    m = json.loads((tflite_ec / "edgeport.json").read_text())
    dims = {i["name"]: i["shape"] for i in m["inputs"]}
    assert dims["entity_position_ids"] == [1, 1, 30] and dims["input_ids"] == [1, 24] and m["parity_passed"]
    assert not [op for op in op_names(tflite_ec / "model.tflite") if op.lower().startswith("flex")]
    a, b = pipeline(onnx_ec)(TEXT, BEYONCE), pipeline(tflite_ec)(TEXT, BEYONCE)
    assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-5


def span_checkpoint(folder: Path, head: str = "LukeForEntitySpanClassification") -> Path:
    """The golden checkpoint's config and tokenizer with a transformers 5.23 model of class `head`."""
    import shutil

    transformers = pytest.importorskip("transformers")
    cfg = transformers.LukeConfig.from_pretrained(str(CKPT))
    torch.manual_seed(0)
    getattr(transformers, head)(cfg).save_pretrained(str(folder))
    for f in CKPT.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy2(f, folder / f.name)
    return folder


def test_span_classification_runs_in_groups(tmp_path):
    out = export(tmp_path, str(span_checkpoint(tmp_path / "ckpt")), "entity-span-classification", "onnx")
    p = pipeline(out)
    spans = [(0, 7), (8, 13), (14, 16), (17, 20), (17, 28), (21, 28)]
    all_at_once = p(TEXT, spans)
    assert [r["entity"] for r in all_at_once] == ["Beyoncé", "lives", "in", "Los", "Los Angeles", "Angeles"]
    p.tokenizer.max_entity_length = 4  # the same spans in groups of 4 and 2
    grouped = p(TEXT, spans)
    assert [r["span"] for r in grouped] == [list(s) for s in spans]
    assert [r["score"] for r in grouped[:4]] != [r["score"] for r in all_at_once[:4]]  # entities attend to each other


@pytest.mark.parametrize("spans, message", [([(0, 70)], "outside the text"), ([(3, 3)], "empty or reversed"),
                                            ([(0, 7), (17, 28)], "one entity span")])
def test_pipeline_refuses_bad_spans(onnx_ec, spans, message):
    with pytest.raises(EdgeportError, match=message):
        pipeline(onnx_ec)(TEXT, spans)


def test_pipeline_refuses_a_span_beyond_the_static_length(tflite_ec):
    long_text = "Tokyo is big. " * 8 + "Beyoncé lives in Los Angeles."
    start = long_text.index("Los Angeles")
    with pytest.raises(EdgeportError, match="longer than the 24"):
        pipeline(tflite_ec)(long_text, (start, start + 11))
    with pytest.raises(EdgeportError, match="cut off at 24 tokens"):
        pipeline(tflite_ec, truncate=True)(long_text, (start, start + 11))


def test_word_only_tasks_keep_the_encoder_contract():
    ref = reference("luke-tiny", "text-classification")
    assert ref.model.input_names() == ("input_ids", "attention_mask")


def test_cli_export_and_run_with_entity_spans(tmp_path, capsys):
    from edgeport.cli import main

    out = tmp_path / "cli"
    assert main(["export", "--model", str(CKPT), "-o", str(out), "-q"]) == 0  # default task: entity-classification
    capsys.readouterr()
    assert main(["run", str(out), "--text", TEXT, "--entity-spans", "17:28"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["entity"] == "Los Angeles" and got["label"] in got["scores"]
    assert got == pipeline(out)(TEXT, LOS_ANGELES)
    for argv, message in ((["--entity-spans", "17:40"], "outside the text"), ([], "needs --entity-spans"),
                          (["--entity-spans", "17-28"], "not START:END"),
                          (["--entity-spans", "0:7", "--top-k", "2"], "--top-k is not used")):
        assert main(["run", str(out), "--text", TEXT, *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["quantize", str(out), "--scheme", "int8", "-o", str(tmp_path / "q")]) == 2
    assert "not supported yet" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_cli_tensorrt_for_luke_is_parser_clean(tmp_path):
    """Every family has the tensorrt target now (issue 13): LUKE's CumSum over the mask becomes a float
    CumSum the parser takes (tests/test_export_tensorrt.py covers the check itself)."""
    from edgeport.cli import main

    out = tmp_path / "trt"
    assert main(["export", "--model", "luke-tiny", "--target", "tensorrt", "-q", "-o", str(out)]) == 0
    conv = json.loads((out / "edgeport.json").read_text())["converter"]
    assert conv["tensorrt_check"]["passed"] and conv["tensorrt_passes"]["float_cumsum"] == 1


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "question-answering",
                                  "multiple-choice"])
def test_word_only_tasks_export_through_the_encoder_route(tmp_path, task):
    """ONNX; TFLite goes through the same litert-torch route as the entity graphs (tflite_ec)."""
    out = export_any("luke-tiny", target="onnx", task=task, out_dir=tmp_path / "o", quiet=True)
    m = json.loads((out / "edgeport.json").read_text())
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]
    assert m["parity_passed"] and max(p["max_abs_diff"] for p in m["parity"]) < 1e-4


@pytest.mark.slow
def test_luke_base_real_size_entity_classification(tmp_path):
    """luke-base's architecture (random weights, 500k entities): ONNX over the grid, size as expected."""
    out = export(tmp_path, "luke-base", "entity-classification", "onnx")
    m = json.loads((out / "edgeport.json").read_text())
    assert m["parity_passed"] and max(p["shape"][1] for p in m["parity"]) == 128
    # 50267x768 words + 500000x256 entities (+ 256->768) + 12 layers with 4 queries each + 514x768 x2 positions
    assert 1.05e9 < m["size_bytes"] < 1.15e9, m["size_bytes"]


def test_fill_mask_with_entities_has_no_word_pipeline(tmp_path):
    """A LUKE fill-mask export takes entities and ships LUKE tokenizer files: the word-only fill-mask
    pipeline refuses it in one line; the artifact runs through the Session with LukeTokenizer's arrays."""
    from edgeport.runtime import load

    out = export(tmp_path, str(span_checkpoint(tmp_path / "ckpt", "LukeForMaskedLM")), "fill-mask", "onnx")
    with pytest.raises(EdgeportError, match="no fill-mask pipeline for luke exports with entity inputs"):
        pipeline(out)
    tok = LukeTokenizer.from_folder(out, task="none")  # the checkpoint's tokenizer was saved for entity_classification
    feeds = tok("Tokyo is the <mask> of Japan.", entity_spans=[(0, 5), (22, 27)])
    got = load(out).run({k: v for k, v in feeds.items() if k in {"input_ids", "attention_mask", "entity_ids",
                                                                   "entity_attention_mask", "entity_position_ids"}})
    assert got["logits"].shape[:2] == feeds["input_ids"].shape and got["entity_logits"].shape[:2] == (1, 2)
