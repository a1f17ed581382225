"""Question answering against transformers 4.57.6's QuestionAnsweringPipeline on the same weights.

The goldens and the tiny BERT QA checkpoint come from scripts/make_pipeline_golden.py (transformers
4.57.6; 5.x has no extractive QA pipeline). Each golden row is one fault the issue named: answers cut
inside a word, scores normalised differently, max_answer_len, top_k, the null answer, a context of
deleted characters, long contexts in windows (with several strides and window lengths).
"""

import json
from pathlib import Path

import pytest

from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.runtime import pipeline

GOLDEN = Path(__file__).parent / "golden" / "pipelines"
ROWS = json.loads((GOLDEN / "qa_golden.json").read_text())


@pytest.fixture(scope="module")
def qa_pipelines(tmp_path_factory):
    """target -> QA pipeline on the golden checkpoint: dynamic ONNX and static TFLite (64 tokens)."""
    cache = {}

    def get(target):
        if target not in cache:
            kw = {"seq_len": 64} if target == "tflite" else {}
            out = export(str(GOLDEN / "bert-qa-tiny"), target=target, task="question-answering", quiet=True,
                         out_dir=tmp_path_factory.mktemp(f"qa-{target}"), **kw)
            cache[target] = pipeline(out)
        return cache[target]

    return get


def assert_same_answers(got, expected, rtol=1e-4):
    """Same shape (dict for one answer, list otherwise), same spans and texts, scores within rtol."""
    assert type(got) is type(expected), (got, expected)
    got, expected = (got, expected) if isinstance(got, list) else ([got], [expected])
    assert [(g["answer"], g["start"], g["end"]) for g in got] == \
           [(e["answer"], e["start"], e["end"]) for e in expected]
    for g, e in zip(got, expected):
        assert g["score"] == pytest.approx(e["score"], rel=rtol, abs=1e-7)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_qa_matches_transformers_pipeline(qa_pipelines, target, row):
    got = qa_pipelines(target)(row["question"], row["context"], **row["kwargs"])
    assert_same_answers(got, row["expected"])


def test_long_context_spans_several_windows(qa_pipelines):
    """The long golden rows really need windows: over three times the 64 tokens the model takes."""
    qa = qa_pipelines("onnx")
    long_row = next(r for r in ROWS if r["name"] == "long-default")
    n = len(qa.tokenizer.encode(long_row["question"], long_row["context"]).ids)
    assert n > 3 * 64
    assert len(qa._windows(long_row["question"], long_row["context"], 64, 32)) >= 5


def test_answers_come_from_the_context_only(qa_pipelines):
    """A question whose words are the only strong candidates still gets spans of the context."""
    qa = qa_pipelines("onnx")
    context = "the cat sat on the mat"
    for a in qa("alice met bob in paris", context, top_k=20):
        assert context[a["start"]:a["end"]] == a["answer"] and a["answer"]


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 0}, "top_k must be an integer >= 1"),
    ({"max_answer_len": 0}, "max_answer_len must be"),
    ({"doc_stride": 64}, "doc_stride must be between 0 and"),
    ({"max_seq_len": 65}, "max_seq_len must be between 8 and 64"),
])
def test_bad_options_are_refused(qa_pipelines, kwargs, message):
    with pytest.raises(EdgeportError, match=message):
        qa_pipelines("onnx")("who?", "alice met bob", **kwargs)


def test_question_leaving_no_room_is_refused(qa_pipelines):
    qa = qa_pipelines("tflite")
    with pytest.raises(EdgeportError, match="no context fits"):
        qa("who met bob " * 12, "alice met bob in paris", max_seq_len=40, doc_stride=10, max_question_len=60)
    # the same question with a context that fits the window whole is answered (as transformers does)
    assert qa("who met bob " * 12, "alice", max_seq_len=40, doc_stride=10, max_question_len=60)["answer"] == "alice"
    with pytest.raises(EdgeportError, match="needs a context"):
        qa("who?", "")
