"""Entity-aware tokenizer for LUKE and mLUKE, torch-free (numpy + sentencepiece or tokenizers).

Contract: the ids of transformers' `LukeTokenizer` / `MLukeTokenizer` (the slow tokenizers of 4.57,
checked against golden files made by scripts/make_luke_golden.py: 5.23's tokenizers fail on them in
several modes). Given a text, an optional pair and character `entity_spans`, it produces

    input_ids, attention_mask, token_type_ids      (S,)   word tokens: <s> A </s> [</s> B </s>]
    entity_ids, entity_attention_mask,
    entity_token_type_ids                           (E,)   one row per kept entity span
    entity_position_ids                             (E, M) the mention's word positions, -1 padded
    entity_start_positions, entity_end_positions    (E,)   first / last word position of each mention
                                                           (entity_span_classification only)

The text is cut at every span boundary (a space before a boundary goes with the following piece) and
each piece is tokenized on its own, so every span maps to whole tokens. Task modes:

    none                         spans optional; entities named by `entities` (else [MASK])
    entity_classification        one span, wrapped in <ent> markers; entity [MASK]
    entity_pair_classification   two spans (head, tail): <ent> around the head, <ent2> around the
                                 tail; entities [MASK], [MASK2]
    entity_span_classification   one or more spans (they may overlap, as in NER's every-span input);
                                 entities [MASK]; adds entity_start/end_positions

Unlike transformers, spans outside the text, empty or reversed spans and overlapping head/tail spans
(whose markers would interleave) raise EdgeportError instead of producing wrong ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError

TASKS = ("none", "entity_classification", "entity_pair_classification", "entity_span_classification")
# Entities a task mode keeps by default (transformers' LukeTokenizer: 1 and 2 for the classification modes).
_TASK_ENTITY_LENGTH = {"entity_classification": 1, "entity_pair_classification": 2}
SP_MODEL = "sentencepiece.bpe.model"  # mLUKE's word vocabulary (XLM-R's layout)
ENTITY_VOCAB = "entity_vocab.json"


@dataclass(frozen=True)
class SpecialToken:
    """A token matched in raw text before word tokenization (transformers' AddedToken)."""

    content: str
    id: int
    lstrip: bool = False  # whitespace to its left is dropped (<mask>)
    rstrip: bool = False  # whitespace to its right is dropped


class SentencePieceWords:
    """mLUKE words: sentencepiece pieces with fairseq's ids (XLM-R): <s> 0, <pad> 1, </s> 2, <unk> 3,
    sentencepiece id i -> i + 1, sentencepiece's unknown (id 0) -> 3."""

    OFFSET = 1
    FAIRSEQ = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}

    def __init__(self, model_file: Path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))

    def __len__(self) -> int:
        return self.sp.get_piece_size() + self.OFFSET + 1  # + <mask>

    def ids(self, text: str) -> list:
        """Word ids of a text chunk (no special tokens; sentencepiece adds its "▁" word prefix)."""
        out = []
        for piece in self.sp.encode(text, out_type=str):
            if piece in self.FAIRSEQ:
                out.append(self.FAIRSEQ[piece])
                continue
            i = self.sp.piece_to_id(piece)
            out.append(i + self.OFFSET if i else self.FAIRSEQ["<unk>"])
        return out

    def defaults(self) -> dict:
        """Special token ids when no tokenizer_config.json names them."""
        n = self.sp.get_piece_size() + self.OFFSET
        return {**self.FAIRSEQ, "<mask>": n, "<ent>": n + 1, "<ent2>": n + 2}


class ByteLevelBPEWords:
    """LUKE words: RoBERTa's byte-level BPE (vocab.json + merges.txt), run by `tokenizers`."""

    def __init__(self, vocab_file: Path, merges_file: Path):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        self.vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        tok = Tokenizer(models.BPE.from_file(str(vocab_file), str(merges_file)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        self.tok = tok

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list:
        """Word ids of a text chunk (GPT-2's pre-tokenizing regex, bytes as characters, BPE merges)."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def defaults(self) -> dict:
        """Special token ids when no tokenizer_config.json names them (markers after the vocabulary)."""
        n = len(self.vocab)
        return {**{t: self.vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if t in self.vocab},
                "<ent>": n, "<ent2>": n + 1}


def _check_spans(spans, text: str, what: str) -> list:
    """(start, end) character spans with 0 <= start < end <= len(text), as int tuples."""
    if not isinstance(spans, (list, tuple)):
        raise EdgeportError(f"{what}: give a list of (start, end) character spans")
    out = []
    for s in spans:
        if not (isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, (int, np.integer)) for v in s)):
            raise EdgeportError(f"{what}: {s!r} is not a (start, end) pair of character offsets")
        a, b = int(s[0]), int(s[1])
        if a < 0 or b > len(text):
            raise EdgeportError(f"{what}: span ({a}, {b}) is outside the text (length {len(text)})")
        if a >= b:
            raise EdgeportError(f"{what}: span ({a}, {b}) is empty or reversed (start must be < end)")
        out.append((a, b))
    return out


class LukeTokenizer:
    """Words + entities for LUKE (`ByteLevelBPEWords`) and mLUKE (`SentencePieceWords`).

    `specials`: tokens split out of raw text first (<s>, </s>, <pad>, <unk>, <mask>, <ent>, <ent2>);
    `entity_vocab`: entity name -> id (mLUKE names carry a language prefix, "en:Tokyo"), holding
    [PAD], [UNK], [MASK], [MASK2]. Raises EdgeportError for an unknown task or a vocab without them.
    """

    def __init__(self, words, specials: list, entity_vocab: dict, task: str | None = None,
                 max_entity_length: int | None = None, max_mention_length: int = 30):
        task = task or "none"
        if task not in TASKS:
            raise EdgeportError(f"unknown LUKE task mode '{task}'; modes: {', '.join(TASKS)}")
        missing = [t for t in ("[PAD]", "[UNK]", "[MASK]", "[MASK2]") if t not in entity_vocab]
        if missing:
            raise EdgeportError(f"entity vocabulary lacks the special entities {', '.join(missing)}")
        self.words, self.entity_vocab, self.task = words, dict(entity_vocab), task
        self.specials = {s.content: s for s in specials}
        for need in ("<s>", "</s>", "<pad>", "<ent>", "<ent2>"):
            if need not in self.specials:
                raise EdgeportError(f"tokenizer files lack the special token {need}")
        self._split_re = re.compile("|".join(re.escape(t) for t in sorted(self.specials, key=len, reverse=True)))
        # entities kept by truncation and padded to: the task's (1 or 2), else max_entity_length (32)
        self.max_entity_length = _TASK_ENTITY_LENGTH.get(task, max_entity_length or 32)
        self.max_mention_length = max_mention_length
        sp = self.specials
        self.cls_id, self.sep_id, self.pad_id = sp["<s>"].id, sp["</s>"].id, sp["<pad>"].id
        self.ent1_id, self.ent2_id = sp["<ent>"].id, sp["<ent2>"].id
        ev = self.entity_vocab
        self.entity_pad_id, self.entity_unk_id = ev["[PAD]"], ev["[UNK]"]
        self.entity_mask_id, self.entity_mask2_id = ev["[MASK]"], ev["[MASK2]"]

    # ---- loading -------------------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder, task: str | None = None, max_entity_length: int | None = None,
                    max_mention_length: int | None = None) -> "LukeTokenizer":
        """Load the files transformers' `save_pretrained` writes: sentencepiece.bpe.model (mLUKE) or
        vocab.json + merges.txt (LUKE), entity_vocab.json, tokenizer_config.json (special token ids,
        max_mention_length). Raises EdgeportError when files are missing."""
        folder = Path(folder)
        if (folder / SP_MODEL).is_file():
            words = SentencePieceWords(folder / SP_MODEL)
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            words = ByteLevelBPEWords(folder / "vocab.json", folder / "merges.txt")
        else:
            raise EdgeportError(f"{folder}: no LUKE word vocabulary ({SP_MODEL}, or vocab.json + merges.txt)")
        if not (folder / ENTITY_VOCAB).is_file():
            raise EdgeportError(f"{folder}: no {ENTITY_VOCAB}")
        entity_vocab = json.loads((folder / ENTITY_VOCAB).read_text(encoding="utf-8"))
        cfg_file = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        return cls(words, _specials(words, cfg, folder), entity_vocab, task or cfg.get("task"),
                   max_entity_length or cfg.get("max_entity_length"),
                   max_mention_length or cfg.get("max_mention_length") or 30)

    # ---- words ---------------------------------------------------------------------------------------

    def word_ids(self, text: str) -> list:
        """Ids of `text` without <s>/</s>: special tokens split out first (with their l/rstrip), then
        each remaining non-empty chunk goes through the word model."""
        chunks, pos = [], 0
        for m in self._split_re.finditer(text):
            chunks += [text[pos:m.start()], self.specials[m.group()]]
            pos = m.end()
        chunks.append(text[pos:])
        for i, c in enumerate(chunks):
            if isinstance(c, SpecialToken):
                if c.rstrip and i + 1 < len(chunks) and isinstance(chunks[i + 1], str):
                    chunks[i + 1] = chunks[i + 1].lstrip()
                if c.lstrip and i > 0 and isinstance(chunks[i - 1], str):
                    chunks[i - 1] = chunks[i - 1].rstrip()
        out = []
        for c in chunks:
            if isinstance(c, SpecialToken):
                out.append(c.id)
            elif c:
                out += self.words.ids(c)
        return out

    def _ids_and_token_spans(self, text: str, spans: list) -> tuple:
        """Word ids of `text` cut at every span boundary, and each span as a (start, end) token range."""
        ids, cur, token_at = [], 0, {}
        for boundary in sorted({p for s in spans for p in s}):
            cut = boundary - 1 if boundary > 0 and text[boundary - 1] == " " else boundary
            if cut != cur:
                ids += self.word_ids(text[cur:cut])
                cur = cut
            token_at[boundary] = len(ids)
        ids += self.word_ids(text[cur:])
        return ids, [(token_at[a], token_at[b]) for a, b in spans]

    # ---- one row -------------------------------------------------------------------------------------

    def _entity_ids(self, entities, spans, what: str) -> list:
        if entities is None:
            return [self.entity_mask_id] * len(spans)
        if not isinstance(entities, (list, tuple)) or len(entities) != len(spans):
            raise EdgeportError(f"{what}: give one entity name per span ({len(spans)} spans)")
        return [self.entity_vocab.get(e, self.entity_unk_id) for e in entities]

    def _first_sequence(self, text, spans, entities) -> tuple:
        """(word ids, entity ids, token spans) of the first text in this tokenizer's task mode."""
        if self.task == "none":
            if spans is None:
                return self.word_ids(text), None, None
            ids, tspans = self._ids_and_token_spans(text, spans)
            return ids, self._entity_ids(entities, spans, "entities"), tspans
        need = {"entity_classification": "exactly one", "entity_pair_classification": "exactly two (head, tail)",
                "entity_span_classification": "at least one"}[self.task]
        n = len(spans or [])
        if (self.task == "entity_classification" and n != 1) or \
                (self.task == "entity_pair_classification" and n != 2) or n == 0:
            raise EdgeportError(f"{self.task} needs {need} entity span, got {n}")
        if entities is not None:
            raise EdgeportError(f"{self.task} uses [MASK] entities: 'entities' are for task mode 'none'")
        ids, tspans = self._ids_and_token_spans(text, spans)
        if self.task == "entity_span_classification":
            return ids, [self.entity_mask_id] * n, tspans
        if self.task == "entity_classification":
            (a, b), = tspans
            return ids[:a] + [self.ent1_id] + ids[a:b] + [self.ent1_id] + ids[b:], [self.entity_mask_id], [(a, b + 2)]
        (ha, hb), (ta, tb) = spans
        if ha < tb and ta < hb:
            raise EdgeportError(f"entity_pair_classification: head span {spans[0]} and tail span {spans[1]} "
                                "overlap; their <ent>/<ent2> markers would interleave")
        return self._pair_markers(ids, tspans)

    def _pair_markers(self, ids, tspans) -> tuple:
        """<ent> around the head, <ent2> around the tail; spans shift by the markers before them."""
        (ha, hb), (ta, tb) = tspans
        marked = sorted([(ha, hb, self.ent1_id), (ta, tb, self.ent2_id)], reverse=True)  # later span first
        for a, b, marker in marked:
            ids = ids[:a] + [marker] + ids[a:b] + [marker] + ids[b:]
        if ha < ta:
            new = [(ha, hb + 2), (ta + 2, tb + 4)]
        else:
            new = [(ha + 2, hb + 4), (ta, tb + 2)]
        return ids, [self.entity_mask_id, self.entity_mask2_id], new

    def encode(self, text: str, text_pair: str | None = None, *, entity_spans=None, entity_spans_pair=None,
               entities=None, entities_pair=None, max_length: int | None = None, truncation: bool = False,
               max_entity_length: int | None = None) -> dict:
        """One row, unpadded: output name -> list (entity_position_ids: list of M-long lists).

        `truncation` with `max_length`: words are cut longest-first (transformers' default), entities
        whose mention no longer fits are dropped, then entities are cut to `max_entity_length`.
        Entity outputs are absent when no spans are given. Raises EdgeportError on bad spans.
        """
        if not isinstance(text, str) or (text_pair is not None and not isinstance(text_pair, str)):
            raise EdgeportError("text (and text_pair) must be strings")
        spans = _check_spans(entity_spans, text, "entity_spans") if entity_spans is not None else None
        spans2 = None
        if self.task != "none" and (text_pair is not None or entity_spans_pair is not None):
            raise EdgeportError(f"{self.task} takes one text: a text pair is for task mode 'none'")
        if entity_spans_pair is not None:
            if text_pair is None:
                raise EdgeportError("entity_spans_pair needs text_pair")
            spans2 = _check_spans(entity_spans_pair, text_pair, "entity_spans_pair")
        ids, ents, tspans = self._first_sequence(text, spans, entities)
        ids2 = ents2 = tspans2 = None
        if text_pair is not None:
            if spans2 is None:
                ids2 = self.word_ids(text_pair)
            else:
                ids2, tspans2 = self._ids_and_token_spans(text_pair, spans2)
                ents2 = self._entity_ids(entities_pair, spans2, "entities_pair")
        specials = 2 if ids2 is None else 4
        if truncation and max_length and len(ids) + len(ids2 or []) + specials > max_length:
            ids, ids2 = _longest_first(ids, ids2, len(ids) + len(ids2 or []) + specials - max_length)
        row = {"input_ids": [self.cls_id] + ids + [self.sep_id] + ([] if ids2 is None else
                                                                      [self.sep_id] + ids2 + [self.sep_id])}
        n = len(row["input_ids"])
        row.update(attention_mask=[1] * n, token_type_ids=[0] * n)
        if ents is not None:
            row.update(self._entities(ids, ids2, ents, tspans, ents2, tspans2, truncation and max_length,
                                      max_entity_length or self.max_entity_length))
        return row

    def _entities(self, ids, ids2, ents, tspans, ents2, tspans2, truncate, max_entities) -> dict:
        keep = [i for i, s in enumerate(tspans) if s[1] <= len(ids)]
        ents, tspans = [ents[i] for i in keep], [tspans[i] for i in keep]
        if ents2 is not None:
            keep2 = [i for i, s in enumerate(tspans2) if s[1] <= len(ids2)]
            ents2, tspans2 = [ents2[i] for i in keep2], [tspans2[i] for i in keep2]
        if truncate and len(ents) + len(ents2 or []) > max_entities:
            ents, ents2 = _longest_first(ents, ents2, len(ents) + len(ents2 or []) - max_entities)
            tspans = tspans[:len(ents)]
            tspans2 = tspans2[:len(ents2)] if tspans2 is not None else None
        M = self.max_mention_length
        positions, starts, ends = [], [], []
        for spans, offset in ((tspans, 1), (tspans2 or [], len(ids) + 3)):  # after <s>; after <s> A </s></s>
            for a, b in spans:
                a, b = a + offset, b + offset
                mention = list(range(a, b))[:M]
                positions.append(mention + [-1] * (M - len(mention)))
                starts.append(a)
                ends.append(b - 1)
        all_ents = ents + (ents2 or [])
        out = {"entity_ids": all_ents, "entity_attention_mask": [1] * len(all_ents),
               "entity_token_type_ids": [0] * len(all_ents), "entity_position_ids": positions}
        if self.task == "entity_span_classification":
            out.update(entity_start_positions=starts, entity_end_positions=ends)
        return out

    # ---- batches -------------------------------------------------------------------------------------

    def pad(self, rows: list, padding: str = "longest", max_length: int | None = None,
            max_entity_length: int | None = None) -> dict:
        """Rows from `encode` -> (B, S) / (B, E) / (B, E, M) int64 arrays, padded on the right.

        padding "longest": to the longest row; "max_length": words to `max_length`, entities to
        `max_entity_length` (default: this tokenizer's). Word padding: <pad>, mask 0; entity padding:
        [PAD], mask 0, positions -1, start/end 0. Raises EdgeportError when a row is longer."""
        if padding not in ("longest", "max_length"):
            raise EdgeportError(f"padding must be 'longest' or 'max_length', not {padding!r}")
        longest = max(len(r["input_ids"]) for r in rows)
        S = max_length if padding == "max_length" and max_length else longest
        has_entities = any("entity_ids" in r for r in rows)
        E = max((len(r.get("entity_ids", [])) for r in rows), default=0)
        if padding == "max_length" and has_entities:
            E = max_entity_length or self.max_entity_length
        if longest > S or (has_entities and max(len(r.get("entity_ids", [])) for r in rows) > E):
            raise EdgeportError(f"a row is longer than the padded length ({S} words, {E} entities): truncate")
        fill = {"input_ids": self.pad_id, "entity_ids": self.entity_pad_id}
        out = {}
        for key in rows[0]:
            if key == "entity_position_ids":
                arr = np.full((len(rows), E, self.max_mention_length), -1, np.int64)
            else:
                arr = np.full((len(rows), E if key.startswith("entity_") else S), fill.get(key, 0), np.int64)
            for r, row in enumerate(rows):
                if row[key]:
                    arr[r, :len(row[key])] = row[key]
            out[key] = arr
        return out

    def __call__(self, texts, text_pairs=None, *, entity_spans=None, entity_spans_pair=None, entities=None,
                 entities_pair=None, max_length: int | None = None, truncation: bool = False,
                 max_entity_length: int | None = None, padding: str = "longest") -> dict:
        """A batch: `texts` and the per-row arguments are lists (a str makes a batch of one).
        Returns `pad(...)`'s arrays."""
        if isinstance(texts, str):
            texts, text_pairs = [texts], None if text_pairs is None else [text_pairs]
            entity_spans, entity_spans_pair = _one(entity_spans), _one(entity_spans_pair)
            entities, entities_pair = _one(entities), _one(entities_pair)
        if not texts:
            raise EdgeportError("no texts given")
        rows = []
        for i, t in enumerate(texts):
            at = (lambda v: None if v is None else v[i])
            rows.append(self.encode(t, at(text_pairs), entity_spans=at(entity_spans),
                                    entity_spans_pair=at(entity_spans_pair), entities=at(entities),
                                    entities_pair=at(entities_pair), max_length=max_length,
                                    truncation=truncation, max_entity_length=max_entity_length))
        if len({tuple(r) for r in rows}) > 1:
            raise EdgeportError("give entity spans for every row of a batch or for none")
        return self.pad(rows, padding, max_length, max_entity_length)


def _one(v):
    return None if v is None else [v]


def _longest_first(a: list, b: list | None, remove: int) -> tuple:
    """Drop `remove` items from the ends of a and b, from the longer first and then alternately
    (transformers' 'longest_first' truncation)."""
    la, lb = len(a), len(b or [])
    first = min(abs(la - lb), remove)
    second = remove - first
    if la > lb:
        cut_a, cut_b = first + second // 2, second - second // 2
    else:
        cut_a, cut_b = second // 2, first + second - second // 2
    a = a[:-cut_a] if cut_a > 0 else a
    if b is not None and cut_b > 0:
        b = b[:-cut_b]
    return a, b


def _specials(words, cfg: dict, folder: Path) -> list:
    """Special tokens from tokenizer_config.json's added_tokens_decoder (ids, l/rstrip), else from
    added_tokens.json and the word model's defaults (<mask> strips the whitespace to its left)."""
    decoder = cfg.get("added_tokens_decoder") or {}
    if decoder:
        return [SpecialToken(t["content"], int(i), bool(t.get("lstrip")), bool(t.get("rstrip")))
                for i, t in decoder.items()]
    ids = words.defaults()
    added = folder / "added_tokens.json"
    if added.is_file():
        ids.update(json.loads(added.read_text(encoding="utf-8")))
    return [SpecialToken(t, int(i), lstrip=(t == "<mask>")) for t, i in ids.items()]
