"""Measured default lowerings per CPU class (edgeport/ops/lowering_defaults.json): the table's entries follow
their own numbers, the exporter takes the entry of the detected (or `--cpu-class`) class and precision, a
named `--lowering` wins, an unknown class falls back to the static default, and the manifest says which,
on which class and why. The CPU flags are patched; nothing here is timed.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest

from edgeport.errors import EdgeportError
from edgeport.export.lowerings import choose_lowering
from edgeport.ops import lowering_defaults as ld
from edgeport.ops.registry import lowerings_for
from edgeport.runtime import machine
from edgeport.schemes import resolve

REAL_DETECT = machine.detect_cpu_class  # conftest pins detection to "unknown" for every test; undone here
FLAGS = {"avx2": ["AVX2", "FMA"],
         "avx512_vnni": ["AVX2", "FMA", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16", "AMX-INT8", "AMX-BF16"]}
SCHEME_OF_TAG = {resolve(s, "onnx").tag: s for s in ("int8", "int8-static", "int4", "fp16")}


def on_cpu(monkeypatch, flags):
    """Detection as on a machine whose /proc/cpuinfo lists `flags` (CPU_FLAGS' names)."""
    monkeypatch.setattr(machine, "detect_cpu_class", REAL_DETECT)
    monkeypatch.setattr(machine, "_cpuinfo", lambda: ("patched CPU", list(flags)))


def entries():
    table = ld.load_table()
    return [(cls, key, e) for cls, c in table["classes"].items() for key, e in c["defaults"].items()]


def test_cpu_class_from_flags():
    assert machine.cpu_class(FLAGS["avx512_vnni"]) == "avx512_vnni"  # AMX falls in the VNNI class
    assert machine.cpu_class(["AVX2", "FMA", "AVX-512F"]) == "avx2"  # AVX-512 without VNNI
    assert machine.cpu_class(["AVX2", "FMA", "AVX-VNNI"]) == "avx2"
    assert machine.cpu_class(["AVX2"]) is None and machine.cpu_class(["NEON", "NEON dot product"]) is None
    assert machine.cpu_class([]) is None


def test_table_classes_and_entries_follow_their_numbers():
    """Every class is one cpu_class can return; every entry names a registered lowering, and that lowering
    has the smallest geometric mean of median / fastest median over its measurements (the stated rule)."""
    assert set(ld.measured_classes()) <= set(machine.CPU_CLASSES) and "avx2" in ld.measured_classes()
    assert entries(), "empty table"
    for cls, key, e in entries():
        family, target, precision = key.split("/")
        assert (e["family"], e["target"], e["precision"]) == (family, target, precision)
        assert precision == "fp32" or precision in SCHEME_OF_TAG, key
        assert e["lowering"] in lowerings_for(family, target), (cls, key)
        names = set.intersection(*({n for n in m["median_ms"] if n != "optimum"} for m in e["measurements"]))
        assert e["lowering"] in names and len(names) >= 2, (cls, key)
        score = {n: math.exp(sum(math.log(m["median_ms"][n] / min(m["median_ms"][k] for k in names))
                                 for m in e["measurements"]) / len(e["measurements"])) for n in names}
        assert min(score, key=score.get) == e["lowering"], (cls, key, score)
        for m in e["measurements"]:  # the numbers say where they come from
            for field in ("model", "seq_len", "batch", "date", "cpu_model", "flags", "onnxruntime", "threads",
                          "load_before", "command"):
                assert m.get(field) not in (None, "", []), (cls, key, field)
            assert machine.cpu_class(m["flags"]) == cls, (cls, key, m["flags"])


@pytest.mark.parametrize("cls", sorted(FLAGS))
def test_choice_follows_the_table_for_each_class(monkeypatch, cls):
    on_cpu(monkeypatch, FLAGS[cls])
    mine = [(key, e) for c, key, e in entries() if c == cls]
    for key, e in mine:
        family, target, precision = key.split("/")
        quantize = None if precision == "fp32" else SCHEME_OF_TAG[precision]
        low, choice = choose_lowering(family, target, None, quantize)
        assert low.name == e["lowering"] and choice.why == "measured", key
        assert (choice.cpu_class, choice.cpu_class_from, choice.precision) == (cls, "detected", precision)
        assert choice.line.startswith(f"lowering {e['lowering']}: measured default for {precision} on {cls}")
        assert ld.SHOWN_AS in choice.line and " vs " in choice.line
        runs = {}
        for m in e["measurements"]:  # repeated runs of a model: the geometric mean of each lowering's medians
            runs.setdefault(m["model"], []).append(m["median_ms"])
        assert choice.to_dict()["measured_ms"] == {
            model: {n: round(statistics.geometric_mean([r[n] for r in rs]), 2) for n in rs[0]}
            for model, rs in runs.items()}
        shown = choice.to_dict()["measured_ms"]  # "measured fastest" holds for the numbers the line shows
        assert all(ms[e["lowering"]] <= min(ms.values()) * 1.15 for ms in shown.values()), shown


def test_choice_switches_with_the_class_and_the_precision(monkeypatch, tmp_path):
    """A table whose classes disagree: the same export takes each class's entry, int8 its own."""
    def entry(low, precision, ms):
        return {"family": "bert", "target": "onnx", "precision": precision, "lowering": low,
                "measurements": [{"model": "m", "seq_len": 128, "median_ms": ms}]}
    table = {"classes": {
        "avx2": {"defaults": {"bert/onnx/fp32": entry("default", "fp32", {"default": 1.0, "generic": 2.0})}},
        "avx512_vnni": {"defaults": {
            "bert/onnx/fp32": entry("generic", "fp32", {"default": 2.0, "generic": 1.0}),
            "bert/onnx/int8-dyn-pc": entry("default", "int8-dyn-pc", {"default": 3.0, "generic": 4.0})}}}}
    (tmp_path / "t.json").write_text(json.dumps(table))
    monkeypatch.setattr(ld, "DEFAULTS_FILE", tmp_path / "t.json")
    on_cpu(monkeypatch, FLAGS["avx2"])
    assert choose_lowering("bert", "onnx", None, None)[0].name == "default"
    low, choice = choose_lowering("bert", "onnx", None, "int8")  # no int8 entry on avx2: static default
    assert (low.name, choice.why) == ("default", "default") and "no measured default for int8-dyn-pc" in choice.line
    on_cpu(monkeypatch, FLAGS["avx512_vnni"])
    assert choose_lowering("bert", "onnx", None, None)[0].name == "generic"
    low, choice = choose_lowering("bert", "onnx", None, "int8")
    assert (low.name, choice.why) == ("default", "measured") and "3.0 vs generic 4.0 ms (m @128)" in choice.line
    # int4 cannot reach fused weights: no int4 entry, so the unfused rule still picks generic
    assert choose_lowering("bert", "onnx", None, "int4")[1].why == "unfused for int4"
    # another machine's class, named: its entry, whatever this machine is
    low, choice = choose_lowering("bert", "onnx", None, None, cpu_class="avx2")
    assert (low.name, choice.cpu_class_from) == ("default", "--cpu-class")


def test_named_lowering_wins_and_unknown_class_falls_back(monkeypatch):
    on_cpu(monkeypatch, FLAGS["avx2"])
    avx2 = ld.measured_default("bert", "onnx", "fp32", "avx2")
    other = next(n for n in lowerings_for("bert", "onnx") if n != avx2["lowering"])
    low, choice = choose_lowering("bert", "onnx", other, None)
    assert (low.name, choice.why) == (other, "named")
    low, choice = choose_lowering("bert", "onnx", other, None, cpu_class="avx512_vnni")
    assert (low.name, choice.why) == (other, "named")
    on_cpu(monkeypatch, ["NEON", "NEON dot product"])  # an Arm machine: no measured class
    low, choice = choose_lowering("bert", "onnx", None, None)
    assert (low.name, choice.why, choice.cpu_class) == ("default", "default", None)
    assert "unknown CPU class" in choice.line
    with pytest.raises(EdgeportError, match="--cpu-class must be one of avx2"):
        choose_lowering("bert", "onnx", None, None, cpu_class="sse4")


def test_export_records_the_choice_and_cli_refusals(tmp_path, capsys):
    """`edgeport export --cpu-class avx2` (an export made here for an AVX2 server): the progress line names
    the measured choice; the manifest records lowering, class and why; `--lowering` still wins."""
    from edgeport.cli import main
    from edgeport.manifest import read_manifest

    want = ld.measured_default("bert", "onnx", "fp32", "avx2")["lowering"]
    assert main(["export", "--model", "bert-tiny", "--task", "feature-extraction", "--cpu-class", "avx2",
                 "-o", str(tmp_path / "a")]) == 0
    assert f"lowering {want}: measured default for fp32 on avx2 (--cpu-class; fastest by " in capsys.readouterr().err
    conv = read_manifest(tmp_path / "a")[0].converter
    assert conv["lowering"] == want
    assert {k: conv["lowering_choice"][k] for k in ("why", "precision", "cpu_class", "cpu_class_from", "table")} == \
        {"why": "measured", "precision": "fp32", "cpu_class": "avx2", "cpu_class_from": "--cpu-class",
         "table": ld.SHOWN_AS}
    other = next(n for n in lowerings_for("bert", "onnx") if n != want)
    assert main(["export", "--model", "bert-tiny", "--task", "feature-extraction", "--cpu-class", "avx2",
                 "--lowering", other, "-q", "-o", str(tmp_path / "b")]) == 0
    conv = read_manifest(tmp_path / "b")[0].converter
    assert conv["lowering"] == other and conv["lowering_choice"]["why"] == "named"
    capsys.readouterr()
    assert main(["export", "--model", "bert-tiny", "--cpu-class", "sse4", "-o", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cpu-class must be one of" in err and not (tmp_path / "c").exists()
    assert main(["export", "--model", "bert-tiny", "--target", "auto", "--cpu-class", "avx2",
                 "-o", str(tmp_path / "d")]) == 2
    assert "drop --cpu-class" in capsys.readouterr().err and not (tmp_path / "d").exists()
