"""benchmarks/bench_lowerings.py `defaults`: the rule and what it leaves alone (synthetic rows, no timing)."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_lowerings  # noqa: E402


def _row(model, family, precision, medians, load=1.5):
    keys = ("task", "seq_len", "batch", "p90_ms", "calls", "date", "cpu_model", "flags", "threads", "command")
    return {"model": model, "family": family, "target": "onnx", "precision": precision, "median_ms": medians,
            "load_before": [load, 1, 1], "load_after": [load, 1, 1], "cpu_class": "avx2", "onnxruntime": "1.32.0",
            **{k: None for k in keys}}


def test_defaults_rewrites_measured_families_and_keeps_the_others(tmp_path, monkeypatch):
    cited = {"family": "megatron-bert", "target": "onnx", "precision": "fp32", "lowering": "generic",
             "score": {"generic": 1.0, "default": 1.02}}
    table = {"classes": {"avx2": {"note": "n", "defaults": {
        "bert/onnx/fp32": {"family": "bert", "lowering": "generic"}, "megatron-bert/onnx/fp32": cited}},
        "avx512_vnni": {"defaults": {"bert/onnx/fp32": {"family": "bert", "lowering": "default"}}}}}
    defaults = tmp_path / "defaults.json"
    defaults.write_text(json.dumps(table))
    # two models: default wins on one by 10%, loses on the other by 2%; a loaded row is left out
    rows = [_row("minilm", "bert", "fp32", {"default": 10.0, "generic": 11.0, "optimum": 1.0}),
            _row("bert-base", "bert", "fp32", {"default": 102.0, "generic": 100.0}),
            _row("bert-base", "bert", "fp32", {"default": 500.0, "generic": 100.0}, load=3.0)]
    results = tmp_path / "rows.json"
    results.write_text(json.dumps(rows))
    monkeypatch.setattr(bench_lowerings, "DEFAULTS", defaults)
    bench_lowerings.write_defaults(SimpleNamespace(results=results, cpu_class="avx2", max_load=2.5))
    out = json.loads(defaults.read_text())["classes"]
    bert = out["avx2"]["defaults"]["bert/onnx/fp32"]
    # geometric means of median / row's best: default sqrt(1.0 * 1.02), generic sqrt(1.1 * 1.0)
    assert bert["lowering"] == "default" and bert["score"] == {"default": 1.01, "generic": 1.0488}
    assert len(bert["measurements"]) == 2  # the loaded row did not vote
    assert out["avx2"]["defaults"]["megatron-bert/onnx/fp32"] == cited  # not measured here: kept
    assert out["avx2"]["note"] == "n" and out["avx512_vnni"] == table["classes"]["avx512_vnni"]
