"""TensorRT target: the parser-compatibility check, parser-clean graphs of every family, build commands.

No GPU and no TensorRT here: graphs are proven in onnxruntime (plugin nodes with their reference kernel)
against the reference; engine builds run only where `tensorrt` imports and are skipped elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from edgeport.export.tensorrt import MASK_VALUE, check, finite_masks, float_cumsum

# ---------------------------------------------------------------- the check catches planted violations


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _planted():
    """A graph with one violation per node (each named after what it plants), plus clean nodes."""
    init = [numpy_helper.from_array(np.array([4000], np.int64), "k_big"),
            numpy_helper.from_array(np.array([2], np.int64), "k_ok"),
            numpy_helper.from_array(np.array([-1], np.int64), "axes_const"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([np.finfo(np.float32).min], np.float32), "mask_min")]
    nodes = [
        helper.make_node("FastGelu", ["x"], ["g"], domain="com.microsoft", name="planted/contrib"),
        helper.make_node("ReduceMean", ["x", "axes_in"], ["rm"], name="planted/reduce_axes_input"),
        helper.make_node("ReduceMean", ["x", "axes_const"], ["rm_ok"], name="clean/reduce_axes_const"),
        helper.make_node("TopK", ["x", "k_big"], ["tv", "ti"], name="planted/topk_k"),
        helper.make_node("TopK", ["x", "k_ok"], ["tv2", "ti2"], sorted=0, name="planted/topk_unsorted"),
        helper.make_node("TopK", ["x", "k_ok"], ["tv3", "ti3"], name="clean/topk"),
        helper.make_node("NonZero", ["ids"], ["nz"], name="planted/nonzero_int64"),
        helper.make_node("CumSum", ["ids", "zero_axis"], ["cs"], name="planted/cumsum_int64_axis_input"),
        helper.make_node("MatMulInteger", ["u8a", "u8b"], ["mmi"], name="planted/matmul_integer"),
        helper.make_node("Cast", ["x"], ["u8"], to=T.UINT8, name="planted/uint8_inside"),
        helper.make_node("Cast", ["u8"], ["u8f"], to=T.FLOAT, name="clean/cast_back"),
        helper.make_node("Slice", ["x", "zero", "k_ok", "axes_in"], ["sl"], name="planted/slice_axes_input"),
        helper.make_node("Attention", ["q4", "q4", "q4", "", "q4", "q4"], ["att"], name="planted/attention_past"),
        helper.make_node("DisentangledAttention_TRT", ["c2c", "c2p"], ["da"], domain="trt.plugins", span=4,
                         name="planted/plugin_missing"),
        helper.make_node("DisentangledAttention_TRT", ["c2c", "c2p", "c2p"], ["da1"], domain="trt.plugins", span=4,
                         factor=0.5, plugin_version="1", name="planted/plugin_v1"),
        helper.make_node("Add", ["x", "mask_min"], ["masked"], name="planted/mask_min"),
    ]
    outs = [_vi(n, T.FLOAT, None) for n in ("g", "rm", "rm_ok", "tv", "tv2", "tv3", "u8f", "sl", "att", "da", "da1",
                                            "masked")]
    outs += [_vi("nz", T.INT64, None), _vi("cs", T.INT64, None), _vi("mmi", T.INT32, None)]
    ins = [_vi("x", T.FLOAT, [2, 8]), _vi("axes_in", T.INT64, [1]), _vi("ids", T.INT64, [2, 8]),
           _vi("zero_axis", T.INT64, []), _vi("u8a", T.UINT8, [2, 2]), _vi("u8b", T.UINT8, [2, 2]),
           _vi("q4", T.FLOAT, [1, 2, 4, 8]), _vi("c2c", T.FLOAT, [2, 4, 4]), _vi("c2p", T.FLOAT, [2, 4, 8])]
    g = helper.make_graph(nodes, "planted", ins, outs, init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1),
                                               helper.make_opsetid("trt.plugins", 1)])


def test_check_catches_planted_violations_by_node_name():
    report = check(_planted())
    errors = {(f.node, f.rule) for f in report.errors}
    want = {("planted/contrib", "custom-domain"), ("planted/reduce_axes_input", "constant-input"),
            ("planted/topk_k", "topk-k"), ("planted/topk_unsorted", "topk-sorted"),
            ("planted/nonzero_int64", "type"), ("planted/cumsum_int64_axis_input", "constant-input"),
            ("planted/cumsum_int64_axis_input", "type"), ("planted/matmul_integer", "unsupported-op"),
            ("u8", "uint8"), ("planted/slice_axes_input", "constant-input"),
            ("planted/attention_past", "attention-input"), ("planted/plugin_missing", "plugin-attribute"),
            ("planted/plugin_missing", "plugin-inputs")}
    assert want <= errors, want - errors
    assert not report.passed
    flagged = {f.node for f in report.findings}
    assert not {n for n in flagged if n.startswith("clean/")}, flagged  # clean nodes are not flagged
    warnings = {(f.node, f.rule) for f in report.findings if f.severity == "warning"}
    assert ("planted/plugin_v1", "plugin-version") in warnings and ("mask_min", "fp16-range") in warnings
    assert "planted/plugin_v1" not in {f.node for f in report.errors}  # version 1 parses (deprecated)
    assert report.plugins == {"DisentangledAttention_TRT": 2}


def test_check_rejects_an_opset_beyond_the_parser():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [_vi("x", T.FLOAT, [2])],
                          [_vi("y", T.FLOAT, [2])])
    assert check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])).passed
    bad = check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)]))
    assert [(f.node, f.rule) for f in bad.errors] == [("graph", "opset")]


# ---------------------------------------------------------------- the passes keep values


def test_float_cumsum_is_exact_and_parser_clean():
    import onnxruntime as ort

    g = helper.make_graph([helper.make_node("CumSum", ["m", "ax"], ["p"], name="/pos/CumSum")], "g",
                          [_vi("m", T.INT64, ["b", "s"])], [_vi("p", T.INT64, ["b", "s"])],
                          [numpy_helper.from_array(np.array(1, np.int64), "ax")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert not check(proto).passed
    assert float_cumsum(proto) == 1 and check(proto).passed
    mask = (np.random.default_rng(0).random((3, 700)) > 0.3).astype(np.int64)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"m": mask})[0]
    assert got.dtype == np.int64 and np.array_equal(got, np.cumsum(mask, axis=1))


def test_finite_masks_leaves_other_constants():
    init = [numpy_helper.from_array(np.array([np.finfo(np.float32).min, 1.5], np.float32), "m"),
            numpy_helper.from_array(np.full((32,), -1e30, np.float32), "big_weight")]
    g = helper.make_graph([helper.make_node("Add", ["x", "m"], ["y"])], "g", [_vi("x", T.FLOAT, [2])],
                          [_vi("y", T.FLOAT, [2])], init)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert finite_masks(proto) == 1
    vals = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert vals["m"].tolist() == [MASK_VALUE, 1.5] and vals["big_weight"][0] == np.float32(-1e30)


# ---------------------------------------------------------------- every family exports, checked and validated

FAST = ["bert-tiny", "deberta-v2-tiny", "gpt2-tiny", "mistral-tiny", "mixtral-tiny", "luke-tiny"]
SLOW = ["convbert-tiny", "mega-tiny", "mobilebert-tiny", "megatron-bert-tiny", "deberta-tiny"]


def _export_and_check(preset, tmp_path, task=None):
    from edgeport.export import export

    out = export(preset, target="tensorrt", task=task, out_dir=tmp_path / preset, quiet=True)
    m = json.loads((out / "edgeport.json").read_text())
    assert m["target"] == "tensorrt" and m["parity_passed"]
    conv = m["converter"]
    rerun = check(out / m["artifact"])  # the stored report is what the check says of the written file
    assert rerun.passed and conv["tensorrt_check"]["passed"]
    assert conv["tensorrt_check"]["findings"] == [] and rerun.findings == []  # no errors, no fp16-range warning
    build = conv["tensorrt_build"]
    # the graph's inputs (mega's manifest also lists token_type_ids, which its graph does not take)
    names = [i.name for i in onnx.load(str(out / m["artifact"]), load_external_data=False).graph.input]
    for k in ("min", "opt", "max"):
        assert list(build["profile"][k]) == names
    for cmd in ("trtexec", "polygraphy"):
        assert all(n in build["commands"][cmd] for n in names)
    return out, m


@pytest.mark.parametrize("preset", FAST + [pytest.param(p, marks=pytest.mark.slow) for p in SLOW])
def test_every_family_exports_a_parser_clean_validated_graph(tmp_path, preset):
    out, m = _export_and_check(preset, tmp_path)
    proto = onnx.load(str(out / m["artifact"]), load_external_data=False)
    domains = {n.domain for n in proto.graph.node} - {"", "ai.onnx"}
    if preset == "deberta-v2-tiny":  # v2/v3 log buckets: the plugin is exact, one node per layer
        plugin = [n for n in proto.graph.node if n.op_type == "DisentangledAttention_TRT"]
        assert plugin and domains == {"trt.plugins"}
        attrs = {a.name: helper.get_attribute_value(a) for a in plugin[0].attribute}
        assert attrs["plugin_version"] == b"2" and set(attrs) >= {"span", "factor"}
    else:
        assert domains == set()
    if preset.startswith(("gpt2", "mistral", "mixtral")):  # TensorRT 10.15+'s standard ops, opset 23
        assert "sliding window (if any) kept in the additive mask" in m["converter"]["attention"]
        ops = {n.op_type for n in proto.graph.node}
        rope_norm = {"RotaryEmbedding", "RMSNormalization"}
        assert "Attention" in ops and (rope_norm <= ops if preset != "gpt2-tiny" else not rope_norm & ops)
        assert "Softmax" not in ops or preset.startswith("mixtral")  # mixtral: the router's softmax only
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", 23)]
    if preset.startswith("mixtral"):
        assert "Blackwell/Thor" in m["converter"]["moe"]


def test_mistral_generic_tensorrt_form_is_plain_ops(tmp_path):
    from edgeport.export import export

    out = export("mistral-tiny", target="tensorrt", lowering="generic", out_dir=tmp_path / "g", quiet=True)
    proto = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "Softmax" in ops and not ops & {"Attention", "RotaryEmbedding", "RMSNormalization"}
    assert check(proto).passed


@pytest.mark.slow
@pytest.mark.parametrize("task", ["text-classification", "token-classification", "question-answering",
                                  "multiple-choice", "feature-extraction"])
def test_encoder_tasks_export_for_tensorrt(tmp_path, task):
    _export_and_check("bert-tiny", tmp_path, task)


def test_list_offers_tensorrt_for_every_family():
    from edgeport.reference_models import families

    out = subprocess.run([sys.executable, "-m", "edgeport.cli", "list"], capture_output=True, text=True, check=True)
    blocks = out.stdout.split("\n")
    targets = {fam: next(line for line in blocks[i:] if line.strip().startswith("targets:"))
               for i, fam in enumerate(blocks) if fam in families()}
    assert set(targets) == set(families())
    assert all("tensorrt" in line for line in targets.values()), targets


# ---------------------------------------------------------------- engine build (needs tensorrt)


def test_parse_shapes_names_bad_input():
    from edgeport.errors import EdgeportError
    from edgeport.export.tensorrt_build import parse_shapes

    assert parse_shapes("input_ids:1x128,attention_mask:1x128", ["input_ids", "attention_mask"]) == \
        {"input_ids": [1, 128], "attention_mask": [1, 128]}
    with pytest.raises(EdgeportError, match="unknown input 'ids'"):
        parse_shapes("ids:1x8", ["input_ids"])
    with pytest.raises(EdgeportError, match="bad shape"):
        parse_shapes("input_ids:1xB", ["input_ids"])


@pytest.fixture(scope="module")
def bert_trt(tmp_path_factory):
    from edgeport.export import export

    return export("bert-tiny", target="tensorrt", out_dir=tmp_path_factory.mktemp("trt") / "bert", quiet=True)


def test_build_engine_without_tensorrt_is_one_line_error(bert_trt, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt imports here: the engine test below runs instead")
    except ImportError:
        pass
    from edgeport.cli import main

    assert main(["build-engine", str(bert_trt), "--max", "input_ids:8x64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs TensorRT" in err
    assert not (bert_trt / "model.engine").exists()
    assert main(["build-engine", str(bert_trt), "--max", "nope:8x64"]) == 2
    assert "unknown input 'nope'" in capsys.readouterr().err


def test_engine_matches_reference_where_tensorrt_imports(bert_trt, tmp_path):
    pytest.importorskip("tensorrt", reason="tensorrt is not installable here (its PyPI wheels download from "
                                           "another index) and no GPU is present")
    from edgeport.export import validate
    from edgeport.export.contracts import contract_for
    from edgeport.export.tensorrt_build import build_engine
    from edgeport.reference_models import load_reference
    from edgeport.runtime.tensorrt_session import TensorRTSession

    engine = build_engine(bert_trt, timing_cache=str(tmp_path / "timing.cache"))
    assert (tmp_path / "timing.cache").stat().st_size > 0
    ref = load_reference("bert-tiny", None, None)  # the preset's seeded weights, as exported
    contract = contract_for(ref)
    grid = [(1, 8, 0), (3, 37, 2), (8, 128, 3)]  # inside the default profile (batch <= 8)
    checks = validate.check(ref.model, TensorRTSession(engine), contract, grid, atol=1e-3, rtol=1e-3)
    assert all(c.passed for c in checks)


# ---------------------------------------------------------------- fp16 as TensorRT 11 wants it (strongly typed)


def test_fp16_form_has_fp16_io_parses_and_matches_reference(bert_trt, tmp_path):
    from edgeport.export import validate
    from edgeport.export.contracts import contract_for
    from edgeport.quantize import quantize_artifact
    from edgeport.reference_models import load_reference
    from edgeport.runtime.session import open_session

    out = quantize_artifact(bert_trt, "fp16", out_dir=tmp_path / "fp16", quiet=True)
    m = json.loads((out / "edgeport.json").read_text())
    proto = onnx.load(str(out / m["artifact"]))
    io_types = {v.name: v.type.tensor_type.elem_type for v in list(proto.graph.input) + list(proto.graph.output)}
    assert io_types["last_hidden_state"] == T.FLOAT16 and io_types["input_ids"] == T.INT64
    weights = [t for t in proto.graph.initializer if t.data_type in (T.FLOAT, T.FLOAT16) and np.prod(t.dims) >= 1024]
    assert weights and all(t.data_type == T.FLOAT16 for t in weights)
    assert m["converter"]["quantizer"]["tensorrt_check"]["passed"] and check(proto).passed
    ref = load_reference("bert-tiny", None, None)  # the preset's seeded weights, as exported
    sess = open_session(out / m["artifact"])
    checks = validate.check(ref.model, sess, contract_for(ref), validate.onnx_grid(contract_for(ref)),
                            atol=1e-2, rtol=1e-2)  # fp16: 10 mantissa bits, errors add up over the layers
    assert all(c.passed for c in checks) and max(c.max_abs_diff for c in checks) > 1e-5  # really computed in fp16


# ---------------------------------------------------------------- runtime backend


def test_engine_file_without_tensorrt_is_one_line_error(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt imports here: test_engine_matches_reference_where_tensorrt_imports runs instead")
    except ImportError:
        pass
    from edgeport.errors import EdgeportError
    from edgeport.runtime.session import open_session

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(EdgeportError, match="needs tensorrt") as e:
        open_session(engine)
    assert "\n" not in str(e.value)


def test_runtime_backend_is_torch_free():
    code = ("import sys; import edgeport.runtime.tensorrt_session, edgeport.runtime.session; "
            "bad = [m for m in ('torch', 'edgeport.export', 'edgeport.reference_models') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_to_opset23_moves_private_ops_and_reduce_axes(tmp_path):
    """A planted opset-17 graph: ReduceMean(axes attribute) and a private-domain RMSNormalization; after
    the pass: opset 23, both in the ONNX domain, values as numpy computes them (onnxruntime's kernels)."""
    import onnxruntime as ort

    from edgeport.ops.onnx23 import DOMAIN, to_opset23

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1, name="/mean"),
             helper.make_node("RMSNormalization", ["x", "w"], ["r"], domain=DOMAIN, axis=-1, epsilon=1e-6,
                              name="/norm")]
    g = helper.make_graph(nodes, "g", [_vi("x", T.FLOAT, [2, 3, 8])], [_vi("m", T.FLOAT, [2, 3, 1]), _vi("r", T.FLOAT, [2, 3, 8])],
                          [numpy_helper.from_array(np.linspace(0.5, 2, 8).astype(np.float32), "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]), path)
    notes = to_opset23(path)
    proto = onnx.load(str(path))
    assert notes == {"opset": 23, "opset23_nodes": {"RMSNormalization": 1}}
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 23)]
    assert {n.domain for n in proto.graph.node} == {""} and len(proto.graph.node[0].input) == 2
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    m, r = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    w = np.linspace(0.5, 2, 8).astype(np.float32)
    assert np.allclose(m, x.mean(-1, keepdims=True), atol=1e-6)
    assert np.allclose(r, x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w, atol=1e-5)
