"""A checkpoint that lacks weights the task needs is refused naming them, unless the caller allows random
ones (then the manifest says random_weights, and `run` reminds the user); tied tensors are not missing
(issue 16, part 2). Checkpoints: tiny BERTs saved by transformers 5.23.
"""

import json
import subprocess
import sys

import pytest
import torch

from conftest import VOCAB, perturb, save_hf
from edgeport.errors import EdgeportError
from edgeport.manifest import read_manifest
from edgeport.reference_models import load_reference

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

CFG = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=37, max_position_embeddings=32)
# task -> the head tensors a bare BertModel checkpoint lacks (transformers' names)
HEADS = {"text-classification": ["classifier.weight", "classifier.bias"],
         "token-classification": ["classifier.weight", "classifier.bias"],
         "question-answering": ["qa_outputs.weight", "qa_outputs.bias"],
         "multiple-choice": ["classifier.weight", "classifier.bias"]}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    return save_hf(perturb(transformers.BertModel(transformers.BertConfig(**CFG)).eval()),
                   tmp_path_factory.mktemp("bert-base"))


@pytest.mark.parametrize("task", sorted(HEADS))
def test_missing_head_is_refused_naming_tensors(base, task):
    with pytest.raises(EdgeportError, match="no weights for the .* head") as e:
        load_reference(str(base), task)
    for name in HEADS[task]:
        assert name in str(e.value)


def test_cli_refuses_then_allows_with_random_weights_marked(base, tmp_path):
    cmd = [sys.executable, "-m", "edgeport.cli", "export", "--model", str(base), "--task", "text-classification",
           "-q", "-o", str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "classifier.weight" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    subprocess.run(cmd + ["--allow-random-head"], capture_output=True, text=True, check=True)
    m, _ = read_manifest(tmp_path / "out")
    assert m.random_weights
    run = subprocess.run([sys.executable, "-m", "edgeport.cli", "run", str(tmp_path / "out"), "--text", "the cat"],
                         capture_output=True, text=True, check=True)
    assert "random weights" in run.stderr and json.loads(run.stdout)["label"] in ("LABEL_0", "LABEL_1")


def test_trained_checkpoint_has_no_random_weights_and_no_note(tmp_path):
    torch.manual_seed(0)
    hf = perturb(transformers.BertForSequenceClassification(transformers.BertConfig(**CFG)).eval())
    folder = save_hf(hf, tmp_path / "ckpt")
    ref = load_reference(str(folder), "text-classification")
    assert not ref.random_weights and ref.missing_head == []


def test_lm_decoder_tied_to_embeddings_is_not_missing(tmp_path):
    """transformers saves a tied MLM decoder weight once (as the word embeddings): a documented tie."""
    torch.manual_seed(0)
    hf = perturb(transformers.BertForMaskedLM(transformers.BertConfig(**CFG)).eval())
    folder = save_hf(hf, tmp_path / "mlm")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(folder / "model.safetensors"))
    sd.pop("cls.predictions.decoder.weight", None)  # as a checkpoint that relies on the tie
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ref = load_reference(str(folder), "fill-mask")
    assert not ref.random_weights and ref.missing_head == []
    ids = torch.tensor([[2, 9, 30, 4, 3]])
    with torch.no_grad():
        (ours,) = ref.model(ids, torch.ones_like(ids), torch.zeros_like(ids))
        assert (ours - hf(ids).logits).abs().max().item() <= 1e-5  # the decoder is the embeddings


def test_preset_is_random_weights(tmp_path):
    ref = load_reference("bert-tiny", "text-classification")
    assert ref.random_weights
