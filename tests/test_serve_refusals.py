"""edgeport serve: refusals found by fresh-user trials, each a 4xx JSON error (or a one-line CLI error) in our
words, never a 500: ids, names and header lengths on v2 infer, text that is not valid Unicode, non-finite or
huge waits, options checked before anything starts, stop-string usage, OpenAI parameters not implemented.
The shared live server and request helpers are tests/serve_helpers.py's (the same as tests/test_serve.py's)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import CONFIG, V2_OK, _v2, post, server  # noqa: E402,F401

from edgeport.runtime import pipeline  # noqa: E402
from edgeport.runtime.generate import TextGenerator  # noqa: E402
from edgeport.serve.app import create_app  # noqa: E402
from edgeport.serve.config import ServeConfig  # noqa: E402


def test_v2_ids_out_of_range_are_refused_before_running(server):
    """A negative id would be read from the embedding table's end by onnxruntime's Gather (no error): refused
    with the range, as is an id past the tokenizer's vocabulary, instead of the runtime's own message."""
    url, _ = server
    for data, shown in (([1, -5, 3], "-5"), ([10**9, 2, 3], str(10**9))):
        r = httpx.post(url + "/v2/models/cls/infer", json=_v2(input_ids={"data": data}), timeout=30)
        assert r.status_code == 400 and f"input 'input_ids' holds {shown}: its values must lie in [0, " in \
            r.json()["error"], r.text
    for data in ([0, 2, 0], [0, 5, 1]):  # bert-tiny's token type table has 2 rows (transformers' type_vocab_size)
        r = httpx.post(url + "/v2/models/cls/infer", json=_v2(token_type_ids={"data": data}), timeout=30)
        assert r.status_code == 400 and r.json()["error"] == \
            f"bad infer request: input 'token_type_ids' holds {max(data)}: its values must lie in [0, 2)", r.text
    assert httpx.post(url + "/v2/models/cls/infer", json=_v2(token_type_ids={"data": [0, 1, 1]}),
                      timeout=30).status_code == 200


LONE = [  # (path, raw JSON body with a lone surrogate escape, the field the message names)
    ("/models/cls/classify", b'{"inputs": "a\\ud800"}', "text", 1),
    ("/models/cls/classify", b'{"inputs": "a", "pairs": "\\udfff"}', "pair text", 0),
    ("/models/qa/question-answering", b'{"question": "\\ud800?", "context": "c d"}', "question", 0),
    ("/models/gen/generate", b'{"prompt": "w5 \\ud800"}', "prompt", 3),
    ("/v1/embeddings", b'{"model": "emb", "input": ["ok", "\\ud800"]}', "input", 0),
    ("/v1/completions", b'{"model": "gen", "prompt": "\\ud800"}', "prompt", 0),
    ("/v1/chat/completions", b'{"model": "gen", "messages": [{"role": "user", "content": "\\ud800"}]}',
     "messages.0.content", 0),
    ("/v1/chat/completions", b'{"model": "gen", "messages": [{"role": "system", "content": "w3"}, '
                             b'{"role": "user", "content": [{"type": "text", "text": "ab\\udfff"}]}]}',
     "messages.1.content", 2),
]


@pytest.mark.parametrize("path, body, what, at", LONE, ids=[f"{i}:{b[0]}" for i, b in enumerate(LONE)])
def test_lone_surrogates_are_400_naming_the_position(server, path, body, what, at):
    """tokenizers' encode raises TypeError on a str that is not valid Unicode: refused first, with where."""
    url, _ = server
    r = httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    code = "DFFF" if b"udfff" in body else "D800"
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == f"{what} is not valid Unicode: lone surrogate U+{code} at character {at}"


CHAT = [{"role": "user", "content": "w5"}]
ECHOED = [  # (path, body holding "\ud800" where the server quotes it back, status)
    ("/v1/completions", {"model": "\ud800", "prompt": "w5"}, 404),
    ("/v1/embeddings", {"model": "\ud800", "input": "x"}, 404),
    ("/v1/chat/completions", {"model": "\ud800", "messages": CHAT}, 404),
    ("/v2/models/cls/infer", _v2(input_ids={"name": "\ud800"}), 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK, "outputs": [{"name": "\ud800"}]}, 400),
    ("/v2/models/cls/infer", _v2(input_ids={"datatype": "\ud800"}), 400),
    ("/v2/models/cls/infer", {"inputs": V2_OK, "id": "\ud800"}, 200),
]


@pytest.mark.parametrize("path, body, status", ECHOED, ids=[f"{i}:{b[0]}" for i, b in enumerate(ECHOED)])
def test_lone_surrogates_echoed_back_do_not_break_the_answer(server, path, body, status):
    """A lone surrogate in a value the answer quotes (a model name, a tensor name, a datatype, the v2 request
    id) cannot be encoded as UTF-8: the answer still goes out (not 500), with the character escaped."""
    url, _ = server
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as the JSON escape \ud800
    r = httpx.post(url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    got = r.json()
    if status == 200:
        assert got["id"] == "\ud800" and got["outputs"], got
    else:
        message = got["error"] if path.startswith("/v2") else got["error"]["message"]
        assert "\\ud800" in message, message  # written out as text, not the surrogate itself


def test_lone_surrogates_in_the_runtime_and_cli(serve_exports, capsys):
    """The runtime's entry refuses them (EdgeportError), so `edgeport run --text` with argv bytes that are not
    UTF-8 (decoded with surrogateescape) prints one line and exits 2."""
    import os

    from edgeport.cli import main
    from edgeport.errors import EdgeportError

    bad = os.fsdecode(b"a\xffb")  # 'a\udcffb', as sys.argv holds it
    with pytest.raises(EdgeportError, match="lone surrogate U.DCFF at character 1"):
        pipeline(serve_exports["cls"], threads=1)(bad)
    with pytest.raises(EdgeportError, match="prompt is not valid Unicode: lone surrogate U.D800 at character 0"):
        TextGenerator(serve_exports["gen"], threads=1).generate("\ud800", max_new_tokens=1)
    assert main(["run", str(serve_exports["cls"]), "--text", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lone surrogate U+DCFF at character 1" in err, err


@pytest.mark.parametrize("flag, value", [("--max-wait-ms", "nan"), ("--max-wait-ms", "inf"), ("--timeout", "nan"),
                                         ("--timeout", "inf"), ("--graceful-timeout", "-1"),
                                         ("--graceful-timeout", "nan")])
def test_serve_refuses_non_finite_waits_at_startup(serve_exports, capsys, flag, value):
    from edgeport.cli import main

    assert main(["serve", str(serve_exports["cls"]), "--port", "1", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag.lstrip("-") in err and "finite" in err, err


@pytest.mark.parametrize("value", ["1e308", "60001"])
def test_serve_refuses_a_max_wait_over_a_minute(serve_exports, capsys, value):
    from edgeport.cli import main

    assert main(["serve", str(serve_exports["cls"]), "--port", "1", "--max-wait-ms", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max-wait-ms" in err and "at most 60000" in err, err


def test_a_failing_batching_loop_fails_the_queued_requests_instead_of_spinning():
    """A loop error (a bug: here _take raising once) answers the queued requests at once, and the loop serves on."""
    import asyncio

    from edgeport.serve.batching import BatchingFailed, MicroBatcher

    class Broken(MicroBatcher):
        fail = True

        def _take(self):
            if self.fail:
                self.fail = False
                raise ValueError("bug")
            return super()._take()

    async def scenario():
        b = Broken(lambda key, payloads: payloads, 8, 1, 64, 1)
        b.start()
        try:
            with pytest.raises(BatchingFailed, match=r"batching loop failed \(ValueError: bug\)"):
                await asyncio.wait_for(b.submit(("k",), {"x": 1}), 5)
            assert b.depth == 0 and not b.jobs
            assert await asyncio.wait_for(b.submit(("k",), {"x": 2}), 5) == {"x": 2}
        finally:
            await b.close()

    asyncio.run(scenario())


def test_v2_names_and_header_length_errors_are_ours(server):
    """Tensor names that are not strings, outputs given as strings, and an Inference-Header-Content-Length
    that is not a byte count: 400 naming the field, in the server's words (not Python's)."""
    url, _ = server
    cases = [(_v2(input_ids={"name": ["input_ids"]}), None, "each input's 'name' must be a string, got [\"input_ids\"]"),
             ({"inputs": V2_OK, "outputs": ["logits"]}, None,
              'each output must be an object with a string \'name\', like {"name": "logits"}; got "logits"'),
             ({"inputs": V2_OK}, "abc", "Inference-Header-Content-Length must be the JSON header's length in bytes"),
             ({"inputs": V2_OK}, "-5", "Inference-Header-Content-Length must be the JSON header's length in bytes"),
             ({"inputs": V2_OK}, "99999", "Inference-Header-Content-Length 99999 is larger than the body")]
    for body, header, message in cases:
        headers = {"content-type": "application/json", **({"Inference-Header-Content-Length": header} if header else {})}
        r = httpx.post(url + "/v2/models/cls/infer", content=json.dumps(body).encode(), headers=headers, timeout=30)
        assert r.status_code == 400 and r.json()["error"].startswith("bad infer request: " + message), r.text


def test_serve_cli_options_are_checked_before_anything_starts(serve_exports, tmp_path, capsys, monkeypatch):
    """--max-new-tokens reaches ServeConfig (>= 1); --replicas 0 and --ray options without --ray are refused
    before Ray (or uvicorn) starts; triton-repo's messages name triton-repo."""
    import edgeport.serve.cli as serve_cli
    from edgeport.cli import main

    started = []
    monkeypatch.setattr("edgeport.serve.ray_serve.run", lambda *a, **k: started.append(("ray", a, k)))
    monkeypatch.setattr(serve_cli, "_check_can_listen", lambda *a: None)
    monkeypatch.setattr("edgeport.serve.app.create_app", lambda specs, config: started.append(("app", config)))
    monkeypatch.setattr(serve_cli, "_run_uvicorn", lambda *a, **k: None)
    folder = str(serve_exports["cls"])
    for argv, message in ((["--max-new-tokens", "0"], "max-new-tokens must be at least 1 (got 0)"),
                          (["--ray", "--replicas", "0"], "--replicas must be at least 1 (got 0)"),
                          (["--ray", "--replicas", "2", "--autoscale", "1:2"], "not both"),
                          (["--autoscale", "1:4"], "--autoscale only works with --ray"),
                          (["--replicas", "2"], "--replicas only works with --ray")):
        assert main(["serve", folder, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not started
    assert main(["serve", folder, "--max-new-tokens", "7"]) == 0
    assert started[-1][0] == "app" and started[-1][1].max_new_tokens == 7
    assert main(["serve", folder, "--ray", "--replicas", "3"]) == 0 and started[-1][2]["replicas"] == 3
    assert main(["triton-repo", str(tmp_path / "missing"), "-o", str(tmp_path / "repo")]) == 2
    assert capsys.readouterr().err.startswith("edgeport: error: triton-repo: ")


def test_stop_strings_count_the_tokens_generated_up_to_the_stop(server):
    """usage.completion_tokens after a stop string: the tokens up to the one completing it (what the stream
    sends and counts), not every token generated before the text was cut. The tiny decoder's tokenizer is
    word-level: one token per word, so the count is the words up to and including the stop word."""
    url, _ = server
    body = {"model": "gen", "prompt": "w5 w9 w11", "max_tokens": 8, "temperature": 0}
    full = post(url, "/v1/completions", body).json()
    assert full["usage"]["completion_tokens"] == 8, full
    text = full["choices"][0]["text"]
    words = text.split()
    stop = " " + words[1]
    want = len(text[:text.find(stop) + len(stop)].split())  # 2 unless the second word came earlier
    for route, extra in (("/v1/completions", {}), ("/v1/chat/completions", {})):
        req = {**body, "stop": stop, **extra}
        if route.endswith("chat/completions"):
            req = {k: v for k, v in req.items() if k != "prompt"} | {"messages": [{"role": "user", "content": "w5"}]}
        r = post(url, route, req).json()
        got = r["choices"][0].get("text", r["choices"][0].get("message", {}).get("content"))
        if route == "/v1/completions":
            assert got == text[:text.find(stop)] and r["usage"]["completion_tokens"] == want, r
        else:  # another prompt: count from its own answer
            answer = post(url, route, {k: v for k, v in req.items() if k != "stop"}).json()
            full_text = answer["choices"][0]["message"]["content"]
            expect = len(full_text[:full_text.find(stop) + len(stop)].split()) if stop in full_text else \
                answer["usage"]["completion_tokens"]
            assert r["usage"]["completion_tokens"] == expect, (r, answer)
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stop": stop, "stream": True,
                                                             "stream_options": {"include_usage": True}}, timeout=30) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert json.loads(lines[-2][6:])["usage"]["completion_tokens"] == want, lines


UNSUPPORTED = [("/v1/completions", {"n": 2}, "n=2"), ("/v1/completions", {"logprobs": 3}, "logprobs=3"),
               ("/v1/completions", {"echo": True}, "echo=true"), ("/v1/completions", {"best_of": 2}, "best_of=2"),
               ("/v1/completions", {"suffix": "w3"}, 'suffix="w3"'),
               ("/v1/chat/completions", {"logprobs": True}, "logprobs=true"),
               ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs=2"),
               ("/v1/chat/completions", {"presence_penalty": 0.5}, "presence_penalty=0.5"),
               ("/v1/chat/completions", {"logit_bias": {"5": 10}}, 'logit_bias={"5": 10}'),
               ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools="),
               ("/v1/completions", {"logprobs": 0}, "logprobs=0"),
               ("/v1/chat/completions", {"tool_choice": "auto"}, 'tool_choice="auto"'),
               ("/v1/chat/completions", {"functions": [{"name": "f", "parameters": {}}]}, "functions="),
               ("/v1/chat/completions", {"function_call": {"name": "f"}}, 'function_call={"name": "f"}'),
               ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format="),
               ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                "response_format="),
               ("/v1/chat/completions", {"modalities": ["text", "audio"]}, 'modalities=["text", "audio"]'),
               ("/v1/chat/completions", {"audio": {"voice": "alloy", "format": "wav"}}, "audio=")]


@pytest.mark.parametrize("path, extra, named", UNSUPPORTED, ids=[u[2] for u in UNSUPPORTED])
def test_openai_parameters_not_implemented_are_refused(server, path, extra, named):
    """Set to anything but their defaults, they answer 400 (their defaults still run: 200)."""
    url, _ = server
    base = {"model": "gen", "max_tokens": 2, **({"prompt": "w5"} if path == "/v1/completions" else
                                               {"messages": [{"role": "user", "content": "w5"}]})}
    r = post(url, path, {**base, **extra})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert msg.startswith(named) and "is not supported by this server" in msg, msg
    defaults = {"n": 1, "logprobs": None, "echo": False, "best_of": 1, "suffix": None, "top_logprobs": None,
                "presence_penalty": 0, "logit_bias": {}, "tools": [], "tool_choice": "none", "functions": [],
                "function_call": "none", "response_format": {"type": "text"}, "modalities": ["text"], "audio": None}
    assert post(url, path, {**base, **{k: defaults[k] for k in extra}}).status_code == 200


def test_assistant_tool_calls_without_content_name_tool_calls(server):
    """OpenAI lets an assistant message with tool_calls go without content: not 'content: Field required', but
    a 400 saying tool calls are not supported; a message with neither still names its content (422)."""
    url, _ = server
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    msgs = [{"role": "user", "content": "w5"}, {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "w7"}]
    r = post(url, "/v1/chat/completions", {"model": "gen", "messages": msgs})
    assert r.status_code == 400 and r.json()["error"]["message"] == \
        "messages.1: tool calls are not supported by this server", r.text
    old = [{"role": "user", "content": "w5"}, {"role": "assistant", "content": None,
                                                "function_call": {"name": "f", "arguments": "{}"}}]
    r = post(url, "/v1/chat/completions", {"model": "gen", "messages": old})  # the older form: likewise
    assert r.status_code == 400 and r.json()["error"]["message"] == \
        "messages.1: tool calls are not supported by this server", r.text
    r = post(url, "/v1/chat/completions", {"model": "gen", "messages": [{"role": "assistant"}]})
    assert r.status_code == 422 and "messages.0.content" in r.json()["error"]["message"], r.text
