"""Token classification (named entities and the like), answering as transformers' pipeline does.

Contract followed: transformers' TokenClassificationPipeline (pipelines/token_classification.py,
5.23 and 4.57.6 alike), for one window per text:
- per token: softmax over the labels; special tokens ([CLS], [SEP]) are skipped;
- `word` is the token as the vocabulary spells it (`##evsky`), except [UNK] tokens, which take the
  original text they cover; `start`/`end` are character offsets into the text (text[start:end]);
- a token is a subword when the tokenizer has a continuing-subword prefix (WordPiece `##`) and the
  token is not as long as the text it covers; without such a prefix, when the character before it is
  not a space;
- aggregation "none" (the default): one row per token, `{"entity", "score", "index", "word", "start",
  "end"}`; "simple": adjacent tokens whose tags agree (B-X then I-X...; a new B- starts a group) form
  `{"entity_group", "score" (mean), "word", "start", "end"}`; "first" / "max" / "average" first merge
  each word's subword tokens (label of the first token / of the most confident token / of the mean
  scores), then group as "simple";
- rows (or groups) whose label is in `ignore_labels` (default ["O"]) are dropped.
Words of groups are decoded with the tokenizer's decoder (transformers' convert_tokens_to_string).
"""

from __future__ import annotations

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtime.pipelines.base import Pipeline, as_list

AGGREGATIONS = ("none", "simple", "first", "average", "max")


class TokenClassification(Pipeline):
    """`ner(texts, aggregation_strategy="none", ignore_labels=("O",))`.

    One string -> a list of entity dicts; a list of strings -> a list of such lists. Keys: "entity"
    (label), "score" (float, softmax probability), "index" (token position, [CLS] = 0), "word",
    "start", "end" (characters) for "none"; "entity_group" (tag without B-/I-), "score" (mean over the
    group), "word", "start", "end" for the other strategies. Texts longer than the artifact takes are
    refused (EdgeportError) unless the pipeline truncates.
    """

    task = "token-classification"

    def __call__(self, texts, aggregation_strategy: str = "none", ignore_labels=("O",)):
        if aggregation_strategy not in AGGREGATIONS:
            raise EdgeportError(f"aggregation_strategy must be one of {', '.join(AGGREGATIONS)} "
                                f"(got {aggregation_strategy!r})")
        single = isinstance(texts, str)
        texts = as_list(texts)
        enc = self.encode(texts)
        logits = self.run_batch(enc.feeds)["logits"].astype(np.float32)  # (B, S, labels)
        out = []
        for r, (text, e) in enumerate(zip(texts, enc.encodings)):
            x = logits[r, :len(e.ids)]
            scores = np.exp(x - x.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)  # (n, labels)
            entities = self._aggregate(self._pre_entities(text, e, scores), aggregation_strategy)
            out.append([ent for ent in entities if ent.get("entity", ent.get("entity_group")) not in ignore_labels])
        return out[0] if single else out

    def _pre_entities(self, text: str, enc, scores: np.ndarray) -> list:
        """Non-special tokens -> {"word", "scores" (labels,), "start", "end", "index", "is_subword"}."""
        prefix = getattr(self.tokenizer.model, "continuing_subword_prefix", None)
        unk = getattr(self.tokenizer.model, "unk_token", None)
        unk_id = self.tokenizer.token_to_id(unk) if unk else None
        rows = []
        for idx, (tok_id, special) in enumerate(zip(enc.ids, enc.special_tokens_mask)):
            if special:
                continue
            word = self.tokenizer.id_to_token(tok_id)
            start, end = enc.offsets[idx]
            ref = text[start:end]
            if prefix:
                is_subword = len(word) != len(ref)
            else:
                is_subword = start > 0 and " " not in text[start - 1:start + 1]
            if unk_id is not None and tok_id == unk_id:
                word, is_subword = ref, False
            rows.append({"word": word, "scores": scores[idx], "start": start, "end": end, "index": idx,
                         "is_subword": is_subword})
        return rows

    def _aggregate(self, pre: list, strategy: str) -> list:
        if strategy in ("none", "simple"):
            entities = [{"entity": self.label(p["scores"].argmax()), "score": float(p["scores"].max()),
                         "index": p["index"], "word": p["word"], "start": p["start"], "end": p["end"]}
                        for p in pre]
        else:
            entities = [self._merge_word(group, strategy) for group in _words(pre)]
        return entities if strategy == "none" else self._group(entities)

    def _merge_word(self, tokens: list, strategy: str) -> dict:
        """One word's tokens -> one entity, labelled by the first token, the most confident token, or
        the mean of the token scores."""
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        best = int(scores.argmax())
        return {"entity": self.label(best), "score": float(scores[best]),
                "word": self._decode([t["word"] for t in tokens]), "start": tokens[0]["start"],
                "end": tokens[-1]["end"]}

    def _group(self, entities: list) -> list:
        """Adjacent entities with the same tag (not starting a new B-) -> entity groups."""
        groups, current = [], []
        for ent in entities:
            bi, tag = _tag(ent["entity"])
            if current and (tag != _tag(current[-1]["entity"])[1] or bi == "B"):
                groups.append(self._group_of(current))
                current = []
            current.append(ent)
        if current:
            groups.append(self._group_of(current))
        return groups

    def _group_of(self, entities: list) -> dict:
        return {"entity_group": entities[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in entities])),
                "word": self._decode([e["word"] for e in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}

    def _decode(self, tokens: list) -> str:
        """Tokens -> text with the tokenizer's decoder (WordPiece: joins ## pieces), else space-joined."""
        dec = self.tokenizer.decoder
        return dec.decode(tokens) if dec is not None else " ".join(tokens)


def _words(pre: list) -> list:
    """Split token rows into words: a row that is not a subword starts a new word."""
    words = []
    for p in pre:
        if words and p["is_subword"]:
            words[-1].append(p)
        else:
            words.append([p])
    return words


def _tag(label: str) -> tuple:
    """"B-PER" -> ("B", "PER"), "I-PER" -> ("I", "PER"), anything else -> ("I", label)."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label
