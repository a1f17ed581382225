"""`edgeport bench` (runtime/bench*.py, machine.py, flops.py): FLOP and byte counts against hand counts
written from the architectures, CLI errors, and the --json report's fields. No timing assertions: only
orderings (median <= p90) and broad sanity (fractions in (0, 1.5))."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import VOCAB, save_hf

from edgeport.cli import main
from edgeport.errors import EdgeportError

# A tiny BERT encoder (feature extraction: every token's last hidden state is an output, so no layer can
# be pruned); counts below are written from BERT's architecture (Devlin et al.; transformers' BertModel),
# not from edgeport's code.
H, LAYERS, HEADS, FFN, POSITIONS = 32, 2, 4, 37, 64


def bert_flops(batch: int, seq: int) -> dict:
    """FLOP (2 per multiply-add) of a BERT encoder at batch x seq: the Q, K, V, O projections (H x H) and
    the two FFN layers (H x FFN, FFN x H) on every token; per layer and row the scores Q K^T and the
    weighted sum of V, each seq x seq x H multiply-adds (all heads together)."""
    tokens = batch * seq
    linear = 2 * tokens * LAYERS * (4 * H * H + 2 * H * FFN)
    attention = 2 * LAYERS * batch * (seq * seq * H + seq * seq * H)
    return {"linear": linear, "attention": attention}


@pytest.fixture(scope="module")
def bert_exports(tmp_path_factory):
    """{"default": fused onnxruntime graph, "generic": plain ONNX ops, "int8": dynamic int8 of default}."""
    import torch
    import transformers

    from edgeport.export import export
    from edgeport.quantize import quantize_artifact

    root = tmp_path_factory.mktemp("bench")
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=H, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=FFN,
                                  max_position_embeddings=POSITIONS)
    torch.manual_seed(0)
    ckpt = save_hf(transformers.BertModel(cfg, add_pooling_layer=False).eval(), root / "ckpt")
    out = {low: export(str(ckpt), task="feature-extraction", lowering=low, out_dir=root / low, quiet=True)
           for low in ("default", "generic")}
    out["int8"] = quantize_artifact(out["default"], "int8", out_dir=root / "int8", quiet=True)
    return out


def _feeds(folder, batch, seq):
    from edgeport.manifest import read_manifest
    from edgeport.runtime.bench import make_feeds

    m, _ = read_manifest(folder)
    return folder / m.artifact, make_feeds(m.inputs, batch, seq, len(VOCAB))


@pytest.mark.parametrize("lowering", ["default", "generic"])
@pytest.mark.parametrize("batch,seq", [(1, 16), (3, 40)])
def test_flops_match_hand_count(bert_exports, lowering, batch, seq):
    from edgeport.runtime.flops import count_flops

    path, feeds = _feeds(bert_exports[lowering], batch, seq)
    fc = count_flops(path, feeds)
    assert fc.complete, fc.not_counted
    assert fc.by_class == {"fp32": sum(bert_flops(batch, seq).values())}


def test_int8_flops_split_by_precision(bert_exports):
    """Dynamic int8: the projections and FFN count as int8, the attention products (activations x
    activations) stay fp32; the total is unchanged."""
    from edgeport.runtime.flops import count_flops

    path, feeds = _feeds(bert_exports["int8"], 2, 24)
    fc = count_flops(path, feeds)
    want = bert_flops(2, 24)
    assert fc.complete, fc.not_counted
    assert fc.total == sum(want.values())
    assert fc.by_class == {"int8": want["linear"], "fp32": want["attention"]}


def test_incomplete_count_gives_no_fraction(bert_exports):
    """An op edgeport does not count (Einsum here) makes the count incomplete: no fraction is invented."""
    import onnx
    from onnx import TensorProto, helper

    from edgeport.runtime.bench import compute_fraction
    from edgeport.runtime.flops import count_flops
    from edgeport.runtime.machine import MachineLimits

    g = helper.make_graph([helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")], "e",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    fc = count_flops(model, {"a": np.ones((4, 4), np.float32), "b": np.ones((4, 4), np.float32)})
    assert not fc.complete and "Einsum: not counted by edgeport" in fc.not_counted
    limits = MachineLimits(1, 100.0, 400.0, 10.0, 10.0, 1.0, False)
    fraction, why = compute_fraction(fc, 1e-3, limits)
    assert fraction is None and "Einsum" in why
    onnx.checker.check_model(model)


def test_matmul_limit_graphs_compute_the_product():
    """The one-node graphs the limits time compute x @ w (checked against numpy)."""
    import onnxruntime as ort

    from edgeport.runtime.machine import matmul_model

    for kind in ("fp32", "int8"):
        model, feeds = matmul_model(kind, 3, 8, 5)
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        import onnx

        w = onnx.numpy_helper.to_array(onnx.load_from_string(model).graph.initializer[0])
        want = feeds["x"].astype(np.int64) @ w.astype(np.int64) if kind == "int8" else feeds["x"] @ w
        np.testing.assert_allclose(sess.run(None, feeds)[0], want, rtol=1e-5)


def test_machine_facts_fields():
    from edgeport.runtime.machine import machine_facts

    f = machine_facts()
    assert f.cpu_model and f.logical_cpus >= f.usable_cpus >= 1
    assert f.libraries["onnxruntime"] and f.libraries["numpy"] and len(f.load_average) == 3
    with open("/proc/cpuinfo") as fh:
        cpuinfo = fh.read()
    assert ("AVX2" in f.flags) == (" avx2" in cpuinfo)
    assert ("AVX-512 VNNI" in f.flags) == (" avx512_vnni" in cpuinfo)


@pytest.fixture(scope="module")
def bench_json(bert_exports, tmp_path_factory):
    """One full run: limits measured for real (the only test that does), JSON written."""
    out = tmp_path_factory.mktemp("bench-json") / "bench.json"
    rc = main(["bench", str(bert_exports["default"]), "--lengths", "16,40", "--batch", "1,2", "--threads", "1",
               "--seconds", "0.2", "--json", str(out)])
    assert rc == 0
    return json.loads(out.read_text())


def test_json_report_fields(bench_json, capsys):
    r = bench_json
    assert r["schema"] == 1 and r["threads"] == 1 and r["export"]["kind"] == "forward"
    for key in ("cpu_model", "flags", "usable_cpus", "ram_gib", "load_average", "libraries"):
        assert key in r["machine"]
    lim = r["limits"]
    assert lim["threads"] == 1 and lim["seconds"] > 0 and r["limits_source"].startswith("measured now")
    assert lim["fp32_gflops"] > 0 and lim["int8_gops"] > 0 and lim["memory_read_gbps"] > 0
    assert [(x["batch"], x["length"]) for x in r["results"]] == [(1, 16), (1, 40), (2, 16), (2, 40)]
    for x in r["results"]:
        lat = x["latency"]
        assert lat["n"] >= 5 and 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["max_ms"]
        assert x["flops"]["total"] == sum(bert_flops(x["batch"], x["length"]).values())
        assert 0 < x["fraction"] < 1.5 and x["fraction_of"] == "fp32 limit"


def test_limits_from_reuses_and_says_so(bert_exports, bench_json, tmp_path, capsys):
    src = tmp_path / "earlier.json"
    src.write_text(json.dumps(bench_json))
    out = tmp_path / "int8.json"
    assert main(["bench", str(bert_exports["int8"]), "--lengths", "16", "--batch", "1", "--threads", "1",
                 "--seconds", "0.1", "--limits-from", str(src), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["limits"] == bench_json["limits"] and r["limits_source"] == f"read from {src}"
    (x,) = r["results"]
    assert x["fraction_of"] == "fp32+int8 limits" or x["fraction_of"] == "int8+fp32 limits"
    assert 0 < x["fraction"] < 1.5
    text = capsys.readouterr().out
    assert f"limits (read from {src})" in text and "median ms" in text
    # a limits file measured at other threads is refused
    assert main(["bench", str(bert_exports["int8"]), "--threads", "2", "--limits-from", str(src)]) == 2


@pytest.mark.parametrize("args,message", [
    (["--lengths", "abc"], "--lengths: expected comma-separated positive integers, got 'abc'"),
    (["--lengths", "16,0"], "--lengths: expected comma-separated positive integers"),
    (["--batch", "-1"], "--batch: expected comma-separated positive integers"),
    (["--lengths", "100"], f"--lengths 100 is beyond what this export's positions allow ({POSITIONS})"),
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--seconds", "nan"], "--seconds must be > 0 and finite, got nan"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--threads", "-1"], "--threads must be >= 1, got -1"),
])
def test_cli_errors(bert_exports, capsys, args, message):
    assert main(["bench", str(bert_exports["default"]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("edgeport: error:")


def test_not_an_export(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is this an edgeport export folder?" in err and len(err.splitlines()) == 1


def test_static_export_runs_its_fixed_shape_only(bert_exports, tmp_path):
    """A static-shape manifest (as TFLite writes) is benched at its shape; other shapes are refused."""
    import shutil

    from edgeport.runtime.bench import plan

    folder = shutil.copytree(bert_exports["generic"], tmp_path / "static")
    m = json.loads((folder / "edgeport.json").read_text())
    m["static_shapes"] = True
    for spec in m["inputs"]:
        spec["shape"] = [1, 24]
    (folder / "edgeport.json").write_text(json.dumps(m))
    p = plan(folder, None, None)
    assert p.shapes == [(1, 24)] and p.static and "fixed batch 1 x length 24" in p.notes[0]
    assert plan(folder, [24], [1]).shapes == [(1, 24)]
    with pytest.raises(EdgeportError, match="static: it runs batch 1 x length 24 only"):
        plan(folder, [32], None)


# A tiny GPT-2 (tests/serve_helpers.py: n_embd 32, 2 layers, 4 heads, 64 positions, vocab 97, tied LM head)
G_H, G_LAYERS, G_VOCAB, G_POSITIONS = 32, 2, 97, 64


@pytest.fixture(scope="module")
def gpt2_export(tmp_path_factory):
    from serve_helpers import make_decoder_checkpoint

    from edgeport.export import export

    root = tmp_path_factory.mktemp("bench-gpt2")
    ckpt = make_decoder_checkpoint(root / "ckpt")
    return export(str(ckpt), target="onnx", task="text-generation", lowering="generic", out_dir=root / "onnx",
                  quiet=True)


def gpt2_prefill_flops(batch: int, seq: int) -> int:
    """GPT-2 (Radford et al.; transformers' GPT2Model): per token and layer c_attn (H x 3H), attn c_proj
    (H x H), c_fc (H x 4H), mlp c_proj (4H x H) = 12 H^2 multiply-adds; per layer and row the scores and
    the weighted sum, seq x seq x H each (counted dense: the causal mask is applied after); the LM head
    (H x vocab) on every position, since the graph returns logits for all of them."""
    return 2 * (batch * seq * G_LAYERS * 12 * G_H**2 + G_LAYERS * batch * 2 * seq * seq * G_H
                + batch * seq * G_H * G_VOCAB)


def gpt2_weight_bytes() -> int:
    """float32 bytes a decode step reads in full: per layer the four matrices (12 H^2) with their biases
    (3H + H + 4H + H) and two LayerNorms (4H), the final LayerNorm (2H), the LM head (vocab x H, tied to
    the token embedding); the position table is only gathered from."""
    return 4 * (G_LAYERS * (12 * G_H**2 + 13 * G_H) + 2 * G_H + G_VOCAB * G_H)


def test_decoder_bench(gpt2_export, bench_json, tmp_path, capsys):
    src, out = tmp_path / "limits.json", tmp_path / "gpt2.json"
    src.write_text(json.dumps(bench_json))
    assert main(["bench", str(gpt2_export), "--lengths", "8,16", "--batch", "2", "--new-tokens", "4",
                 "--threads", "1", "--seconds", "0.1", "--limits-from", str(src), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["export"]["kind"] == "decoder"
    assert [(x["batch"], x["length"], x["new_tokens"]) for x in r["results"]] == [(2, 8, 4), (2, 16, 4)]
    for x in r["results"]:
        pf, dc = x["prefill"], x["decode"]
        assert pf["latency"]["n"] >= 3 and dc["latency_per_step"]["n"] >= 12  # >= 3 rounds of 4 steps
        for lat in (pf["latency"], dc["latency_per_step"]):
            assert 0 < lat["median_ms"] <= lat["p90_ms"]
        assert pf["flops"]["total"] == gpt2_prefill_flops(2, x["length"])
        assert 0 < pf["fraction"] < 1.5
        assert pf["gflops_per_s"] == pytest.approx(pf["flops"]["total"] / pf["latency"]["median_ms"] / 1e6)
        # shape constants of the graph come on top of the parameters: a few hundred bytes
        assert gpt2_weight_bytes() <= dc["weight_bytes"] <= 1.01 * gpt2_weight_bytes()
        kv = 2 * G_LAYERS * 2 * G_H * (x["length"] + 4 / 2) * 4  # keys + values at the mean context
        assert dc["kv_cache_bytes"] == int(kv) and dc["bytes_per_step"] == dc["weight_bytes"] + int(kv)
        assert dc["tokens_per_s"] == pytest.approx(2e3 / dc["latency_per_step"]["median_ms"])
        assert dc["fraction"] > 0 and dc["fraction_of"] == "memory read bandwidth"
    printed = capsys.readouterr().out
    assert "decode ms/step" in printed and "GFLOP/s" in printed.split("decode ms/step")[0].splitlines()[-1]


def test_decoder_prompt_must_leave_room(gpt2_export, capsys):
    assert main(["bench", str(gpt2_export), "--lengths", "62", "--new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "a prompt of 62 plus 4 new tokens is beyond the 64 tokens this export runs" in err


def test_static_decoder_batch_refused(gpt2_export, tmp_path):
    """A decoder with static prefill/decode signatures (as TFLite writes) refuses a larger batch up front."""
    import shutil

    from edgeport.runtime.bench import plan

    folder = shutil.copytree(gpt2_export, tmp_path / "static-decoder")
    m = json.loads((folder / "edgeport.json").read_text())
    m["decoder"]["signatures"] = {"prefill": [1, 16], "decode": [1, 1]}
    (folder / "edgeport.json").write_text(json.dumps(m))
    assert "fixed prefill length 16" in plan(folder, [8], [1], 4).notes[0]
    with pytest.raises(EdgeportError, match="--batch 2: this onnx decoder runs batches of at most 1"):
        plan(folder, [8], [1, 2], 4)


def test_json_folder_must_exist(bert_exports, tmp_path, capsys):
    assert main(["bench", str(bert_exports["default"]), "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err


def test_json_path_that_is_a_folder_fails_before_timing(bert_exports, tmp_path, capsys):
    assert main(["bench", str(bert_exports["default"]), "--json", str(tmp_path)]) == 2
    io = capsys.readouterr()
    assert "--json" in io.err and "is a folder" in io.err and len(io.err.strip().splitlines()) == 1
    assert "timing" not in io.err and "measuring" not in io.err  # refused before the limits and the timing


def test_limits_from_another_cpu_warns(bert_exports, bench_json, tmp_path, capsys):
    src = tmp_path / "other.json"
    src.write_text(json.dumps({**bench_json, "machine": {**bench_json["machine"], "cpu_model": "Some Other CPU"}}))
    assert main(["bench", str(bert_exports["default"]), "--lengths", "16", "--batch", "1", "--threads", "1",
                 "--seconds", "0.1", "--limits-from", str(src)]) == 0
    io = capsys.readouterr()
    warnings = [ln for ln in io.err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "measured on another CPU" in warnings[0] and "'Some Other CPU' there" in warnings[0]
    assert f"limits (read from {src}, measured on another CPU)" in io.out
    same = tmp_path / "same.json"
    same.write_text(json.dumps(bench_json))
    assert main(["bench", str(bert_exports["default"]), "--lengths", "16", "--batch", "1", "--threads", "1",
                 "--seconds", "0.1", "--limits-from", str(same)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_table_flags_fractions_over_100_percent_and_tensorrt_on_cpu(bench_json):
    """A fraction above 1 cannot be (the limits were measured under other load): marked "*" with a
    footnote; a tensorrt export's header says it was timed as ONNX on onnxruntime's CPU provider."""
    import copy
    import io

    from edgeport.runtime.bench_cli import OVER_LIMIT, print_report

    r = copy.deepcopy(bench_json)
    buf = io.StringIO()
    print_report(r, out=buf)
    assert OVER_LIMIT not in buf.getvalue() and "%*" not in buf.getvalue()
    assert "TensorRT engine" not in buf.getvalue()
    r["results"][0]["fraction"] = 1.3
    r["export"]["target"] = "tensorrt"
    buf = io.StringIO()
    print_report(r, out=buf)
    text = buf.getvalue().splitlines()
    assert "130.0%*" in text[text.index(next(ln for ln in text if "median ms" in ln)) + 1]
    assert text[-1] == OVER_LIMIT
    assert "timed as its ONNX graph on onnxruntime's CPU provider, not as a TensorRT engine" in text[0]


def test_run_on_a_text_generation_export_points_to_generate(gpt2_export, capsys):
    assert main(["run", str(gpt2_export), "--text", "hello"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a text-generation export" in err and f"edgeport generate {gpt2_export} --prompt TEXT" in err
    assert len(err.splitlines()) == 1


def test_probe_path_counts_the_same(bert_exports, monkeypatch):
    """Where symbolic shape inference gives up (it asserts on some graphs, e.g. ConvBERT's), shapes are
    observed by running the graph: the count stays the hand count."""
    from edgeport.runtime import flops

    def fail(*_):
        raise AssertionError("symbolic shape inference gave up")

    monkeypatch.setattr(flops, "infer_concrete", fail)
    for lowering in ("default", "generic"):
        path, feeds = _feeds(bert_exports[lowering], 2, 24)
        fc = flops.count_flops(path, feeds)
        assert fc.complete and fc.by_class == {"fp32": sum(bert_flops(2, 24).values())}
        shapes_only = flops.count_flops(path, {k: v.shape for k, v in feeds.items()})  # nothing to run
        assert not shapes_only.complete


def test_moe_counts_k_experts_per_token():
    """onnxruntime's MoE (Mixtral layout: fc1 interleaves gate and up, (E, 2I, H); fc2 (E, H, I)): each
    token runs k SwiGLU experts of 3 H x I matrices (Mixtral's w1, w3, w2); expert weights are kept apart
    from the bytes every decode step reads."""
    from onnx import TensorProto, helper, numpy_helper

    from edgeport.runtime.flops import count_flops, weight_bytes

    tokens, hidden, inter, experts, k = 5, 16, 24, 4, 2
    fc1 = numpy_helper.from_array(np.zeros((experts, 2 * inter, hidden), np.float32), "fc1")
    fc2 = numpy_helper.from_array(np.zeros((experts, hidden, inter), np.float32), "fc2")
    gate = numpy_helper.from_array(np.zeros((hidden, experts), np.float32), "gate")
    nodes = [helper.make_node("MatMul", ["x", "gate"], ["logits"]),
             helper.make_node("MoE", ["x", "logits", "fc1", "", "fc2"], ["y"], domain="com.microsoft", k=k,
                              activation_type="swiglu", swiglu_fusion=1, normalize_routing_weights=1)]
    g = helper.make_graph(nodes, "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [tokens, hidden])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [tokens, hidden])], [fc1, fc2, gate])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    fc = count_flops(model, {"x": np.ones((tokens, hidden), np.float32)})
    assert fc.complete
    assert fc.by_op == {"MatMul": 2 * tokens * hidden * experts, "MoE": 2 * tokens * k * 3 * hidden * inter}
    assert weight_bytes(model) == {"weights": 4 * hidden * experts, "gathered": 0,
                                   "experts": 4 * experts * 3 * hidden * inter}
