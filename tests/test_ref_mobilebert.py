"""Layer 1: our MobileBERT (PyTorch and Keras) vs transformers' MobileBert* on tiny configs."""

import warnings

import numpy as np
import pytest
import torch
from conftest import HF_CLASSES, make_mobilebert

from edgeport.errors import EdgeportError
from edgeport.reference_models import load_reference
from edgeport.reference_models.mobilebert import MobileBertConfig

SWITCHES = {
    "default": {},
    "layer_norm+gelu": {"normalization_type": "layer_norm", "hidden_act": "gelu"},
    "bottleneck_attention": {"use_bottleneck_attention": True},
    "no_trigram": {"trigram_input": False, "embedding_size": 64},
    "no_shared_qk+plain_pooler": {"key_query_shared_bottleneck": False, "use_bottleneck_attention": True,
                                  "classifier_activation": False},
    "no_bottleneck": {"use_bottleneck": False, "hidden_size": 32},
    "one_ffn": {"num_feedforward_networks": 1},
}


def hf_outputs(model, task, ids, mask, types):
    with torch.inference_mode():
        o = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if task == "question-answering":
        return [o.start_logits, o.end_logits]
    return [o.last_hidden_state] if task == "feature-extraction" else [o.logits]


def batch(vocab, B=3, S=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 9:] = 0  # padded rows
    mask[2, 4:] = 0
    types = torch.zeros(B, S, dtype=torch.long)
    types[:, 7:] = 1
    return ids, mask, types


def load(folder, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_reference(str(folder), task)


@pytest.mark.parametrize("task", list(HF_CLASSES))
@pytest.mark.parametrize("switch", list(SWITCHES))
def test_matches_transformers(tmp_path, task, switch):
    folder, hf = make_mobilebert(tmp_path, task, **SWITCHES[switch])
    ref = load(folder, task)
    assert not ref.random_weights and not ref.missing_head
    for S in (13, 40):
        ids, mask, types = batch(hf.config.vocab_size, S=S)
        want = hf_outputs(hf, task, ids, mask, types)
        with torch.inference_mode():
            got = ref.model(ids, mask, types)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            diff = (g - w).abs().max().item()
            assert diff <= 1e-5 * max(1.0, w.abs().max().item()), (task, switch, S, diff)


def test_base_checkpoint_into_task_head_is_refused_unless_allowed(tmp_path):
    """Issue 16: missing head weights fail naming them; allowed, they are random and the manifest says so."""
    folder, _ = make_mobilebert(tmp_path, "feature-extraction")
    with pytest.raises(EdgeportError, match=r"no weights for the question-answering head \(qa_outputs.weight, "
                       r"qa_outputs.bias\); pass --allow-random-head"):
        load_reference(str(folder), "question-answering")
    with pytest.warns(UserWarning, match="no weights for the question-answering head"):
        ref = load_reference(str(folder), "question-answering", allow_random_head=True)
    assert ref.missing_head == ["qa_outputs.weight", "qa_outputs.bias"] and ref.random_weights


def test_contradicting_config_is_an_error(tmp_path):
    folder, _ = make_mobilebert(tmp_path, "feature-extraction")
    cfg = (folder / "config.json").read_text().replace('"intermediate_size": 64', '"intermediate_size": 96')
    (folder / "config.json").write_text(cfg)
    with pytest.raises(EdgeportError, match="config contradicts weights"):
        load_reference(str(folder), "feature-extraction")


def test_invalid_switch_combination_is_an_error():
    with pytest.raises(EdgeportError, match="key_query_shared_bottleneck"):
        MobileBertConfig.from_hf({"key_query_shared_bottleneck": False, "use_bottleneck_attention": False})


@pytest.mark.parametrize("task", list(HF_CLASSES))
@pytest.mark.parametrize("switch", ["default", "layer_norm+gelu", "no_bottleneck", "bottleneck_attention"])
def test_keras_matches_pytorch(tmp_path, task, switch):
    """The Keras reference (the TF route to TFLite) loads the same weights and agrees."""
    from edgeport.export.contracts import encoder_contract
    from edgeport.export.tflite import keras_outputs
    from edgeport.export.validate import reference_outputs, sample_inputs

    folder, _ = make_mobilebert(tmp_path, task, **SWITCHES[switch])
    ref = load(folder, task)
    contract = encoder_contract(ref.config, task, ref.config.hidden_size)
    feeds = sample_inputs(contract, batch=2, seq=24, padded_rows=1)
    want = reference_outputs(ref.model, contract, feeds)
    got = keras_outputs(ref, contract, feeds, 2, 24)
    for name in contract.outputs:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], atol=2e-5 * max(1, np.abs(want[name]).max()), rtol=0)
