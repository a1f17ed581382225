"""`edgeport export --target auto / --quantize auto --budget` (edgeport/export/auto.py, export/budget.py).

The kept candidate is checked independently: the written folder is run through the runtime on the same
sentences, tokenized by transformers' own BertTokenizer, and compared with transformers' model on the same
weights (decoders: transformers' GPT-2 on the same prompt ids); the metric is recomputed here with numpy.
Latencies are only checked to be recorded (no speed assertions: the machine is shared).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from conftest import perturb, save_hf
from edgeport.cli import main
from edgeport.errors import EdgeportError
from edgeport.export import auto, measuring
from edgeport.export.budget import compare, parse_budget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert_ckpt(tmp_path_factory):
    """(folder, transformers model): a 2-layer BERT text classifier with perturbed weights and conftest's vocab."""
    import transformers

    from conftest import VOCAB

    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=128, num_labels=3)
    torch.manual_seed(0)
    hf = perturb(transformers.BertForSequenceClassification(cfg).eval(), scale=0.2)
    return save_hf(hf, tmp_path_factory.mktemp("bert-ckpt")), hf


def _manifest(folder):
    return json.loads((folder / "edgeport.json").read_text())


def _cli(capsys, *args):
    code = main(["export", *map(str, args), "-q", "--measure-seconds", "0.05"])
    return code, capsys.readouterr()


def _hf_top1(folder, ckpt, hf) -> float:
    """top1 agreement of the written artifact with transformers on the probe sentences (tokenized by
    transformers' BertTokenizer from the checkpoint folder, padded to the artifact's length)."""
    import transformers

    from edgeport.runtime import load

    tok = transformers.BertTokenizer.from_pretrained(str(ckpt))
    sess = load(folder)
    length = sess.inputs[0].shape[1] if isinstance(sess.inputs[0].shape[1], int) else 128
    enc = tok(list(measuring.PROBE_SENTENCES), padding="max_length", max_length=length, truncation=True,
              return_tensors="np")
    with torch.no_grad():
        want = hf(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()  # (N, C)
    got = np.concatenate([sess.run({k: v[i:i + 1] for k, v in enc.items()})["logits"]
                          for i in range(len(measuring.PROBE_SENTENCES))])
    return float((got.argmax(-1) == want.argmax(-1)).mean())


def test_every_target_and_precision_measured_and_the_kept_one_meets_the_budget(bert_ckpt, tmp_path, capsys):
    ckpt, hf = bert_ckpt
    out = tmp_path / "auto"
    code, io = _cli(capsys, "--model", ckpt, "--task", "text-classification", "--target", "auto", "--quantize",
                    "auto", "--lowering", "generic", "--budget", "top1>=0.9", "-o", out)
    assert code == 0, io.err
    a = _manifest(out)["auto"]
    rows = [(c["target"], c["lowering"], c["precision"]) for c in a["candidates"]]
    assert rows == [("onnx", "generic", "fp32"), ("onnx", "generic", "fp16"), ("onnx", "generic", "int8-dyn-pc"),
                    ("tflite", None, "fp32"), ("tflite", None, "int8-dyn-pc")], rows
    for c in a["candidates"]:
        assert c["error"] is None, c
        assert 0 < c["latency_median_ms"] <= c["latency_p90_ms"] and c["timed_calls"] >= 5
        assert c["passed"] == (c["metrics"]["top1"] >= 0.9)
    assert [s["target"] for s in a["skipped"]] == ["tensorrt"]
    passing = [c for c in a["candidates"] if c["passed"]]
    best = min(passing, key=lambda c: c["latency_median_ms"])
    assert a["chosen"] == f"{best['target']}/{best['lowering'] or 'plain'}/{best['precision']}"
    m = _manifest(out)
    assert (m["target"], m["quantization"]["tag"] if m["quantization"] else "fp32") == (best["target"], best["precision"])
    if m["quantization"]:  # its fp32 candidate lived in the work folder: recorded as not kept
        assert m["quantization"]["float_artifact"] is None and m["quantization"]["float_kept"] is False
    assert _hf_top1(out, ckpt, hf) >= 0.9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "work folders left behind"
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"auto: kept {a['chosen']}" in shown
    assert len([ln for ln in shown.splitlines() if ln.rstrip().endswith((" pass", " miss"))
                and ln.split()[-1] in ("pass", "miss") and ("onnx" in ln or "tflite" in ln)]) == 5, shown


def test_quantize_scheme_auto_against_the_float_artifact(bert_ckpt, tmp_path, capsys):
    """`edgeport quantize FOLDER --scheme auto`: fp32 and the ONNX encoder schemes; the kept one meets the
    budget against transformers; a budget only the float export meets keeps a copy of it (source untouched)."""
    from edgeport.export import export

    ckpt, hf = bert_ckpt
    float_dir = export(str(ckpt), task="text-classification", lowering="generic", out_dir=tmp_path / "f", quiet=True)
    before = sorted(p.name for p in float_dir.iterdir())
    code = main(["quantize", str(float_dir), "--scheme", "auto", "--budget", "top1>=0.9", "-o", str(tmp_path / "q"),
                 "-q", "--measure-seconds", "0.05"])
    assert code == 0, capsys.readouterr().err
    a = _manifest(tmp_path / "q")["auto"]
    assert [c["precision"] for c in a["candidates"]] == ["fp32", "fp16", "int8-dyn-pc"]
    assert a["candidates"][0]["metrics"]["maxdiff"] == 0.0  # the float artifact against itself
    assert _hf_top1(tmp_path / "q", ckpt, hf) >= 0.9
    code = main(["quantize", str(float_dir), "--scheme", "auto", "--budget", "maxdiff<=1e-7", "-o",
                 str(tmp_path / "q2"), "-q", "--measure-seconds", "0.05"])
    assert code == 0, capsys.readouterr().err
    m = _manifest(tmp_path / "q2")
    assert m["auto"]["chosen"] == "onnx/generic/fp32" and m["quantization"] is None
    assert sorted(p.name for p in float_dir.iterdir()) == before
    assert (tmp_path / "q2" / "model.onnx").read_bytes() == (float_dir / "model.onnx").read_bytes()
    # fp32 kept because no quantized scheme met the budget: said on stdout (even with -q) and in the notes
    said = "no quantized scheme met the budget (maxdiff<=1e-07): the output is the fp32 artifact, a copy of the float export"
    assert said in capsys.readouterr().out and said in m["notes"]


def test_quantize_scheme_auto_records_the_users_float_folder(bert_ckpt, tmp_path, capsys, monkeypatch):
    """A quantized choice of `quantize --scheme auto` names the user's float folder (relative path, as
    `edgeport quantize` records it) and `inspect` finds it; changed bytes and a removed folder are told apart."""
    import hashlib

    from edgeport.export import export

    float_dir = export(str(bert_ckpt[0]), task="text-classification", lowering="generic", out_dir=tmp_path / "f",
                       quiet=True)
    # which candidate is fastest depends on the machine: the choice is fixed to int8 (choosing is tested above)
    monkeypatch.setattr(measuring, "choose", lambda cands, bud: next(c for c in cands if c.precision == "int8"))
    code = main(["quantize", str(float_dir), "--scheme", "auto", "-o", str(tmp_path / "q"), "-q",
                 "--measure-seconds", "0.05"])
    assert code == 0, capsys.readouterr().err
    m = _manifest(tmp_path / "q")
    assert m["quantization"]["tag"] == "int8-dyn-pc"
    q = m["quantization"]
    assert q["float_artifact"] == "../f/model.onnx" and q["float_kept"] is True
    assert q["float_sha256"] == hashlib.sha256((float_dir / "model.onnx").read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "q")]) == 0
    assert f"from: {float_dir / 'model.onnx'}\n" in capsys.readouterr().out  # normalised: no 'q/../f'
    assert os.path.normpath(tmp_path / "q" / "../f/model.onnx") == str(float_dir / "model.onnx")
    (float_dir / "model.onnx").write_bytes((float_dir / "model.onnx").read_bytes() + b"\0")
    assert main(["inspect", str(tmp_path / "q")]) == 0
    assert "from: ../f/model.onnx (changed since it was quantized: its sha256 differs)" in capsys.readouterr().out
    (float_dir / "model.onnx").unlink()
    assert main(["inspect", str(tmp_path / "q")]) == 0
    assert "from: ../f/model.onnx (not found here: moved apart or removed)" in capsys.readouterr().out
    # folders that never had a float artifact say so: streaming int4 and export --quantize auto
    from edgeport.manifest import Manifest, float_artifact_status

    for quant, says in (({"from_checkpoint": True}, "made straight from the checkpoint; no float artifact"),
                        ({"float_kept": False}, "its float export was a temporary candidate, not kept")):
        made = Manifest.from_dict({**m, "quantization": {"tag": "int8-dyn-pc", "float_artifact": None, **quant}})
        found, words = float_artifact_status(made, tmp_path / "q")
        assert found is None and says in words and "moved apart" not in words


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf"])
def test_measure_seconds_must_be_finite_and_positive(seconds, tmp_path, capsys):
    """0 or less measured nothing (then "no candidate meets the budget"); nan/inf never ended."""
    code = main(["export", "--model", "bert-tiny", "--target", "auto", "-o", str(tmp_path / "x"), "-q",
                 "--measure-seconds", seconds])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--measure-seconds must be > 0 and finite" in err, err
    code = main(["quantize", str(tmp_path / "none"), "--scheme", "auto", "--measure-seconds", seconds])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--measure-seconds must be > 0 and finite" in err, err
    assert not (tmp_path / "x").exists()


def test_decoder_int4_and_int8_candidates_vs_transformers(tmp_path, capsys):
    """GPT-2 with a word-level vocabulary: the probe falls back to random ids; next-token top1 of the kept
    artifact against transformers' GPT-2 on those prompts meets the budget."""
    import transformers

    from edgeport.runtime.generate import open_decoder
    from serve_helpers import make_decoder_checkpoint

    ckpt = make_decoder_checkpoint(tmp_path / "gpt2")
    out = tmp_path / "auto"
    code, io = _cli(capsys, "--model", ckpt, "--target", "onnx", "--quantize", "auto", "--budget", "top1>=0.95",
                    "-o", out)
    assert code == 0, io.err
    m = _manifest(out)
    assert [c["precision"] for c in m["auto"]["candidates"]] == ["fp32", "int8-dyn-pc", "int4-b32-a8"]
    assert "random ids" in m["auto"]["inputs"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(ckpt)).eval()
    dec = open_decoder(out / m["artifact"], m["decoder"])
    hits = total = 0
    for row in measuring.random_rows(hf.config.vocab_size, measuring.DECODER_PROMPT):  # the probe's prompts
        ids = np.asarray([row], np.int64)
        dec.reset(1)
        got = dec.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None])[0]
        with torch.no_grad():
            want = hf(torch.from_numpy(ids)).logits[0].numpy()
        hits, total = hits + int((got.argmax(-1) == want.argmax(-1)).sum()), total + ids.shape[1]
    assert hits / total >= 0.95


def test_impossible_budget_is_one_line_and_writes_nothing(bert_ckpt, tmp_path, capsys):
    out = tmp_path / "auto"
    code, io = _cli(capsys, "--model", bert_ckpt[0], "--task", "text-classification", "--target", "onnx",
                    "--quantize", "auto", "--lowering", "generic", "--budget", "maxdiff<=1e-12", "-o", out)
    assert code == 2
    lines = io.err.strip().splitlines()
    assert len(lines) == 1 and "no candidate meets --budget maxdiff<=1e-12" in lines[0], io.err
    assert "(3 of 3 measured); best reached: maxdiff" in lines[0] and "(onnx/generic/fp32)" in lines[0]
    assert list(tmp_path.iterdir()) == [], "an output or work folder was left behind"


@pytest.mark.parametrize("budget, says", [("top1=>0.9", "is not METRIC>=X"), ("accuracy>=0.9", "unknown metric"),
                                          ("top1<=0.9", "top1 takes '>='"), ("top1>=1.5", "between 0 and 1"),
                                          ("maxdiff>=0.1", "maxdiff takes '<='"), ("", "empty"),
                                          ("top1>=0.9,,cos", "is not METRIC>=X")])
def test_bad_budget_syntax_is_one_line(budget, says, tmp_path, capsys):
    code, io = _cli(capsys, "--model", "bert-tiny", "--target", "auto", "--budget", budget, "-o", tmp_path / "x")
    assert code == 2 and len(io.err.strip().splitlines()) == 1 and says in io.err, io.err
    assert not (tmp_path / "x").exists()


def test_refusals_before_any_export(tmp_path, capsys):
    code, io = _cli(capsys, "--model", "bert-tiny", "--budget", "top1>=0.9", "-o", tmp_path / "x")
    assert code == 2 and "--budget goes with --target auto" in io.err
    code, io = _cli(capsys, "--model", "bert-tiny", "--task", "feature-extraction", "--target", "auto",
                    "--budget", "top1>=0.9", "-o", tmp_path / "x")
    assert code == 2 and "top1 is not defined for feature-extraction" in io.err and len(io.err.splitlines()) == 1
    code, io = _cli(capsys, "--model", "bert-tiny", "--task", "multiple-choice", "--target", "auto", "-o", tmp_path / "x")
    assert code == 2 and "(batch, sequence) token ids" in io.err and len(io.err.splitlines()) == 1, io.err
    code, io = _cli(capsys, "--model", "bert-tiny", "--target", "auto", "--quantize", "int8", "-o", tmp_path / "x")
    assert code == 2 and "takes --quantize auto" in io.err
    assert not (tmp_path / "x").exists()


def test_plan_follows_the_registry_and_the_cap():
    """Candidates: each timeable target x its registered lowerings (default first) x precisions; deberta-v2's
    8 float forms x precisions exceed MAX_CANDIDATES: whole lowerings are dropped, listed as skipped."""
    from edgeport.export.lowerings import lowerings_for
    from edgeport.reference_models import get_family

    cands, skipped = auto.plan(get_family("bert"), "encoder", "auto", None, quantize=True)
    onnx = [[("onnx", low, p) for p in ("fp32", "fp16", "int8")] for low in lowerings_for("bert", "onnx")]
    assert lowerings_for("bert", "tflite") == [] and onnx[0][0][1] == "default"
    want = onnx[0] + [("tflite", None, "fp32"), ("tflite", None, "int8")] + sum(onnx[1:], [])  # round-robin
    assert [(c.target, c.lowering, c.precision) for c in cands] == want
    assert skipped[0]["target"] == "tensorrt" and "not measured" in skipped[0]["reason"]
    cands, skipped = auto.plan(get_family("deberta-v2"), "encoder", "auto", None, quantize=True)
    total = 3 * len(lowerings_for("deberta-v2", "onnx")) + 2 * len(lowerings_for("deberta-v2", "tflite"))
    assert total > auto.MAX_CANDIDATES and len(cands) <= auto.MAX_CANDIDATES
    assert len(cands) + len(skipped) == total + 1  # every candidate is measured or listed (+ tensorrt)
    assert {c.target for c in cands} == {"onnx", "tflite"}  # the cap drops lowerings, not a target
    assert (cands[0].target, cands[0].lowering) == ("onnx", "default")
    for c in cands:  # a quantized candidate is made from its own lowering's fp32 export, measured before it
        assert c.source is None or (cands[c.source].precision, cands[c.source].lowering) == ("fp32", c.lowering)
    with pytest.raises(EdgeportError, match="unknown target"):
        auto.plan(get_family("bert"), "encoder", "gpu", None, quantize=False)


def test_metrics_on_hand_made_outputs():
    """top1 per real token / per text, cosine and max diff against values worked out by hand."""
    ref = [{"logits": np.array([[1.0, 0.0], [0.0, 1.0]])}, {"logits": np.array([[2.0, 1.0], [0.0, 3.0]])}]
    got = [{"logits": np.array([[1.0, 0.5], [0.2, 1.0]])}, {"logits": np.array([[0.0, 1.0], [0.0, 3.0]])}]
    m = compare(ref, got, "token-classification")
    assert m["top1"] == 0.75  # 3 of 4 tokens keep their argmax
    assert m["maxdiff"] == 2.0
    # second text: (2,1,0,3) vs (0,1,0,3): cos = 10 / (sqrt(14) * sqrt(10))
    assert m["cos"] == pytest.approx(10 / (14 ** 0.5 * 10 ** 0.5))
    # feature-extraction: mean-pooled (1, 1) vs (1, 2): cos = 3 / sqrt(10); every element differs by 1
    emb = compare([{"h": np.array([[1.0, 0.0], [1.0, 2.0]])}], [{"h": np.array([[0.0, 1.0], [2.0, 3.0]])}],
                  "feature-extraction")
    assert emb["top1"] is None and emb["cos"] == pytest.approx(3 / 10 ** 0.5) and emb["maxdiff"] == 1.0


def test_parse_budget_bounds():
    b = parse_budget("top1>=0.99, maxdiff<=0.5")
    assert b.text == "top1>=0.99, maxdiff<=0.5" and b.metrics == ["top1", "maxdiff"]
    assert b.holds({"top1": 0.99, "maxdiff": 0.5}) and not b.holds({"top1": 0.98, "maxdiff": 0.1})
    assert not b.holds({"top1": 1.0, "maxdiff": 0.51}) and not b.holds({"top1": float("nan"), "maxdiff": 0.0})


def test_a_failing_candidate_is_recorded_and_the_search_goes_on(bert_ckpt, tmp_path):
    """Python API with a quantizer that fails for one scheme: that row carries the error, the others are
    measured and one of them is kept."""
    from edgeport.export.auto import export_auto
    from edgeport.quantize import quantize_artifact

    def quantizer(folder, scheme, out):
        if scheme == "fp16":
            raise RuntimeError("planted failure\nsecond line")
        return quantize_artifact(folder, scheme, out_dir=out, quiet=True)

    out = export_auto(str(bert_ckpt[0]), task="text-classification", target="onnx", lowering="generic",
                      quantizer=quantizer, budget="top1>=0.9", out_dir=tmp_path / "a", seconds=0.05, quiet=True)
    rows = {c["precision"]: c for c in _manifest(out)["auto"]["candidates"]}
    assert rows["fp16"]["error"] == "RuntimeError: planted failure" and not rows["fp16"]["passed"]
    assert rows["fp16"]["latency_median_ms"] is None
    assert rows["fp32"]["error"] is None and rows["int8-dyn-pc"]["error"] is None
    assert _manifest(out)["auto"]["chosen"] in ("onnx/generic/fp32", "onnx/generic/int8-dyn-pc")
