"""Train a small GPT-2 on real text, offline, in minutes on CPU: the decoder for quantization accuracy.

Text: Python's own reference manual (`pydoc_data.topics`, in every CPython). Even-numbered topics
train, odd-numbered topics are held out for perplexity (edgeport.quantize.text.passages). The
tokenizer is a byte-level BPE trained here on the training half. The model is transformers'
GPT2LMHeadModel (the architecture edgeport's `gpt2` family loads), saved as an HF folder:

    python scripts/train_tiny_decoder.py -o edgeport-out/tiny-decoder --minutes 4
    edgeport export --model edgeport-out/tiny-decoder --task text-generation -o edgeport-out/tiny-decoder-onnx

Prints the held-out perplexity of the trained model (torch, fp32) at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

CONFIG = dict(vocab_size=4096, n_positions=256, n_embd=256, n_layer=4, n_head=4, n_inner=1024,
              activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
SEQ = 128


def train_tokenizer(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.split("\n\n"), trainer)
    return tok


def token_stream(tok, text: str) -> np.ndarray:
    eot = tok.token_to_id("<|endoftext|>")
    ids = []
    for para in text.split("\n\n"):
        ids += tok.encode(para).ids + [eot]
    return np.asarray(ids, np.int64)


def perplexity(model, ids: np.ndarray, seq: int = SEQ) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `seq` tokens."""
    n = (len(ids) - 1) // seq
    x = torch.from_numpy(ids[: n * seq]).view(n, seq)
    y = torch.from_numpy(ids[1: n * seq + 1]).view(n, seq)
    nll, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, n, 32):
            logits = model(x[i:i + 32]).logits  # (b, seq, V)
            nll += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[i:i + 32].flatten(), reduction="sum").item()
            count += y[i:i + 32].numel()
    return math.exp(nll / count)


def train(model, ids: np.ndarray, minutes: float, batch: int, lr: float, seed: int) -> int:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    data = torch.from_numpy(ids)
    start, step = time.time(), 0
    model.train()
    while time.time() - start < minutes * 60:
        starts = torch.randint(0, len(data) - SEQ - 1, (batch,), generator=g)
        x = torch.stack([data[s:s + SEQ] for s in starts])  # (B, SEQ)
        y = torch.stack([data[s + 1:s + SEQ + 1] for s in starts])
        frac = min(1.0, (time.time() - start) / (minutes * 60))
        for group in opt.param_groups:  # cosine decay over the time budget
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))
        loss = torch.nn.functional.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)
    model.eval()
    return step


def main(argv=None):
    import transformers

    from edgeport.quantize.text import passages

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default="edgeport-out/tiny-decoder")
    ap.add_argument("--minutes", type=float, default=4.0, help="training time budget (default 4)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    train_text, held_out = passages("train"), passages("eval")
    tok = train_tokenizer(train_text, CONFIG["vocab_size"])
    train_ids, eval_ids = token_stream(tok, train_text), token_stream(tok, held_out)
    print(f"train tokens {len(train_ids)}, held-out tokens {len(eval_ids)}", flush=True)
    cfg = transformers.GPT2Config(**CONFIG, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    steps = train(model, train_ids, a.minutes, a.batch, a.lr, seed=0)
    ppl = perplexity(model, eval_ids)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                           "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}))
    (out / "training.json").write_text(json.dumps({"steps": steps, "minutes": a.minutes, "config": CONFIG,
                                                   "held_out_perplexity": ppl, "text": "pydoc_data.topics"}, indent=2))
    print(f"wrote {out}: {steps} steps, held-out perplexity {ppl:.2f}")


if __name__ == "__main__":
    main()
