"""benchmarks/report_render.py on a tiny synthetic results dict: markdown and PNGs are written, and each
goal row says met / missed from the numbers given (no timing; matplotlib's Agg backend)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import report_render  # noqa: E402


def lat(model, contender, prec, ms, seq=128, batch=1, edgeport=False, backend="onnxruntime"):
    return {"model": model, "contender": contender, "backend": backend, "precision": prec, "seq": seq,
            "batch": batch, "median_ms": ms, "p90_ms": ms * 1.1, "edgeport": edgeport, "default": edgeport}


def synthetic() -> dict:
    latency = [
        lat("MiniLM", "edgeport ONNX", "fp32", 9.0, edgeport=True),  # 0.90x Optimum: met
        lat("MiniLM", "Optimum ONNX", "fp32", 10.0),
        lat("MiniLM", "PyTorch eager", "fp32", 5.0, backend="torch"),  # eager is not a deployment peer
        lat("MiniLM", "litert-torch TFLite", "fp32", 4.0, backend="LiteRT"),  # another backend: no ONNX peer
        lat("MiniLM", "edgeport ONNX", "int8", 6.0, edgeport=True),  # 1.20x Optimum int8: missed
        lat("MiniLM", "Optimum ONNX", "int8", 5.0),
        lat("DeBERTa-v3-base", "edgeport ONNX", "fp32", 80.0, edgeport=True),  # 0.80x: missed the 0.75x goal
        lat("DeBERTa-v3-base", "Optimum ONNX", "fp32", 100.0),
    ]
    latency += [lat("MiniLM", "edgeport ONNX", "fp32", 2.0 * s / 32, seq=s, edgeport=True) for s in (32, 64)]
    latency += [lat("MiniLM", "Optimum ONNX", "fp32", 2.5 * s / 32, seq=s) for s in (32, 64)]
    latency += [lat("MiniLM", "edgeport ONNX", "fp32", 9.0 * b, batch=b, edgeport=True) for b in (2, 4)]
    return {
        "machine": {"cpu": "Test CPU", "flags": ["AVX2", "AVX-512 VNNI"], "cores": 2, "threads": 2,
                    "versions": {"onnxruntime": "1.0"},
                    "limits": {"fp32_gflops": 100.0, "int8_gops": 400.0, "bandwidth_gbs": 20.0, "copy_gbs": 30.0}},
        "stages": [{"name": "minilm", "loadavg_before": "3.1 2.0 1.0", "loadavg_after": "3.5 2.2 1.1", "wall_s": 60,
                    "prep_and_wait_s": 0}],
        "latency": latency,
        # DeBERTa: 7.2e9 FLOP in 80 ms = 90 GFLOP/s = 90% of 100: met (>= 90%)
        "flops": {"DeBERTa-v3-base": 7.2e9},
        "exports": [{"model": "MiniLM", "contender": "edgeport ONNX", "precision": "fp32", "export_s": 20.0,
                     "peak_rss_mib": 900.0, "size_mib": 86.0},
                    {"model": "MiniLM", "contender": "Optimum ONNX", "precision": "fp32", "export_s": 30.0,
                     "peak_rss_mib": 1200.0, "size_mib": 86.2}],
        "accuracy": [{"model": "MiniLM", "contender": "edgeport ONNX", "scheme": "int8",
                      "metrics": {"embedding_cosine_mean": 0.99, "max_abs_diff": 0.1}}],
        # fp32: GenAI 46 / edgeport 37 ms = 1.24x tokens/s: met; int4: 12.6 / 13.3 = 0.95x: missed
        "decode": [{"model": "Mistral", "contender": "edgeport", "precision": "fp32", "ms_per_token": 37.0, "prefill_ms": 400},
                   {"model": "Mistral", "contender": "onnxruntime-genai", "precision": "fp32", "ms_per_token": 46.0,
                    "prefill_ms": 450},
                   {"model": "Mistral", "contender": "edgeport", "precision": "int4", "ms_per_token": 13.3, "prefill_ms": 300},
                   {"model": "Mistral", "contender": "onnxruntime-genai", "precision": "int4", "ms_per_token": 12.6,
                    "prefill_ms": 280}],
        "profiles": [{"model": "MiniLM", "contender": "edgeport ONNX", "precision": "fp32", "seq": 128,
                      "ops": {"MatMul": 5.0, "Attention": 3.0}},
                     {"model": "MiniLM", "contender": "Optimum ONNX", "precision": "fp32", "seq": 128,
                      "ops": {"MatMul": 4.0, "Softmax": 1.0}}],
        "notes": ["synthetic"],
    }


def by_goal(rows):
    return {(r["goal"].split()[0], r["model"], r["precision"]): r for r in rows}


def test_goal_rows_say_met_or_missed_from_the_numbers():
    rows = by_goal(report_render.goal_rows(synthetic()))
    assert rows[("default", "MiniLM", "fp32")]["met"] and rows[("default", "MiniLM", "fp32")]["ratio"] == pytest.approx(0.9)
    assert not rows[("default", "MiniLM", "int8")]["met"]
    assert rows[("default", "MiniLM", "int8")]["ratio"] == pytest.approx(1.2)  # eager (5 ms) is not the peer
    deberta = rows[("DeBERTa-v3-base", "DeBERTa-v3-base", "fp32")]
    assert not deberta["met"] and deberta["ratio"] == pytest.approx(0.8)
    limit = rows[("fp32", "DeBERTa-v3-base", "fp32")]
    assert limit["met"] and limit["ratio"] == pytest.approx(0.9)
    assert rows[("decode", "Mistral", "fp32")]["met"]
    assert rows[("decode", "Mistral", "fp32")]["ratio"] == pytest.approx(46 / 37)
    assert not rows[("decode", "Mistral", "int4")]["met"]


def test_render_writes_markdown_tables_and_small_pngs(tmp_path):
    out = report_render.render(synthetic(), tmp_path / "REPORT.md")
    text = out.read_text()
    goal_lines = [ln for ln in text.splitlines() if ln.startswith("| ") and ("| met |" in ln or "| **missed** |" in ln)]
    assert len(goal_lines) == 7
    assert any("DeBERTa-v3-base @128 <= 0.75x Optimum" in ln and "0.80x" in ln and "**missed**" in ln for ln in goal_lines)
    assert any("decode" in ln and "int4" in ln and "0.95x" in ln and "**missed**" in ln for ln in goal_lines)
    assert any("decode" in ln and "fp32" in ln and "1.24x" in ln and ln.endswith("| met |") for ln in goal_lines)
    assert "3.1 2.0 1.0" in text and "not idle" in text
    missed = [ln for ln in text.splitlines() if ln.startswith("- ") and "(" in ln]
    assert any(ln.startswith("- default") and "MiniLM int8" in ln and "not profiled" in ln for ln in missed)
    assert any(ln.startswith("- decode") and "int4" in ln and "not profiled" in ln for ln in missed)
    for png in ("latency-vs-length.png", "latency-vs-batch.png", "decode.png", "exports.png", "accuracy.png"):
        path = tmp_path / report_render.PNG_DIR / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert path.stat().st_size < 200_000
        assert f"]({report_render.PNG_DIR}/{png})" in text
    assert "| Attention | 3.00 | 0.00 |" in text  # profile table: edgeport's op absent from Optimum's graph
    assert "+3.00 ms per call in all; more time in Attention +3.00, MatMul +1.00; less in Softmax -1.00" in text


def test_a_fraction_above_the_limit_is_not_judged():
    res = synthetic()
    res["goal_limits"] = {"fp32_gflops": 50.0, "int8_gops": 400.0}  # 90 GFLOP/s achieved > 50 measured
    row = by_goal(report_render.goal_rows(res))[("fp32", "DeBERTa-v3-base", "fp32")]
    assert row["met"] is None and row["ratio"] == pytest.approx(1.8)
    assert "| 180% | >= 90% | not judged" in "\n".join(report_render.goals_table([row]))


def test_render_with_nothing_measured_still_writes_a_report(tmp_path):
    out = report_render.render({}, tmp_path / "REPORT.md")
    assert "## Goals (issue 15)" in out.read_text()
    assert not (tmp_path / report_render.PNG_DIR / "latency-vs-length.png").exists()


def test_idle_is_claimed_only_when_every_step_started_quiet():
    quiet = [{"loadavg_before": "0.21 0.30 0.40"}, {"loadavg_before": "0.45 0.3 0.2"}]
    assert "otherwise idle" in report_render.idle_sentence(quiet) and "not idle" not in report_render.idle_sentence(quiet)
    loaded = quiet + [{"loadavg_before": "0.9 0.5 0.4"}]
    assert "not idle" in report_render.idle_sentence(loaded) and "0.90" in report_render.idle_sentence(loaded)
    assert "No load average" in report_render.idle_sentence([])


def test_a_quick_report_gets_its_own_plot_folder(tmp_path):
    out = report_render.render(synthetic(), tmp_path / "REPORT-quick.md")
    assert (tmp_path / "report-quick-png" / "decode.png").exists()
    assert not (tmp_path / report_render.PNG_DIR).exists()
    assert "](report-quick-png/decode.png)" in out.read_text()


def test_render_only_without_results_refuses_and_keeps_the_report(tmp_path):
    import subprocess

    report = tmp_path / "REPORT.md"
    report.write_text("the full report\n")
    p = subprocess.run([sys.executable, str(Path(report_render.__file__).with_name("report.py")), "--render-only",
                        "--out", str(report), "--work", str(tmp_path / "work")], capture_output=True, text=True)
    assert p.returncode != 0 and "no measured results" in p.stderr and "Traceback" not in p.stderr
    assert report.read_text() == "the full report\n"
