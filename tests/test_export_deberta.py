"""DeBERTa exports: each DisentangledAttention lowering vs the eager op, artifacts vs the reference over
a shape grid, graph structure per target, and a DeBERTa-v3-like export through the runtime pipeline.

Checkpoints are tiny transformers models with perturbed weights (tests/test_ref_deberta.py proves our
reference equals transformers on them); every lowering is judged against that reference or the eager op.
"""

import json
import warnings

import numpy as np
import onnx
import pytest
import torch

transformers = pytest.importorskip("transformers")

from edgeport.export import export  # noqa: E402
from edgeport.export.contracts import contract_for  # noqa: E402
from edgeport.export.validate import reference_outputs, sample_inputs, validation_session  # noqa: E402
from edgeport.manifest import read_manifest  # noqa: E402
from edgeport.ops.disentangled_attention import DisentangledAttention, disentangled_attention  # noqa: E402
from edgeport.ops import disentangled_attention_lowerings as low  # noqa: E402
from edgeport.reference_models import load_reference  # noqa: E402
from edgeport.runtime import load, pipeline  # noqa: E402

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            max_position_embeddings=64, hidden_act="gelu")
CONFIGS = {
    # deberta-base's switches; span 16 so 37 and 64 cross it; token types on
    "v1": ("deberta", dict(TINY, relative_attention=True, pos_att_type="c2p|p2c", max_relative_positions=16,
                           position_biased_input=False, type_vocab_size=2)),
    # deberta-v3-base's switches + v2-xlarge's conv; buckets 8 over 16 = 2 * 8 (exact for the TRT plugin)
    "v3": ("deberta-v2", dict(TINY, relative_attention=True, pos_att_type="p2c|c2p", position_buckets=8,
                              max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm",
                              conv_kernel_size=3, conv_act="gelu", position_biased_input=False, type_vocab_size=0)),
}
HF = {"deberta": {"feature-extraction": "DebertaModel", "fill-mask": "DebertaForMaskedLM",
                  "text-classification": "DebertaForSequenceClassification",
                  "token-classification": "DebertaForTokenClassification",
                  "question-answering": "DebertaForQuestionAnswering",
                  "multiple-choice": "DebertaForSequenceClassification"},  # no DebertaForMultipleChoice
      "deberta-v2": {"feature-extraction": "DebertaV2Model", "fill-mask": "DebertaV2ForMaskedLM",
                     "text-classification": "DebertaV2ForSequenceClassification",
                     "token-classification": "DebertaV2ForTokenClassification",
                     "question-answering": "DebertaV2ForQuestionAnswering",
                     "multiple-choice": "DebertaV2ForMultipleChoice"}}
# Extra shapes beyond export's own grid (8, 37 for these configs): bucket mid 4, buckets 8, span 16
EXTRA_GRID = [(1, 5, 0), (3, 20, 2), (2, 64, 1)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cache = {}

    def get(name, task):
        if (name, task) not in cache:
            family, kw = CONFIGS[name]
            cls = transformers.DebertaConfig if family == "deberta" else transformers.DebertaV2Config
            cfg = cls(**kw, num_labels={"multiple-choice": 1, "question-answering": 2}.get(task, 3))
            torch.manual_seed(0)
            hf = getattr(transformers, HF[family][task])(cfg).eval()
            with torch.no_grad():
                for p in hf.parameters():  # off the init: biases and LayerNorms non-trivial
                    p.add_(torch.randn_like(p) * 0.05)
            folder = tmp_path_factory.mktemp(f"{name}-{task}")
            hf.save_pretrained(folder)
            cache[name, task] = folder
        return cache[name, task]

    return get


def reference(folder, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_reference(str(folder), task)


def assert_matches(sess, ref, grid, atol=1e-4):
    contract = contract_for(ref)
    for batch, seq, padded in grid:
        feeds = sample_inputs(contract, batch, seq, padded, seed=321)  # not export's validation seed
        want = reference_outputs(ref.model, contract, feeds)
        got = sess.run(feeds)
        for name, w in want.items():
            assert got[name].shape == w.shape, (name, batch, seq)
            diff = float(np.abs(got[name] - w).max())
            assert diff <= atol * max(1.0, float(np.abs(w).max())), (name, batch, seq, padded, diff)


def domains(path):
    return {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node if n.domain not in ("", "ai.onnx")}


# ---------------------------------------------------------------- each lowering vs the eager op

def _op_inputs(n, seq, span, seed=0):
    g = torch.Generator().manual_seed(seed + seq)
    return [torch.randn(n, seq, w, generator=g) for w in (seq, 2 * span, 2 * span)]


def _export_op(module, path, n=3, seq=12):
    args = tuple(_op_inputs(n, seq, module.span))
    axes = {0: "n", 1: "s"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17,
                          input_names=["c2c", "c2p", "p2c"], output_names=["scores"],
                          dynamic_axes={"c2c": {0: "n", 1: "s", 2: "s"}, "c2p": axes, "p2c": axes,
                                        "scores": {0: "n", 1: "s", 2: "s"}})
    return path


@pytest.mark.parametrize("max_position", [0, 16])
@pytest.mark.parametrize("which", ["both", "c2p", "p2c"])
def test_skew_form_matches_eager_op(max_position, which):
    for seq in (1, 2, 5, 9, 20, 40):
        c2c, c2p, p2c = _op_inputs(4, seq, 8)
        c2p, p2c = (None, p2c) if which == "p2c" else (c2p, None) if which == "c2p" else (c2p, p2c)
        got = low.disentangled_attention_skew(c2c, c2p, p2c, 8, 0.3, max_position)
        want = disentangled_attention(c2c, c2p, p2c, 8, 0.3, max_position)
        assert (got - want).abs().max().item() <= 1e-5, (seq, which, max_position)


@pytest.mark.parametrize("form", ["generic", "skew"])
@pytest.mark.parametrize("max_position", [0, 16])
def test_onnx_op_forms_match_eager_op_at_other_lengths(tmp_path, form, max_position):
    ort = pytest.importorskip("onnxruntime")
    cls = DisentangledAttention if form == "generic" else low.SkewScores
    path = _export_op(cls(8, 0.3, max_position), tmp_path / "op.onnx")
    assert not domains(path)  # plain ONNX ops only
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, seq in ((1, 3), (4, 13), (2, 40)):
        args = _op_inputs(n, seq, 8, seed=5)
        (got,) = sess.run(None, {k: a.numpy() for k, a in zip(("c2c", "c2p", "p2c"), args)})
        want = disentangled_attention(*args, 8, 0.3, max_position).numpy()
        assert np.abs(got - want).max() <= 1e-5, (n, seq)


def test_tensorrt_plugin_node_matches_eager_op(tmp_path):
    path = _export_op(low.TrtPluginScores(8, 0.3, 16), tmp_path / "trt.onnx")
    (node,) = onnx.load(str(path)).graph.node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert (node.domain, node.op_type, len(node.input)) == ("trt.plugins", "DisentangledAttention_TRT", 3)
    assert attrs["span"] == 8 and abs(attrs["factor"] - 0.3) < 1e-7
    # the parser finds the plugin by op_type, version and namespace attributes: "2" is the IPluginV3 form
    assert attrs["plugin_version"] == b"2" and attrs["plugin_namespace"] == b""
    assert set(attrs) == {"span", "factor", "plugin_version", "plugin_namespace"}
    sess = validation_session(path, low.TRT_REFERENCE, threads=1)
    for n, seq in ((1, 3), (4, 13), (2, 40)):
        args = _op_inputs(n, seq, 8, seed=7)
        got = sess.run({k: a.numpy() for k, a in zip(("c2c", "c2p", "p2c"), args)})["scores"]
        want = disentangled_attention(*args, 8, 0.3, 16).numpy()
        assert np.abs(got - want).max() <= 1e-5, (n, seq)


def test_plugin_reference_kernel_enforces_the_documented_shapes():
    c2c, c2p, p2c = (a.numpy() for a in _op_inputs(2, 6, 8))
    with pytest.raises(ValueError, match="data1"):
        low.plugin_reference(c2c, c2p[..., :8], p2c, 8, 0.3)
    assert low.trt_plugin_exact(DisentangledAttention(256, 0.1, 512))
    assert not low.trt_plugin_exact(DisentangledAttention(512, 0.1, 0))  # v1: plain positions


def test_multi_head_attention_node_matches_torch(tmp_path):
    """com.microsoft.MultiHeadAttention (onnxruntime's kernel) vs softmax(q k^T * scale + bias) v in torch,
    with fully masked rows (finfo.min bias), which the DeBERTa reference turns into uniform rows."""
    ort = pytest.importorskip("onnxruntime")

    class M(torch.nn.Module):
        def forward(self, q, k, v, bias):
            return low._MultiHeadAttention.apply(q, k, v, bias, 2, 0.25)

    B, S, A = 2, 7, 8
    q, k, v = (torch.randn(B, S, A) for _ in range(3))
    bias = torch.randn(B, 2, S, S)
    bias[1, :, 4:, :] = torch.finfo(torch.float32).min  # padded query rows
    bias[1, :, :, 4:] = torch.finfo(torch.float32).min  # padded keys
    path = tmp_path / "mha.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(M(), (q, k, v, bias), str(path), dynamo=False, opset_version=17,
                          input_names=["q", "k", "v", "bias"], output_names=["out"])
    assert low._mha_optional_inputs(path) == 1
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "bias": bias.numpy()})
    want = low._MultiHeadAttention.forward(None, q, k, v, bias, 2, 0.25).numpy()
    assert np.abs(got - want).max() <= 1e-5


# ---------------------------------------------------------------- artifacts vs reference, structure

ONNX_CASES = [("v3", t, "mha") for t in ("feature-extraction", "fill-mask", "text-classification",
                                         "token-classification", "question-answering", "multiple-choice")]
ONNX_CASES += [("v1", "multiple-choice", "mha"), ("v1", "fill-mask", "plain"), ("v3", "question-answering", "plain"),
               ("v1", "token-classification", "default"), ("v3", "multiple-choice", "default"),
               ("v3", "fill-mask", "generic")]


@pytest.mark.parametrize("name,task,lowering", ONNX_CASES)
def test_onnx_lowerings_match_reference(tmp_path, ckpt, name, task, lowering):
    folder = ckpt(name, task)
    out = export(str(folder), target="onnx", task=task, out_dir=tmp_path / "o", quiet=True,
                 lowering=None if lowering == "default" else lowering)
    ref = reference(folder, task)
    m, _ = read_manifest(out)
    top = m.max_sequence_length  # the grid runs 8, 37, 128, and a shorter position table up to its end
    lengths = {s for s in (8, 37, 128) if s <= top} | ({top} if top < 128 else set())
    assert m.parity_passed and {tuple(c.shape) for c in m.parity} == {(b, s) for b in (1, 3) for s in lengths}
    want_inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if name == "v1" else [])
    assert [i.name for i in m.inputs] == want_inputs
    if task == "multiple-choice":
        assert m.inputs[0].shape == ["batch", "choices", "sequence"] and m.outputs[0].shape == ["batch", "choices"]
    sess = load(out)
    grid = [(b, s, p) for b, s, p in EXTRA_GRID]
    assert_matches(sess, ref, grid)
    found = domains(out / "model.onnx")
    if lowering == "mha":
        assert found == {("com.microsoft", "MultiHeadAttention")}
        assert m.custom_ops[0]["count"] == 2 and m.converter["disentangled_attention"] == "folded-mha"
    else:
        assert not found  # the generic and plain forms run on any ONNX runtime
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    if lowering == "generic":
        assert "GatherElements" in ops and m.converter["disentangled_attention"].startswith("generic")
    else:
        assert "GatherElements" not in ops
    if lowering == "default":  # = fast
        assert m.converter["disentangled_attention"] == "folded-fast"
        assert_fast_structure(out / "model.onnx", layers=2)


@pytest.mark.parametrize("name", ["v1", "v3"])
def test_classification_last_layer_runs_on_cls_row_only(tmp_path, ckpt, name):
    """text-classification reads position 0 only: the last layer's attention output projection and
    feed-forward multiply 1 row (its self-attention stays whole, whatever the lowering); logits equal
    the reference here and transformers' in test_ref_deberta."""
    from conftest import matmul_rows

    folder = ckpt(name, "text-classification")
    out = export(str(folder), target="onnx", task="text-classification", out_dir=tmp_path / "o", quiet=True)
    rows = matmul_rows(out / "model.onnx", 13)
    assert rows.count(1) == 3, rows  # attention output, intermediate, output of the last layer
    ref = reference(folder, "text-classification")
    assert ref.model.deberta.cls_only and ref.model.deberta(torch.ones(2, 9, dtype=torch.long),
                                                            torch.ones(2, 9, dtype=torch.long)).shape[1] == 1
    assert_matches(load(out), ref, EXTRA_GRID)


def assert_fast_structure(path, layers):
    """The fast form: one q/k/v MatMul per layer, no Gather on a non-leading axis (the position tables are
    gathered on their row axis 1, never the activations on their column axis)."""
    nodes = onnx.load(str(path)).graph.node
    attention = [n for n in nodes if "/attention/self/" in n.name]
    qkv = [n for n in attention if n.op_type == "MatMul" and "/qkv/" in n.name]
    assert len(qkv) == layers, [n.name for n in qkv]
    gathers = [n for n in attention if n.op_type == "Gather"]
    axes = {onnx.helper.get_attribute_value(a) for n in gathers for a in n.attribute if a.name == "axis"}
    assert axes <= {0, 1}, axes
    assert sum(1 for n in gathers if any(a.name == "axis" and a.i == 1 for a in n.attribute)) == 2 * layers


@pytest.mark.parametrize("pos_att_type", ["c2p", "p2c", "c2p|p2c"])
@pytest.mark.parametrize("family,max_position", [("deberta", 0), ("deberta-v2", 16)])
def test_fast_module_matches_reference_across_buckets(tmp_path, family, max_position, pos_att_type):
    """The fast module swap vs the untouched reference in torch, one term at a time, at lengths below,
    across and beyond the bucket mid (4), the buckets (8) and the span (16), with padding."""
    kw = dict(TINY, relative_attention=True, pos_att_type=pos_att_type, max_relative_positions=16,
              position_biased_input=False, type_vocab_size=0)
    if max_position:
        kw.update(position_buckets=8, share_att_key=True, norm_rel_ebd="layer_norm")
    cls = transformers.DebertaConfig if family == "deberta" else transformers.DebertaV2Config
    torch.manual_seed(1)
    hf = getattr(transformers, HF[family]["feature-extraction"])(cls(**kw)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path)
    ref = reference(tmp_path, "feature-extraction")
    fast = low.fold_attention(ref.model, "fast")
    for seq in (1, 4, 9, 17, 40):
        ids = torch.randint(1, 100, (2, seq))
        mask = torch.ones(2, seq, dtype=torch.long)
        mask[1, seq // 2 + 1:] = 0
        with torch.no_grad():
            want, got = ref.model(ids, mask)[0], fast(ids, mask)[0]
        assert (got - want).abs().max().item() <= 1e-5, (seq, pos_att_type)


@pytest.mark.parametrize("name,task", [("v3", "question-answering"), ("v3", "multiple-choice"),
                                       ("v1", "feature-extraction")])
def test_tensorrt_graph_has_plugin_nodes_and_matches_reference(tmp_path, ckpt, name, task):
    folder = ckpt(name, task)
    out = export(str(folder), target="tensorrt", task=task, out_dir=tmp_path / "t", quiet=True)
    m, _ = read_manifest(out)
    assert m.parity_passed and m.target == "tensorrt"
    nodes = [n for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "DisentangledAttention_TRT"]
    if name == "v1":  # plain relative positions: the plugin's buckets would differ past span // 2
        assert not nodes and not m.custom_ops and "decomposed" in m.converter["disentangled_attention"]
    else:
        assert len(nodes) == 2 and m.custom_ops[0]["op_type"] == "DisentangledAttention_TRT"
        for n in nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert n.domain == "trt.plugins" and len(n.input) == 3
            assert attrs["span"] == 8 and abs(attrs["factor"] - 1 / np.sqrt(16 * 3)) < 1e-7
    assert_matches(validation_session(out / "model.onnx", low.TRT_REFERENCE, threads=1), reference(folder, task), EXTRA_GRID)


@pytest.mark.parametrize("name,task,batch,seq", [("v3", "multiple-choice", 1, 24), ("v1", "fill-mask", 2, 20)])
def test_tflite_builtin_ops_match_reference(tmp_path, ckpt, name, task, batch, seq):
    from edgeport.export.tflite import op_names

    folder = ckpt(name, task)
    out = export(str(folder), target="tflite", task=task, out_dir=tmp_path / "l", seq_len=seq, batch=batch,
                 quiet=True)
    ref = reference(folder, task)
    sess = load(out)
    assert all(s.dtype == "int32" for s in sess.inputs)
    assert_matches(sess, ref, [(batch, seq, 0), (batch, seq, batch)])
    ops = op_names(out / "model.tflite")
    assert not [o for o in ops if o.startswith("Flex") or o == "CUSTOM" or o.startswith("DELEGATE")], ops
    assert {"BATCH_MATMUL", "FULLY_CONNECTED", "SOFTMAX"} <= ops
    m = json.loads((out / "edgeport.json").read_text())
    assert m["converter"]["disentangled_attention"] == "generic"
    assert m["static_shapes"]
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"] + (["token_type_ids"] if name == "v1" else [])


def test_lowerings_registered_for_both_families():
    from edgeport.ops.registry import lowerings_for

    for fam in ("deberta", "deberta-v2"):
        assert lowerings_for(fam, "onnx") == ["default", "fast", "generic", "mha", "plain"]
        assert lowerings_for(fam, "tensorrt") == ["default"]
        assert lowerings_for(fam, "tflite") == ["default", "folded", "generic"]


# ---------------------------------------------------------------- DeBERTa-v3-like export through the runtime

def _spm_tokenizer(folder):
    """A tiny sentencepiece model trained here, saved as transformers' DebertaV2 fast tokenizer."""
    spm = pytest.importorskip("sentencepiece")
    text = folder / "corpus.txt"
    words = "the cat sat on the mat a dog ran in the park paris is the capital of france".split()
    text.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) * 5)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "spm"), vocab_size=36, hard_vocab_limit=False,
                                   pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2,
                                   eos_piece="[SEP]", unk_id=3, unk_piece="[UNK]", user_defined_symbols=["[MASK]"],
                                   model_type="unigram", minloglevel=2)
    text.unlink()
    (folder / "spm.vocab").unlink()
    slow = transformers.DebertaV2Tokenizer.from_pretrained(str(folder))  # reads spm.model from the folder
    fast = transformers.DebertaV2TokenizerFast.from_pretrained(str(folder), from_slow=True)
    fast.save_pretrained(str(folder))
    return slow


def test_v3_like_export_runs_through_pipeline_without_token_type_ids(tmp_path, ckpt):
    folder = ckpt("v3", "fill-mask")
    slow = _spm_tokenizer(folder)
    out = export(str(folder), target="onnx", task="fill-mask", out_dir=tmp_path / "p", quiet=True)
    m, _ = read_manifest(out)
    assert [i.name for i in m.inputs] == ["input_ids", "attention_mask"] and m.tokenizer.mask_token == "[MASK]"
    fill = pipeline(out)
    text = "the cat sat on the [MASK] in the park"
    cands = fill(text, top_k=3)  # one text, one mask: a flat list of candidates
    ids = slow(text)["input_ids"]  # the slow sentencepiece tokenizer: the same ids as the pipeline's
    assert fill.encode([text]).feeds["input_ids"][0].tolist() == ids
    ref = reference(folder, "fill-mask")
    with torch.no_grad():
        (logits,) = ref.model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    p = torch.softmax(logits[0, ids.index(slow.mask_token_id)].double(), -1)
    best = torch.argsort(p, descending=True)[:3]
    assert [d["token"] for d in cands] == slow.convert_ids_to_tokens(best.tolist())
    assert abs(cands[0]["score"] - p[best[0]].item()) <= 1e-4
