"""MegatronBERT as a decoder (transformers' MegatronBertForCausalLM, is_decoder=True) vs transformers 5.23 with
the same weights, and its ONNX / TFLite artifacts. Full-sequence logits (B, S, V), no KV cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
from conftest import perturb

from edgeport.export import export
from edgeport.export.contracts import contract_for
from edgeport.export.validate import reference_outputs, sample_inputs
from edgeport.reference_models import load_reference
from edgeport.runtime import load

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=64, is_decoder=True)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    hf = perturb(transformers.MegatronBertForCausalLM(transformers.MegatronBertConfig(**TINY)).eval())
    folder = tmp_path_factory.mktemp("megatron-causal")
    hf.save_pretrained(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(str(folder), "causal-lm")
    return hf, folder, ref


def test_matches_transformers(checkpoint):
    """Logits on real tokens of right-padded rows; a later token does not change earlier logits (causal)."""
    hf, _, ref = checkpoint
    assert not ref.missing_head
    contract = contract_for(ref)
    feeds = sample_inputs(contract, batch=3, seq=13, padded_rows=2)
    with torch.inference_mode():
        want = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    got = reference_outputs(ref.model, contract, feeds)["logits"]
    real = feeds["attention_mask"].astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4 * max(1, np.abs(want).max()), rtol=0)
    shorter = {k: v[:, :7] for k, v in feeds.items()}
    np.testing.assert_allclose(reference_outputs(ref.model, contract, shorter)["logits"][real[:, :7]],
                               got[:, :7][real[:, :7]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_export_matches_reference(checkpoint, tmp_path, target):
    _, folder, ref = checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(str(folder), target=target, task="causal-lm", out_dir=tmp_path / target, seq_len=16, quiet=True)
    contract = contract_for(ref)
    batch, seq = (1, 16) if target == "tflite" else (2, 23)
    feeds = sample_inputs(contract, batch, seq, padded_rows=1, seed=4)
    want = reference_outputs(ref.model, contract, feeds)["logits"]
    np.testing.assert_allclose(load(out).run(feeds)["logits"], want, atol=1e-4 * max(1, np.abs(want).max()), rtol=0)
