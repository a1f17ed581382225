"""`edgeport run`: sentence pairs (--text-pair) against transformers' pipeline, task options, and every
option a task does not use refused with one line (exit 2) instead of being ignored."""

import json
from pathlib import Path

import pytest
import torch

from conftest import VOCAB, perturb, write_vocab
from edgeport.cli import main
from edgeport.export import export

GOLDEN = Path(__file__).parent / "golden" / "pipelines"
QA_ROWS = {r["name"]: r for r in json.loads((GOLDEN / "qa_golden.json").read_text())}
LABELS = ["negative", "positive", "neutral"]
A, B = "alice met bob in paris.", "who met bob?"


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    """(transformers model, tokenizer, {target: export folder}) for a tiny BERT sentence classifier."""
    import transformers

    folder = tmp_path_factory.mktemp("bert-cls")
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=48, max_position_embeddings=64,
                                  id2label=dict(enumerate(LABELS)), label2id={v: i for i, v in enumerate(LABELS)})
    torch.manual_seed(2)
    model = perturb(transformers.BertForSequenceClassification(cfg).eval(), scale=0.3, seed=2)
    model.save_pretrained(str(folder))
    write_vocab(folder)
    outs = {t: export(str(folder), target=t, task="text-classification", quiet=True,
                      out_dir=tmp_path_factory.mktemp(f"cls-{t}"), **kw)
            for t, kw in (("onnx", {}), ("tflite", {"seq_len": 32}))}
    return model, transformers.BertTokenizer.from_pretrained(str(folder)), outs


@pytest.fixture(scope="module")
def qa_export(tmp_path_factory):
    return export(str(GOLDEN / "bert-qa-tiny"), target="onnx", task="question-answering", quiet=True,
                  out_dir=tmp_path_factory.mktemp("qa-cli"))


def run_json(capsys, *args):
    assert main(["run", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def run_error(capsys, *args) -> str:
    assert main(["run", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgeport: error: "), err
    return err


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_text_pair_matches_transformers(capsys, pair_model, target):
    import transformers

    model, tok, outs = pair_model
    oracle = transformers.pipeline("text-classification", model=model, tokenizer=tok, device="cpu", top_k=None)
    expected = {d["label"]: d["score"] for d in oracle({"text": A, "text_pair": B})}
    got = run_json(capsys, outs[target], "--text", A, "--text-pair", B)
    assert got["scores"] == pytest.approx(expected, rel=1e-4)
    assert got["label"] == max(expected, key=expected.get)
    alone = run_json(capsys, outs[target], "--text", A)["scores"]
    assert max(abs(alone[k] - expected[k]) for k in LABELS) > 1e-3  # the pair is really read


@pytest.mark.parametrize("flag, value", [("--question", "who?"), ("--top-k", "3"), ("--max-answer-len", "4"),
                                         ("--aggregation-strategy", "simple"), ("--no-align-to-words", None)])
def test_options_of_other_tasks_are_refused(capsys, pair_model, flag, value):
    out = pair_model[2]["onnx"]
    err = run_error(capsys, out, "--text", A, flag, *([value] if value else []))
    assert f"{flag} is not used by text-classification" in err and "--text-pair" in err


def test_qa_refuses_pair_and_truncate_and_names_real_flags(capsys, qa_export):
    assert "--text-pair is not used by question-answering" in run_error(capsys, qa_export, "--question", "who?",
                                                                        "--text", A, "--text-pair", B)
    assert "--truncate is not used" in run_error(capsys, qa_export, "--question", "who?", "--text", A, "--truncate")
    err = run_error(capsys, qa_export, "--text", A)
    assert "needs --question" in err and "--text" in err and "--context" not in err


@pytest.mark.parametrize("name, flags", [
    ("word-inside", []),
    ("word-inside-unaligned", ["--no-align-to-words"]),
    ("impossible", ["--handle-impossible-answer", "--top-k", "3"]),
    ("max-answer-len", ["--max-answer-len", "2", "--top-k", "2"]),
    ("long-short-windows", ["--max-seq-len", "40", "--doc-stride", "10", "--top-k", "3",
                            "--handle-impossible-answer"]),
])
def test_qa_options_from_the_command_line(capsys, qa_export, name, flags):
    row = QA_ROWS[name]
    got = run_json(capsys, qa_export, "--question", row["question"], "--text", row["context"], *flags)
    expected = row["expected"]
    got, expected = (got, expected) if isinstance(expected, list) else ([got], [expected])
    assert [(g["answer"], g["start"], g["end"]) for g in got] == [(e["answer"], e["start"], e["end"]) for e in expected]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], rel=1e-4, abs=1e-7)


def test_fill_mask_shapes(capsys, mobilebert_ckpt, tmp_path):
    """One text with one mask: a flat list of candidates (Python and CLI), as transformers' fill-mask;
    several masks: a list per mask; a list of texts: a list of those."""
    from edgeport.errors import EdgeportError
    from edgeport.runtime import pipeline

    folder, _ = mobilebert_ckpt("fill-mask")
    out = export(str(folder), target="onnx", task="fill-mask", quiet=True, out_dir=tmp_path / "fm")
    fill = pipeline(out)
    one = fill("the [MASK] sat on the mat.", top_k=3)
    assert [sorted(c) for c in one] == [["score", "token"]] * 3
    cli = run_json(capsys, out, "--text", "the [MASK] sat on the mat.", "--top-k", "3")
    assert [c["token"] for c in cli] == [c["token"] for c in one]
    assert [c["score"] for c in cli] == pytest.approx([c["score"] for c in one], rel=1e-6)
    two = fill(["the [MASK] sat on the [MASK].", "the [MASK] sat on the mat."], top_k=2)
    assert len(two) == 2 and len(two[0]) == 2 and len(two[0][0]) == 2 and isinstance(two[0][0][0], dict)
    alone = fill("the [MASK] sat on the mat.", top_k=2)
    assert [c["token"] for c in two[1]] == [c["token"] for c in alone]
    assert [c["score"] for c in two[1]] == pytest.approx([c["score"] for c in alone], rel=1e-4)
    with pytest.raises(EdgeportError, match="top_k must be"):
        fill("the [MASK] sat.", top_k=0)


def test_pooling_none_from_the_command_line(capsys, tmp_path):
    """`run --pooling none` (the pipeline and the server take it): one vector per token; the CLI prints
    their count and the first token's first values, equal to the pipeline's own output and to transformers'
    last_hidden_state."""
    import transformers

    from edgeport.runtime import pipeline

    folder = tmp_path / "bert"
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(3)
    model = perturb(transformers.BertModel(cfg, add_pooling_layer=False).eval(), scale=0.3, seed=3)
    model.save_pretrained(str(folder))
    write_vocab(folder)
    out = export(str(folder), target="onnx", task="feature-extraction", quiet=True, out_dir=tmp_path / "fe")
    got = run_json(capsys, out, "--text", A, "--pooling", "none")
    own = pipeline(out)(A, pooling="none")[0]  # (S, H)
    enc = transformers.BertTokenizer.from_pretrained(str(folder))(A, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).last_hidden_state[0].numpy()  # (S, H)
    assert got["pooling"] == "none" and got["tokens"] == own.shape[0] == ref.shape[0] and got["dim"] == 32
    assert got["embedding"] == pytest.approx([round(float(x), 5) for x in own[0, :8]], abs=1e-9)
    assert got["embedding"] == pytest.approx(ref[0, :8].tolist(), abs=1e-4)
    mean = run_json(capsys, out, "--text", A)  # the default stays mean pooling, without a token count
    assert "tokens" not in mean and mean["embedding"] == pytest.approx(ref.mean(0)[:8].tolist(), abs=1e-4)
