"""Text-classification scores follow the config's problem_type / num_labels as transformers' pipeline
applies them (sigmoid, softmax, none), and the caller can choose (issue 16, part 2).

Oracle: transformers 5.23's text-classification pipeline, live, on the same tiny MobileBERT checkpoint.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY_MOBILEBERT, perturb, save_hf
from edgeport.errors import EdgeportError
from edgeport.export import export
from edgeport.manifest import read_manifest
from edgeport.runtime import pipeline

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["the cat sat on the mat", "alice met bob in paris"]
# (num_labels, problem_type) -> what transformers' pipeline applies by default
CASES = {(1, None): "sigmoid", (3, "multi_label_classification"): "sigmoid", (1, "regression"): "none",
         (2, "regression"): "none", (3, "single_label_classification"): "softmax", (2, None): "softmax"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(num_labels, problem_type):
        if (num_labels, problem_type) not in cache:
            cfg = transformers.MobileBertConfig(**TINY_MOBILEBERT, num_labels=num_labels, problem_type=problem_type)
            torch.manual_seed(0)
            hf = perturb(transformers.MobileBertForSequenceClassification(cfg).eval(), scale=0.2)
            folder = save_hf(hf, tmp_path_factory.mktemp("ckpt"))
            out = export(str(folder), target="onnx", task="text-classification",
                         out_dir=tmp_path_factory.mktemp("out") / "e", quiet=True)
            cache[num_labels, problem_type] = (hf, folder, out)
        return cache[num_labels, problem_type]

    return get


def hf_scores(hf, folder, text, **kw):
    tok = transformers.BertTokenizer.from_pretrained(str(folder))
    clf = transformers.pipeline("text-classification", model=hf, tokenizer=tok, device="cpu")
    return {d["label"]: d["score"] for d in clf(text, top_k=None, **kw)}


@pytest.mark.parametrize("case", sorted(CASES, key=str))
def test_default_scores_match_transformers_pipeline(exported, case):
    hf, folder, out = exported(*case)
    m, _ = read_manifest(out)
    assert m.score_function == CASES[case]
    clf = pipeline(out)
    for text in TEXTS:  # one at a time: the perturbed [PAD] embedding reaches MobileBERT's trigram input
        ours = clf(text)[0]
        theirs = hf_scores(hf, folder, text)
        assert ours["scores"].keys() == theirs.keys()
        for label, score in theirs.items():
            assert abs(ours["scores"][label] - score) <= 1e-4, (case, text, label)
        assert ours["label"] == max(theirs, key=theirs.get)
    if case == (1, None):  # the reported fault: a softmax over one logit always gave 1.0
        assert 0.0 < clf(TEXTS[0])[0]["score"] < 1.0


@pytest.mark.parametrize("fn", ["softmax", "sigmoid", "none"])
def test_caller_chooses_the_function_as_in_transformers(exported, fn):
    hf, folder, out = exported(3, "multi_label_classification")
    ours = pipeline(out)(TEXTS[1], function_to_apply=fn)[0]["scores"]
    theirs = hf_scores(hf, folder, TEXTS[1], function_to_apply=fn)
    assert max(abs(ours[k] - v) for k, v in theirs.items()) <= 1e-4


def test_unknown_function_is_refused(exported):
    _, _, out = exported(2, None)
    with pytest.raises(EdgeportError, match="function_to_apply must be one of"):
        pipeline(out)(TEXTS[0], function_to_apply="tanh")


def test_cli_function_to_apply(exported):
    hf, folder, out = exported(1, "regression")
    run = [sys.executable, "-m", "edgeport.cli", "run", str(out), "--text", TEXTS[0]]
    default = json.loads(subprocess.run(run, capture_output=True, text=True, check=True).stdout)
    with torch.no_grad():
        logit = hf(**transformers.BertTokenizer.from_pretrained(str(folder))(TEXTS[0], return_tensors="pt")).logits
    assert abs(default["score"] - float(logit[0, 0])) <= 1e-4  # regression: the raw value
    sig = json.loads(subprocess.run(run + ["--function-to-apply", "sigmoid"], capture_output=True, text=True,
                                    check=True).stdout)
    assert abs(sig["score"] - float(torch.sigmoid(logit[0, 0]))) <= 1e-4
    assert np.isfinite(sig["score"])
