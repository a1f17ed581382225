"""The phone web demo's latency in the browser (LiteRT.js, Wasm + XNNPACK) beside native LiteRT
(ai-edge-litert, XNNPACK) on the same machine and the same .tflite files, at the export's length.

    python benchmarks/bench_mobile_web.py --fp32 EXPORT_DIR --int8 EXPORT_DIR [--rounds 5 --calls 10]

Four contenders, each in its own process: native fp32 / int8 (a Python worker from benchmarks/common.py,
one signature-runner call per timing) and browser fp32 / int8 (headless Chromium under phone emulation,
mobile_demo/web/bench/driver.mjs, performance.now() around one LiteRT.js run inside the page). Both
sides run the same window ([CLS] question [SEP] passage [SEP], padded) with the same thread count.
Rounds interleave the contenders with a settle pause; medians over all rounds. Needs `npm ci` and
`node setup.mjs` in mobile_demo/web and Debian's chromium.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SETTLE_S, THREADS, _worker

WEB = Path(__file__).resolve().parents[1] / "mobile_demo" / "web"
QUESTION = "Who built the lighthouse?"
PASSAGE = ("The lighthouse on Skarv Point was built in 1874 by the engineer Marta Lindqvist. Its lamp, first "
           "fired with paraffin, was electrified in 1931 and can be seen 18 nautical miles out to sea. The last "
           "keeper, Jonas Berg, left the island in 1989, when the light became automatic.")  # samples.js's first


class NativeLiteRT:
    """Picklable factory: a LiteRT interpreter (XNNPACK) on the pipeline's first window of the sample."""

    def __init__(self, folder: str, threads: int):
        self.folder, self.threads = folder, threads

    def __call__(self):
        from ai_edge_litert.interpreter import Interpreter

        import edgeport.runtime as rt

        qa = rt.pipeline(self.folder)
        feeds = qa.pad(qa._windows(QUESTION, PASSAGE, qa.static_len, min(qa.static_len // 2, 128))).feeds
        interp = Interpreter(model_path=str(Path(self.folder) / qa.manifest.artifact), num_threads=self.threads)
        runner = interp.get_signature_runner()
        feeds = {k: v.astype("int32") for k, v in feeds.items()}
        return lambda: runner(**feeds)


class Native:
    def __init__(self, folder: str, threads: int):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(NativeLiteRT(folder, threads), child, threads), daemon=True)
        self.proc.start()
        child.close()
        assert self.conn.recv() == "ready"

    def times(self, n: int) -> list:
        self.conn.send(n)
        return self.conn.recv()

    def close(self):
        self.conn.send(None)
        self.proc.join(10)


class Browser:
    def __init__(self, variant: str, folder: str, threads: int):
        self.proc = subprocess.Popen(["node", "bench/driver.mjs", variant, folder, str(threads)], cwd=WEB,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"browser driver for {variant} did not start: {line!r}")
        self.info = json.loads(line[len("ready "):])

    def times(self, n: int) -> list:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()  # end of input: the driver closes the browser
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", required=True)
    ap.add_argument("--int8", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args(argv)
    cpu = Path("/proc/cpuinfo").read_text().split()
    flags = sorted({f for f in ("avx2", "avx512f", "avx512_vnni") if f in cpu})
    print(f"threads {args.threads}; CPU flags {flags}; loadavg before {loadavg()}")
    contenders = {}
    for variant in ("fp32", "int8"):  # started one at a time: loading does not overlap timing
        folder = str(Path(getattr(args, variant)).resolve())
        contenders[f"native {variant}"] = Native(folder, args.threads)
        contenders[f"browser {variant}"] = Browser(variant, folder, args.threads)
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, c in contenders.items():
            time.sleep(SETTLE_S)
            times[name].extend(c.times(args.calls))
    for c in contenders.values():
        c.close()
    med = {name: statistics.median(t) for name, t in times.items()}
    seq = contenders and json.loads((Path(args.fp32) / "edgeport.json").read_text())["inputs"][0]["shape"][-1]
    print(f"length {seq}; {args.rounds} rounds x {args.calls} calls; loadavg after {loadavg()}")
    print("| contender | median ms | p10-p90 ms | browser / native |")
    print("|---|---|---|---|")
    for name, t in times.items():
        q = statistics.quantiles(t, n=10)
        variant = name.split()[1]
        ratio = f"{med[name] / med['native ' + variant]:.2f}x" if name.startswith("browser") else ""
        print(f"| {name} | {med[name]:.1f} | {q[0]:.1f}-{q[-1]:.1f} | {ratio} |")
    for variant in ("fp32", "int8"):
        m = json.loads((Path(getattr(args, variant)) / "edgeport.json").read_text())
        print(f"{variant}: {m['artifact']} {m['size_bytes'] / 2**20:.1f} MiB ({m['precision']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
