"""The LUKE reference model against transformers' Luke* classes: same weights (a save_pretrained of
transformers' tiny model, loaded as a real checkpoint), entity-aware attention on and off."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from edgeport.errors import EdgeportError  # noqa: E402
from edgeport.reference_models import get_family, load_reference  # noqa: E402

HF_HEADS = {
    "feature-extraction": "LukeModel",
    "fill-mask": "LukeForMaskedLM",
    "text-classification": "LukeForSequenceClassification",
    "token-classification": "LukeForTokenClassification",
    "question-answering": "LukeForQuestionAnswering",
    "multiple-choice": "LukeForMultipleChoice",
    "entity-classification": "LukeForEntityClassification",
    "entity-pair-classification": "LukeForEntityPairClassification",
    "entity-span-classification": "LukeForEntitySpanClassification",
}
HF_OUTPUTS = {
    "feature-extraction": ("last_hidden_state", "entity_last_hidden_state"),
    "fill-mask": ("logits", "entity_logits"),
    "question-answering": ("start_logits", "end_logits"),
}
WORD_ONLY = ("text-classification", "token-classification", "question-answering", "multiple-choice")


def tiny_config(entity_aware: bool, task: str, type_vocab: int):
    return transformers.LukeConfig(
        vocab_size=99, entity_vocab_size=20, entity_emb_size=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=37, max_position_embeddings=40, type_vocab_size=type_vocab,
        use_entity_aware_attention=entity_aware, num_labels=2 if task == "question-answering" else 3,
        hidden_act="gelu")


def perturb(model, seed: int):
    """Noise on every float tensor so no bias, norm or padding row is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in sorted(model.state_dict().items()):
            if t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))


def entity_inputs(seed: int, type_vocab: int, B=2, S=9, E=3, M=4):
    """Row 1 has 3 word pads and 1 entity pad; mentions of 1-3 tokens, -1 padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, S - 3:] = 0
    ids[1, S - 3:] = 1  # pad_token_id
    pos = torch.full((B, E, M), -1, dtype=torch.long)
    starts = torch.tensor([[1, 2, 4], [1, 3, 0]])
    lens = torch.tensor([[1, 3, 2], [2, 1, 0]])
    for b in range(B):
        for e in range(E):
            n = int(lens[b, e])
            pos[b, e, :n] = torch.arange(int(starts[b, e]), int(starts[b, e]) + n)
    ent_mask = (lens > 0).long()
    feeds = dict(input_ids=ids, attention_mask=mask,
                 entity_ids=torch.randint(1, 20, (B, E), generator=g) * ent_mask,
                 entity_attention_mask=ent_mask, entity_position_ids=pos)
    if type_vocab > 1:
        feeds["token_type_ids"] = torch.randint(0, type_vocab, (B, S), generator=g)
        feeds["entity_token_type_ids"] = torch.randint(0, type_vocab, (B, E), generator=g) * ent_mask
    return feeds, starts, (starts + lens - 1).clamp(min=0)


def hf_and_ours(tmp_path, task, entity_aware, type_vocab, seed):
    torch.manual_seed(seed)
    hf = getattr(transformers, HF_HEADS[task])(tiny_config(entity_aware, task, type_vocab)).eval()
    perturb(hf, seed)
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_reference(str(tmp_path), task)
    assert not ref.missing_head, ref.missing_head
    return hf, ref.model


def compare(ours: tuple, hf_out, task):
    names = HF_OUTPUTS.get(task, ("logits",))
    assert len(ours) == len([n for n in names if getattr(hf_out, n, None) is not None])
    for name, mine in zip(names, ours):
        want = getattr(hf_out, name).detach().numpy()
        got = mine.detach().numpy()
        assert got.shape == want.shape, f"{name}: {got.shape} vs {want.shape}"
        diff = float(np.abs(got - want).max())
        assert diff < 1e-4 * max(1.0, float(np.abs(want).max())), f"{task} {name}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("entity_aware", [True, False], ids=["entity-aware", "plain"])
@pytest.mark.parametrize("task", [t for t in HF_HEADS if t != "multiple-choice"])
def test_head_matches_transformers(tmp_path, task, entity_aware):
    type_vocab = 2 if task in ("entity-pair-classification", "fill-mask") else 1
    hf, ours = hf_and_ours(tmp_path, task, entity_aware, type_vocab, seed=len(task) + entity_aware)
    feeds, starts, ends = entity_inputs(seed=3, type_vocab=type_vocab)
    extra = {}
    if task == "entity-span-classification":
        extra = dict(entity_start_positions=starts, entity_end_positions=ends)
    with torch.no_grad():
        compare(ours(**feeds, **extra), hf(**feeds, **extra), task)
        if task in WORD_ONLY or task in ("feature-extraction", "fill-mask"):  # words only: no entity rows
            words = {k: v for k, v in feeds.items() if not k.startswith("entity_")}
            compare(ours(**words), hf(**words), task)


def test_multiple_choice_matches_transformers(tmp_path):
    hf, ours = hf_and_ours(tmp_path, "multiple-choice", True, 1, seed=11)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 99, (2, 3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 2, 4:] = 0
    ids[1, 2, 4:] = 1
    with torch.no_grad():
        compare(ours(ids, mask), hf(input_ids=ids, attention_mask=mask), "multiple-choice")


def test_entity_tasks_refuse_missing_entities(tmp_path):
    _, ours = hf_and_ours(tmp_path, "entity-classification", True, 1, seed=2)
    with pytest.raises(EdgeportError, match="needs entity inputs"):
        ours(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))


def test_presets_are_the_published_architectures():
    fam = get_family("luke")
    assert {"luke-base", "mluke-base", "luke-tiny"} <= set(fam.presets)
    base = fam.config_cls.from_hf(fam.presets["luke-base"])
    mluke = fam.config_cls.from_hf(fam.presets["mluke-base"])
    assert (base.vocab_size, base.entity_vocab_size, base.hidden_size, base.max_position_embeddings) == \
        (50267, 500000, 768, 514)
    assert (mluke.vocab_size, mluke.entity_vocab_size) == (250004, 1200001)


def test_tiny_preset_builds_every_task():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task in get_family("luke").tasks:
            ref = load_reference("luke-tiny", task)
            assert ref.model.input_names()[:2] == ("input_ids", "attention_mask")


def test_checkpoint_with_tied_lm_decoder_loads(tmp_path):
    """transformers 4.x saved LukeForMaskedLM with the decoder tied to the word embeddings: no
    lm_head.decoder.weight, the bias as lm_head.bias. The reference fills both from their sources."""
    from safetensors.torch import load_file, save_file

    hf, _ = hf_and_ours(tmp_path, "fill-mask", True, 1, seed=4)
    with torch.no_grad():
        hf.lm_head.decoder.weight.copy_(hf.luke.embeddings.word_embeddings.weight)
    hf.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    del sd["lm_head.decoder.weight"]
    sd["lm_head.bias"] = sd.pop("lm_head.decoder.bias")
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "head weights are random" warning either
        ref = load_reference(str(tmp_path), "fill-mask")
    feeds, _, _ = entity_inputs(seed=1, type_vocab=1)
    with torch.no_grad():
        compare(ref.model(**feeds), hf(**feeds), "fill-mask")
