"""Next-sentence prediction and pre-training heads (MobileBERT, MegatronBERT) vs transformers 5.23 with the
same weights, and their ONNX / TFLite artifacts vs the reference.

NSP: `cls.seq_relationship` on the pooled vector -> (B, 2) logits (index 0: B follows A).
Pre-training: `cls.predictions` (the MLM head) on the sequence and `cls.seq_relationship` on the pooled
vector -> prediction_logits (B, S, V), seq_relationship_logits (B, 2).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
from conftest import TINY_MOBILEBERT, perturb, write_vocab

from edgeport.export import export
from edgeport.export.contracts import contract_for
from edgeport.export.validate import reference_outputs, sample_inputs
from edgeport.reference_models import load_reference
from edgeport.runtime import load

TINY_BERT = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=64)
FAMILIES = {
    "mobilebert": (transformers.MobileBertConfig, TINY_MOBILEBERT, "MobileBert"),
    "megatron-bert": (transformers.MegatronBertConfig, TINY_BERT, "MegatronBert"),
}
HEADS = {"next-sentence-prediction": ("ForNextSentencePrediction", ("logits",)),
         "pre-training": ("ForPreTraining", ("prediction_logits", "seq_relationship_logits"))}
CASES = [(f, t) for f in FAMILIES for t in HEADS]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(family, task) -> (HF model with perturbed weights, folder, our reference), made on first use."""
    made = {}

    def get(family, task):
        if (family, task) not in made:
            cfg_cls, kw, prefix = FAMILIES[family]
            torch.manual_seed(0)
            hf = perturb(getattr(transformers, prefix + HEADS[task][0])(cfg_cls(**kw)).eval())
            folder = tmp_path_factory.mktemp(f"{family}-{task}")
            hf.save_pretrained(str(folder))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = load_reference(str(folder), task)
            made[(family, task)] = hf, folder, ref
        return made[(family, task)]

    return get


@pytest.mark.parametrize("family,task", CASES)
def test_matches_transformers(checkpoints, family, task):
    """Every output on a batch with a padded row and sentence-pair token types; no head tensor random."""
    hf, _, ref = checkpoints(family, task)
    assert not ref.missing_head
    contract = contract_for(ref)
    assert contract.output_names == list(HEADS[task][1])
    feeds = sample_inputs(contract, batch=3, seq=13, padded_rows=1)
    with torch.inference_mode():
        out = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    got = reference_outputs(ref.model, contract, feeds)
    for name in HEADS[task][1]:
        want = getattr(out, name).numpy()
        assert got[name].shape == want.shape
        np.testing.assert_allclose(got[name], want, atol=1e-4 * max(1, np.abs(want).max()), rtol=0)


@pytest.mark.parametrize("family,task,target", [(f, t, "onnx") for f, t in CASES]
                         + [("mobilebert", "next-sentence-prediction", "tflite")])
def test_export_matches_reference(checkpoints, tmp_path, family, task, target):
    """The export validates itself over the grid; then the runtime Session on new padded inputs."""
    _, folder, ref = checkpoints(family, task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(str(folder), target=target, task=task, out_dir=tmp_path / target, seq_len=16, quiet=True)
    sess, contract = load(out), contract_for(ref)
    batch, seq = (1, 16) if target == "tflite" else (2, 21)
    feeds = sample_inputs(contract, batch, seq, padded_rows=1, seed=3)
    want = reference_outputs(ref.model, contract, feeds)
    got = sess.run(feeds)
    for name in HEADS[task][1]:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4 * max(1, np.abs(want[name]).max()), rtol=0)


def test_run_text_pair_gives_is_next_probability(checkpoints, tmp_path, capsys):
    """`edgeport run FOLDER --text A --text-pair B`: P(is next) = softmax(logits)[0] of transformers' model on
    its own tokenizer's [CLS] A [SEP] B [SEP]; a missing pair is one error line."""
    import json

    from edgeport.cli import main

    hf, folder, _ = checkpoints("mobilebert", "next-sentence-prediction")
    write_vocab(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(str(folder), target="onnx", task="next-sentence-prediction", out_dir=tmp_path / "nsp", quiet=True)
    a, b = "alice met bob in paris.", "the cat sat on the mat."
    assert main(["run", str(out), "--text", a, "--text-pair", b]) == 0
    got = json.loads(capsys.readouterr().out)
    enc = transformers.BertTokenizer(str(folder / "vocab.txt"))(a, b, return_tensors="pt")
    with torch.inference_mode():
        want = torch.softmax(hf(**enc).logits.double(), -1)[0]
    assert abs(got["is_next"] - float(want[0])) <= 1e-5
    assert got["label"] == ("is_next" if want[0] >= want[1] else "not_next")
    assert main(["run", str(out), "--text", a]) == 2
    assert "--text-pair" in capsys.readouterr().err
