"""Helpers for the serving tests: tiny exports (made once per session) and a live server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

# name -> (preset or builder, task, target, export kwargs); bert presets carry the real uncased vocab
EXPORTS = {
    "cls": ("bert-tiny", "text-classification", "onnx", {}),
    "fm": ("bert-tiny", "fill-mask", "onnx", {}),
    "tok": ("bert-tiny", "token-classification", "onnx", {}),
    "qa": ("bert-tiny", "question-answering", "onnx", {}),
    "emb": ("bert-tiny", "feature-extraction", "onnx", {}),
    "cls-tfl": ("mobilebert-tiny", "text-classification", "tflite", {"seq_len": 32, "batch": 2}),
}
GEN_VOCAB = 97  # word-level tokenizer: '<pad>' 0, '<s>' 1, '</s>' 2, 'w3' .. 'w96'


def make_decoder_checkpoint(folder):
    """A tiny GPT-2 (transformers, perturbed weights) with a word-level tokenizer.json."""
    import torch
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    hf = T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=GEN_VOCAB,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(folder)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, GEN_VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def make_exports(root) -> dict:
    """name -> export folder for every entry of EXPORTS, plus 'gen' (GPT-2 text generation)."""
    from edgeport.export import export

    out = {}
    for name, (model, task, target, kw) in EXPORTS.items():
        out[name] = export(model, target=target, task=task, out_dir=root / name, quiet=True, **kw)
    ckpt = make_decoder_checkpoint(root / "gpt2-ckpt")
    out["gen"] = export(str(ckpt), target="onnx", task="text-generation", lowering="generic", out_dir=root / "gen",
                        quiet=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, port: int | None = None):
    """Serve a FastAPI app with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def assert_close(got, want, path="", rel=1e-5, abs_=1e-5):
    """Same structure; floats equal within rel/abs (a batch's padding moves the last digits)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{path}: keys {set(got)} != {set(want)}"
        for k in want:
            assert_close(got[k], want[k], f"{path}.{k}", rel, abs_)
    elif isinstance(want, (list, tuple, np.ndarray)):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{path}[{i}]", rel, abs_)
    elif isinstance(want, (float, np.floating)):
        assert abs(float(got) - float(want)) <= abs_ + rel * abs(float(want)), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


# ---------------------------------------------------------------- one live server per test module

CONFIG = dict(max_batch=8, max_wait_ms=20, threads=1, max_items=16, max_text_chars=4000, max_body_bytes=64_000)


@pytest.fixture(scope="module")
def server(serve_exports):
    """(base URL, {name: folder}) of one server holding every tiny export; the TFLite one with 2 workers."""
    from edgeport.serve.app import create_app
    from edgeport.serve.config import ServeConfig

    cfg = ServeConfig(**CONFIG, workers=2)
    with running(create_app(serve_exports, cfg)) as url:
        yield url, serve_exports


def post(url, path, body, **kw):
    """POST `body` as JSON to url + path (30 s timeout) -> the httpx response."""
    import httpx

    return httpx.post(url + path, json=body, timeout=30, **kw)


V2_OK = [{"name": n, "shape": [1, 3], "datatype": "INT64", "data": [101, 2000, 102] if n == "input_ids" else
          [1, 1, 1] if n == "attention_mask" else [0, 0, 0]} for n in ("input_ids", "attention_mask", "token_type_ids")]


def _v2(**change):
    return {"inputs": [{**t, **change.get(t["name"], {})} for t in V2_OK]}


