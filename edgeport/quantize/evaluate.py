"""Quantized artifact vs its float artifact on real text: max diff and the task's own agreement.

    feature-extraction     mean-pooled embedding cosine (min, mean), and two top-1 agreements:
                           query_top1_agreement: each sentence's first half is a query, the full sentences
                             are the documents; is the top document (cosine) the same under both artifacts
                           neighbour_top1_agreement: is each sentence's nearest other sentence the same
                             (harsher: among similar sentences of one manual, near-ties flip easily)
    fill-mask, token-cls   top-1 agreement at every real token
    question-answering     start and end argmax agreement per text
    text-classification    argmax agreement per text
Diffs are taken over real (unpadded) tokens only. Decoders: perplexity (perplexity.py).
"""

from __future__ import annotations

import numpy as np

PER_TOKEN = ("feature-extraction", "fill-mask", "token-classification", "question-answering")


def _real(outputs: dict, n: int, task: str) -> dict:
    """Drop padded positions: (1, S, ...) -> (n, ...) for per-token tasks; (1, C) -> (C,) otherwise."""
    return {k: (v[0, :n] if task in PER_TOKEN else v[0]).astype(np.float64) for k, v in outputs.items()}


def _run_all(float_sess, quant_sess, feeds: list, task: str) -> tuple:
    ref, got = [], []
    for f in feeds:
        n = int(f["attention_mask"].sum()) if "attention_mask" in f else f["input_ids"].shape[1]
        ref.append(_real(float_sess.run(f), n, task))
        got.append(_real(quant_sess.run(f), n, task))
    return ref, got


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _pooled(outs: list, name: str) -> np.ndarray:
    return _unit(np.stack([o[name].mean(axis=0) for o in outs]))  # (N, H) mean-pooled, unit length


def embedding_metrics(ref: list, got: list, name: str) -> dict:
    """Mean-pooled, L2-normalised embeddings of output `name`: min/mean cosine float vs quantized and
    nearest-neighbour top-1 agreement."""
    a, b = _pooled(ref, name), _pooled(got, name)
    cos = (a * b).sum(axis=1)  # (N,)
    return {"embedding_cosine_min": float(cos.min()), "embedding_cosine_mean": float(cos.mean()),
            "neighbour_top1_agreement": float((_nearest(a) == _nearest(b)).mean())}


def query_metrics(ref_docs: list, got_docs: list, ref_q: list, got_q: list, name: str) -> dict:
    """Query i is the first half of document i: top-1 document agreement, and the float's own hit rate."""
    top_ref = (_pooled(ref_q, name) @ _pooled(ref_docs, name).T).argmax(axis=1)  # (Q,)
    top_got = (_pooled(got_q, name) @ _pooled(got_docs, name).T).argmax(axis=1)
    return {"query_top1_agreement": float((top_ref == top_got).mean()),
            "query_top1_float_hit_rate": float((top_ref == np.arange(len(top_ref))).mean())}


def _nearest(e: np.ndarray) -> np.ndarray:
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def argmax_agreement(ref: list, got: list, names: list) -> float:
    """Fraction of positions whose argmax over the last axis agrees between float (`ref`) and quantized
    (`got`) outputs `names`."""
    hits = total = 0
    for r, g in zip(ref, got):
        for n in names:
            hits += int((r[n].argmax(axis=-1) == g[n].argmax(axis=-1)).sum())
            total += int(np.size(r[n].argmax(axis=-1)))
    return hits / max(total, 1)


def compare(float_sess, quant_sess, task: str, feeds: list, query_feeds: list | None = None) -> dict:
    """The accuracy report written into the quantized artifact's manifest."""
    ref, got = _run_all(float_sess, quant_sess, feeds, task)
    names = list(ref[0])
    diff = max(float(np.abs(r[n] - g[n]).max()) for r, g in zip(ref, got) for n in names)
    absmax = max(float(np.abs(r[n]).max()) for r in ref for n in names)
    report = {"texts": len(feeds), "max_abs_diff": diff, "reference_absmax": absmax}
    if task == "feature-extraction":
        report.update(embedding_metrics(ref, got, names[0]))
        if query_feeds:
            ref_q, got_q = _run_all(float_sess, quant_sess, query_feeds, task)
            report.update(query_metrics(ref, got, ref_q, got_q, names[0]))
    elif task == "question-answering":
        report["span_argmax_agreement"] = argmax_agreement(ref, got, names)
    else:
        key = "token_top1_agreement" if task in PER_TOKEN else "argmax_agreement"
        report[key] = argmax_agreement(ref, got, names)
    return report


def headline(report: dict) -> str:
    """One line for the progress output, naming what was measured on: report["text"], the feeds' source
    (quantize._feeds: held-out text, or random token ids when the export has no tokenizer)."""
    skip = ("texts", "reference_absmax", "text")
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items() if k not in skip]
    n, text = report.get("texts", 0), report.get("text")
    if text is None:
        on = f"{n} inputs"
    elif text.startswith("random token ids"):
        on = f"{n} inputs of {text}"
    else:
        on = f"{n} held-out texts ({text})"
    return f"on {on}: " + ", ".join(parts)
