"""Where a served row's time goes, at batch 1 vs batch N: the ceiling micro-batching can reach.

    python benchmarks/serve_rowcost.py [--batches 1 4 16 32] [--rounds 7] [--threads 1]

For the two models of bench_serve.py (MiniLM fp32 embeddings, MobileBERT int8 classification; the
folders bench_serve.py made) and its two workloads (8-word texts, whole sentences), the same
max(batches) texts run in consecutive chunks of B rows for every batch size B, per row (ms / texts):
- tokenize: the pipeline's `encode` (tokenizers, padding into int64 feeds);
- ort: `session.run` on each chunk's feeds alone, padded to the chunk's longest row (no grouping);
- served: `ServedModel.run` on B one-text payloads, the server's worker call (by_length grouping,
  tokenizing, run, pooling / softmax, splitting);
and the padding the ungrouped chunks carry (padded tokens / real tokens). Medians over interleaved
rounds; each model runs in its own process (benchmarks/common.py's rule: a neighbour's spinning threads
distort the next timing); `others` is the cores other processes kept busy meanwhile (should be ~0).
The row cost at batch 1 over the row cost at batch B is the most batching can gain in a server
whose only cost is the model call; HTTP, JSON and the client come on top of it, alike in both modes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _busy() -> float:
    """CPU seconds every core has spent busy so far (/proc/stat)."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def profile(name: str, folder: str, batches: list, rounds: int, threads: int, conn, pad_slack=None):
    from bench_serve import WORKLOADS, sentences

    from edgeport.serve import models
    from edgeport.serve.config import ServeConfig
    from edgeport.serve.models import ServedModel

    if pad_slack:  # by_length's cut: padding a group may add (tokens, fraction of its real tokens)
        models.PAD_SLACK_TOKENS, models.PAD_SLACK_RATIO = int(pad_slack[0]), pad_slack[1]

    served = ServedModel(name, folder, ServeConfig(threads=threads))
    p = served._pool.get()
    served._pool.put(p)
    key = ("classify", False) if served.task == "text-classification" else ("embeddings", "mean", True)
    cases = []  # (row facts, {part: fn running every text once})
    for workload, words in WORKLOADS.items():
        texts = sentences(max(batches), words=words)  # every batch size runs these same rows
        lens = [len(e.ids) for e in p.tokenizer.encode_batch(texts)]
        for B in batches:
            chunks = [texts[i:i + B] for i in range(0, len(texts), B)]
            encs = [p.encode(c) for c in chunks]
            payloads = [[{"texts": [t], "pairs": []} for t in c] for c in chunks]
            facts = {"model": name, "workload": workload, "batch": B, "rows": len(texts),
                     "tokens_mean": statistics.mean(lens), "tokens_max": max(lens),
                     "pad_ratio": sum(e.feeds["input_ids"].size for e in encs) / sum(lens)}
            cases.append((facts, {"tokenize": lambda c=chunks: [p.encode(x) for x in c],
                                  "ort": lambda e=encs: [p.session.run(x.feeds) for x in e],
                                  "served": lambda pl=payloads: [served.run(key, x) for x in pl]}))
    for _, parts in cases:  # warm-up: every shape once
        for fn in parts.values():
            fn()
    times = [{part: [] for part in parts} for _, parts in cases]
    busy0, own0 = _busy(), time.process_time()
    for _ in range(rounds):  # interleaved: a slow phase of the machine hits every batch size alike
        for (_, parts), t in zip(cases, times):
            for part, fn in parts.items():
                t0 = time.perf_counter()
                fn()
                t[part].append((time.perf_counter() - t0) * 1e3)
    others = (_busy() - busy0) - (time.process_time() - own0)  # CPU seconds other processes used meanwhile
    wall = sum(sum(sum(v) for v in t.values()) for t in times) / 1e3
    rows = [{**facts, "others_cores": others / wall,
             **{f"{part}_ms_row": statistics.median(v) / facts["rows"] for part, v in t.items()}}
            for (facts, _), t in zip(cases, times)]
    conn.send(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; each runs every (workload, batch, part)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (bench_serve.py's servers: 1)")
    ap.add_argument("--work", default="/tmp/edgeport-bench-serve", help="bench_serve.py's artifacts")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--pad-slack", type=float, nargs=2, metavar=("TOKENS", "RATIO"),
                    help="by_length's grouping cut instead of edgeport.serve.models' PAD_SLACK_TOKENS/RATIO")
    ap.add_argument("--models", nargs="+", default=["mobilebert", "minilm"], metavar="NAME[=FOLDER]",
                    help="bench_serve.py's models by name, or other export folders as NAME=FOLDER")
    a = ap.parse_args(argv)
    from bench_serve import edgeport_artifacts

    arts = edgeport_artifacts(Path(a.work))
    print(f"loadavg before: {open('/proc/loadavg').read().strip()}", flush=True)
    ctx, rows = mp.get_context("spawn"), []
    for spec in a.models:
        name, _, folder = spec.partition("=")
        here, there = ctx.Pipe()
        proc = ctx.Process(target=profile, args=(name, folder or str(arts[name]), a.batches, a.rounds, a.threads,
                                                 there, a.pad_slack))
        proc.start()
        rows += here.recv()
        proc.join()
        time.sleep(0.3)
    print(f"loadavg after: {open('/proc/loadavg').read().strip()}")
    print(f"\nper-row ms, {a.threads} intra-op threads (served = the server's worker call: tokenize + run + "
          "post-process)")
    print(f"{'model':10s} {'workload':9s} {'B':>3s} {'tok mean/max':>12s} {'pad':>5s} {'tokenize':>8s} {'ort':>7s} "
          f"{'served':>7s} {'gain':>5s} {'others':>6s}")
    base = {}
    for r in rows:
        k = (r["model"], r["workload"])
        base.setdefault(k, r["served_ms_row"])
        print(f"{r['model']:10s} {r['workload']:9s} {r['batch']:3d} {r['tokens_mean']:6.1f}/{r['tokens_max']:<5d} "
              f"{r['pad_ratio']:5.2f} {r['tokenize_ms_row']:8.3f} {r['ort_ms_row']:7.3f} {r['served_ms_row']:7.3f} "
              f"{base[k] / r['served_ms_row']:4.2f}x {r['others_cores']:6.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
