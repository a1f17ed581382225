"""Shared fixtures: tiny HF-format checkpoints made here with transformers (the test oracle)."""

from __future__ import annotations

import json
import os
import string

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

WORDS = ("the a an is was of in on to and or who what where when paris france capital city river "
         "alice bob met saw went lives big small red blue book read reads cat dog sat mat").split()
# A small WordPiece vocab written here: specials, whole words, letters and their ## continuations.
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "!"] + WORDS
         + list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase])

TINY_MOBILEBERT = dict(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, embedding_size=32, intra_bottleneck_size=32,
                       num_feedforward_networks=2, max_position_embeddings=160)


def perturb(model, scale=0.05, seed=0):
    """Move every parameter off its init (LayerNorm ones, zero biases) so no term is trivially exact."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def write_vocab(folder):
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": true}')


def save_hf(model, folder):
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    write_vocab(folder)
    return folder


HF_CLASSES = {
    "feature-extraction": "MobileBertModel",
    "fill-mask": "MobileBertForMaskedLM",
    "text-classification": "MobileBertForSequenceClassification",
    "token-classification": "MobileBertForTokenClassification",
    "question-answering": "MobileBertForQuestionAnswering",
}


def make_mobilebert(folder, task, seed=0, **overrides):
    import transformers

    cfg = transformers.MobileBertConfig(**{**TINY_MOBILEBERT, **overrides})
    if task.endswith("classification"):
        cfg.id2label = {0: "negative", 1: "positive", 2: "neutral"}
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    torch.manual_seed(seed)
    model = perturb(getattr(transformers, HF_CLASSES[task])(cfg).eval(), seed=seed)
    return save_hf(model, folder), model


def save_mistral_checkpoint(folder, seed: int):
    """mistral-tiny with random weights (each tensor perturbed, norms too, so no two tensors are equal) saved as
    model.safetensors + config.json in `folder` (a streaming-export test checkpoint); returns folder."""
    from safetensors.torch import save_file

    from edgeport.reference_models import load_reference
    from edgeport.reference_models.mistral import PRESETS

    ref = load_reference("mistral-tiny")
    torch.manual_seed(seed)
    sd = {k: (v + 0.1 * torch.randn_like(v)).contiguous() for k, v in ref.model.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(PRESETS["mistral-tiny"]))
    return folder


def decoder_cache_feeds(c: dict, batch: int, new: int, past: int, seed: int, layout: str = "per_layer") -> dict:
    """Random feeds of the KV-cache decoder contract for config dict `c` (hidden_size, num_attention_heads,
    num_key_value_heads, num_hidden_layers, vocab_size): `new` token ids after `past` cached positions and
    a float32 normal(0, 1) cache of (layers, batch, kv heads, past, head dim), as the ONNX export's
    `layout` takes it: "per_layer" (the default export) past_key_values.{i}.key/.value, one layer each;
    "stacked" past_keys/past_values (the same values)."""
    rng = np.random.default_rng(seed)
    head = c["hidden_size"] // c["num_attention_heads"]
    L = c["num_hidden_layers"]
    cache = (L, batch, c["num_key_value_heads"], past, head)
    feeds = {"input_ids": rng.integers(3, c["vocab_size"], (batch, new)),
             "attention_mask": np.ones((batch, past + new), np.int64),
             "position_ids": np.broadcast_to(np.arange(past, past + new), (batch, new)).copy(),
             "past_keys": rng.standard_normal(cache, dtype=np.float32),
             "past_values": rng.standard_normal(cache, dtype=np.float32)}
    if layout == "stacked":
        return feeds
    keys, values = feeds.pop("past_keys"), feeds.pop("past_values")
    for i in range(L):
        feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = keys[i], values[i]
    return feeds


def save_mixtral_checkpoint(folder, seed: int):
    """transformers' MixtralForCausalLM on mixtral-tiny's config (4 experts, top 2, window 8; hidden 64: two
    int4 blocks of 32), every tensor perturbed, saved with save_pretrained (model.safetensors, Mixtral's
    original expert keys) in `folder`; returns (the HF model in eval mode, folder)."""
    import transformers as T

    from edgeport.reference_models.mixtral import PRESETS

    cfg = {k: v for k, v in PRESETS["mixtral-tiny"].items() if k != "model_type"}
    torch.manual_seed(seed)
    hf = T.MixtralForCausalLM(T.MixtralConfig(experts_implementation="eager", **cfg)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(folder)
    return hf, folder


@pytest.fixture(scope="session")
def mobilebert_ckpt(tmp_path_factory):
    """task -> (folder, transformers model) for a tiny MobileBERT with perturbed weights."""
    cache = {}

    def get(task):
        if task not in cache:
            cache[task] = make_mobilebert(tmp_path_factory.mktemp(f"mb-{task}"), task)
        return cache[task]

    return get


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread is faster than two on a shared 2-core machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def matmul_rows(path, seq: int) -> list:
    """Rows (tokens) each weight MatMul of an onnx graph multiplies at batch 1 x `seq`, by running it with
    every such MatMul's input exposed as a graph output."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    weights = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    probes = [n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in probes)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.ones((1, seq), np.int64) for i in sess.get_inputs()}
    return [int(np.prod(x.shape[:-1])) for x in sess.run(probes, feeds)]


@pytest.fixture(scope="session")
def serve_exports(tmp_path_factory):
    """Serving tests: name -> tiny export folder (bert-tiny tasks, a MobileBERT TFLite, a GPT-2 decoder)."""
    pytest.importorskip("fastapi")
    from serve_helpers import make_exports

    return make_exports(tmp_path_factory.mktemp("serve-exports"))


@pytest.fixture(autouse=True, scope="session")
def _static_lowering_defaults():
    """Exports in tests (module- and session-scoped fixtures' included: hence session scope) take the
    registry's static default lowering whatever this machine's CPU is, as on a machine of unknown class:
    the measured per-class defaults (edgeport/ops/lowering_defaults.json) are tested in
    test_lowering_defaults.py, which names the class or patches the flags itself."""
    mp = pytest.MonkeyPatch()
    mp.setattr("edgeport.runtime.machine.detect_cpu_class", lambda: None)
    yield
    mp.undo()
