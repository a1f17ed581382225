"""Train a small Mistral on real text, offline, in minutes on CPU: the decoder for quantization accuracy.

Text: Python's own reference manual (`pydoc_data.topics`, in every CPython). Even-numbered topics
train, odd-numbered topics are held out for perplexity (edgeport.quantize.text.passages). The
tokenizer is a byte-level BPE (`tokenizers`) trained here on the training half. The model is
transformers' MistralForCausalLM (GQA 6:2, RoPE, RMSNorm, SwiGLU; 2.4M parameters, ~9.5 MB fp32),
saved as an HF folder (config.json, model.safetensors, tokenizer.json) that `edgeport export` loads:

    python scripts/train_tiny_decoder.py -o benchmarks/data/tiny-decoder --steps 600
    edgeport export --model benchmarks/data/tiny-decoder --task text-generation -o edgeport-out/tiny-decoder-onnx

Training runs a fixed number of optimizer steps (seeded: the same steps give the same model on any
machine, however loaded; a time budget did not: 7 steps in 105 s once gave a model worse than the
unigram baseline). Prints and records (training.json) the held-out perplexity before and after training
and the unigram baseline (token frequencies of the training half), all in torch fp32 over the same
windows (every non-overlapping 128-token window of the held-out half). A model that does not beat the
unigram baseline is unusable for generation: the script says so on stderr, records "usable": false and
exits with status 1 (the folder is still written, for inspection).

This perplexity differs from the one `edgeport quantize` reports for the same model: quantize scores the
first 8192 held-out tokens only (edgeport.quantize.perplexity.MAX_TOKENS, in the same 128-token
windows) through the runtime, so its number covers less of the text; compare quantize's fp32 and
quantized numbers with each other, not with this one. Models trained by a time budget (before) also
differed from run to run, which is why earlier READMEs quoted 169.1, 52.1 and 115.2 for "the same" model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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


def train(model, ids: np.ndarray, steps: int, batch: int, lr: float, seed: int) -> int:
    """`steps` AdamW steps on random (batch, SEQ) windows of `ids`: warm-up, then cosine decay over the steps."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    data = torch.from_numpy(ids)
    start, step = time.time(), 0
    model.train()
    while step < steps:
        starts = torch.randint(0, len(data) - SEQ - 1, (batch,), generator=g)
        x = torch.stack([data[s:s + SEQ] for s in starts])  # (B, SEQ)
        y = torch.stack([data[s + 1:s + SEQ + 1] for s in starts])
        frac = step / steps
        warm = min(1.0, (step + 1) / 20)
        for group in opt.param_groups:  # warm-up, then cosine decay over the steps
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


def build(output, steps: int = 600, batch: int = 16, lr: float = 3e-3, threads: int = 2, quiet: bool = False) -> dict:
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
    steps = train(model, train_ids, steps, batch, lr, seed=0)
    ppl = perplexity(model, eval_ids)
    record = {"steps": steps, "train_seconds": round(time.time() - t0, 1), "batch": batch, "seq": SEQ,
              "config": CONFIG, "parameters": sum(p.numel() for p in model.parameters()),
              "held_out_perplexity": ppl, "untrained_perplexity": untrained, "unigram_perplexity": unigram,
              "text": "pydoc_data.topics (even topics train, odd topics held out)", "usable": ppl < unigram}
    save(model, tok, Path(output), record)
    if not quiet:
        print(f"wrote {output}: {steps} steps, held-out perplexity {ppl:.2f} "
              f"({ppl / untrained:.1%} of untrained, unigram {unigram:.1f})")
    if not record["usable"]:
        print(f"UNUSABLE: held-out perplexity {ppl:.1f} does not beat the unigram baseline {unigram:.1f}; "
              "generation from it prints junk. Train more steps (--steps).", file=sys.stderr)
    return record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default="benchmarks/data/tiny-decoder")
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600; the result does not "
                    "depend on the machine's speed)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    record = build(a.output, a.steps, a.batch, a.lr, a.threads)
    return 0 if record["usable"] else 1


if __name__ == "__main__":
    sys.exit(main())
