"""Quantized decoders on onnxruntime CPU: size, decode speed and held-out perplexity against fp32.

    python benchmarks/bench_quantize_decoders.py                    # trained tiny decoder + Mistral ~125M
    python benchmarks/bench_quantize_decoders.py --only trained --rounds 5

Models:
- trained: scripts/train_tiny_decoder.py's Mistral (built into benchmarks/data/tiny-decoder when missing,
  600 steps), trained on the even half of pydoc_data.topics; perplexity on the odd half (perplexity.py).
- large: a random-weight Mistral architecture (hidden 768, 12 layers, GQA 12:4, vocab 32000; ~125M
  parameters) for size and speed only (random weights: its perplexity says nothing).
Each is exported with the default lowering (GroupQueryAttention), then quantized to int4 (MatMulNBits,
block 32) and int8 (dynamic). Decode speed: batch 1, a 32-token prompt on an empty cache, then
DECODE single-token steps through the runtime's IOBinding decoder; tokens/s is the median over rounds,
the artifacts interleaved within each round. Goals (issue 6): int4 <= 20% of fp32 size, perplexity
within 5% of fp32, decode >= 2x fp32 tokens/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "benchmarks" / "data" / "tiny-decoder"
WORK = ROOT / "edgeport-out" / "bench-quantize-decoders"
LARGE = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
             num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-5,
             sliding_window=None, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
SCHEMES = ("int4", "int4-b32-a8", "int8")  # int4-b32-a8: MatMulNBits accuracy_level 4 (int8 compute)
PROMPT, DECODE = 32, 64


def _trainer():
    spec = importlib.util.spec_from_file_location("train_tiny_decoder", ROOT / "scripts" / "train_tiny_decoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def trained_folder(steps: int) -> Path:
    if not (TRAINED / "model.safetensors").is_file():
        print(f"training the tiny decoder into {TRAINED} ({steps} steps)", flush=True)
        _trainer().build(TRAINED, steps=steps)
    return TRAINED


def large_folder() -> Path:
    """A random-weight Mistral HF folder (written once)."""
    import torch
    import transformers

    out = WORK / "mistral-125m-hf"
    if not (out / "model.safetensors").is_file():
        torch.manual_seed(0)
        transformers.MistralForCausalLM(transformers.MistralConfig(**LARGE)).save_pretrained(str(out))
    return out


def export_and_quantize(hf: Path, name: str, ppl_tokens: int) -> dict:
    from edgeport.export import export
    from edgeport.quantize import perplexity, quantize_artifact

    perplexity.MAX_TOKENS = ppl_tokens
    base = WORK / name
    if not (base / "edgeport.json").is_file():
        export(str(hf), target="onnx", task="text-generation", out_dir=base, quiet=True)
    folders = {"fp32": base}
    for s in SCHEMES:
        out = WORK / f"{name}-{s}"
        if not (out / "edgeport.json").is_file():
            quantize_artifact(base, s, out_dir=out, quiet=True)
        folders[s] = out
    return folders


def decode_rate(folder: Path, threads: int) -> float:
    """Tokens/s of DECODE single-token steps after a PROMPT-token prefill (batch 1)."""
    from edgeport.runtime.generate import open_decoder

    m = json.loads((folder / "edgeport.json").read_text())
    dec = open_decoder(folder / m["artifact"], m["decoder"], threads)
    vocab = next(o["shape"][-1] for o in m["outputs"] if o["name"] == "logits")
    ids = np.random.default_rng(0).integers(3, vocab, (1, PROMPT))
    dec.reset(1)
    time.sleep(0.3)  # the previous artifact's idle onnxruntime threads spin a while (see common.py)
    logits = dec.step(ids, np.ones_like(ids), np.arange(PROMPT)[None])
    t = time.perf_counter()
    for i in range(DECODE):
        nxt = logits[:, -1].argmax(-1)[:, None]
        logits = dec.step(nxt, np.ones_like(nxt), np.array([[PROMPT + i]]))
    return DECODE / (time.perf_counter() - t)


def size_of(folder: Path) -> int:
    m = json.loads((folder / "edgeport.json").read_text())
    return m["size_bytes"]


def report(name: str, folders: dict, rounds: int, threads: int) -> None:
    rates = {k: [] for k in folders}
    for _ in range(rounds):  # interleaved
        for k, f in folders.items():
            rates[k].append(decode_rate(f, threads))
    fp_size, fp_rate = size_of(folders["fp32"]), statistics.median(rates["fp32"])
    print(f"\n## {name}: fp32 {fp_size / 2**20:.1f} MiB, decode {fp_rate:.1f} tokens/s (median of {rounds})")
    print("| scheme | size MiB | size ratio | decode tok/s | speed ratio | ppl fp32 | ppl quant | ppl delta "
          "| greedy agreement |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in SCHEMES:
        m = json.loads((folders[k] / "edgeport.json").read_text())
        acc, r = m["quantization"]["accuracy"], statistics.median(rates[k])
        print(f"| {m['quantization']['tag']} | {size_of(folders[k]) / 2**20:.1f} | {size_of(folders[k]) / fp_size:.1%} "
              f"| {r:.1f} | {r / fp_rate:.2f}x | {acc['perplexity_float']:.3f} | {acc['perplexity_quantized']:.3f} "
              f"| {acc['perplexity_relative_delta']:+.2%} | {acc['greedy_next_token_agreement']:.1%} |")
    if "random" in name:
        print("(random weights: perplexity columns only exercise the report)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=600)
    ap.add_argument("--only", choices=("trained", "large"), help="run one of the two models")
    a = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if a.only != "large":
        bench_trained(a)
    if a.only != "trained":
        report("Mistral ~125M, random weights", export_and_quantize(large_folder(), "mistral-125m", 512),
               a.rounds, a.threads)


def bench_trained(a) -> None:
    hf = trained_folder(a.train_steps)
    rec = json.loads((hf / "training.json").read_text())
    print(f"trained tiny decoder: {rec['parameters']:,} parameters, {rec['steps']} steps, held-out perplexity "
          f"{rec['held_out_perplexity']:.2f} (untrained {rec['untrained_perplexity']:.1f}, unigram "
          f"{rec['unigram_perplexity']:.1f}) in torch", flush=True)
    report("trained tiny decoder (Mistral, pydoc_data.topics)", export_and_quantize(hf, "tiny", 16384),
           a.rounds, a.threads)


if __name__ == "__main__":
    main()
