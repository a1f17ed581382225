"""DeBERTa v1 and v2/v3 references vs transformers, and the DisentangledAttention op's forms.

Layer 1 of DESIGN.md's tests: tiny configs, the same (perturbed) weights through save_pretrained,
padded rows, lengths crossing the relative-position span and the log-bucket boundaries.
"""

import math
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from edgeport.ops.disentangled_attention import (  # noqa: E402
    DisentangledAttentionOp, disentangled_attention, disentangled_attention_torch, log_bucket, use_custom_op)
from edgeport.reference_models import get_family, load_reference  # noqa: E402

ATOL = 1e-4
LENGTHS = (5, 20, 40)  # below the bucket mid (4), across the buckets (8) and span (16), beyond max_position
TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            max_position_embeddings=64, hidden_act="gelu")
CONFIGS = {
    # v1 as microsoft/deberta-base, plus absolute positions and token types
    "v1": ("deberta", dict(TINY, relative_attention=True, pos_att_type="c2p|p2c", max_relative_positions=16,
                           position_biased_input=True, type_vocab_size=2)),
    # v1 p2c only, table = max_position_embeddings, embed_proj, the original (non-legacy) MLM head
    "v1-p2c": ("deberta", dict(TINY, relative_attention=True, pos_att_type=["p2c"], max_relative_positions=-1,
                               position_biased_input=False, type_vocab_size=0, legacy=False)),
    "v1-embproj": ("deberta", dict(TINY, relative_attention=True, pos_att_type=["c2p"], max_relative_positions=16,
                                   embedding_size=24, type_vocab_size=0)),
    "v1-absolute": ("deberta", dict(TINY, relative_attention=False, type_vocab_size=2)),
    # v3 as microsoft/deberta-v3-base (+ v2-xlarge's conv), buckets 8 over 16 positions
    "v3": ("deberta-v2", dict(TINY, relative_attention=True, pos_att_type="p2c|c2p", position_buckets=8,
                              max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm",
                              conv_kernel_size=3, conv_act="gelu", position_biased_input=False, type_vocab_size=0)),
    # v2 without buckets or shared keys: pos_key_proj, c2p only, grouped tanh conv, token types
    "v2-plain": ("deberta-v2", dict(TINY, relative_attention=True, pos_att_type=["c2p"], position_buckets=-1,
                                    max_relative_positions=16, share_att_key=False, conv_kernel_size=3,
                                    conv_groups=2, type_vocab_size=2, legacy=False)),
}
HF_CLASSES = {
    "deberta": {"feature-extraction": "DebertaModel", "fill-mask": "DebertaForMaskedLM",
                "text-classification": "DebertaForSequenceClassification",
                "token-classification": "DebertaForTokenClassification",
                "question-answering": "DebertaForQuestionAnswering",
                # transformers has no DebertaForMultipleChoice: sequence classification with one
                # label over the flattened choices is the same computation and the same weights
                "multiple-choice": "DebertaForSequenceClassification"},
    "deberta-v2": {"feature-extraction": "DebertaV2Model", "fill-mask": "DebertaV2ForMaskedLM",
                   "text-classification": "DebertaV2ForSequenceClassification",
                   "token-classification": "DebertaV2ForTokenClassification",
                   "question-answering": "DebertaV2ForQuestionAnswering",
                   "multiple-choice": "DebertaV2ForMultipleChoice"},
}
OUTPUT_KEYS = ("last_hidden_state", "logits", "start_logits", "end_logits")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


def _hf_config(family, kwargs, task):
    cls = transformers.DebertaConfig if family == "deberta" else transformers.DebertaV2Config
    labels = {"multiple-choice": 1, "question-answering": 2}.get(task, 3)
    return cls(**kwargs, num_labels=labels)


_CACHE = {}


def _pair(name, task, tmp_path_factory):
    """(transformers model, our model) with the same perturbed weights, cached per (config, task)."""
    if (name, task) not in _CACHE:
        family, kwargs = CONFIGS[name]
        cfg = _hf_config(family, kwargs, task)
        torch.manual_seed(0)
        hf = getattr(transformers, HF_CLASSES[family][task])(cfg).eval()
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        folder = tmp_path_factory.mktemp(f"{name}-{task}")
        hf.save_pretrained(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = load_reference(str(folder), task)
        assert ref.family.name == family and not ref.missing_head
        _CACHE[name, task] = (hf, ref.model, cfg)
    return _CACHE[name, task]


def _inputs(cfg, batch, seq, choices=None):
    g = torch.Generator().manual_seed(seq)
    lead = (batch, choices) if choices else (batch,)
    ids = torch.randint(1, cfg.vocab_size, (*lead, seq), generator=g)
    mask = torch.ones(*lead, seq, dtype=torch.long)
    mask[1, ..., seq // 2:] = 0  # one row padded from the middle
    mask[-1, ..., seq - 1:] = 0  # one row padded by a single token
    tt = torch.randint(0, cfg.type_vocab_size, ids.shape, generator=g) if cfg.type_vocab_size else None
    return ids, mask, tt


def _hf_outputs(hf, task, ids, mask, tt):
    if task == "multiple-choice" and ids.dim() == 3 and not isinstance(hf, transformers.DebertaV2ForMultipleChoice):
        B, C, S = ids.shape
        flat = hf(input_ids=ids.view(-1, S), attention_mask=mask.view(-1, S),
                  token_type_ids=None if tt is None else tt.view(-1, S))
        return [flat.logits.view(B, C)]
    out = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt)
    return [out[k] for k in OUTPUT_KEYS if k in out]


def _compare(name, task, seq, tmp_path_factory, batch=3):
    hf, ours, cfg = _pair(name, task, tmp_path_factory)
    ids, mask, tt = _inputs(cfg, batch, seq, choices=2 if task == "multiple-choice" else None)
    with torch.no_grad():
        want = _hf_outputs(hf, task, ids, mask, tt)
        got = ours(ids, mask, tt)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        diff = (g - w).abs().max().item()
        assert diff <= ATOL, f"{name} {task} S={seq}: max abs diff {diff}"
    return got


# ---------------------------------------------------------------- models vs transformers

@pytest.mark.parametrize("seq", LENGTHS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_backbone_matches_transformers(name, seq, tmp_path_factory):
    _compare(name, "feature-extraction", seq, tmp_path_factory)


HEAD_CASES = [(name, task) for name in ("v1", "v3") for task in ("fill-mask", "text-classification",
              "token-classification", "question-answering", "multiple-choice")]
HEAD_CASES += [("v1-p2c", "fill-mask"), ("v2-plain", "fill-mask"), ("v2-plain", "multiple-choice")]


@pytest.mark.parametrize("name,task", HEAD_CASES)
def test_heads_match_transformers(name, task, tmp_path_factory):
    _compare(name, task, 20, tmp_path_factory)


def test_embedding_size_mlm_and_no_token_types(tmp_path_factory):
    _compare("v1-embproj", "fill-mask", 20, tmp_path_factory)
    _, ours, _ = _pair("v3", "feature-extraction", tmp_path_factory)
    assert ours.input_names == ("input_ids", "attention_mask")
    ids = torch.randint(1, 100, (2, 9))
    (seq,) = ours(ids, torch.ones_like(ids))  # no token_type_ids
    assert seq.shape == (2, 9, 32)


def test_fill_mask_head_names(tmp_path_factory):
    """legacy=True (the config default) -> cls.predictions.*; legacy=False -> lm_predictions.lm_head.*"""
    _, legacy, _ = _pair("v1", "fill-mask", tmp_path_factory)
    _, original, _ = _pair("v2-plain", "fill-mask", tmp_path_factory)
    assert "cls.predictions.transform.dense.weight" in legacy.state_dict()
    assert "lm_predictions.lm_head.dense.weight" in original.state_dict()


@pytest.mark.parametrize("preset,hf_class", [("deberta", "DebertaModel"), ("deberta-v3-base", "DebertaV2Model"),
                                             ("deberta-v2-xlarge", "DebertaV2Model")])
def test_real_presets_have_transformers_parameters(preset, hf_class):
    """Real-size presets build (on the meta device) with exactly transformers' tensor names and shapes."""
    fam = get_family("deberta" if hf_class == "DebertaModel" else "deberta-v2")
    hf_cfg = getattr(transformers, hf_class).config_class(**fam.presets[preset])
    with torch.device("meta"):
        ours = fam.build(fam.config_cls.from_hf(fam.presets[preset]), "feature-extraction")
        hf = getattr(transformers, hf_class)(hf_cfg)
    want = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    got = {k.removeprefix("deberta."): tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want


def test_families_registered_with_multiple_choice():
    for name in ("deberta", "deberta-v2"):
        fam = get_family(name)
        assert "multiple-choice" in fam.tasks and {name, f"{name}-tiny"} <= set(fam.presets)
    assert {"deberta-v3-base", "deberta-v2-xlarge"} <= set(get_family("deberta-v2").presets)


# ---------------------------------------------------------------- the DisentangledAttention op

def _naive_scores(c2c, c2p, p2c, span, factor, max_position):
    """Per-element loops with transformers' bucket formula in float64: an independent oracle."""
    def bucket(d):
        mid = span // 2
        if max_position <= 0 or abs(d) <= mid:
            return d
        b = math.ceil(math.log(abs(d) / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
        return int(math.copysign(b, d))

    N, S, _ = c2c.shape
    out = c2c.clone().double()
    for i in range(S):
        for j in range(S):
            r = min(max(bucket(i - j) + span, 0), 2 * span - 1)
            if c2p is not None:
                out[:, i, j] += c2p[:, i, r]
            if p2c is not None:
                out[:, i, j] += p2c[:, j, r]
    return (out * factor).float()


def _op_inputs(n=4, seq=20, span=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seq)
    return [torch.randn(n, seq, w, generator=g).to(dtype) for w in (seq, 2 * span, 2 * span)]


@pytest.mark.parametrize("max_position", [0, 16])
@pytest.mark.parametrize("which", ["both", "c2p", "p2c"])
@pytest.mark.parametrize("seq", [3, 12, 30])
def test_op_eager_and_torch_forms_match_naive(max_position, which, seq):
    c2c, c2p, p2c = _op_inputs(seq=seq)
    c2p = None if which == "p2c" else c2p
    p2c = None if which == "c2p" else p2c
    want = _naive_scores(c2c, c2p, p2c, 8, 0.25, max_position)
    eager = disentangled_attention(c2c, c2p, p2c, 8, 0.25, max_position)
    pure = disentangled_attention_torch(c2c, c2p, p2c, 8, 0.25, max_position)
    assert (eager - want).abs().max().item() <= 1e-5
    assert (pure - want).abs().max().item() <= 1e-5
    assert torch.equal(eager, pure)  # same additions in the same order


def test_op_half_precision():
    args = _op_inputs(seq=20, dtype=torch.float16)
    eager = disentangled_attention(*args, 8, 0.25, 16)
    assert eager.dtype == torch.float16
    assert (eager.float() - disentangled_attention_torch(*args, 8, 0.25, 16).float()).abs().max() <= 1e-3


@pytest.mark.parametrize("span,max_position", [(8, 16), (256, 512), (128, 512), (64, 1024)])
def test_log_bucket_matches_transformers(span, max_position):
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position
    rel = torch.arange(-3000, 3001)
    want = make_log_bucket_position(rel, span, max_position).long()
    assert torch.equal(log_bucket(rel, span, max_position), want)


@pytest.mark.parametrize("span", [8, 64, 256])
def test_log_bucket_matches_tensorrt_kernel_formula(span):
    """The plugin's v2 kernel (float32 logf, 1 - 1e-7 guard, max position 2 * span) picks the same
    table rows, so max_position == 2 * span lowers to DisentangledAttention_TRT exactly."""
    d = np.arange(-4096, 4097)
    mid = span // 2
    log_mid = np.float32(np.log(np.float32(mid)))
    scale = np.float32((mid - 1) / (np.log(np.float32(2 * span - 1)) - log_mid) * np.float32(1 - 1e-7))
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.ceil((np.log(np.abs(d).astype(np.float32)) - log_mid) * scale)
    far = np.nan_to_num(far, posinf=0, neginf=0).astype(np.int64) + mid  # d = 0 is in the near region
    trt = np.clip(np.where(np.abs(d) <= mid, d, np.sign(d) * far) + span, 0, 2 * span - 1)
    ours = torch.clamp(log_bucket(torch.from_numpy(d), span, 2 * span) + span, 0, 2 * span - 1).numpy()
    assert np.array_equal(ours, trt)


def test_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        c2c, c2p, p2c = torch.empty(6, 20, 20), torch.empty(6, 20, 16), torch.empty(6, 20, 16)
        out = torch.ops.edgeport.disentangled_attention(c2c, c2p, p2c, 8, 0.2, 16)
        assert out.shape == (6, 20, 20) and out.dtype == torch.float32
        out = torch.ops.edgeport.disentangled_attention(c2c, None, p2c, 8, 0.2, 0)
        assert out.shape == (6, 20, 20)
        with pytest.raises(RuntimeError, match="2 \\* span"):
            torch.ops.edgeport.disentangled_attention(c2c, c2p, p2c, 4, 0.2, 0)


def test_opcheck():
    args = _op_inputs(seq=12)
    torch.library.opcheck(torch.ops.edgeport.disentangled_attention.default, (*args, 8, 0.25, 16),
                          test_utils=("test_schema", "test_faketensor"))


def _tiny_model(task="feature-extraction"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_reference("deberta-v2-tiny", task).model


def test_module_swap_to_custom_op_and_back():
    model = _tiny_model()
    ids, mask = torch.randint(1, 1000, (2, 20)), torch.ones(2, 20, dtype=torch.long)
    mask[1, 12:] = 0
    with torch.no_grad():
        (pure,) = model(ids, mask)
        assert use_custom_op(model) == 2  # one per layer
        assert all(isinstance(m.self.disentangled, DisentangledAttentionOp)
                   for m in (layer.attention for layer in model.deberta.encoder.layer))
        (op,) = model(ids, mask)
        assert use_custom_op(model, enabled=False) == 2
        (back,) = model(ids, mask)
    assert (pure - op).abs().max().item() <= 1e-6 and torch.equal(pure, back)


def test_torch_export_keeps_op_with_symbolic_shapes():
    """torch.export runs the fake kernel on symbolic (N, S): the op stays one node, output (N, S, S)."""
    model = DisentangledAttentionOp(8, 0.25, 16)
    args = _op_inputs(seq=20)
    n, s = torch.export.Dim("n"), torch.export.Dim("s", min=2, max=512)
    ep = torch.export.export(model, tuple(args), dynamic_shapes=({0: n, 1: s, 2: s}, {0: n, 1: s}, {0: n, 1: s}),
                             strict=False)
    calls = [node for node in ep.graph.nodes if node.op == "call_function"]
    assert [c.target for c in calls] == [torch.ops.edgeport.disentangled_attention.default]
    out, c2c = calls[0].meta["val"], calls[0].args[0].meta["val"]
    assert isinstance(out.shape[1], torch.SymInt) and str(out.shape) == str(c2c.shape)  # (N, S, S) symbolic
    other = _op_inputs(n=3, seq=33)
    assert torch.equal(ep.module()(*other), disentangled_attention(*other, 8, 0.25, 16))


# ---------------------------------------------------------------- ONNX (legacy exporter) of tiny v2

def test_onnx_export_runs_at_other_lengths(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _tiny_model()
    ids, mask = torch.randint(1, 1000, (2, 20)), torch.ones(2, 20, dtype=torch.long)
    path = tmp_path / "deberta-v2-tiny.onnx"
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, mask), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seq in ((3, 40), (1, 5), (2, 13)):
        ids, mask = torch.randint(1, 1000, (batch, seq)), torch.ones(batch, seq, dtype=torch.long)
        mask[-1, seq // 2 + 1:] = 0
        (got,) = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            (want,) = model(ids, mask)
        diff = np.abs(got - want.numpy()).max()
        assert got.shape == tuple(want.shape) and diff <= ATOL, f"B={batch} S={seq}: {diff}"
