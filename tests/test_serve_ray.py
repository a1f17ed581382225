"""Ray Serve scale-out: the same ServedModel behind @serve.batch on a local Ray instance (127.0.0.1).

Marked slow: starting Ray and Serve takes ~30 s on 2 cores (`pytest -m slow tests/test_serve_ray.py`)."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from serve_helpers import assert_close, free_port  # noqa: E402

from edgeport.runtime import pipeline  # noqa: E402
from edgeport.serve.config import ServeConfig  # noqa: E402
from edgeport.serve.ray_serve import deployment_options, start  # noqa: E402


@pytest.fixture(scope="module")
def ray_url(serve_exports):
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        models = {"cls": serve_exports["cls"], "emb": serve_exports["emb"]}
        start(models, ServeConfig(max_batch=8, max_wait_ms=20, threads=1), "127.0.0.1", port, autoscale=(1, 2))
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_ray_deployment_answers_like_the_pipeline(ray_url, serve_exports):
    texts = ["the cat sat on the mat.", "alice met bob in paris.", "a red book.", "the dog reads."] * 2
    cls = pipeline(serve_exports["cls"], threads=1)
    with cf.ThreadPoolExecutor(8) as pool:  # concurrent calls: @serve.batch groups them
        got = list(pool.map(lambda t: httpx.post(f"{ray_url}/models/cls/classify", json={"inputs": t},
                                                 timeout=60).json()["results"][0], texts))
    assert_close(got, cls(texts))
    r = httpx.post(f"{ray_url}/models/emb/embeddings", json={"inputs": texts[:2], "pooling": "cls"}, timeout=60)
    assert_close(r.json()["embeddings"], pipeline(serve_exports["emb"], threads=1)(texts[:2], pooling="cls").tolist())
    bad = httpx.post(f"{ray_url}/models/cls/classify", json={"inputs": ""}, timeout=60)
    assert bad.status_code == 400 and "empty text" in bad.json()["error"]["message"]
    assert httpx.post(f"{ray_url}/models/cls/classify", content=b"{x", timeout=60).status_code == 422
    assert httpx.post(f"{ray_url}/models/cls/fill-mask", json={"inputs": "x"}, timeout=60).status_code == 404
    status = serve.status().applications["cls"].deployments["cls"]
    assert status.status == "HEALTHY"


def test_deployment_options():
    cfg = ServeConfig(max_batch=16)
    auto = deployment_options("m", cfg, autoscale=(1, 4))
    assert auto["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}
    assert "num_replicas" not in auto
    assert deployment_options("m", cfg, replicas=3)["num_replicas"] == 3
