"""Runtime: sessions, pipelines on real text, and the torch-free import promise."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.reference_models import load_reference
from edgeport.runtime import load, pipeline


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mobilebert_ckpt):
    cache = {}

    def get(task, target="onnx", **kw):
        key = (task, target, tuple(sorted(kw.items())))
        if key not in cache:
            folder, hf = mobilebert_ckpt(task)
            out = export(str(folder), target=target, task=task, quiet=True,
                         out_dir=tmp_path_factory.mktemp(f"{task}-{target}"), **kw)
            cache[key] = (out, folder, hf)
        return cache[key]

    return get


def hf_tokenize(folder, *texts):
    from transformers import AutoTokenizer

    # from_pretrained: transformers 5 ignores a bare vocab_file= argument (every word -> [UNK])
    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(*texts, return_tensors="pt")
    assert (enc["input_ids"] != 1).all(), "the oracle tokenizer lost words to [UNK]"
    return enc


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_fill_mask_matches_transformers_end_to_end(exported, target):
    out, folder, hf = exported("fill-mask", target, **({"seq_len": 24} if target == "tflite" else {}))
    text = "Alice met Bob in the [MASK] of France."
    got = pipeline(out)(text, top_k=3)  # one text, one mask: a flat list
    enc = hf_tokenize(folder, text)
    with torch.inference_mode():
        logits = hf(**enc).logits[0]
    pos = enc["input_ids"][0].tolist().index(4)  # [MASK] is id 4 in the test vocab
    probs = logits[pos].softmax(-1)
    top = probs.topk(3)
    vocab = (folder / "vocab.txt").read_text().split("\n")
    assert [g["token"] for g in got] == [vocab[i] for i in top.indices.tolist()]
    np.testing.assert_allclose([g["score"] for g in got], top.values.numpy(), rtol=1e-3)


def test_question_answering_span_from_transformers_logits(exported):
    out, folder, hf = exported("question-answering")
    question, context = "Who met Bob?", "Alice met Bob in Paris. The cat sat on the mat."
    # Unaligned spans up to 30 tokens: the best start + end logit sum over context tokens
    # (tests/test_pipelines_qa.py holds the defaults to transformers' pipeline itself).
    got = pipeline(out)(question, context, max_answer_len=30, align_to_words=False)
    enc = hf_tokenize(folder, question, context)
    with torch.inference_mode():
        o = hf(**enc)
    types = enc["token_type_ids"][0].numpy()
    ctx = (types == 1) & (enc["input_ids"][0].numpy() != 3)  # context tokens, not the final [SEP]
    s = np.where(ctx, o.start_logits[0].numpy(), -np.inf)
    e = np.where(ctx, o.end_logits[0].numpy(), -np.inf)
    best = max(((i, j) for i in np.flatnonzero(ctx) for j in np.flatnonzero(ctx) if i <= j < i + 30),
               key=lambda ij: s[ij[0]] + e[ij[1]])
    offsets = hf_tokenize(folder, question, context).encodings[0].offsets
    assert got["answer"] == context[offsets[best[0]][0]:offsets[best[1]][1]]
    assert 0 < got["score"] <= 1


def test_text_classification_batch_with_padding_equals_one_by_one(exported):
    out, folder, hf = exported("text-classification")
    clf = pipeline(out)
    texts = ["the cat sat on the mat", "bob reads", "alice went to paris and saw the river of the big city"]
    batched = clf(texts)
    for text, b in zip(texts, batched):
        single = clf(text)[0]
        assert single["label"] == b["label"]
        assert abs(single["score"] - b["score"]) < 1e-5
        with torch.inference_mode():
            p = hf(**hf_tokenize(folder, text)).logits[0].softmax(-1)
        assert b["label"] == hf.config.id2label[int(p.argmax())]
        assert abs(b["score"] - float(p.max())) < 1e-4


def test_feature_extraction_mean_pooling(exported):
    out, folder, hf = exported("feature-extraction")
    emb = pipeline(out)(["the big red book", "a dog"])
    enc = hf_tokenize(folder, "the big red book")
    with torch.inference_mode():
        h = hf(**enc).last_hidden_state[0]
    np.testing.assert_allclose(emb[0], h.mean(0).numpy(), atol=1e-4)
    assert emb.shape == (2, hf.config.hidden_size)


def test_static_tflite_splits_batches_and_rejects_long_text(exported):
    out, _, _ = exported("text-classification", "tflite", seq_len=16)
    clf = pipeline(out)
    assert len(clf(["the cat", "a dog sat", "bob"])) == 3
    with pytest.raises(EdgeportError, match="longer than the 16"):
        clf("the cat sat on the mat and the dog sat on the mat and bob read a book")
    truncated = pipeline(out, truncate=True)("the cat sat on the mat and the dog sat on the mat and bob read")
    assert truncated[0]["label"] in ("negative", "positive", "neutral")


def test_session_checks_feeds(exported):
    out, _, _ = exported("question-answering", "tflite", seq_len=16)
    sess = load(out)
    assert sess.backend == "litert" and sess.manifest.task == "question-answering"
    feeds = {s.name: np.zeros((1, 16), np.int64) for s in sess.inputs}
    assert set(sess.run(feeds)) == {"start_logits", "end_logits"}
    with pytest.raises(EdgeportError, match="dim 1 is static"):
        sess.run({s.name: np.zeros((1, 8), np.int64) for s in sess.inputs})
    with pytest.raises(EdgeportError, match="missing input 'attention_mask'"):
        sess.run({"input_ids": np.zeros((1, 16), np.int64)})


def test_runtime_imports_neither_torch_nor_tensorflow():
    code = ("import sys, edgeport.runtime, edgeport.runtime.pipelines, edgeport.cli; "
            "bad = [m for m in ('torch', 'tensorflow', 'keras', 'edgeport.export', 'edgeport.reference_models') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hub_id_without_network_is_one_clear_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(EdgeportError, match="could not download 'google/mobilebert-uncased'"):
            load_reference("google/mobilebert-uncased")


def test_generate_refuses_fewer_than_one_new_token():
    """max_new_tokens 0 names itself, not the prompt's length (fresh-user trial: 'the prompt is 2 tokens')."""
    from edgeport.runtime.generate import generate_ids

    ids = np.ones((1, 2), np.int64)
    for n in (0, -3):
        with pytest.raises(EdgeportError, match=f"max_new_tokens must be at least 1, got {n}"):
            generate_ids(None, ids, np.ones_like(ids), n, max_total=256)
