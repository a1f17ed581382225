"""Fill-mask, text classification (single texts and pairs) and feature extraction."""

from __future__ import annotations

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtime.pipelines.base import Pipeline, as_list, softmax


class FillMask(Pipeline):
    """`fill_mask(texts, top_k=5)` -> the top_k candidates `{"token": str, "score": float}` (softmax
    over the vocabulary), best first, for each mask. Shapes as transformers' fill-mask pipeline: a text
    with one mask gives a flat list of candidates, a text with several masks a list per mask (in text
    order); one string gives its result, a list of strings a list of results.

    Raises EdgeportError when the tokenizer has no mask token or a text lacks it.
    """

    task = "fill-mask"

    def __call__(self, texts, top_k: int = 5):
        if not isinstance(top_k, int) or top_k < 1:
            raise EdgeportError(f"top_k must be an integer >= 1 (got {top_k!r})")
        single = isinstance(texts, str)
        texts = as_list(texts)
        mask_tok = self.manifest.tokenizer.mask_token
        mask_id = self.tokenizer.token_to_id(mask_tok) if mask_tok else None
        if mask_id is None:
            raise EdgeportError("this tokenizer has no mask token; fill-mask needs one")
        enc = self.encode(texts)
        if any(mask_id not in e.ids for e in enc.encodings):
            raise EdgeportError(f"fill-mask needs {mask_tok} in every text")
        logits = self.run_batch(enc.feeds)["logits"]  # (B, S, V)
        results = []
        for r, e in enumerate(enc.encodings):
            row = []
            for pos in [i for i, t in enumerate(e.ids) if t == mask_id]:
                p = softmax(logits[r, pos].astype(np.float64))
                best = np.argsort(-p)[:top_k]
                row.append([{"token": self.tokenizer.id_to_token(int(t)), "score": float(p[t])} for t in best])
            results.append(row[0] if len(row) == 1 else row)
        return results[0] if single else results


SCORE_FUNCTIONS = {"softmax": softmax, "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "none": lambda x: x}


class TextClassification(Pipeline):
    """`classify(texts, pairs=None, function_to_apply=None)` -> per text `{"label", "score", "scores":
    {label: score}}`, the label of the highest score.

    `pairs` (a string or a list as long as `texts`) makes sentence pairs: [CLS] A [SEP] B [SEP],
    as transformers' text-classification pipeline does for `{"text": A, "text_pair": B}`.
    `function_to_apply` ("softmax", "sigmoid", "none"; None: the manifest's score_function, which the
    export takes from the config's problem_type / num_labels as transformers' pipeline does; softmax for
    manifests without one). Raises EdgeportError for another function name.
    """

    task = "text-classification"

    def __call__(self, texts, pairs=None, function_to_apply: str | None = None):
        fn = function_to_apply or self.manifest.score_function or "softmax"
        if fn not in SCORE_FUNCTIONS:
            raise EdgeportError(f"function_to_apply must be one of {', '.join(SCORE_FUNCTIONS)} (got {fn!r})")
        texts = as_list(texts)
        if pairs is not None:
            pairs = as_list(pairs, "text_pair")
            if len(pairs) != len(texts):
                raise EdgeportError(f"{len(texts)} texts but {len(pairs)} text pairs: give one pair per text")
            if not all(p.strip() for p in pairs):
                raise EdgeportError("empty text pair: give some words to run on")
        enc = self.encode(texts, pairs)
        probs = SCORE_FUNCTIONS[fn](self.run_batch(enc.feeds)["logits"].astype(np.float64))  # (B, num_labels)
        return [{"label": self.label(p.argmax()), "score": float(p.max()),
                 "scores": {self.label(i): float(v) for i, v in enumerate(p)}} for p in probs]


class NextSentencePrediction(Pipeline):
    """`predict(texts, pairs)` -> per pair `{"is_next": P(B follows A), "label": "is_next" | "not_next",
    "scores": {"is_next": p0, "not_next": p1}}`: softmax over the (B, 2) logits, index 0 = B follows A
    (the labels of transformers' *ForNextSentencePrediction). Pairs encode as [CLS] A [SEP] B [SEP] with
    token types 0/1. Raises EdgeportError without a pair per text, or on an empty pair."""

    task = "next-sentence-prediction"
    LABELS = ("is_next", "not_next")

    def __call__(self, texts, pairs):
        texts = as_list(texts)
        pairs = as_list(pairs, "text_pair") if pairs is not None else []
        if len(pairs) != len(texts):
            raise EdgeportError(f"next-sentence prediction scores sentence pairs: {len(texts)} texts but "
                                f"{len(pairs)} text pairs (--text A --text-pair B)")
        if not all(p.strip() for p in pairs):
            raise EdgeportError("empty text pair: give some words to run on")
        probs = softmax(self.run_batch(self.encode(texts, pairs).feeds)["logits"].astype(np.float64))  # (B, 2)
        return [{"is_next": float(p[0]), "label": self.LABELS[int(p.argmax())],
                 "scores": dict(zip(self.LABELS, map(float, p)))} for p in probs]


class FeatureExtraction(Pipeline):
    """`embed(texts, pooling="mean")` -> (B, H) float32 for "mean" (over real tokens) or "cls";
    a list of (S_i, H) arrays for "none"."""

    task = "feature-extraction"

    def __call__(self, texts, pooling: str = "mean"):
        if pooling not in ("mean", "cls", "none"):
            raise EdgeportError(f"pooling must be mean, cls or none (got {pooling!r})")
        enc = self.encode(as_list(texts))
        h = self.run_batch(enc.feeds)["last_hidden_state"].astype(np.float32)  # (B, S, H)
        if pooling == "none":
            return [h[r, :n] for r, n in enumerate(enc.lengths)]
        if pooling == "cls":
            return h[:, 0]
        m = enc.feeds["attention_mask"][..., None].astype(np.float32)
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # (B, H) mean over real tokens
