"""edgeport serve: every route against the runtime pipeline's own outputs on the same artifact, through
real clients (openai, tritonclient, httpx) on a live server at 127.0.0.1; limits and errors; batching."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import CONFIG, V2_OK, _v2, assert_close, post, running, server  # noqa: E402,F401

from edgeport.runtime import pipeline  # noqa: E402
from edgeport.runtime.generate import TextGenerator  # noqa: E402
from edgeport.serve.app import create_app  # noqa: E402
from edgeport.serve.config import ServeConfig  # noqa: E402

@pytest.fixture(scope="module")
def pipes(serve_exports):
    return {n: pipeline(f, threads=1) for n, f in serve_exports.items() if n != "gen"}


# ---------------------------------------------------------------- per-task JSON routes

def test_task_routes_equal_the_pipelines(server, pipes):
    url, _ = server
    texts = ["the cat sat on the mat.", "alice met bob in paris, the capital of france."]
    r = post(url, "/models/cls/classify", {"inputs": texts})
    assert r.status_code == 200 and r.json()["model"] == "cls"
    assert_close(r.json()["results"], pipes["cls"](texts))
    r = post(url, "/models/cls/classify", {"inputs": texts, "pairs": ["a dog.", "who met bob?"]})
    assert_close(r.json()["results"], pipes["cls"](texts, ["a dog.", "who met bob?"]))
    masked = ["paris is the [MASK] of france.", "the [MASK] sat on the [MASK]."]
    assert_close(post(url, "/models/fm/fill-mask", {"inputs": masked, "top_k": 3}).json()["results"],
                 pipes["fm"](masked, top_k=3))
    for agg in ("simple", "none", "first"):
        r = post(url, "/models/tok/token-classification", {"inputs": texts, "aggregation_strategy": agg})
        assert_close(r.json()["results"], pipes["tok"](texts, aggregation_strategy=agg))
    r = post(url, "/models/qa/question-answering", {"question": ["who met bob?", "where?"], "context": texts[::-1],
                                                     "top_k": 2})
    assert_close(r.json()["results"], pipes["qa"](["who met bob?", "where?"], texts[::-1], top_k=2))
    long_context = " ".join(["the river in paris is big."] * 120)  # longer than 512 tokens: windows
    r = post(url, "/models/qa/question-answering", {"question": "what is big?", "context": long_context,
                                                     "doc_stride": 64})
    assert r.status_code == 200
    assert_close(r.json()["results"], [pipes["qa"]("what is big?", long_context, doc_stride=64)])


def test_embeddings_route(server, pipes):
    url, _ = server
    texts = ["a red book.", "the dog reads a blue book in the city."]
    for pooling in ("mean", "cls"):
        r = post(url, "/models/emb/embeddings", {"inputs": texts, "pooling": pooling}).json()
        want = pipes["emb"](texts, pooling=pooling)
        assert r["dim"] == want.shape[1]
        np.testing.assert_allclose(r["embeddings"], want, rtol=1e-5, atol=1e-5)
    r = post(url, "/models/emb/embeddings", {"inputs": texts, "normalize": True}).json()
    np.testing.assert_allclose(np.linalg.norm(r["embeddings"], axis=1), 1, atol=1e-6)
    # pooling "none": the pipeline's (tokens, dim) rows per text, of different lengths
    r = post(url, "/models/emb/embeddings", {"inputs": texts, "pooling": "none"})
    want = pipes["emb"](texts, pooling="none")
    assert r.status_code == 200, r.text
    assert r.json()["dim"] == want[0].shape[1] and [len(e) for e in r.json()["embeddings"]] == [len(w) for w in want]
    for got, w in zip(r.json()["embeddings"], want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)
    r = post(url, "/models/emb/embeddings", {"inputs": texts, "pooling": "none", "normalize": True}).json()
    for got, w in zip(r["embeddings"], want):
        np.testing.assert_allclose(got, w / np.linalg.norm(w, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_generate_route_equals_text_generator(server):
    url, exports = server
    gen = TextGenerator(exports["gen"], threads=1)
    r = post(url, "/models/gen/generate", {"prompt": ["w5 w9 w11", "w7"], "max_new_tokens": 6}).json()
    assert [x["text"] for x in r["results"]] == gen.generate(["w5 w9 w11", "w7"], max_new_tokens=6)
    assert [x["prompt_tokens"] for x in r["results"]] == [3, 1]
    assert all(1 <= x["completion_tokens"] <= 6 for x in r["results"])


def test_concurrent_requests_share_batches_and_get_their_own_answers(server, pipes):
    url, _ = server
    texts = [f"the {w} sat on the mat." for w in ("cat", "dog", "book", "city", "river", "alice", "bob", "red")] * 3

    def one(t):
        return post(url, "/models/emb/embeddings", {"inputs": t}).json()["embeddings"][0]

    before = _metric(url, 'edgeport_batch_size_rows_count{model="emb"}')
    with cf.ThreadPoolExecutor(12) as pool:
        got = list(pool.map(one, texts))
    np.testing.assert_allclose(got, pipes["emb"](texts), rtol=1e-5, atol=1e-5)
    runs = _metric(url, 'edgeport_batch_size_rows_count{model="emb"}') - before
    assert runs < len(texts), f"{len(texts)} concurrent requests took {runs} model runs: nothing was batched"


def test_litert_workers_each_have_an_interpreter(server, pipes):
    url, _ = server
    texts = ["the cat sat.", "bob met alice.", "a big red dog.", "paris is a city."] * 3
    with cf.ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda t: post(url, "/models/cls-tfl/classify", {"inputs": t}).json()["results"][0], texts))
    assert_close(got, pipes["cls-tfl"](texts))


def test_tflite_pool_holds_one_interpreter_per_worker(serve_exports):
    from edgeport.serve.models import ServedModel

    m = ServedModel("t", serve_exports["cls-tfl"], ServeConfig(workers=3, threads=1))
    held = [m._pool.get() for _ in range(3)]
    assert len({id(p.session.interp) for p in held}) == 3
    shared = ServedModel("o", serve_exports["cls"], ServeConfig(workers=3, threads=1))
    assert len({id(shared._pool.get().session) for _ in range(3)}) == 1  # onnxruntime: one shared session


def test_no_spin_reaches_the_onnxruntime_session(serve_exports, pipes):
    from edgeport.serve.models import ServedModel

    def spin_entry(cfg):  # read back from the session onnxruntime opened
        sess = ServedModel("o", serve_exports["cls"], cfg)._pool.get().session.sess
        return sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert spin_entry(ServeConfig(threads=2, spin=False)) == "0"
    with pytest.raises(RuntimeError, match="allow_spinning"):  # onnxruntime's default: no entry
        spin_entry(ServeConfig(threads=2))
    quiet = ServedModel("q", serve_exports["cls"], ServeConfig(threads=2, spin=False))
    texts = ["the cat sat.", "bob met alice in paris."]
    got = quiet.run(("classify", False), [{"texts": texts, "pairs": []}])[0]
    assert_close(got, pipes["cls"](texts))


def _metric(url, line_start) -> float:
    text = httpx.get(url + "/metrics").text
    rows = [ln for ln in text.splitlines() if ln.startswith(line_start)]
    return float(rows[0].split()[-1]) if rows else 0.0


# ---------------------------------------------------------------- OpenAI-compatible, through the openai client

@pytest.fixture(scope="module")
def openai_client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def test_openai_embeddings(openai_client, pipes):
    texts = ["the cat sat on the mat.", "bob reads."]
    want = pipes["emb"](texts, pooling="mean")
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    for fmt in ({}, {"encoding_format": "float"}):  # unasked, the client asks for base64 and decodes it
        r = openai_client.embeddings.create(model="emb", input=texts, **fmt)
        np.testing.assert_allclose([d.embedding for d in r.data], want, rtol=1e-5, atol=1e-6)
    assert r.usage.prompt_tokens == sum(len(e.ids) for e in pipes["emb"].tokenizer.encode_batch(texts))
    assert [m.id for m in openai_client.models.list()][:1] == ["cls"]


def test_openai_completions_and_chat(openai_client, serve_exports):
    gen = TextGenerator(serve_exports["gen"], threads=1)
    want = gen.generate("w5 w9 w11", max_new_tokens=8)
    r = openai_client.completions.create(model="gen", prompt="w5 w9 w11", max_tokens=8, temperature=0)
    assert r.choices[0].text == want and r.usage.prompt_tokens == 3
    assert r.usage.total_tokens == 3 + r.usage.completion_tokens and r.choices[0].finish_reason in ("stop", "length")
    stream = openai_client.completions.create(model="gen", prompt="w5 w9 w11", max_tokens=8, temperature=0,
                                              stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens

    messages = [{"role": "system", "content": "w3 w4"}, {"role": "user", "content": "w5 w6"}]
    prompt = "system: w3 w4\nuser: w5 w6\nassistant:"  # the documented template
    chat_want = gen.generate(prompt, max_new_tokens=5)
    c = openai_client.chat.completions.create(model="gen", messages=messages, max_tokens=5, temperature=0)
    assert c.choices[0].message.content == chat_want and c.choices[0].message.role == "assistant"
    parts = openai_client.chat.completions.create(model="gen", messages=messages, max_tokens=5, temperature=0,
                                                  stream=True)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == chat_want


def test_sse_stream_ends_with_done_and_stop_strings_cut(server, serve_exports):
    url, _ = server
    body = {"model": "gen", "prompt": "w5 w9 w11", "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)
    full = "".join(json.loads(ln[6:])["choices"][0]["text"] for ln in lines[:-1])
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    want = full[:full.find(stop)]
    plain = post(url, "/v1/completions", {**body, "stream": False, "stop": stop}).json()
    assert plain["choices"][0]["text"] == want and plain["choices"][0]["finish_reason"] == "stop"
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stop": [stop]}, timeout=30) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert "".join(json.loads(ln[6:])["choices"][0]["text"] for ln in lines[:-1]) == want


def test_client_leaving_mid_stream_leaves_the_server_serving(server):
    url, _ = server
    body = {"model": "gen", "messages": [{"role": "user", "content": "w5"}], "max_tokens": 60, "stream": True,
            "temperature": 0.9, "seed": 1}
    for _ in range(3):
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            next(r.iter_lines())  # one event, then hang up
    assert httpx.get(url + "/health").status_code == 200
    assert post(url, "/models/gen/generate", {"prompt": "w5", "max_new_tokens": 3}).status_code == 200


# ---------------------------------------------------------------- KServe v2, through tritonclient

def test_kserve_v2_through_tritonclient(server, pipes):
    http = pytest.importorskip("tritonclient.http")
    url, _ = server
    client = http.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("cls")
    meta = client.get_model_metadata("cls")
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == \
        {s.name: ("INT64", [-1, -1]) for s in pipes["cls"].session.inputs}
    enc = pipes["cls"].encode(["the cat sat on the mat.", "bob met alice in paris."])
    want = pipes["cls"].session.run(enc.feeds)["logits"]
    for binary in (True, False):
        inputs = []
        for name, arr in enc.feeds.items():
            t = http.InferInput(name, list(arr.shape), "INT64")
            t.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(t)
        res = client.infer("cls", inputs, outputs=[http.InferRequestedOutput("logits", binary_data=binary)])
        np.testing.assert_allclose(res.as_numpy("logits"), want, rtol=1e-5, atol=1e-6)
    res = client.infer("cls", inputs)  # no outputs named: all of them, binary
    np.testing.assert_allclose(res.as_numpy("logits"), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="INT64, got datatype FP32"):
        t = http.InferInput("input_ids", [1, 3], "FP32")
        t.set_data_from_numpy(np.zeros((1, 3), np.float32))
        client.infer("cls", [t] + inputs[1:])


# ---------------------------------------------------------------- bad input: 4xx JSON, never 5xx

BAD = [
    ("/models/cls/classify", b"{not json", 422),
    ("/models/cls/classify", {"inputs": 3}, 422),
    ("/models/cls/classify", {"text": "x"}, 422),
    ("/models/nope/classify", {"inputs": "x"}, 404),
    ("/models/emb/classify", {"inputs": "x"}, 400),
    ("/models/cls/generate", {"inputs": "x"}, 400),  # another task's body: the task is the error, not "prompt"
    ("/models/nope/question-answering", {"inputs": "x"}, 404),
    ("/models/cls/classify", {"inputs": ""}, 400),
    ("/models/cls/classify", {"inputs": []}, 400),
    ("/models/cls/classify", {"inputs": ["a"] * 17}, 413),
    ("/models/cls/classify", {"inputs": "a" * 4001}, 413),
    ("/models/cls/classify", {"inputs": "word " * 600}, 400),  # over 512 tokens
    ("/models/cls/classify", {"inputs": ["a", "b"], "pairs": ["c"]}, 400),
    ("/models/fm/fill-mask", {"inputs": "no mask here"}, 400),
    ("/models/fm/fill-mask", {"inputs": "a [MASK]", "top_k": 0}, 422),
    ("/models/qa/question-answering", {"question": ["a", "b"], "context": "c"}, 400),
    ("/models/gen/generate", {"prompt": "w5", "temperature": -1}, 422),
    ("/v1/embeddings", {"model": "cls", "input": "x"}, 400),
    ("/v1/embeddings", {"model": "emb", "input": [1, 2, 3]}, 422),
    ("/v1/embeddings", {"model": "emb", "input": "x", "dimensions": 7}, 400),
    ("/v1/completions", {"model": "gen", "prompt": "w5", "n": 2}, 400),
    ("/v1/completions", {"model": "gen", "prompt": "w5", "n": True}, 422),  # not read as n=1
    ("/v1/completions", {"model": "gen", "prompt": "w5", "max_tokens": True}, 422),
    ("/v1/completions", {"model": "gen", "prompt": "w5", "seed": False}, 422),
    ("/v1/chat/completions", {"model": "gen", "messages": []}, 422),
    ("/v1/chat/completions", {"model": "gen", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400),
    ("/v1/chat/completions", {"model": "gen", "messages": [{"role": "user"}]}, 422),  # content names itself
    ("/v1/chat/completions", {"model": "gen", "messages": [{"role": "system", "content": "w3"},
                                                           {"role": "user", "content": None}]}, 422),
    ("/v2/models/cls/infer", _v2(input_ids={"datatype": "FP32"}), 400),
    ("/v2/models/cls/infer", _v2(input_ids={"shape": [1, 4]}), 400),
    ("/v2/models/cls/infer", _v2(input_ids={"shape": [3]}), 400),
    ("/v2/models/cls/infer", _v2(input_ids={"data": [1.5, 2, 3]}), 400),
    ("/v2/models/cls/infer", _v2(input_ids={"data": [10**30, 2, 3]}), 400),
    ("/v2/models/cls/infer", _v2(input_ids={"data": [10**9, 2, 3]}), 400),  # id out of the vocab
    ("/v2/models/cls/infer", _v2(input_ids={"data": [1, -5, 3]}), 400),  # Gather would read from the end
    ("/v2/models/cls/infer", _v2(token_type_ids={"data": [0, -1, 0]}), 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK[:2]}, 400),
    ("/v2/models/cls/infer", _v2(input_ids={"parameters": [1]}), 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK, "outputs": 3}, 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK, "parameters": "x"}, 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK, "outputs": [{"name": "nope"}]}, 400),
    ("/v2/models/cls/infer", _v2(input_ids={"name": ["input_ids"]}), 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK[:2] + [{**V2_OK[2], "name": {"n": 1}}]}, 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK, "outputs": ["logits"]}, 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK, "outputs": [{"name": 7}]}, 400),
    ("/v2/models/nope/infer", {"inputs": V2_OK}, 404),
    ("/v2/models/gen/infer", {"inputs": V2_OK}, 400),
    ("/v2/models/cls/versions/7/infer", {"inputs": V2_OK}, 404),
]


@pytest.mark.parametrize("path, body, status", BAD, ids=[f"{i}:{b[0]}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_4xx_json_error(server, path, body, status):
    url, _ = server
    as_json = {"content": body, "headers": {"content-type": "application/json"}}
    kw = as_json if isinstance(body, bytes) else {"json": body}
    r = httpx.post(url + path, timeout=30, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err if path.startswith("/v2") else err["message"]), r.text
    if path in ("/models/cls/generate", "/models/nope/question-answering"):
        assert ("is a text-classification model" if status == 400 else "unknown model 'nope'") in err["message"]
    if status == 422 and path == "/v1/chat/completions" and body["messages"]:
        assert f"messages.{len(body['messages']) - 1}.content" in err["message"], err
    assert httpx.get(url + "/health").status_code == 200


def test_oversized_bodies_get_413(server):
    url, _ = server
    big = json.dumps({"inputs": ["a b c"] * 15_000}).encode()
    assert httpx.post(url + "/models/cls/classify", content=big, timeout=30).status_code == 413

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(70):
            yield b" " * 1000
        yield b'{"inputs": "x"}'

    r = httpx.post(url + "/models/cls/classify", content=chunks(), timeout=30)
    assert r.status_code == 413 and "request body over" in r.json()["error"]["message"]


def test_metrics_and_openapi(server):
    url, _ = server
    text = httpx.get(url + "/metrics").text
    for name in ("edgeport_requests_total", "edgeport_request_errors_total", "edgeport_request_latency_seconds_bucket",
                 "edgeport_batch_size_rows_bucket", "edgeport_queue_depth_rows"):
        assert name in text
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    for p in ("/v1/embeddings", "/v1/chat/completions", "/v2/models/{name}/infer", "/models/{model}/classify",
              "/metrics", "/health"):
        assert p in paths


# ---------------------------------------------------------------- queue, timeout, shutdown

@pytest.fixture
def blocked_server(serve_exports):
    """A server whose 'cls' model runs block until released; max queue 1 row, timeout 2 s."""
    from edgeport.serve.models import ServedModel

    cfg = ServeConfig(max_batch=1, max_wait_ms=0, max_queue=1, timeout_s=2.0, threads=1)
    model = ServedModel("cls", serve_exports["cls"], cfg)
    release, started, real = threading.Event(), threading.Event(), model.run

    def slow_run(key, payloads):
        started.set()
        release.wait(10)
        return real(key, payloads)

    model.run = slow_run
    with running(create_app({"cls": model}, cfg)) as url:
        yield url, release, started
        release.set()


def test_full_queue_answers_503_with_retry_after_then_timeouts_504(blocked_server):
    url, release, started = blocked_server
    with cf.ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, "/models/cls/classify", {"inputs": "a"})  # running, blocked
        assert started.wait(10)
        second = pool.submit(post, url, "/models/cls/classify", {"inputs": "b"})  # queued: 1 row
        for _ in range(100):
            if _metric(url, 'edgeport_queue_depth_rows{model="cls"}') >= 1:
                break
            threading.Event().wait(0.02)
        third = post(url, "/models/cls/classify", {"inputs": "c"})
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert first.result().status_code == 504 and second.result().status_code == 504
    release.set()
    assert post(url, "/models/cls/classify", {"inputs": "d"}).status_code == 200


def test_sigterm_finishes_in_flight_requests(serve_exports, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from serve_helpers import free_port

    port = free_port()
    # max-wait 40 s: a lone request sits in the queue, so SIGTERM arrives while it is in flight; the
    # shutdown runs it at once (not after 40 s, nor a cancelled request at the 2 s graceful timeout)
    proc = subprocess.Popen([sys.executable, "-m", "edgeport.cli", "serve", f"cls={serve_exports['cls']}",
                             "--port", str(port), "--max-wait-ms", "40000", "--graceful-timeout", "2",
                             "--threads", "1", "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with cf.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(post, url, "/models/cls/classify", {"inputs": "the cat sat."})
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            r = fut.result()
            answered = time.monotonic() - t0
        assert r.status_code == 200 and r.json()["results"][0]["label"], r.text
        assert answered < 1.5, answered  # within the graceful timeout
        # uvicorn re-raises the signal after its clean shutdown into the CLI's SIGTERM handler, whose
        # exception uvicorn's runner takes as the end of serving: a clean shutdown exits 0
        assert proc.wait(30) == 0
        log = proc.stdout.read()
        assert "Waiting for application shutdown" in log and "Application shutdown complete" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from edgeport.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["serve", "bad name=" + str(tmp_path)]) == 2
    assert "must match" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2


def test_serve_imports_neither_torch_nor_tensorflow():
    import subprocess
    import sys

    code = ("import sys, edgeport.serve.app, edgeport.serve.cli, edgeport.serve.ray_serve, edgeport.serve.triton_repo, "
            "edgeport.serve.kserve, edgeport.serve.openai_routes, edgeport.cli; edgeport.serve.app.create_app; "
            "bad = [m for m in ('torch', 'tensorflow', 'keras', 'transformers', 'edgeport.export', "
            "'edgeport.reference_models') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_serve_extra_does_not_pull_torch_or_tensorflow():
    """The installed requirement closure of edgeport[serve] (markers evaluated) holds no torch/TensorFlow."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen, todo = set(), [("edgeport", ("serve",))]
    while todo:
        name, extras = todo.pop()
        key = (name.lower().replace("_", "-"), extras)
        if key in seen:
            continue
        seen.add(key)
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            env_ok = [req.marker is None or req.marker.evaluate({"extra": e}) for e in (extras or ("",))]
            if any(env_ok):
                todo.append((req.name, tuple(sorted(req.extras))))
    names = {n for n, _ in seen}
    assert {"fastapi", "uvicorn", "prometheus-client"} <= names, names
    assert not names & {"torch", "tensorflow", "tensorflow-cpu", "keras", "transformers"}, names
