"""Truncation keeps the special tokens and the pair structure, as the tokenizer's own strategies do
(issue 16, part 2): every pipeline that takes --truncate, on a text one token longer than the artifact.

Oracle: transformers 5.23's BertTokenizer (`truncation=..., max_length=...`) and its models, live, on a
tiny BERT with 24 positions (the 513-token text on a 512-position BERT, scaled down).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import VOCAB, perturb, save_hf
from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.runtime import pipeline

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

POSITIONS = 24
HF_CLASSES = {"text-classification": "BertForSequenceClassification", "fill-mask": "BertForMaskedLM",
              "token-classification": "BertForTokenClassification", "feature-extraction": "BertModel",
              "question-answering": "BertForQuestionAnswering"}
WORDS = "the cat sat on the mat and the dog went to the river of paris who lives in the big red city and a blue book".split()
LONG = " ".join(WORDS[:POSITIONS - 1])  # 23 words -> 25 tokens with [CLS] and [SEP]: one too many


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(task):
        if task not in cache:
            cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=37,
                                          max_position_embeddings=POSITIONS,
                                          num_labels=2 if task == "question-answering" else 3)
            torch.manual_seed(0)
            hf = perturb(getattr(transformers, HF_CLASSES[task])(cfg).eval(), scale=0.2)
            folder = save_hf(hf, tmp_path_factory.mktemp("ckpt"))
            out = export(str(folder), target="onnx", task=task, out_dir=tmp_path_factory.mktemp("o") / "e", quiet=True)
            cache[task] = (hf, transformers.BertTokenizer.from_pretrained(str(folder)), out)
        return cache[task]

    return get


def test_long_text_is_refused_without_truncate(exported):
    _, _, out = exported("text-classification")
    with pytest.raises(EdgeportError, match="25 tokens, longer than the 24"):
        pipeline(out)(LONG)


def test_text_classification_keeps_final_sep_and_matches_transformers(exported):
    """The reported fault: the final [SEP] was cut (scores 0.03 off transformers' own truncation)."""
    hf, tok, out = exported("text-classification")
    clf = pipeline(out, truncate=True)
    ids = tok(LONG, truncation=True, max_length=POSITIONS)["input_ids"]
    assert clf.encode([LONG]).feeds["input_ids"][0].tolist() == ids and ids[-1] == tok.sep_token_id
    with torch.no_grad():
        expected = torch.softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()
    got = np.array(list(clf(LONG)[0]["scores"].values()))
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("strategy", ["longest_first", "only_second", "only_first"])
def test_pairs_truncate_as_transformers(exported, strategy):
    _, tok, out = exported("text-classification")
    clf = pipeline(out, truncate=True if strategy == "longest_first" else strategy)
    a, b = " ".join(WORDS[:8]), " ".join(WORDS[4:])  # 8 + 19 words + 3 specials = 30 tokens
    if strategy == "only_first":  # the first text cannot absorb 6 tokens: refused, as transformers errors
        with pytest.raises(EdgeportError, match="cannot truncate"):
            clf.encode([a], [b])
        return
    enc = tok(a, b, truncation=strategy, max_length=POSITIONS)
    feeds = clf.encode([a], [b]).feeds
    assert feeds["input_ids"][0].tolist() == enc["input_ids"]
    assert feeds["token_type_ids"][0].tolist() == enc["token_type_ids"]


def test_token_classification_never_labels_special_tokens(exported):
    """The reported fault: with --truncate, [CLS] came out labelled as a word."""
    hf, tok, out = exported("token-classification")
    rows = pipeline(out, truncate=True)(LONG, ignore_labels=())
    assert [r["index"] for r in rows] == list(range(1, POSITIONS - 1))
    assert [r["word"] for r in rows] == WORDS[:POSITIONS - 2]
    ids = tok(LONG, truncation=True, max_length=POSITIONS)["input_ids"]
    with torch.no_grad():
        p = torch.softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()  # (S, labels)
    assert max(abs(r["score"] - p[r["index"]].max()) for r in rows) <= 1e-4


def test_fill_mask_and_feature_extraction_keep_final_sep(exported):
    _, tok, fill_out = exported("fill-mask")
    text = "the [MASK] " + " ".join(WORDS[2:POSITIONS - 1])
    ids = tok(text, truncation=True, max_length=POSITIONS)["input_ids"]
    fill = pipeline(fill_out, truncate=True)
    assert fill.encode([text]).feeds["input_ids"][0].tolist() == ids
    assert len(fill(text, top_k=2)) == 2
    hf, _, fe_out = exported("feature-extraction")
    emb = pipeline(fe_out, truncate=True)(LONG, pooling="none")[0]
    with torch.no_grad():
        expected = hf(torch.tensor([tok(LONG, truncation=True, max_length=POSITIONS)["input_ids"]]))
    assert np.abs(emb - expected.last_hidden_state[0].numpy()).max() <= 1e-4


def test_question_answering_context_one_token_too_long(exported):
    """QA splits a context one token too long into windows the way transformers' tokenizer does for its
    QA pipeline (only_second with a stride; the question whole in each); `--truncate` on a QA artifact is
    one CLI error line (QA does not truncate), not a traceback. (transformers 5.23 has no QA pipeline;
    its post-processing is checked against 4.57.6 goldens in test_pipelines_qa.py.)"""
    hf, tok, out = exported("question-answering")
    question, context = "who lives in paris", " ".join(WORDS[:POSITIONS - 6])
    assert len(tok(question, context)["input_ids"]) == POSITIONS + 1
    qa = pipeline(out)
    windows = qa._windows(question, context, POSITIONS, 4)
    theirs = tok(question, context, truncation="only_second", max_length=POSITIONS, stride=4,
                 return_overflowing_tokens=True)["input_ids"]
    assert [w.ids for w in windows] == theirs and len(theirs) == 2
    answer = qa(question, context, max_seq_len=POSITIONS, doc_stride=4)
    assert context[answer["start"]:answer["end"]] == answer["answer"] and 0 < answer["score"] <= 1
    cmd = [sys.executable, "-m", "edgeport.cli", "run", str(out), "--question", question, "--text", context,
           "--truncate"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--truncate is not used" in r.stderr


def test_cli_truncate_strategy(exported):
    _, tok, out = exported("text-classification")
    a, b = " ".join(WORDS[:8]), " ".join(WORDS[4:])
    cmd = [sys.executable, "-m", "edgeport.cli", "run", str(out), "--text", a, "--text-pair", b]
    r = subprocess.run(cmd + ["--truncate", "only_second"], capture_output=True, text=True, check=True)
    assert set(json.loads(r.stdout)["scores"]) == {"LABEL_0", "LABEL_1", "LABEL_2"}
    r = subprocess.run(cmd + ["--truncate", "only_first"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot truncate" in r.stderr and "Traceback" not in r.stderr
