"""Entity pipelines for LUKE / mLUKE exports: entity, entity-pair and entity-span classification.

A text and character spans go through the runtime LUKE tokenizer (runtime/luke_tokenizer.py) in
the task's mode, are padded to what the artifact takes (a static artifact: its length, entity slots
and mention length), run, and the logits are read as transformers' Luke heads define them:

    entity-classification        one span     -> {"entity", "span", "label", "score", "scores"}
    entity-pair-classification   head, tail   -> {"head", "tail", "label", "score", "scores"}
    entity-span-classification   spans        -> [{"entity", "span", "label", "score"}] per span,
                                                 run in groups of the artifact's entity slots

Scores are softmax probabilities over the labels. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.runtime.pipelines.base import check_text, softmax


def parse_spans(text: str) -> list:
    """"0:5,10:17" -> [(0, 5), (10, 17)] (character offsets, end exclusive); EdgeportError otherwise."""
    spans = []
    for part in [p for p in text.split(",") if p.strip()]:
        bits = part.split(":")
        if len(bits) != 2 or not all(b.strip().lstrip("-").isdigit() for b in bits):
            raise EdgeportError(f"--entity-spans: '{part}' is not START:END (character offsets, e.g. 0:5,10:17)")
        spans.append((int(bits[0]), int(bits[1])))
    if not spans:
        raise EdgeportError("--entity-spans: give at least one START:END span")
    return spans


class EntityPipeline:
    """Base of the entity pipelines: `Pipeline(session, manifest, folder, truncate=False)`.

    `truncate`: cut a text longer than the artifact takes (an entity whose mention is cut off is still
    an error). Raises EdgeportError when the export has no LUKE tokenizer files.
    """

    task = ""
    mode = ""  # the LUKE tokenizer's task mode
    tokenizer_kind = "luke"  # the manifest's tokenizer kind this pipeline reads (runtime.pipeline checks it)

    def __init__(self, session, manifest: Manifest, folder: Path, truncate: bool = False):
        if manifest.tokenizer is None or manifest.tokenizer.kind != "luke":
            raise EdgeportError(f"{folder}: the export has no LUKE tokenizer files (entity_vocab.json and the word "
                                "vocabulary); export from a checkpoint folder that has them")
        from edgeport.runtime.luke_tokenizer import LukeTokenizer

        self.session, self.manifest, self.truncate = session, manifest, truncate
        shapes = {s.name: s.shape for s in session.inputs}
        self.input_names = list(shapes)
        static = manifest.static_shapes
        self.static_batch = shapes["input_ids"][0] if static else None
        self.static_len = shapes["input_ids"][1] if static else None
        self.slots = shapes["entity_ids"][1] if static else None  # entity slots of a static artifact
        mention = shapes["entity_position_ids"][2] if static else None
        self.tokenizer = LukeTokenizer.from_folder(folder, task=self.mode, max_mention_length=mention)
        self.max_len = self.static_len or manifest.max_sequence_length

    def label(self, index: int) -> str:
        """The manifest's label for class `index` (its number as a string without labels)."""
        return (self.manifest.labels or {}).get(str(int(index)), str(int(index)))

    def scores(self, logits: np.ndarray) -> dict:
        """logits (L,) -> {"label", "score", "scores": {label: probability}}."""
        p = softmax(logits.astype(np.float64))
        return {"label": self.label(p.argmax()), "score": float(p.max()),
                "scores": {self.label(i): float(v) for i, v in enumerate(p)}}

    def run_spans(self, text: str, spans: list) -> dict:
        """Tokenize one text with its spans, pad to the artifact's shapes, run; the outputs of row 0."""
        if not isinstance(text, str) or not text.strip():
            raise EdgeportError("empty text: give some words to run on")
        check_text(text)
        tok = self.tokenizer
        row = tok.encode(text, entity_spans=spans, max_length=self.max_len, truncation=self.truncate,
                         max_entity_length=len(spans))
        if len(row["input_ids"]) > self.max_len:
            raise EdgeportError(f"text is {len(row['input_ids'])} tokens, longer than the {self.max_len} this "
                                "artifact accepts; shorten it or pass --truncate")
        if len(row["entity_ids"]) < len(spans):
            raise EdgeportError(f"{len(spans) - len(row['entity_ids'])} entity span(s) fall in the part of the "
                                f"text cut off at {self.max_len} tokens; move them earlier or shorten the text")
        if self.static_len:
            arrays = tok.pad([row], "max_length", self.static_len, self.slots)
        else:
            arrays = tok.pad([row], "longest")
        feeds = {n: arrays[n] for n in self.input_names}
        if self.static_batch and self.static_batch > 1:  # a static batch: the row, repeated
            feeds = {n: np.repeat(v, self.static_batch, axis=0) for n, v in feeds.items()}
        return {k: v[0] for k, v in self.session.run(feeds).items()}


class EntityClassification(EntityPipeline):
    """`classify(text, span)` -> {"entity": the span's text, "span": [start, end], "label", "score",
    "scores"}: the type of the entity mentioned at `span` (character offsets, end exclusive)."""

    task = "entity-classification"
    mode = "entity_classification"

    def __call__(self, text: str, spans):
        spans = [tuple(s) for s in spans] if spans and isinstance(spans[0], (list, tuple)) else [tuple(spans)]
        if len(spans) != 1:
            raise EdgeportError(f"entity-classification takes one entity span, got {len(spans)}")
        logits = self.run_spans(text, spans)["logits"]  # (L,)
        (a, b), = spans
        return {"entity": text[a:b], "span": [a, b], **self.scores(logits)}


class EntityPairClassification(EntityPipeline):
    """`classify(text, [head, tail])` -> {"head": {"entity", "span"}, "tail": {...}, "label", "score",
    "scores"}: the relation between the head and tail entities (e.g. TACRED's)."""

    task = "entity-pair-classification"
    mode = "entity_pair_classification"

    def __call__(self, text: str, spans):
        spans = [tuple(s) for s in spans]
        if len(spans) != 2:
            raise EdgeportError(f"entity-pair-classification takes two entity spans (head, tail), got {len(spans)}")
        logits = self.run_spans(text, spans)["logits"]
        head, tail = ({"entity": text[a:b], "span": [a, b]} for a, b in spans)
        return {"head": head, "tail": tail, **self.scores(logits)}


class EntitySpanClassification(EntityPipeline):
    """`classify(text, spans)` -> one {"entity", "span", "label", "score"} per span (e.g. NER over every
    candidate span, as LukeForEntitySpanClassification). Spans run in groups of the artifact's entity
    slots (static) or of the tokenizer's max_entity_length (dynamic)."""

    task = "entity-span-classification"
    mode = "entity_span_classification"

    def __call__(self, text: str, spans):
        spans = [tuple(s) for s in spans]
        if not spans:
            raise EdgeportError("entity-span-classification needs at least one span")
        group = self.slots or self.tokenizer.max_entity_length
        out = []
        for g in range(0, len(spans), group):
            chunk = spans[g:g + group]
            logits = self.run_spans(text, chunk)["logits"]  # (E, L)
            for (a, b), row in zip(chunk, logits):
                s = self.scores(row)
                out.append({"entity": text[a:b], "span": [a, b], "label": s["label"], "score": s["score"]})
        return out


ENTITY_PIPELINES = (EntityClassification, EntityPairClassification, EntitySpanClassification)
