"""Decoder sequence classification (GPT-2, Mistral, Mixtral) exported to ONNX and TFLite vs transformers'
*ForSequenceClassification on tiny checkpoints with the same weights.

The artifacts take (B, S) input_ids and attention_mask (the encoder contract) and give (B, num_labels)
logits of the last token whose id is not the config's pad_token_id, as transformers scores it.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import transformers as T

from edgeport.export import export
from edgeport.manifest import read_manifest
from edgeport.runtime.session import open_session

VOCAB, PAD, LABELS = 97, 0, 3
COMMON = dict(vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=1, eos_token_id=2, num_labels=LABELS)
MISTRAL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, sliding_window=5,
               rope_parameters={"rope_type": "default", "rope_theta": 500.0}, **COMMON)
HF = {
    "gpt2": lambda: T.GPT2ForSequenceClassification(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                                 **COMMON)),
    "mistral": lambda: T.MistralForSequenceClassification(T.MistralConfig(**MISTRAL)),
    "mixtral": lambda: T.MixtralForSequenceClassification(T.MixtralConfig(
        num_local_experts=4, num_experts_per_tok=2, experts_implementation="eager", **MISTRAL)),
}
TFLITE_BATCH, TFLITE_SEQ = 2, 16

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (HF classifier with perturbed weights, its checkpoint folder)."""
    made = {}
    for family, build in HF.items():
        torch.manual_seed(0)
        hf = build().eval()
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        folder = tmp_path_factory.mktemp(family)
        hf.save_pretrained(folder)
        made[family] = (hf, folder)
    return made


def right_padded(lengths, total, seed=0):
    """Token ids >= 3 (never PAD) right-padded with PAD; row 0 ends in a real token spelled PAD."""
    g = np.random.default_rng(seed + total)
    ids, mask = np.full((len(lengths), total), PAD, np.int64), np.zeros((len(lengths), total), np.int64)
    for r, n in enumerate(lengths):
        ids[r, :n], mask[r, :n] = g.integers(3, VOCAB, n), 1
    ids[0, lengths[0] - 1] = PAD  # transformers skips it (its rule reads ids, not the mask)
    return ids, mask


def hf_logits(hf, ids, mask):
    with torch.no_grad():
        return hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


def exported(folder, target, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export(str(folder), target, task="text-classification", out_dir=out, quiet=True, **kw)


@pytest.mark.parametrize("family", list(HF))
def test_onnx_vs_transformers(checkpoints, tmp_path, family):
    """ONNX (the family's default lowering) at batch 1 and 3, lengths 5 to 40, vs HF."""
    hf, folder = checkpoints[family]
    out = exported(folder, "onnx", tmp_path / "out")
    m, _ = read_manifest(out)
    assert [s.name for s in m.inputs] == ["input_ids", "attention_mask"]
    assert [(s.name, s.shape) for s in m.outputs] == [("logits", ["batch", LABELS])]
    assert m.parity_passed and len(m.parity) >= 6  # the export's own grid against our reference
    session = open_session(out / m.artifact)
    for lengths, total in (([5], 5), ([40, 17, 6], 40), ([12, 12, 3], 12)):
        ids, mask = right_padded(lengths, total)
        got = session.run({"input_ids": ids, "attention_mask": mask})["logits"]
        want = hf_logits(hf, ids, mask)
        assert got.shape == (len(lengths), LABELS)
        assert np.abs(got - want).max() <= 1e-4 + 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("family", ["gpt2", "mixtral"])  # mixtral: Mistral's layers + MoE
def test_tflite_vs_transformers(checkpoints, tmp_path, family):
    """TFLite at its static (2, 16) shape: full and right-padded rows, vs HF."""
    hf, folder = checkpoints[family]
    out = exported(folder, "tflite", tmp_path / "out", batch=TFLITE_BATCH, seq_len=TFLITE_SEQ)
    m, _ = read_manifest(out)
    assert json.loads((out / "edgeport.json").read_text())["static_shapes"] is True
    session = open_session(out / m.artifact)
    for lengths in ([16, 16], [9, 4]):
        ids, mask = right_padded(lengths, TFLITE_SEQ, seed=len(lengths[1:]))
        got = session.run({"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32)})["logits"]
        want = hf_logits(hf, ids, mask)
        assert np.abs(got - want).max() <= 1e-4 + 1e-4 * np.abs(want).max()
