"""edgeport serve against what OpenAI and KServe v2 document, where a fresh-user trial found it apart:
/v1/completions' 16-token default, prompt + max_tokens over the context answered 400 (not cut short),
the per-task generate route's cut at the artifact's limit row by row, and the v2 metadata and infer of a
decoder's graph. References: the decoder's own TextGenerator and its ONNX file run by onnxruntime directly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import running  # noqa: E402

from edgeport.manifest import read_manifest  # noqa: E402
from edgeport.runtime.generate import TextGenerator  # noqa: E402
from edgeport.serve.app import create_app  # noqa: E402
from edgeport.serve.config import ServeConfig  # noqa: E402

LIMIT = 64  # the tiny GPT-2's n_positions: the export's decoder max_tokens (checked below)
SHORT = "w5 w9 w11"  # greedy: runs past 16 tokens without an end-of-text token (checked below)


def words(n: int) -> str:
    return " ".join(f"w{3 + i % 90}" for i in range(n))  # n tokens of the word-level tokenizer


@pytest.fixture(scope="module")
def gen_server(serve_exports):
    cfg = ServeConfig(max_batch=8, max_wait_ms=20, threads=1, max_items=16, max_text_chars=4000)
    with running(create_app({"gen": serve_exports["gen"]}, cfg)) as url:
        yield url, serve_exports["gen"]


@pytest.fixture(scope="module")
def gen(serve_exports):
    g = TextGenerator(serve_exports["gen"], threads=1)
    assert g.info["max_tokens"] == LIMIT
    return g


@pytest.fixture(scope="module")
def client(gen_server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=gen_server[0] + "/v1", api_key="unused", max_retries=0)


def test_completions_default_to_16_tokens(client, gen):
    """OpenAI's API reference: max_tokens of /v1/completions defaults to 16."""
    assert len(gen.tokenizer.encode(gen.generate(SHORT, max_new_tokens=40)).ids) > 16  # room to run past 16
    r = client.completions.create(model="gen", prompt=SHORT, temperature=0)
    assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"
    assert r.choices[0].text == gen.generate(SHORT, max_new_tokens=16)


def _refused(call, prompt_tokens: int, asked: int | None):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        call()
    err = e.value.body
    assert e.value.status_code == 400 and err["code"] == "context_length_exceeded", err
    assert f"{prompt_tokens} tokens" in err["message"] and f"at most {LIMIT} tokens" in err["message"], err
    if asked is not None:
        assert f"{asked} more were requested" in err["message"], err


def test_prompt_plus_max_tokens_over_the_context_is_400(client, gen, gen_server):
    """OpenAI: the prompt's tokens plus max_tokens cannot exceed the context length (400
    context_length_exceeded), where the server used to stop early with finish_reason "length"."""
    long = words(60)
    _refused(lambda: client.completions.create(model="gen", prompt=long, max_tokens=8), 60, 8)
    _refused(lambda: client.completions.create(model="gen", prompt=words(50)), 50, 16)  # the default 16 counts
    _refused(lambda: client.completions.create(model="gen", prompt=[SHORT, long], max_tokens=5), 60, 5)
    _refused(lambda: list(client.completions.create(model="gen", prompt=long, max_tokens=8, stream=True)), 60, 8)
    chat_long = [{"role": "user", "content": words(50)}]  # "user: " + 50 words + "\nassistant:" = 52 tokens
    prompt = "user: " + words(50) + "\nassistant:"
    n = len(gen.tokenizer.encode(prompt).ids)
    _refused(lambda: client.chat.completions.create(model="gen", messages=chat_long, max_tokens=30), n, 30)
    _refused(lambda: client.chat.completions.create(model="gen", messages=chat_long, max_completion_tokens=30),
             n, 30)
    _refused(lambda: client.chat.completions.create(model="gen", messages=[{"role": "user", "content": words(70)}]),
             72, None)  # no max_tokens, but no room for one token
    # at the limit exactly: served, all of it
    r = client.completions.create(model="gen", prompt=long, max_tokens=4, temperature=0)
    assert r.usage.total_tokens <= LIMIT and r.choices[0].text == gen.generate(long, max_new_tokens=4)
    # chat without max_tokens: what the limit leaves after the prompt (OpenAI: up to the context length)
    c = client.chat.completions.create(model="gen", messages=chat_long, temperature=0)
    assert c.choices[0].message.content == gen.generate(prompt, max_new_tokens=LIMIT - n)
    assert c.usage.prompt_tokens == n and c.usage.total_tokens <= LIMIT
    assert httpx.get(gen_server[0] + "/health").status_code == 200


def test_generate_route_cuts_each_row_at_the_limit_alone(gen_server, gen):
    """/models/{m}/generate keeps its documented cut: a row stops at the artifact's limit with finish_reason
    "length"; a short prompt batched with one near the limit still gets its max_new_tokens (the padded
    batch used to cut both at the long one's room)."""
    url, _ = gen_server
    long = words(60)
    r = httpx.post(url + "/models/gen/generate", json={"prompt": [SHORT, long], "max_new_tokens": 8}, timeout=30)
    assert r.status_code == 200, r.text
    short_row, long_row = r.json()["results"]
    assert short_row["text"] == gen.generate(SHORT, max_new_tokens=8) and short_row["completion_tokens"] == 8
    assert long_row["text"] == gen.generate(long, max_new_tokens=8)  # the runtime caps it at 64 - 60
    assert (long_row["prompt_tokens"], long_row["completion_tokens"], long_row["finish_reason"]) == (60, 4, "length")
    r = httpx.post(url + "/models/gen/generate", json={"prompt": words(64), "max_new_tokens": 8}, timeout=30)
    assert r.status_code == 400 and "64" in r.json()["error"]["message"], r.text


def test_v2_decoder_metadata_lists_its_graph_and_infer_runs_it(gen_server):
    """KServe v2 model metadata: each input's name, datatype (the protocol's names) and shape (-1 for a
    variable dim), as for the encoders; infer takes exactly those tensors (an empty past on a first call)
    and answers what onnxruntime answers for the same file, prefill then one decode step."""
    import onnxruntime as ort

    http = pytest.importorskip("tritonclient.http")
    url, folder = gen_server
    manifest, folder = read_manifest(folder)
    sess = ort.InferenceSession(str(folder / manifest.artifact), providers=["CPUExecutionProvider"])
    v2 = {"tensor(int64)": "INT64", "tensor(float)": "FP32"}

    def described(args):
        return [{"name": a.name, "datatype": v2[a.type], "shape": [d if isinstance(d, int) else -1 for d in a.shape]}
                for a in args]

    client = http.InferenceServerClient(url.removeprefix("http://"))
    meta = client.get_model_metadata("gen")
    assert meta["inputs"] == described(sess.get_inputs()) and meta["outputs"] == described(sess.get_outputs())
    assert [i["name"] for i in meta["inputs"]][:3] == ["input_ids", "attention_mask", "position_ids"]

    past = [i["name"] for i in meta["inputs"][3:]]
    shape = [2 if d == -1 else d for d in meta["inputs"][3]["shape"]]
    shape[2] = 0  # (batch, kv_heads, past=0, head_dim)
    feeds = {"input_ids": np.array([[0, 5, 9], [7, 8, 10]]), "attention_mask": np.array([[0, 1, 1], [1, 1, 1]]),
             "position_ids": np.array([[0, 0, 1], [0, 1, 2]]), **{n: np.zeros(shape, np.float32) for n in past}}
    names = [o["name"] for o in meta["outputs"]]
    for step in range(2):
        want = dict(zip(names, sess.run(names, feeds)))
        for binary in (True, False):
            inputs = []
            for name, arr in feeds.items():
                t = http.InferInput(name, list(arr.shape), "FP32" if arr.dtype == np.float32 else "INT64")
                t.set_data_from_numpy(arr, binary_data=binary)
                inputs.append(t)
            res = client.infer("gen", inputs)
            for n in names:
                np.testing.assert_allclose(res.as_numpy(n), want[n], rtol=1e-5, atol=1e-5, err_msg=n)
        nxt = want["logits"][:, -1].argmax(-1)[:, None]  # one decode step on the returned cache
        feeds = {"input_ids": nxt, "attention_mask": np.concatenate([feeds["attention_mask"], [[1], [1]]], 1),
                 "position_ids": feeds["position_ids"][:, -1:] + 1,
                 **{n: want[n.replace("past_key_values", "present")] for n in past}}
    bad = {"inputs": [{"name": "position_ids", "shape": [1, 1], "datatype": "INT64", "data": [LIMIT]}]}
    r = httpx.post(url + "/v2/models/gen/infer", json=bad, timeout=30)
    assert r.status_code == 400 and f"'position_ids' holds {LIMIT}" in r.json()["error"], r.text


def test_v2_stacked_cache_decoder_requests_run_alone(serve_exports, tmp_path_factory):
    """A "stacked" cache (layers, batch, kv_heads, past, head_dim) has its batch on axis 1: two concurrent
    requests are not concatenated along axis 0 (the layers: onnxruntime would refuse the batch, and each
    request would then be run again alone); each answers what onnxruntime answers."""
    import concurrent.futures as cf

    import onnxruntime as ort

    from edgeport.export import export

    folder = export(str(serve_exports["gen"].parent / "gpt2-ckpt"), target="onnx", task="text-generation",
                    lowering="generic", kv_layout="stacked", out_dir=tmp_path_factory.mktemp("stacked"), quiet=True)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    cfg = ServeConfig(max_batch=8, max_wait_ms=200, threads=1)  # a long wait: both requests queue together
    with running(create_app({"st": folder}, cfg)) as url:
        meta = httpx.get(url + "/v2/models/st").json()
        assert [(i["name"], i["shape"]) for i in meta["inputs"][3:]] == [("past_keys", [2, -1, 4, -1, 8]),
                                                                       ("past_values", [2, -1, 4, -1, 8])]

        def feeds(ids):
            empty = np.zeros((2, 1, 4, 0, 8), np.float32)
            return {"input_ids": np.array([ids]), "attention_mask": np.ones((1, 3), np.int64),
                    "position_ids": np.arange(3)[None], "past_keys": empty, "past_values": empty}

        def infer(ids):
            body = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "FP32" if a.dtype == np.float32
                                else "INT64", "data": a.ravel().tolist()} for n, a in feeds(ids).items()]}
            return httpx.post(url + "/v2/models/st/infer", json=body, timeout=30)

        with cf.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(infer, ([5, 9, 11], [7, 8, 10])))
        for ids, r in zip(([5, 9, 11], [7, 8, 10]), answers):
            assert r.status_code == 200, r.text
            got = {o["name"]: np.reshape(o["data"], o["shape"]) for o in r.json()["outputs"]}
            want = dict(zip(["logits", "present_keys", "present_values"],
                            sess.run(["logits", "present_keys", "present_values"], feeds(ids))))
            for n, w in want.items():
                np.testing.assert_allclose(got[n], w, rtol=1e-5, atol=1e-5, err_msg=n)
        runs = [ln for ln in httpx.get(url + "/metrics").text.splitlines()
                if ln.startswith('edgeport_batch_size_rows_count{model="st"}')]
        assert float(runs[0].split()[-1]) == 2, runs  # one model run each (batched together: one)


def test_v2_decoder_mask_must_cover_past_and_new_tokens(gen_server):
    """attention_mask (B, T) with T != past + new: refused before running, the three lengths named (a
    GroupQueryAttention graph would write the new keys at the wrong place and answer 200)."""
    url, _ = gen_server
    meta = httpx.get(url + "/v2/models/gen").json()
    past = [i["name"] for i in meta["inputs"][3:]]
    shape = [1 if d == -1 else d for d in meta["inputs"][3]["shape"]]
    shape[2] = 4  # (batch, kv_heads, past=4, head_dim)

    def body(mask_len):
        t = [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [5]},
             {"name": "attention_mask", "shape": [1, mask_len], "datatype": "INT64", "data": [1] * mask_len},
             {"name": "position_ids", "shape": [1, 1], "datatype": "INT64", "data": [4]}]
        return {"inputs": t + [{"name": n, "shape": shape, "datatype": "FP32", "data": [0.0] * int(np.prod(shape))}
                               for n in past]}

    for mask_len in (2, 6):
        r = httpx.post(url + "/v2/models/gen/infer", json=body(mask_len), timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == f"bad infer request: attention_mask has {mask_len} positions; past 4 + new 1 = 5"
    assert httpx.post(url + "/v2/models/gen/infer", json=body(5), timeout=30).status_code == 200
