"""Measured default lowerings per CPU feature class: the table in lowering_defaults.json, and its reader.

Which lowering of a family runs fastest depends on the CPU (onnxruntime's MLAS picks AVX2, AVX-512 or
VNNI kernels; its fused Attention / QAttention kernels and the plain MatMul graph gain differently), so
the default an export takes when no `--lowering` is given is measured per class, not fixed. The file:

    {"classes": {"<class>": {"flags": "...", "defaults": {"<family>/<target>/<precision>": ENTRY}}}}

with precision "fp32" (no quantization) or a scheme tag (edgeport.schemes.Scheme.tag, e.g. "int8-dyn-pc"
for `--quantize int8`), and ENTRY = {"lowering": the chosen name, "rule": how it was chosen, "score": per
lowering, "measurements": [{"model", "task", "seq_len", "batch", "median_ms": {lowering or peer: ms},
"load_before", "date", "cpu_model", "flags", "onnxruntime", "threads", "command", ...}]}. Classes are
the names edgeport.runtime.machine.cpu_class returns (the CPU detection lives in the runtime, which ops/
may not import; the exporter joins the two). benchmarks/bench_lowerings.py measures a class and rewrites
its entries; entries taken from earlier measurements say where they came from ("source").

Standard library only.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

DEFAULTS_FILE = Path(__file__).with_name("lowering_defaults.json")
SHOWN_AS = "edgeport/ops/lowering_defaults.json"  # how messages and manifests name the table


def load_table(path: str | Path | None = None) -> dict:
    """The parsed table ({"classes": {...}}) of `path` (default DEFAULTS_FILE, read once per path); raises
    OSError for a missing file, ValueError (json.JSONDecodeError included) for a malformed one."""
    return _read(str(path or DEFAULTS_FILE))


@functools.lru_cache(maxsize=4)
def _read(path: str) -> dict:
    table = json.loads(Path(path).read_text())
    if not isinstance(table.get("classes"), dict):
        raise ValueError(f"{path}: no 'classes' object")
    return table


def measured_classes(table: dict | None = None) -> list[str]:
    """Sorted names of the CPU classes the table has measured defaults for."""
    return sorted((table or load_table())["classes"])


def measured_default(family: str, target: str, precision: str, cpu_class: str | None,
                     table: dict | None = None) -> dict | None:
    """The table's entry for (family, target, precision) on `cpu_class` (a dict with at least "lowering"
    and "measurements"), or None when the class is None or unmeasured, or the entry is missing."""
    if cpu_class is None:
        return None
    cls = (table or load_table())["classes"].get(cpu_class) or {}
    return (cls.get("defaults") or {}).get(f"{family}/{target}/{precision}")


def per_model(entry: dict) -> dict:
    """{model: {lowering or peer: ms}}: per model, the geometric mean over its measurements (repeated runs)
    of each contender's median, so the order agrees with the ratio rule benchmarks/bench_lowerings.py
    chooses by; contenders missing from a run are left out of that model."""
    runs = {}
    for m in entry["measurements"]:
        runs.setdefault(m["model"], []).append(m["median_ms"])
    out = {}
    for model, meds in runs.items():
        names = set.intersection(*(set(ms) for ms in meds))
        out[model] = {n: round(math.exp(sum(math.log(ms[n]) for ms in meds) / len(meds)), 2) for n in sorted(names)}
    return out


def runner_up_line(entry: dict) -> str:
    """'41.2 vs default 47.9 ms (bert-base @128)' per model, joined by '; ': the chosen lowering's median
    (per_model) against the fastest other lowering's; peers (e.g. "optimum") left out."""
    chosen, parts = entry["lowering"], []
    seq = {m["model"]: m["seq_len"] for m in entry["measurements"]}
    for model, ms in per_model(entry).items():
        others = {k: v for k, v in ms.items() if k not in (chosen, "optimum")}
        if chosen not in ms or not others:
            continue
        other = min(others, key=others.get)
        parts.append(f"{ms[chosen]:.1f} vs {other} {others[other]:.1f} ms ({model} @{seq[model]})")
    return "; ".join(parts)
