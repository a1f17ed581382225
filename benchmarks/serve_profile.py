"""Where `edgeport serve`'s CPU goes under load: py-spy samples of a server while bench_serve.py loads it.

    python benchmarks/serve_profile.py [--model minilm|mobilebert] [--workload short|sentences]
                                       [--seconds 10] [--workers 2] [--threads 1]
                                       [--server-args "--max-batch 1 --max-wait-ms 0"]

Starts one server (bench_serve.py's folders and settings: batched unless --server-args says otherwise),
loads it at concurrency 64 with bench_serve.py's client while `py-spy record --format raw` samples
every thread of the server (idle samples dropped), then sorts the samples into buckets by the
innermost frame that names one (onnxruntime's run, tokenization, JSON, pydantic, HTTP, ...), per
thread kind (the event loop vs the batch workers and onnxruntime's own threads). Needs py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bucket -> substrings of a frame ("function (file:line)"); the innermost frame that matches wins
BUCKETS = [
    ("onnxruntime run", ("run (onnxruntime/",)),
    ("tokenize", ("encode_batch", "encode (edgeport/runtime/pipelines/base.py", "tokenizers")),
    ("pad feeds", ("pad (edgeport/runtime/pipelines/base.py",)),
    ("json", ("json/", "dumps", "jsonable", "tolist", "render (starlette/responses")),
    ("pydantic / fastapi", ("pydantic", "fastapi/")),
    ("http (uvicorn, starlette)", ("uvicorn/", "starlette/", "httptools", "h11")),
    ("batching", ("edgeport/serve/batching.py",)),
    ("served model (python)", ("edgeport/serve/models.py", "edgeport/runtime/")),
    ("event loop", ("asyncio/", "uvloop", "run_forever", "select", "epoll")),
]


def bucket(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, keys in BUCKETS:
            if any(k in frame for k in keys):
                return name
    return "other"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm", choices=["minilm", "mobilebert"])
    ap.add_argument("--workload", default="short", choices=["short", "sentences"])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--server-args", default="", help="extra `edgeport serve` options")
    ap.add_argument("--work", default="/tmp/edgeport-bench-serve")
    a = ap.parse_args(argv)
    import bench_serve as bs

    if not shutil.which("py-spy"):
        sys.exit("needs py-spy (pip install py-spy)")
    arts = bs.edgeport_artifacts(Path(a.work))
    server = bs.edgeport_server(a.model, arts[a.model], 18480, True, a.threads, a.server_args, a.workers)
    raw = Path(a.work) / f"profile-{a.model}-{a.workload}.txt"
    try:
        server.ready()
        url, bodies, _ = bs.targets_for({(a.model, True): server}, bs.sentences(2000, words=bs.WORKLOADS[a.workload])
                                        )[f"{a.model} edgeport batched"]
        asyncio.run(bs.load(url, bodies[:128], 64, 30))  # warm-up
        done = threading.Event()
        result = {}

        def drive():
            while not done.is_set():
                r = asyncio.run(bs.load(url, bodies, 64, a.seconds + 2))
                result.setdefault("n", 0)
                result["n"] += len(r["latencies"])

        t = threading.Thread(target=drive)
        t.start()
        time.sleep(1)
        subprocess.run(["py-spy", "record", "--pid", str(server.proc.pid), "--format", "raw", "--output", str(raw),
                        "--duration", str(a.seconds), "--rate", "200", "--threads", "--nonblocking"],
                       capture_output=True, check=True)
        done.set()
        t.join()
    finally:
        server.stop()
    per = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        thread = "event loop" if "MainThread" in stack.split(";")[0] else "worker threads"
        per[(thread, bucket(stack))] += int(n)
    total = sum(per.values())
    print(f"{a.model} {a.workload} {a.server_args or 'batched'}: {total} busy samples at 200 Hz over "
          f"{a.seconds} s ({total / 200 / a.seconds:.2f} cores busy on average)")
    for (thread, name), n in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {thread:15s} {name:28s} {100 * n / total:5.1f}%")


if __name__ == "__main__":
    main()
