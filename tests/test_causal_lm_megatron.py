"""MegatronBERT as a decoder (transformers' MegatronBertForCausalLM, is_decoder=True) vs transformers 5.23 with
the same weights, and its ONNX / TFLite artifacts: causal-lm (full-sequence logits (B, S, V), no cache) and
text-generation (the decoders' KV-cache contract; greedy tokens equal transformers' generate)."""

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


# ---------------------------------------------------------------- text-generation: the KV cache contract

@pytest.fixture(scope="module")
def decoder(checkpoint):
    """(HF MegatronBertForCausalLM, folder, our text-generation reference with the KV cache)."""
    hf, folder, _ = checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf, folder, load_reference(str(folder), "text-generation")


def test_cached_decoder_matches_transformers(decoder):
    """Left-padded logits (positions from the mask, given to both) and a cached second chunk equal to one pass."""
    from edgeport.reference_models.decoder import positions_from_mask

    hf, _, ref = decoder
    assert not ref.missing_head
    ids = torch.randint(3, TINY["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    pos = positions_from_mask(mask, 11)
    with torch.inference_mode():
        want = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        full = ref.model(ids, mask, pos)[0]
        first, pk, pv = ref.model(ids[:, :7], mask[:, :7], pos[:, :7])
        second = ref.model(ids[:, 7:], mask, pos[:, 7:], pk, pv)[0]
    real = mask.bool()
    assert (full - want)[real].abs().max().item() <= 1e-4
    assert (torch.cat([first, second], 1) - full)[real].abs().max().item() <= 1e-5


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_generate_equals_transformers(decoder, tmp_path, target):
    """The exported decoder (its own cache, the runtime's generate) gives transformers' greedy tokens."""
    from edgeport.manifest import read_manifest
    from edgeport.runtime.generate import generate_ids, open_decoder

    hf, folder, _ = decoder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(str(folder), target=target, task="text-generation", out_dir=tmp_path / target, seq_len=8,
                     quiet=True)
    ids = np.random.default_rng(3).integers(3, TINY["vocab_size"], (1, 8))
    with torch.inference_mode():
        want = hf.generate(torch.from_numpy(ids), max_new_tokens=12, do_sample=False, pad_token_id=0).numpy()
    m, _ = read_manifest(out)
    got = generate_ids(open_decoder(out / m.artifact, m.decoder, threads=1), ids, np.ones_like(ids), 12)
    assert np.array_equal(got, want)
