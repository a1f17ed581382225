"""Multiple-choice heads (pooled [CLS] -> one score per choice) vs transformers, and exported."""

import warnings

import numpy as np
import pytest
import torch
import transformers
from conftest import TINY_MOBILEBERT, perturb

from edgeport.export import export
from edgeport.export.contracts import contract_for
from edgeport.export.validate import reference_outputs, sample_inputs
from edgeport.reference_models import load_reference
from edgeport.runtime import load

TINY_BERT = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=64)
CASES = {
    "mobilebert": (transformers.MobileBertConfig, transformers.MobileBertForMultipleChoice, TINY_MOBILEBERT),
    "bert": (transformers.BertConfig, transformers.BertForMultipleChoice, TINY_BERT),
    "megatron-bert": (transformers.MegatronBertConfig, transformers.MegatronBertForMultipleChoice, TINY_BERT),
    # ConvBERT's summary: the last position of each row (transformers' default summary_type), padding included
    "convbert": (transformers.ConvBertConfig, transformers.ConvBertForMultipleChoice,
                 dict(TINY_BERT, embedding_size=24, num_attention_heads=4, num_groups=2, conv_kernel_size=5)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def choice_ckpt(request, tmp_path_factory):
    cfg_cls, model_cls, kw = CASES[request.param]
    torch.manual_seed(0)
    hf = perturb(model_cls(cfg_cls(**kw)).eval())
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(str(folder), "multiple-choice")
    return request.param, folder, hf, ref


def test_matches_transformers(choice_ckpt):
    name, _, hf, ref = choice_ckpt
    contract = contract_for(ref)
    assert contract.input_dims == ["batch", "choices", "sequence"]
    feeds = sample_inputs(contract, batch=2, seq=11, padded_rows=1, choices=3)
    with torch.inference_mode():
        want = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    got = reference_outputs(ref.model, contract, feeds)["logits"]
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_export_matches_reference(choice_ckpt, tmp_path, target):
    name, folder, _, ref = choice_ckpt
    if target == "tflite" and name != "mobilebert":
        pytest.skip("one TFLite case keeps the suite fast; the route (litert-torch) is the same")
    export_and_compare(name, folder, ref, tmp_path, target)


@pytest.mark.slow  # ~20 s idle, over a minute on a shared machine: litert-torch on the span convolution
def test_convbert_tflite(tmp_path):
    """ConvBERT's own multiple-choice head (sequence summary) through litert-torch."""
    cfg_cls, model_cls, kw = CASES["convbert"]
    torch.manual_seed(0)
    perturb(model_cls(cfg_cls(**kw)).eval()).save_pretrained(str(tmp_path / "ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(str(tmp_path / "ckpt"), "multiple-choice")
    export_and_compare("convbert", tmp_path / "ckpt", ref, tmp_path, "tflite")


def export_and_compare(name, folder, ref, tmp_path, target):
    """Export `folder` for `target` and compare the artifact with the reference on padded rows."""
    out = export(str(folder), target=target, task="multiple-choice", out_dir=tmp_path / target, seq_len=16,
                 quiet=True)
    contract = contract_for(ref)
    sess = load(out)
    shape = (1, 2, 16) if target == "tflite" else (3, 4, 9)
    assert target == "onnx" or [s.shape for s in sess.inputs][0] == [1, 2, 16]
    feeds = sample_inputs(contract, shape[0], shape[2], padded_rows=1, seed=5, choices=shape[1])
    want = reference_outputs(ref.model, contract, feeds)["logits"]
    np.testing.assert_allclose(sess.run(feeds)["logits"], want, atol=1e-4 * max(1, np.abs(want).max()))


def test_convbert_summary_from_config(tmp_path):
    """A ConvBERT config that sets transformers' summary fields (first token, projection, tanh) is honoured."""
    cfg = transformers.ConvBertConfig(**CASES["convbert"][2])
    cfg.summary_type, cfg.summary_use_proj, cfg.summary_activation = "first", True, "tanh"
    torch.manual_seed(1)
    hf = perturb(transformers.ConvBertForMultipleChoice(cfg).eval())
    hf.save_pretrained(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(str(tmp_path), "multiple-choice")
    assert not ref.missing_head
    contract = contract_for(ref)
    feeds = sample_inputs(contract, batch=2, seq=9, padded_rows=1, choices=3)
    with torch.inference_mode():
        want = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(reference_outputs(ref.model, contract, feeds)["logits"], want, atol=1e-5)
