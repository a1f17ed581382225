"""Time one greedy generation and print one JSON line: {prefill_ms, ms_per_token, steps}.

    python benchmarks/peers/decode_once.py edgeport FOLDER --prompt 128 --steps 64 [--threads 2] [--reps 2]
    /tmp/genai-venv/bin/python benchmarks/peers/decode_once.py genai FOLDER --prompt 128 --steps 64

`edgeport`: an edgeport export folder (edgeport.json), run with the runtime's OrtDecoder (IOBinding cache),
greedy argmax in numpy (benchmarks/bench_decoders.py's ort_run). `genai`: an onnxruntime-genai model
folder (genai_config.json) from its model builder, greedy search (do_sample false), its session set to
--threads intra-op threads. Both: prompt token ids drawn from a fixed seed in [3, vocab); the first of
--reps generations is a warm-up; ms_per_token is the median decode-step time of the last one, prefill_ms
its prompt step. Imports only what its kind needs (the genai venv has no edgeport).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def prompt_ids(prompt: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(0).integers(3, vocab, (1, prompt))


def run_edgeport(folder: Path, prompt: int, steps: int, threads: int, reps: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from edgeport.runtime.generate import open_decoder

    m = json.loads((folder / "edgeport.json").read_text())
    dec = open_decoder(folder / m["artifact"], m["decoder"], threads)
    vocab = next(o["shape"][-1] for o in m["outputs"] if o["name"] == "logits")
    ids = prompt_ids(prompt, vocab)
    for _ in range(reps):
        dec.reset(1)
        t0 = time.perf_counter()
        logits = dec.step(ids, np.ones_like(ids), np.arange(prompt)[None])
        prefill, times = (time.perf_counter() - t0) * 1e3, []
        for i in range(steps):
            nxt = logits[:, -1].argmax(-1)[:, None]
            t0 = time.perf_counter()
            logits = dec.step(nxt, np.ones_like(nxt), np.array([[prompt + i]]))
            times.append((time.perf_counter() - t0) * 1e3)
    return {"prefill_ms": prefill, "ms_per_token": statistics.median(times), "steps": steps}


def run_genai(folder: Path, prompt: int, steps: int, threads: int, reps: int) -> dict:
    import onnxruntime_genai as og

    cfg_path = folder / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    so = cfg["model"]["decoder"].setdefault("session_options", {})
    if so.get("intra_op_num_threads") != threads:
        so["intra_op_num_threads"] = threads
        cfg_path.write_text(json.dumps(cfg, indent=1))
    model = og.Model(str(folder))
    ids = prompt_ids(prompt, cfg["model"]["vocab_size"])
    for _ in range(reps):
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=prompt + steps + 1, min_length=prompt + steps + 1)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(ids.astype(np.int32))
        prefill, times = (time.perf_counter() - t0) * 1e3, []
        for _ in range(steps):
            t0 = time.perf_counter()
            gen.generate_next_token()
            times.append((time.perf_counter() - t0) * 1e3)
        del gen
    return {"prefill_ms": prefill, "ms_per_token": statistics.median(times), "steps": steps}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("edgeport", "genai"))
    ap.add_argument("folder", type=Path)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args(argv)
    fn = run_edgeport if a.kind == "edgeport" else run_genai
    print(json.dumps(fn(a.folder, a.prompt, a.steps, a.threads, a.reps)))


if __name__ == "__main__":
    main()
