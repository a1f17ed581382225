"""What every pipeline shares: the tokenizer, padding encodings into the artifact's shapes, running.

Everything comes from the manifest (task, inputs, static shapes, labels, tokenizer). Torch-free:
numpy and `tokenizers` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest


@dataclass
class Encoded:
    """Tokenized rows padded into the artifact's inputs."""

    feeds: dict  # name -> (B, S) arrays, already in the artifact's dtypes
    lengths: list  # real (unpadded) length per row
    encodings: list  # tokenizers.Encoding per row (offsets, sequence ids, word ids)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along `axis`; same shape and dtype as `x`."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def check_text(text: str, what: str = "text") -> str:
    """`text` itself when it can be encoded as UTF-8, which the tokenizers need; else EdgeportError naming
    the first lone UTF-16 surrogate and its character index (JSON's "\\ud800", or argv bytes that are not
    UTF-8, which Python decodes to U+DC80-U+DCFF with surrogateescape). tokenizers would raise TypeError.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        hint = " (bytes that are not UTF-8?)" if 0xDC80 <= ord(text[e.start]) <= 0xDCFF else ""
        raise EdgeportError(f"{what} is not valid Unicode: lone surrogate U+{ord(text[e.start]):04X} at "
                            f"character {e.start}{hint}") from None
    return text


def as_list(texts, what: str = "text") -> list:
    """One string or a list of strings -> a list of strings; anything else is refused (EdgeportError),
    as is text that is not valid Unicode (check_text)."""
    items = [texts] if isinstance(texts, str) else list(texts) if isinstance(texts, (list, tuple)) else None
    if items is None or not all(isinstance(t, str) for t in items):
        raise EdgeportError(f"{what} must be a string or a list of strings")
    return [check_text(t, what) for t in items]


# `truncate` values -> the tokenizers truncation strategy (the names of transformers' `truncation=`)
TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
              "only_second": "only_second"}


class Pipeline:
    """Base of the task pipelines: `Pipeline(session, manifest, folder, truncate=False)`.

    `truncate`: False refuses text longer than the artifact takes; True or "longest_first" (pairs: the
    longer text loses a token at a time), "only_first" or "only_second" cut it with the tokenizer's own
    truncation, which keeps the special tokens ([CLS] A [SEP] B [SEP]), as transformers' `truncation=`.
    Attributes: `tokenizer` (tokenizers.Tokenizer from the export's tokenizer.json), `max_len` (the
    static sequence length, or the positions the model has), `static_batch` (None when dynamic).
    Raises EdgeportError when the export has no tokenizer or `truncate` is not one of those values.
    """

    task = ""

    def __init__(self, session, manifest: Manifest, folder: Path, truncate: bool = False):
        if manifest.tokenizer is None:
            raise EdgeportError(f"{folder}: the export has no tokenizer (its checkpoint folder had no tokenizer "
                                "files); add tokenizer.json, vocab.txt, a sentencepiece model or vocab.json + "
                                "merges.txt to the checkpoint and export again")
        from tokenizers import Tokenizer

        if truncate not in (False, None) and truncate not in TRUNCATION:
            raise EdgeportError(f"truncate must be True, False or one of {', '.join(list(TRUNCATION)[1:])} "
                                f"(got {truncate!r})")
        self.session, self.manifest, self.truncate = session, manifest, truncate
        self.tokenizer = Tokenizer.from_file(str(folder / manifest.tokenizer.file))
        self._truncating = None  # a copy of the tokenizer with truncation on, made when first needed
        self.input_names = [s.name for s in session.inputs]
        shape = next(s.shape for s in session.inputs if s.name == "input_ids")
        self.static_batch = shape[0] if manifest.static_shapes else None
        self.static_len = shape[1] if manifest.static_shapes else None
        self.max_len = self.static_len or manifest.max_sequence_length

    def label(self, index: int) -> str:
        """The manifest's label name for class `index` (its number as a string when there are none)."""
        return (self.manifest.labels or {}).get(str(int(index)), str(int(index)))

    def encode(self, texts: list, pairs: list | None = None) -> Encoded:
        """Tokenize texts (and their pairs), refusing empty text and text longer than the artifact
        takes unless the pipeline truncates; padded to one length (the static one where there is one)."""
        encs = []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise EdgeportError("empty text: give some words to run on")
            check_text(t)
            if pairs:
                check_text(pairs[i], "text_pair")
            enc = self.tokenizer.encode(t, pairs[i]) if pairs else self.tokenizer.encode(t)
            if len(enc.ids) > self.max_len:
                if not self.truncate:
                    raise EdgeportError(f"text is {len(enc.ids)} tokens, longer than the {self.max_len} this "
                                        "artifact accepts; shorten it or pass --truncate")
                enc = self._truncate(t, pairs[i] if pairs else None)
            encs.append(enc)
        return self.pad(encs)

    def _truncate(self, text: str, pair: str | None):
        """`text` (and `pair`) encoded with the tokenizer's truncation to max_len: special tokens kept,
        the strategy of `self.truncate`. EdgeportError when the strategy cannot fit them (e.g. only_second
        with a first text longer than the artifact)."""
        from tokenizers import Tokenizer

        if self._truncating is None:
            tok = Tokenizer.from_str(self.tokenizer.to_str())
            tok.enable_truncation(self.max_len, strategy=TRUNCATION[self.truncate])
            self._truncating = tok
        try:
            enc = self._truncating.encode(text, pair) if pair is not None else self._truncating.encode(text)
        except Exception as e:  # tokenizers raises a plain Exception when the strategy cannot fit the pair
            raise EdgeportError(f"cannot truncate to {self.max_len} tokens with {TRUNCATION[self.truncate]} "
                                f"({e})") from None
        if len(enc.ids) > self.max_len:  # only_first/only_second left the other text too long
            raise EdgeportError(f"cannot truncate to {self.max_len} tokens with {TRUNCATION[self.truncate]}: "
                                "the other text alone is too long")
        return enc

    def pad(self, encs: list) -> Encoded:
        """Encodings -> feeds (B, S) int64, S the static length or the longest row; only the inputs
        the artifact takes (DeBERTa-v3 has no token_type_ids)."""
        S = self.static_len or max(len(e.ids) for e in encs)
        pad = self.manifest.tokenizer.pad_token_id
        ids = np.full((len(encs), S), pad, np.int64)
        mask = np.zeros((len(encs), S), np.int64)
        types = np.zeros((len(encs), S), np.int64)
        for r, e in enumerate(encs):
            n = len(e.ids)
            ids[r, :n], mask[r, :n], types[r, :n] = e.ids, e.attention_mask, e.type_ids
        all_feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {k: v for k, v in all_feeds.items() if k in self.input_names}
        return Encoded(feeds, [len(e.ids) for e in encs], encs)

    def run_batch(self, feeds: dict) -> dict:
        """Run, splitting into the artifact's static batch size where it has one."""
        B = next(iter(feeds.values())).shape[0]
        step = self.static_batch or B
        parts = []
        for s in range(0, B, step):
            chunk = {k: v[s:s + step] for k, v in feeds.items()}
            n = next(iter(chunk.values())).shape[0]
            if n < step:  # pad the last chunk with copies of its first row
                chunk = {k: np.concatenate([v, np.repeat(v[:1], step - n, 0)]) for k, v in chunk.items()}
            out = self.session.run(chunk)
            parts.append({k: v[:n] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
