"""Train a small Mistral on real text, offline, in minutes on CPU: the decoder for quantization accuracy.

Text: Python's own reference manual (`pydoc_data.topics`, in every CPython). Even-numbered topics
train, odd-numbered topics are held out for perplexity (edgeport.quantize.text.passages). The
tokenizer is a byte-level BPE (`tokenizers`) trained here on the training half. The model is
transformers' MistralForCausalLM (GQA 6:2, RoPE, RMSNorm, SwiGLU; 2.4M parameters, ~9.5 MB fp32),
saved as an HF folder (config.json, model.safetensors, tokenizer.json) that `edgeport export` loads:

    python scripts/train_tiny_decoder.py -o benchmarks/data/tiny-decoder --minutes 4
    edgeport export --model benchmarks/data/tiny-decoder --task text-generation -o edgeport-out/tiny-decoder-onnx

Prints and records (training.json) the held-out perplexity before and after training and the
unigram baseline (token frequencies of the training half), all in torch fp32 over the same windows.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

CONFIG = dict(vocab_size=2048, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
              num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_theta=10000.0, sliding_window=None, tie_word_embeddings=False,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)
SPECIALS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2 (as in CONFIG)
SEQ = 128


def train_tokenizer(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.split("\n\n"), trainer)
    return tok


def token_stream(tok, text: str) -> np.ndarray:
    """Paragraphs encoded and joined by </s>: (N,) int64."""
    eos = tok.token_to_id("</s>")
    ids = []
    for para in text.split("\n\n"):
        ids += tok.encode(para).ids + [eos]
    return np.asarray(ids, np.int64)


def windows(ids: np.ndarray, seq: int = SEQ) -> tuple:
    """Non-overlapping (n, seq) inputs and their next-token targets."""
    n = (len(ids) - 1) // seq
    return ids[: n * seq].reshape(n, seq), ids[1: n * seq + 1].reshape(n, seq)


def perplexity(model, ids: np.ndarray, seq: int = SEQ) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `seq` tokens (torch fp32)."""
    x, y = (torch.from_numpy(a) for a in windows(ids, seq))
    nll = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), 16):
            logits = model(x[i:i + 16]).logits.float()  # (b, seq, V)
            nll += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[i:i + 16].flatten(),
                                                     reduction="sum").item()
    return math.exp(nll / y.numel())


def unigram_perplexity(train_ids: np.ndarray, eval_ids: np.ndarray, vocab: int) -> float:
    """The baseline a model must beat: next token drawn from training-half frequencies (add-one)."""
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    _, y = windows(eval_ids)
    return float(np.exp(-logp[y].mean()))


def train(model, ids: np.ndarray, minutes: float, max_steps: int, batch: int, lr: float, seed: int) -> int:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    data = torch.from_numpy(ids)
    start, step, budget = time.time(), 0, minutes * 60
    model.train()
    while time.time() - start < budget and step < max_steps:
        starts = torch.randint(0, len(data) - SEQ - 1, (batch,), generator=g)
        x = torch.stack([data[s:s + SEQ] for s in starts])  # (B, SEQ)
        y = torch.stack([data[s + 1:s + SEQ + 1] for s in starts])
        frac = max((time.time() - start) / budget, step / max_steps)
        warm = min(1.0, (step + 1) / 20)
        for group in opt.param_groups:  # warm-up, then cosine decay over the budget (time or steps)
            group["lr"] = lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        loss = torch.nn.functional.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            print(f"step {step}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)
    model.eval()
    return step


def save(model, tok, out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<s>",
        "eos_token": "</s>"}))
    (out / "training.json").write_text(json.dumps(record, indent=2))


def build(output, minutes: float = 4.0, max_steps: int = 10**9, batch: int = 16, lr: float = 3e-3,
          threads: int = 2, quiet: bool = False) -> dict:
    """Train and save; returns the record written to training.json (also used by tests and benchmarks)."""
    import transformers

    from edgeport.quantize.text import passages

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    train_text, held_out = passages("train"), passages("eval")
    tok = train_tokenizer(train_text, CONFIG["vocab_size"])
    train_ids, eval_ids = token_stream(tok, train_text), token_stream(tok, held_out)
    model = transformers.MistralForCausalLM(transformers.MistralConfig(**CONFIG))
    untrained = perplexity(model, eval_ids)
    unigram = unigram_perplexity(train_ids, eval_ids, CONFIG["vocab_size"])
    if not quiet:
        print(f"train tokens {len(train_ids)}, held-out tokens {len(eval_ids)}; perplexity untrained "
              f"{untrained:.1f}, unigram {unigram:.1f}", flush=True)
    t0 = time.time()
    steps = train(model, train_ids, minutes, max_steps, batch, lr, seed=0)
    ppl = perplexity(model, eval_ids)
    record = {"steps": steps, "train_seconds": round(time.time() - t0, 1), "batch": batch, "seq": SEQ,
              "config": CONFIG, "parameters": sum(p.numel() for p in model.parameters()),
              "held_out_perplexity": ppl, "untrained_perplexity": untrained, "unigram_perplexity": unigram,
              "text": "pydoc_data.topics (even topics train, odd topics held out)"}
    save(model, tok, Path(output), record)
    if not quiet:
        print(f"wrote {output}: {steps} steps, held-out perplexity {ppl:.2f} "
              f"({ppl / untrained:.1%} of untrained, unigram {unigram:.1f})")
    return record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default="benchmarks/data/tiny-decoder")
    ap.add_argument("--minutes", type=float, default=4.0, help="training time budget (default 4)")
    ap.add_argument("--max-steps", type=int, default=10**9, help="stop after this many steps (tests)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    build(a.output, a.minutes, a.max_steps, a.batch, a.lr, a.threads)


if __name__ == "__main__":
    main()
