"""Decode ms/token of edgeport's two KV-cache layouts (`--kv-layout stacked|per-layer`) against
onnxruntime-genai's builder, fp32 and int4, on the checkpoint benchmarks/report_decoders.py uses.

    python benchmarks/bench_kv_layout.py build --report-work DIR --work OUT     # under the shared lock
    flock /tmp/edgeport-bench.lock python benchmarks/bench_kv_layout.py time --work OUT [--rounds 5] [--json F]

`build` exports the checkpoint under DIR (report_decoders' `prepare`: DIR/ckpt-250m) four ways, each in a
child process: stacked and per-layer fp32 (`export(..., kv_layout=...)`, default lowering) and their int4
copies (quantize scheme `int4`, as report_decoders' `measure` makes it), and links DIR's GenAI folders
(genai-fp32, genai-int4, built by report_decoders' `measure`). `time` times the six as
report_decoders.time_decoding does (prompt 128, 64 greedy steps, a fresh process per contender per round,
peers/decode_once.py; interleaved rounds) and keeps every round: median ms/token over rounds, the median
of the per-round ratios per-layer / stacked (same round, so slow phases of a shared machine cancel), the
load average after each round and the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report_decoders import PROMPT, STEPS, decode_once  # noqa: E402
from report_encoders import run_child  # noqa: E402

from edgeport.runtime.machine import machine_facts  # noqa: E402

LAYOUTS = ("stacked", "per-layer")


def folders(work: Path) -> dict:
    """label "CONTENDER PRECISION" -> folder, in the order every round times them."""
    out = {}
    for prec in ("fp32", "int4"):
        for layout in LAYOUTS:
            out[f"edgeport-{layout} {prec}"] = work / f"ep-{layout}-{prec}"
        out[f"onnxruntime-genai {prec}"] = work / f"genai-{prec}"
    return out


def build(report_work: Path, work: Path) -> None:
    """The four edgeport folders from report_work/ckpt-250m, and links to report_work's GenAI folders."""
    ckpt, paths = report_work / "ckpt-250m", folders(work)
    for layout in LAYOUTS:
        fp32, int4 = paths[f"edgeport-{layout} fp32"], paths[f"edgeport-{layout} int4"]
        for folder in (fp32, int4):
            shutil.rmtree(folder, ignore_errors=True)
        r32 = run_child(f"from edgeport.export import export; export({str(ckpt)!r}, 'onnx', 'text-generation', "
                        f"out_dir={str(fp32)!r}, quiet=True, kv_layout={layout!r})")
        r4 = run_child("from edgeport.quantize import perplexity, quantize_artifact; perplexity.MAX_TOKENS = 512; "
                       f"quantize_artifact({str(fp32)!r}, 'int4', out_dir={str(int4)!r}, quiet=True)")
        print(f"{layout}: fp32 {r32}, int4 {r4}", flush=True)
    for prec in ("fp32", "int4"):
        link = paths[f"onnxruntime-genai {prec}"]
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(report_work / f"genai-{prec}")


def time_rounds(paths: dict, venv: Path, rounds: int) -> dict:
    """Every contender once per round, each in a fresh process -> {"rounds": [{label: ms/token, "load": 1-min
    load after the round}], "median": {label: ms/token}, "per_layer_over_stacked": {precision: median ratio}}."""
    rows = []
    for _ in range(rounds):
        row = {label: decode_once("genai" if "genai" in label else "edgeport", folder, venv, PROMPT, STEPS)
               ["ms_per_token"] for label, folder in paths.items()}
        rows.append({**row, "load": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    median = {label: statistics.median(r[label] for r in rows) for label in paths}
    ratio = {prec: statistics.median(r[f"edgeport-per-layer {prec}"] / r[f"edgeport-stacked {prec}"] for r in rows)
             for prec in ("fp32", "int4")}
    return {"rounds": rows, "median": median, "per_layer_over_stacked": ratio}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=("build", "time"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--report-work", type=Path, help="build: report_decoders' --work (checkpoint, GenAI folders)")
    ap.add_argument("--genai-venv", type=Path, default=Path("/tmp/genai-venv"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.phase == "build":
        return build(a.report_work, a.work)
    before = os.getloadavg()
    result = {**time_rounds(folders(a.work), a.genai_venv, a.rounds), "prompt": PROMPT, "steps": STEPS,
              "cpu_flags": machine_facts().flags, "load_before": before}
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}), flush=True)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
