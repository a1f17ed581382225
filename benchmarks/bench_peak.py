"""This machine's matmul limits in onnxruntime (MLAS), the yardstick for every latency goal.

    python benchmarks/bench_peak.py [--threads 2] [--n 2048]

Times one (N, N) x (N, N) MatMul in fp32 and one MatMulInteger (u8 x s8, what int8 dynamic
quantization runs) at --threads intra-op threads, and the same at BERT-base shapes (128 x 768 x 3072),
each in its own process (benchmarks/common.py), medians. The graphs and sessions are
edgeport.runtime.machine's: `edgeport bench` measures its limits with the same ones, in one process.
Prints GFLOP/s (GOP/s for int8: one multiply-add = 2 ops) and the int8/fp32 throughput ratio, which
bounds what int8 can save: on a CPU without AVX-512 VNNI the u8 x s8 kernels (vpmaddubsw) are far
from 4x fp32.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure

from edgeport.runtime.machine import matmul_runner  # (the one-node graphs `edgeport bench` times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    shapes = {f"{a.n}^3": (a.n, a.n, a.n), "128x768x3072": (128, 768, 3072)}
    makers = {f"{kind} {name}": functools.partial(matmul_runner, kind, *shape, a.threads)
              for name, shape in shapes.items() for kind in ("fp32", "int8")}
    calls = {name: 5 if "^3" in name else 50 for name in makers}
    times = measure(makers, rounds=a.rounds, calls=max(calls.values()) // 5, threads=a.threads)
    print(f"onnxruntime MLAS matmul, {a.threads} threads, median of {a.rounds} rounds")
    rate = {}
    for name, t in times.items():
        m, k, n = shapes[name.split()[1]]
        ms = statistics.median(t)
        rate[name] = 2 * m * k * n / ms / 1e6
        print(f"  {name:22s} {ms:9.3f} ms  {rate[name]:8.1f} G{'FLOP' if 'fp32' in name else 'OP'}/s")
    for name in shapes:
        print(f"  int8/fp32 throughput at {name}: {rate[f'int8 {name}'] / rate[f'fp32 {name}']:.2f}x")


if __name__ == "__main__":
    main()
