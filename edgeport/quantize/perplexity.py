"""Decoder accuracy: held-out perplexity of an exported decoder through the runtime (numpy + onnxruntime).

    tokens = held_out_tokens(tokenizer, eos_id)             # pydoc_data.topics, odd topics, (N,) int64
    ppl = perplexity(decoder, tokens)                        # decoder: runtime.generate.open_decoder(...)
    report = compare(float_path, quant_path, manifest, folder)

Text is the held-out half of Python's reference manual (text.passages("eval"), the half the tiny
decoder of scripts/train_tiny_decoder.py never trained on): paragraphs encoded with the artifact's own
tokenizer and joined by the first eos token. Perplexity = exp(mean next-token NLL) over non-overlapping
windows of WINDOW tokens, each run as a prompt on an empty cache (the artifact's prefill path); the
greedy agreement is the share of positions where both artifacts' argmax next tokens are equal.
No torch: the independent check against a torch model lives in tests/test_quantize_decoders.py.
"""

from __future__ import annotations

import math

import numpy as np

from edgeport.errors import EdgeportError

WINDOW = 128  # tokens per window (the training script's sequence length)
MAX_TOKENS = 8192  # held-out tokens scored per artifact (64 windows): the report's cost stays seconds
BATCH = 4  # windows per call (no padding, empty cache: every lowering runs this batched)


def held_out_tokens(tokenizer, eos_id: int | None, max_tokens: int | None = None) -> np.ndarray:
    """Held-out paragraphs -> (N,) int64 ids, paragraphs joined by `eos_id` (when the model has one)."""
    from edgeport.quantize.text import passages

    ids = []
    for para in passages("eval").split("\n\n"):
        ids += tokenizer.encode(para).ids + ([eos_id] if eos_id is not None else [])
        if max_tokens is not None and len(ids) > max_tokens:
            break
    return np.asarray(ids[: (max_tokens or len(ids)) + 1], np.int64)


def windows(tokens: np.ndarray, window: int) -> tuple:
    """(N,) -> inputs (n, window) and next-token targets (n, window)."""
    n = (len(tokens) - 1) // window
    if n < 1:
        raise EdgeportError(f"perplexity needs more than {window} held-out tokens (got {len(tokens)})")
    return tokens[: n * window].reshape(n, window), tokens[1: n * window + 1].reshape(n, window)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def window_logits(decoder, x: np.ndarray, batch: int = BATCH):
    """Yield (rows, logits (b, window, V)) for every `batch` windows of x (n, window), empty cache each time."""
    batch = min(batch, getattr(decoder, "max_batch", None) or batch)  # TFLite: static batch
    pos = np.broadcast_to(np.arange(x.shape[1], dtype=np.int64), x.shape)
    for i in range(0, len(x), batch):
        rows = x[i:i + batch]
        decoder.reset(len(rows))
        yield slice(i, i + len(rows)), decoder.step(rows, np.ones_like(rows), pos[: len(rows)])


def nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed next-token negative log-likelihood: logits (b, S, V), targets (b, S)."""
    logp = _log_softmax(logits)
    return float(-np.take_along_axis(logp, targets[..., None], -1).sum())


def perplexity(decoder, tokens: np.ndarray, window: int = WINDOW) -> float:
    """exp(mean next-token NLL) of a runtime decoder over `tokens` (1-D int ids) in windows of `window`
    tokens."""
    x, y = windows(tokens, window)
    total = sum(nll_sum(logits, y[rows]) for rows, logits in window_logits(decoder, x))
    return math.exp(total / y.size)


def _scores(float_dec, quant_dec, tokens: np.ndarray, window: int) -> dict:
    """Both artifacts over the same windows: summed NLLs, argmax agreement, logit diffs."""
    x, y = windows(tokens, window)
    s = {"nll_float": 0.0, "nll_quant": 0.0, "agree": 0, "diff": 0.0, "absmax": 0.0}
    for (rows, ref), (_, got) in zip(window_logits(float_dec, x), window_logits(quant_dec, x)):
        s["nll_float"] += nll_sum(ref, y[rows])
        s["nll_quant"] += nll_sum(got, y[rows])
        s["agree"] += int((ref.argmax(-1) == got.argmax(-1)).sum())
        s["diff"] = max(s["diff"], float(np.abs(ref - got).max()))
        s["absmax"] = max(s["absmax"], float(np.abs(ref).max()))
    s["n"] = int(y.size)
    return s


def compare(float_path, quant_path, manifest, folder, threads: int | None = None) -> dict:
    """The accuracy report of a quantized text-generation artifact (written into its manifest)."""
    from tokenizers import Tokenizer

    from edgeport.runtime.generate import open_decoder

    info = manifest.decoder
    window = min(WINDOW, int(info.get("max_tokens") or WINDOW))
    if manifest.tokenizer is None or manifest.random_weights:  # presets: seeded random ids over the whole vocabulary
        vocab = next(o.shape[-1] for o in manifest.outputs if o.name == "logits")
        why = "no tokenizer" if manifest.tokenizer is None else "random weights"
        tokens, source = np.random.default_rng(0).integers(3, vocab, MAX_TOKENS + 1), f"random token ids ({why})"
    else:
        tok = Tokenizer.from_file(str(folder / manifest.tokenizer.file))
        tokens = held_out_tokens(tok, (info.get("eos_token_ids") or [None])[0], MAX_TOKENS)
        source = "pydoc_data.topics (evaluation half)"
    s = _scores(open_decoder(float_path, info, threads), open_decoder(quant_path, info, threads), tokens, window)
    ppl_f, ppl_q = math.exp(s["nll_float"] / s["n"]), math.exp(s["nll_quant"] / s["n"])
    report = {"text": source, "tokens": s["n"], "window": window,
              "perplexity_float": ppl_f, "perplexity_quantized": ppl_q,
              "perplexity_relative_delta": ppl_q / ppl_f - 1.0,
              "greedy_next_token_agreement": s["agree"] / s["n"],
              "max_abs_logit_diff": s["diff"], "reference_absmax": s["absmax"]}
    note = " (random weights: perplexity is not meaningful)" if manifest.random_weights else ""
    delta = report["perplexity_relative_delta"]
    on = source if manifest.tokenizer is None or manifest.random_weights else f"held-out text, {source}"
    report["_headline"] = (f"perplexity {ppl_f:.3f} -> {ppl_q:.3f} ({delta:+.2%}), greedy next-token agreement "
                           f"{report['greedy_next_token_agreement']:.1%} over {s['n']} tokens of {on}{note}")
    return report
