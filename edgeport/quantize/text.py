"""Real text for calibration and accuracy checks, available offline: Python's own reference manual.

`pydoc_data.topics` (in every CPython) holds the language reference's prose, ~465k characters of
English. Topics are split in two disjoint halves by name: even-numbered topics calibrate, odd-numbered
ones evaluate, so an artifact is never judged on the text it was calibrated on.
A user's own text (`--calibration-text FILE`) replaces the calibration half.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _topics() -> list:
    import pydoc_data.topics as t

    return [t.topics[k] for k in sorted(t.topics)]


def _prose_sentences(text: str, min_words: int, max_words: int) -> list:
    """Sentences of plain prose: code lines (indented, '>>>', many symbols) are dropped."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        if para.startswith((" ", "\t")) or ">>>" in para:
            continue
        flat = " ".join(para.split())
        for s in _SENTENCE_END.split(flat):
            words = s.split()
            symbols = sum(not c.isalnum() and not c.isspace() for c in s)
            if min_words <= len(words) <= max_words and symbols <= len(s) * 0.08:
                out.append(s)
    return out


def sentences(half: str, n: int, min_words: int = 6, max_words: int = 40) -> list:
    """`n` distinct prose sentences from the 'calibration' or 'evaluation' half, in a fixed order."""
    topics = _topics()[0 if half == "calibration" else 1::2]
    seen, out = set(), []
    if half != "calibration":  # a sentence repeated in both halves is calibration only
        seen = {s for t in _topics()[0::2] for s in _prose_sentences(t, min_words, max_words)}
    for topic in topics:
        for s in _prose_sentences(topic, min_words, max_words):
            if s not in seen:
                seen.add(s)
                out.append(s)
    step = max(1, len(out) // n)  # spread over all topics rather than the first few
    return out[::step][:n]


def passages(half: str) -> str:
    """The whole prose of one half as one string (decoder training and perplexity)."""
    return "\n\n".join(_topics()[0 if half == "train" else 1::2])


def read_text_file(path) -> list:
    """Lines of 3 words or more (whitespace collapsed) from a text file; EdgeportError when missing or empty."""
    p = Path(path)
    if not p.is_file():
        raise EdgeportError(f"{p}: calibration text file not found")
    lines = [" ".join(line.split()) for line in p.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if len(line.split()) >= 3]
    if not lines:
        raise EdgeportError(f"{p}: no lines of text (need lines of 3 words or more)")
    return lines


def encode(tokenizer, texts: list, input_names: list, length: int | None, max_len: int, pad_id: int) -> list:
    """One feed dict per text at batch 1: (1, S) int64 arrays; padded to `length` when static."""
    feeds = []
    for t in texts:
        enc = tokenizer.encode(t)
        ids, mask, types = enc.ids[:max_len], enc.attention_mask[:max_len], enc.type_ids[:max_len]
        S = length or len(ids)
        row = {"input_ids": np.full((1, S), pad_id, np.int64), "attention_mask": np.zeros((1, S), np.int64),
               "token_type_ids": np.zeros((1, S), np.int64)}
        row["input_ids"][0, :len(ids)], row["attention_mask"][0, :len(ids)] = ids, mask
        row["token_type_ids"][0, :len(ids)] = types
        feeds.append({k: v for k, v in row.items() if k in input_names})
    return feeds
