"""Regenerate benchmarks/REPORT.md and its PNG plots: edgeport against its peers and this machine's limits.

    python benchmarks/report.py [--quick] [--out benchmarks/REPORT.md] [--work edgeport-out/report]
    python benchmarks/report.py --stages minilm decoders      # re-run some stages, keep the others' results
    python benchmarks/report.py --render-only                # re-render from the saved results JSON

Stages, each a child process writing WORK/results/STAGE.json (schema: report_render.py):
    machine   CPU model and flags, cores, versions and the measured fp32 / int8 MatMul and memory-bandwidth
              limits (edgeport.runtime.machine; the goals stage measures the MatMul limits again itself)
    minilm    all-MiniLM-L6-v2 real weights: export time / peak RSS / size, latency vs length and batch for
              edgeport ONNX and TFLite fp32/int8 and every peer, accuracy of int8, per-op profiles
    goals     BERT-base, MobileBERT, DeBERTa-v3-base @128: edgeport vs Optimum fp32/int8, MatMul FLOPs
    decoders  Mistral 250M: edgeport fp32/int4 vs onnxruntime-genai's builder fp32/int4, tokens/s, per-op
              profiles of one decode step (GenAI's graph in plain onnxruntime), bytes read per token
Untimed work (peer venvs from benchmarks/peers/*.sh, the goal models' exports, the decoder checkpoint) runs
without the lock; every measurement runs under the timing lock /tmp/edgeport-bench.lock (flock), taken
per stage so others can measure in between (--no-lock when the caller holds it already). The load average
is recorded before and after each stage: the report says when the machine was not idle.
--quick: MiniLM at 1 x 128 only, 2 rounds, a 125M decoder with 16 steps, no goal encoders (a smoke run),
written to benchmarks/REPORT-quick.md from edgeport-out/report-quick so it never replaces the full report.
--render-only refuses (exit 1, report untouched) when the work folder holds no measured results.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
LOCK = "/tmp/edgeport-bench.lock"
STAGES = ("machine", "minilm", "goals", "decoders")


@contextlib.contextmanager
def timing_lock(enabled: bool):
    """Hold flock(LOCK) for the block (the same lock `flock /tmp/edgeport-bench.lock CMD` takes)."""
    if not enabled:
        yield
        return
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(cmd: list) -> None:
    """Run a child with this interpreter, output passed through; CalledProcessError on failure."""
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([sys.executable, *map(str, cmd)], check=True, cwd=HERE.parent)


def stage_commands(stage: str, a, results: Path) -> tuple[list, list]:
    """(untimed prepare commands, timed commands: each runs under its own hold of the lock) of a stage."""
    q = ["--quick"] if a.quick else []
    w, out = a.work / stage, results / f"{stage}.json"
    if stage == "machine":
        return [], [[HERE / "report.py", "--machine-json", out, "--threads", a.threads]]
    if stage == "minilm":
        enc = [HERE / "report_encoders.py"]
        return [], [[*enc, "exports", "--which", "minilm", "--work", w, "--json", results / "minilm-exports.json",
                     "--optimum-venv", a.optimum_venv, *q],
                    [*enc, "measure", "--which", "minilm", "--work", w, "--json", out, *q]]
    if stage == "goals":
        return ([[HERE / "report_encoders.py", "prepare", "--which", "goals", "--work", w, "--optimum-venv",
                  a.optimum_venv]], [[HERE / "report_encoders.py", "measure", "--which", "goals", "--work", w,
                                     "--json", out, *q]])
    return ([[HERE / "report_decoders.py", "prepare", "--work", w, "--genai-venv", a.genai_venv, *q]],
            [[HERE / "report_decoders.py", "measure", "--work", w, "--json", out, "--genai-venv", a.genai_venv, *q]])


def machine_json(path: Path, threads: int) -> None:
    """Machine facts and measured limits (edgeport.runtime.machine) as the results' `machine` part."""
    from edgeport.runtime.machine import machine_facts, measure_limits

    f, lim = machine_facts(), measure_limits(threads)
    versions = dict(f.libraries)
    for name in ("torch", "transformers", "ai-edge-litert", "litert-torch"):
        with contextlib.suppress(Exception):
            import importlib.metadata

            versions[name] = importlib.metadata.version(name)
    machine = {"cpu": f.cpu_model, "flags": f.flags, "cores": f.usable_cpus, "threads": threads,
               "ram_gib": f.ram_gib, "versions": {k: v for k, v in versions.items() if v},
               "limits": {"fp32_gflops": lim.fp32_gflops, "int8_gops": lim.int8_gops,
                          "bandwidth_gbs": lim.memory_read_gbps, "copy_gbs": lim.memory_copy_gbps}}
    path.write_text(json.dumps({"machine": machine}, indent=1))


def peer_versions(venv: Path, names) -> str:
    """'name version, ...' of the packages installed in a peer venv (what its contenders ran with)."""
    code = ("import importlib.metadata as m, sys\nfor n in sys.argv[1:]:\n    try: print(n, m.version(n))\n"
            "    except m.PackageNotFoundError: print(n, 'absent')")
    if not (venv / "bin" / "python").exists():
        return f"({venv} not built)"
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code, *names], capture_output=True, text=True)
    return ", ".join(r.stdout.split("\n")[:-1]) if r.returncode == 0 else f"({venv} not built)"


def record_peers(results_dir: Path, a) -> None:
    """results/peers.json: one note per peer venv with its package versions."""
    notes = [f"Optimum venv ({a.optimum_venv}, benchmarks/peers/optimum_venv.sh): " + peer_versions(
                 a.optimum_venv, ["optimum-onnx", "transformers", "torch", "onnxruntime", "onnx"]),
             f"GenAI venv ({a.genai_venv}, benchmarks/peers/genai_venv.sh): " + peer_versions(
                 a.genai_venv, ["onnxruntime-genai", "transformers", "torch", "onnxruntime", "onnx"]),
             "Optimum's int8: onnxruntime quantize_dynamic (per-channel, QInt8) of its export; litert-torch's int8: "
             "ai-edge-quantizer dynamic_wi8_afp32 (shared/PEERS.md recipes). Every ONNX contender, Optimum's "
             "included, runs in the main venv's onnxruntime (see Versions); only GenAI runs in its own venv."]
    (results_dir / "peers.json").write_text(json.dumps({"notes": notes}, indent=1))


def merge(results_dir: Path, a) -> dict:
    """Every stage's JSON merged (lists concatenated, dicts updated), plus stages and the command."""
    res = {"latency": [], "exports": [], "accuracy": [], "decode": [], "profiles": [], "notes": [], "flops": {},
           "stages": [], "machine": {}}
    for p in sorted(results_dir.glob("*.json")):
        if p.name == "run.json" or p.name.startswith("stages"):
            continue
        part = json.loads(p.read_text())
        for k, v in part.items():
            if isinstance(v, list):
                res.setdefault(k, []).extend(v)
            elif isinstance(v, dict):
                res.setdefault(k, {}).update(v)
    log = {}
    logs = sorted(results_dir.glob("stages*.json"), key=lambda p: (p.name != "stages.json", p.name))
    for p in logs:  # stages.json (older runs' single log) first: a per-stage file is newer
        log.update(json.loads(p.read_text()))
    order = {s: i for i, s in enumerate(STAGES)}
    res["stages"] = sorted(log.values(), key=lambda r: (order.get(r["name"].split()[0], 9), r["name"]))
    run_file = results_dir / "run.json"
    res["quick"] = json.loads(run_file.read_text())["quick"] if run_file.exists() else a.quick
    res["command"] = "python benchmarks/report.py" + (" --quick" if a.quick else "")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run (minutes), not for quoting")
    ap.add_argument("--out", type=Path, help="default benchmarks/REPORT.md (--quick: benchmarks/REPORT-quick.md, "
                    "so a smoke run never replaces the full report)")
    ap.add_argument("--work", type=Path, help="default edgeport-out/report (--quick: edgeport-out/report-quick)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, help="stages to (re)run (default: all; --quick: "
                    "machine minilm decoders)")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-lock", action="store_true", help="the caller holds the timing lock already")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    ap.add_argument("--optimum-venv", type=Path, default=Path("/tmp/optimum-venv"))
    ap.add_argument("--genai-venv", type=Path, default=Path("/tmp/genai-venv"))
    ap.add_argument("--machine-json", type=Path, help=argparse.SUPPRESS)  # the machine stage's child
    a = ap.parse_args(argv)
    if a.machine_json:
        return machine_json(a.machine_json, a.threads)
    suffix = "-quick" if a.quick else ""
    a.out = a.out or HERE / f"REPORT{suffix}.md"
    a.work = (a.work or HERE.parent / "edgeport-out" / f"report{suffix}").resolve()
    results = a.work / "results"
    if a.render_only and not any(p.name not in ("run.json", "peers.json") and not p.name.startswith("stages")
                                 for p in results.glob("*.json")):
        sys.exit(f"report.py: error: no measured results in {results}: run the stages first "
                 f"(--render-only re-renders a finished run; {a.out} left as it is)")
    results.mkdir(parents=True, exist_ok=True)
    stages = [] if a.render_only else a.stages or (["machine", "minilm", "decoders"] if a.quick else list(STAGES))
    if "minilm" in stages or "goals" in stages:
        subprocess.run(["bash", str(HERE / "peers" / "optimum_venv.sh"), str(a.optimum_venv)], check=True)
    for stage in stages:
        prep, timed = stage_commands(stage, a, results)
        t0, log = time.perf_counter(), {}
        for cmd in prep:
            run(cmd)
        for i, cmd in enumerate(timed):
            with timing_lock(not a.no_lock):
                before, t1 = loadavg(), time.perf_counter()
                run(cmd)
                name = stage if len(timed) == 1 else f"{stage} ({cmd[1]})"
                log[name] = {"name": name, "loadavg_before": before, "loadavg_after": loadavg(),
                             "wall_s": round(time.perf_counter() - t1), "prep_and_wait_s": round(t1 - t0)}
            t0 = time.perf_counter()
            (results / f"stages-{stage}.json").write_text(json.dumps(log, indent=1))  # one file per stage:
            # two report.py runs (different --stages) may share the results folder
    if stages:
        record_peers(results, a)
        (results / "run.json").write_text(json.dumps({"quick": a.quick}))
    from report_render import render

    out = render(merge(results, a), a.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
