"""Where a served row's time goes, at batch 1 vs batch N: the ceiling micro-batching can reach.

    python benchmarks/serve_rowcost.py [--batches 1 4 16 32] [--seconds 1.5] [--threads 1]

For the two models of bench_serve.py (MiniLM fp32 embeddings, MobileBERT int8 classification; the
folders bench_serve.py made) and its two workloads (8-word texts, whole sentences), the same
max(batches) texts run in consecutive chunks of B rows for every batch size B, per row (ms / texts):
- tokenize: the pipeline's `encode` (tokenizers, padding into int64 feeds);
- ort: `session.run` on each chunk's feeds alone, padded to the chunk's longest row (no grouping);
- served: `ServedModel.run` on B one-text payloads, the server's worker call (by_length grouping,
  tokenizing, run, pooling / softmax, splitting);
and the padding the ungrouped chunks carry (padded tokens / real tokens). Each model runs in its own process
(benchmarks/common.py's rule: a neighbour's spinning threads distort the next timing).
The row cost at batch 1 over the row cost at batch B is the most batching can gain in a server
whose only cost is the model call; HTTP, JSON and the client come on top of it, alike in both modes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _time(fn, seconds: float) -> float:
    """Median ms of fn() over about `seconds` (at least 3 calls) after 1 warm-up call."""
    fn()
    times, t_end = [], time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def profile(name: str, folder: str, batches: list, seconds: float, threads: int, conn):
    from bench_serve import WORKLOADS, sentences

    from edgeport.serve.config import ServeConfig
    from edgeport.serve.models import ServedModel

    served = ServedModel(name, folder, ServeConfig(threads=threads))
    p = served._pool.get()
    served._pool.put(p)
    key = ("classify", False) if served.task == "text-classification" else ("embeddings", "mean", True)
    rows = []
    for workload, words in WORKLOADS.items():
        texts = sentences(max(batches), words=words)  # every batch size runs these same rows
        lens = [len(e.ids) for e in p.tokenizer.encode_batch(texts)]
        for B in batches:
            chunks = [texts[i:i + B] for i in range(0, len(texts), B)]
            encs = [p.encode(c) for c in chunks]
            padded = sum(e.feeds["input_ids"].size for e in encs)
            payloads = [[{"texts": [t], "pairs": []} for t in c] for c in chunks]
            tok = _time(lambda: [p.encode(c) for c in chunks], seconds)
            ort = _time(lambda: [p.session.run(e.feeds) for e in encs], seconds)
            srv = _time(lambda: [served.run(key, pl) for pl in payloads], seconds)
            n = len(texts)
            rows.append({"model": name, "workload": workload, "batch": B, "tokens_mean": statistics.mean(lens),
                         "tokens_max": max(lens), "pad_ratio": padded / sum(lens),
                         "tokenize_ms_row": tok / n, "ort_ms_row": ort / n, "served_ms_row": srv / n})
    conn.send(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--seconds", type=float, default=1.5, help="timing per (model, workload, batch, part)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (bench_serve.py's servers: 1)")
    ap.add_argument("--work", default="/tmp/edgeport-bench-serve", help="bench_serve.py's artifacts")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    from bench_serve import edgeport_artifacts

    arts = edgeport_artifacts(Path(a.work))
    print(f"loadavg before: {open('/proc/loadavg').read().strip()}", flush=True)
    ctx, rows = mp.get_context("spawn"), []
    for name in ("mobilebert", "minilm"):
        here, there = ctx.Pipe()
        proc = ctx.Process(target=profile, args=(name, str(arts[name]), a.batches, a.seconds, a.threads, there))
        proc.start()
        rows += here.recv()
        proc.join()
        time.sleep(0.3)
    print(f"loadavg after: {open('/proc/loadavg').read().strip()}")
    print(f"\nper-row ms, {a.threads} intra-op threads (served = the server's worker call: tokenize + run + "
          "post-process)")
    print(f"{'model':10s} {'workload':9s} {'B':>3s} {'tok mean/max':>12s} {'pad':>5s} {'tokenize':>8s} {'ort':>7s} "
          f"{'served':>7s} {'gain':>5s}")
    base = {}
    for r in rows:
        k = (r["model"], r["workload"])
        base.setdefault(k, r["served_ms_row"])
        print(f"{r['model']:10s} {r['workload']:9s} {r['batch']:3d} {r['tokens_mean']:6.1f}/{r['tokens_max']:<5d} "
              f"{r['pad_ratio']:5.2f} {r['tokenize_ms_row']:8.3f} {r['ort_ms_row']:7.3f} {r['served_ms_row']:7.3f} "
              f"{base[k] / r['served_ms_row']:4.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
