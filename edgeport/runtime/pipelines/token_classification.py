"""Token classification (named entities and the like)."""

from __future__ import annotations

import numpy as np

from edgeport.runtime.pipelines.base import Pipeline, as_list, softmax


class TokenClassification(Pipeline):
    task = "token-classification"

    def __call__(self, texts):
        enc = self.encode(as_list(texts))
        logits = self.run_batch(enc.feeds)["logits"]
        out = []
        for r, e in enumerate(enc.encodings):
            p = softmax(logits[r, :len(e.ids)].astype(np.float64))
            out.append([{"token": tok, "label": self.label(q.argmax()), "score": float(q.max())}
                        for tok, q, sid in zip(e.tokens, p, e.sequence_ids) if sid is not None])
        return out
