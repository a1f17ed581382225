"""Token classification against transformers' own pipeline (5.23, live) on the same weights.

The issue's faults: one row per token with "O" rows, words spelled as tokens, the literal [UNK] for an
emoji, no character offsets, no aggregation. Each strategy is compared on ONNX and static TFLite.
"""

import pytest
import torch

from conftest import VOCAB, perturb, write_vocab
from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.runtime import pipeline

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["Dostoevsky met Alice in Paris \U0001f600 .",
         "alice went to the big city of Tegucigalpa, a Café in France!",
         "Bob reads"]


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    """(transformers model, its tokenizer, {target: edgeport pipeline}) for one tiny BERT."""
    import transformers

    folder = tmp_path_factory.mktemp("bert-ner")
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, max_position_embeddings=64,
                                  id2label=dict(enumerate(LABELS)), label2id={v: i for i, v in enumerate(LABELS)})
    torch.manual_seed(1)
    model = perturb(transformers.BertForTokenClassification(cfg).eval(), scale=0.3, seed=1)
    with torch.no_grad():  # a classifier strong enough that all five labels (and I- runs) come out
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.zero_()
    model.save_pretrained(str(folder))
    write_vocab(folder)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    pipes = {}
    for target, kw in (("onnx", {}), ("tflite", {"seq_len": 32})):
        out = export(str(folder), target=target, task="token-classification", quiet=True,
                     out_dir=tmp_path_factory.mktemp(f"ner-{target}"), **kw)
        pipes[target] = pipeline(out)
    return model, tok, pipes


def assert_same_entities(got, expected):
    assert len(got) == len(expected), (got, expected)
    for g, e in zip(got, expected):
        assert set(g) == set(e), (g, e)
        for k in e:
            if k == "score":
                assert g[k] == pytest.approx(float(e[k]), rel=1e-4)
            else:
                assert g[k] == e[k], (k, g, e)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_transformers(ner, target, strategy):
    import transformers

    model, tok, pipes = ner
    oracle = transformers.pipeline("token-classification", model=model, tokenizer=tok, device="cpu",
                                   aggregation_strategy=strategy)
    got = pipes[target](TEXTS, aggregation_strategy=strategy)
    expected = [oracle(text) for text in TEXTS]
    assert sum(map(len, expected)) >= 5, "the tiny model labelled too little: the comparison would be empty"
    for g, e in zip(got, expected):
        assert_same_entities(g, e)


def test_default_is_none_and_words_come_from_the_text(ner):
    import transformers

    model, tok, pipes = ner
    got = pipes["onnx"](TEXTS[0])  # one string -> one flat list
    assert got == pipes["onnx"]([TEXTS[0]])[0]
    assert_same_entities(got, transformers.pipeline("token-classification", model=model, tokenizer=tok,
                                                    device="cpu")(TEXTS[0]))
    assert all(ent["entity"] != "O" for ent in got)
    every = pipes["onnx"](TEXTS[0], ignore_labels=())
    emoji = [ent for ent in every if TEXTS[0][ent["start"]:ent["end"]] == "\U0001f600"]
    assert len(emoji) == 1 and emoji[0]["word"] == "\U0001f600"  # not the literal [UNK]
    assert [ent["word"] for ent in every[:3]] == ["d", "##o", "##s"]  # "none": the vocabulary's tokens
    assert [(ent["start"], ent["end"]) for ent in every[:3]] == [(0, 1), (1, 2), (2, 3)]


def test_ignore_labels_and_bad_strategy(ner):
    _, _, pipes = ner
    everything = pipes["onnx"](TEXTS[2], ignore_labels=())
    assert [e["index"] for e in everything] == [1, 2]  # "bob", "reads": every token, O included
    with pytest.raises(EdgeportError, match="aggregation_strategy must be one of"):
        pipes["onnx"](TEXTS[2], aggregation_strategy="longest")
