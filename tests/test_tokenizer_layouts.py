"""Every tokenizer layout the families' checkpoints ship gives a tokenizer.json with transformers' ids,
and special tokens (mask, pad) come from the tokenizer files, not from a spelling (issue 16, part 2).

Oracle: transformers 5.23's tokenizer class for each family, loaded from the same files (live). The
vocabularies are trained here (sentencepiece, tokenizers' byte-level BPE) so no download is needed.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, pre_tokenizers

from edgeport.errors import EdgeportError
from edgeport.reference_models.tokenizer import write_tokenizer

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

WORDS = "the cat sat on the mat a dog ran in the park paris is the capital of france where lives alice".split()
CORPUS = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 5
TEXTS = ["the cat sat on the mat", "Paris is the capital of France!", "zebra quux  spaced\ttabs", "a"]

# family -> (layout, the transformers class its checkpoints use: our table, written independently)
FAMILIES = {
    "bert": ("vocab.txt", "BertTokenizer"), "mobilebert": ("vocab.txt", "MobileBertTokenizer"),
    "convbert": ("vocab.txt", "ConvBertTokenizer"), "megatron-bert": ("vocab.txt", "BertTokenizer"),
    "deberta": ("bpe-bert-specials", "DebertaTokenizer"), "deberta-v2": ("spm-unigram", "DebertaV2Tokenizer"),
    "mega": ("bpe-roberta-specials", "RobertaTokenizer"), "gpt2": ("bpe-gpt2", "GPT2Tokenizer"),
    "mistral": ("spm-llama", "LlamaTokenizer"), "mixtral": ("spm-llama", "LlamaTokenizer"),
}


def _bpe(folder, specials):
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=specials, show_progress=False)
    tok.save_model(str(folder))


def _spm(folder, prefix, **kw):
    text = folder / "corpus.txt"
    text.write_text("\n".join(CORPUS))
    kw.setdefault("vocab_size", 40)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / prefix), hard_vocab_limit=False,
                                   minloglevel=2, **kw)
    text.unlink()
    (folder / f"{prefix}.vocab").unlink()


def make_layout(folder: Path, family: str) -> Path:
    """A checkpoint folder's tokenizer files as `family`'s checkpoints ship them, plus config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": family}))
    layout = FAMILIES[family][0]
    if layout == "vocab.txt":
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz")
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    elif layout == "bpe-bert-specials":
        _bpe(folder, ["[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"])
    elif layout == "bpe-roberta-specials":
        _bpe(folder, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    elif layout == "bpe-gpt2":
        _bpe(folder, ["<|endoftext|>"])
    elif layout == "spm-unigram":  # DeBERTa-v3: spm.model + tokenizer_config.json, no tokenizer.json
        _spm(folder, "spm", pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
             unk_id=3, unk_piece="[UNK]", user_defined_symbols=["[MASK]"], model_type="unigram")
        (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))
    elif layout == "spm-llama":
        _spm(folder, "tokenizer", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, model_type="bpe", byte_fallback=True,
             vocab_size=320)
    return folder


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_layout_gives_transformers_ids(tmp_path, family):
    folder = make_layout(tmp_path / "ckpt", family)
    out = tmp_path / "out"
    out.mkdir()
    info = write_tokenizer(folder, out, mask_token=None if family in ("gpt2", "mistral", "mixtral") else "[MASK]")
    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = getattr(transformers, FAMILIES[family][1]).from_pretrained(str(folder))
    for text in TEXTS:
        assert ours.encode(text).ids == hf(text)["input_ids"], (family, text)
    for a, b in zip(TEXTS, TEXTS[1:]):
        assert ours.encode(a, b).ids == hf(a, b)["input_ids"], (family, a, b)
    if hf.pad_token is not None:
        assert info.pad_token_id == hf.pad_token_id
    if family not in ("gpt2", "mistral", "mixtral"):
        assert info.mask_token == hf.mask_token and ours.token_to_id(info.mask_token) == hf.mask_token_id


def test_roberta_specials_give_mask_and_pad_one(tmp_path):
    """MEGA's checkpoints ship RoBERTa's tokenizer: <mask>, and <pad> at id 1 (the manifest said 0)."""
    info = write_tokenizer(make_layout(tmp_path / "ckpt", "mega"), tmp_path)
    assert (info.mask_token, info.pad_token_id) == ("<mask>", 1)


@pytest.mark.parametrize("files, missing", [
    ({"tokenizer_config.json": "{}"}, "no complete vocabulary"),
    ({"vocab.json": "{}"}, "vocab.json \\+ merges.txt"),
    ({"merges.txt": "#version: 0.2\n", "special_tokens_map.json": "{}"}, "merges.txt, special_tokens_map.json|no complete"),
])
def test_incomplete_tokenizer_files_are_refused_naming_what_is_missing(tmp_path, files, missing):
    (tmp_path / "config.json").write_text('{"model_type": "deberta-v2"}')
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(EdgeportError, match=missing):
        write_tokenizer(tmp_path, tmp_path / "x")


def test_tokenizer_json_without_config_finds_its_special_tokens(tmp_path):
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "hello": 4, "<mask>": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    out = tmp_path / "out"
    out.mkdir()
    info = write_tokenizer(tmp_path, out)
    assert (info.mask_token, info.pad_token_id) == ("<mask>", 1)


# ---------------------------------------------------------------- the reported inputs, through export + run

def _deberta_v3_checkpoint(folder):
    cfg = transformers.DebertaV2Config(vocab_size=48, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=37, max_position_embeddings=64, relative_attention=True,
                                       pos_att_type="p2c|c2p", position_buckets=8, max_relative_positions=16,
                                       share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                                       type_vocab_size=0)
    torch.manual_seed(0)
    transformers.DebertaV2ForMaskedLM(cfg).eval().save_pretrained(folder)
    make_layout(folder, "deberta-v2")  # spm.model + tokenizer_config.json only
    (folder / "config.json").write_text(json.dumps({**cfg.to_dict(), "architectures": ["DebertaV2ForMaskedLM"]}))
    return folder


def test_deberta_v3_spm_only_folder_exports_a_working_tokenizer(tmp_path):
    """The reported fault: spm.model + tokenizer_config.json exported with exit 0 and no tokenizer."""
    from edgeport.export import export
    from edgeport.runtime import pipeline

    folder = _deberta_v3_checkpoint(tmp_path / "v3")
    assert not (folder / "tokenizer.json").exists()
    out = export(str(folder), target="onnx", task="fill-mask", out_dir=tmp_path / "out", quiet=True)
    fill = pipeline(out)
    hf = transformers.DebertaV2Tokenizer.from_pretrained(str(folder))
    text = "the cat sat on the [MASK]"
    assert fill.encode([text]).feeds["input_ids"][0].tolist() == hf(text)["input_ids"]
    assert len(fill(text, top_k=2)) == 2


MEGA_MLM = Path(__file__).parent / "golden" / "mega" / "encoder-scalenorm-rotary"


def test_mega_fill_mask_with_roberta_mask_spelling(tmp_path):
    """The reported fault: a `<mask>` tokenizer was refused ("no mask token") and pad id recorded as 0."""
    from edgeport.export import export
    from edgeport.manifest import read_manifest
    from edgeport.reference_models import load_reference
    from edgeport.runtime import pipeline

    folder = tmp_path / "mega"
    shutil.copytree(MEGA_MLM, folder)
    (folder / "golden.npz").unlink()
    words = sorted(set(WORDS))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{w: 4 + i for i, w in enumerate(words)},
             **{f"w{i}": i for i in range(4 + len(words), 63)}, "<mask>": 63}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(vocab)[:4] + ["<mask>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"mask_token": "<mask>", "pad_token": "<pad>",
                                                              "tokenizer_class": "RobertaTokenizer"}))
    out = export(str(folder), target="onnx", task="fill-mask", out_dir=tmp_path / "out", quiet=True)
    m, _ = read_manifest(out)
    assert (m.tokenizer.mask_token, m.tokenizer.pad_token_id) == ("<mask>", 1)
    cands = pipeline(out)("the cat sat on the <mask>", top_k=3)
    ref = load_reference(str(folder), "fill-mask")
    ids = [vocab[w] for w in "the cat sat on the".split()] + [63]
    with torch.no_grad():
        (logits,) = ref.model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    best = np.argsort(-logits[0, -1].numpy())[:3]
    inv = {i: w for w, i in vocab.items()}
    assert [c["token"] for c in cands] == [inv[int(i)] for i in best]
