"""Scale-out on Ray Serve: one deployment per model, batched with @serve.batch, replicas or autoscaling.

    edgeport serve --ray out/minilm cls=out/cls --replicas 2        # or --autoscale 1:4
    curl -s 127.0.0.1:8000/models/minilm/embeddings -d '{"inputs": "hello"}'

Each replica opens the export folder with the same ServedModel as `edgeport serve` and answers the same
per-task JSON routes (/models/{name}/{route}), validated by the same request models. Ray Serve batches
calls (`@serve.batch`: max_batch_size = --max-batch requests, batch_wait_timeout_s = --max-wait-ms);
inside a batch, requests with equal keys share one model run. API used: ray.serve.deployment, batch,
start, run (https://docs.ray.io/en/latest/serve/).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from edgeport.errors import EdgeportError
from edgeport.manifest import read_manifest
from edgeport.serve.config import ServeConfig
from edgeport.serve.models import TASK_ROUTES


def run_grouped(model, jobs: list) -> list:
    """[(key, payload)] -> [(ok, value)] in order; jobs with equal keys share one model run."""
    from edgeport.serve.batching import run_jobs

    groups: dict = {}
    for i, (key, payload) in enumerate(jobs):
        groups.setdefault(key, []).append(i)
    out = [None] * len(jobs)
    for key, idx in groups.items():
        for i, res in zip(idx, run_jobs(model.run, key, [jobs[i][1] for i in idx])):
            out[i] = res
    return out


def deployment_options(name: str, config: ServeConfig, replicas: int = 1, autoscale=None) -> dict:
    """serve.deployment options: fixed replicas, or an autoscaling_config between MIN and MAX."""
    opts = {"name": name, "max_ongoing_requests": max(2 * config.max_batch, 8),
            "ray_actor_options": {"num_cpus": 1}}
    if autoscale:
        opts["autoscaling_config"] = {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                      "target_ongoing_requests": max(config.max_batch // 2, 1)}
    else:
        if replicas < 1:
            raise EdgeportError("--replicas must be at least 1")
        opts["num_replicas"] = replicas
    return opts


def build_app(name: str, folder, config: ServeConfig, replicas: int = 1, autoscale=None):
    """A bound Ray Serve application answering /models/{name}/{route} for one export folder."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from edgeport.serve.app import ApiError, ServerState, _error_body
    from edgeport.serve.metrics import Metrics
    from edgeport.serve.task_routes import ROUTES, handle, jsonable, model_info

    class _State(ServerState):
        """ServerState whose submit goes through the replica's @serve.batch method."""

        def __init__(self, models, config, replica):
            super().__init__(models, config, Metrics())
            self.replica = replica

        async def submit(self, name, key, payload, rows):
            try:
                ok, value = await asyncio.wait_for(self.replica.run_batch((key, payload)), self.config.timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"no answer within the {self.config.timeout_s:g} s request timeout",
                               "timeout") from None
            if ok:
                return value
            if isinstance(value, EdgeportError):
                raise ApiError(400, str(value))
            raise ApiError(500, f"internal error: {type(value).__name__}", "server_error")

    @serve.deployment(**deployment_options(name, config, replicas, autoscale))
    class EdgeportReplica:
        def __init__(self, name, folder, config):
            from edgeport.serve.models import ServedModel

            self.name = name
            self.state = _State({name: ServedModel(name, folder, config)}, config, self)

        @serve.batch(max_batch_size=config.max_batch, batch_wait_timeout_s=config.max_wait_ms / 1000)
        async def run_batch(self, jobs: list) -> list:
            return await asyncio.to_thread(run_grouped, self.state.models[self.name], jobs)

        async def __call__(self, request: Request):
            path = request.url.path
            try:
                return JSONResponse(jsonable(await self._answer(request, path)))
            except ApiError as e:
                return JSONResponse(_error_body(path, e.status, e.message, e.type), e.status, headers=e.headers)

        async def _answer(self, request, path):
            model = self.state.models[self.name]
            route = path.rstrip("/").rsplit("/", 1)[-1]
            if request.method == "GET":
                return model_info(model).model_dump()
            if route not in ROUTES or ROUTES[route][0] != model.task:
                raise ApiError(404, f"model '{self.name}' answers POST /models/{self.name}/{TASK_ROUTES[model.task]}",
                               "not_found_error")
            try:
                body = ROUTES[route][1].model_validate_json(await request.body())
            except ValueError as e:  # pydantic.ValidationError is a ValueError
                raise ApiError(422, str(e).splitlines()[0]) from None
            return (await handle(self.state, self.name, route, body)).model_dump()

    return EdgeportReplica.bind(name, str(folder), config)


def start(specs: dict, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
          autoscale=None) -> None:
    """Deploys every model on Ray Serve (Ray at RAY_ADDRESS, else a local instance) and returns."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise EdgeportError("--ray needs Ray Serve: pip install 'ray[serve]'") from None
    for folder in specs.values():  # fail here, before Ray starts, on folders that cannot serve
        manifest, _ = read_manifest(folder)
        if manifest.task not in TASK_ROUTES:
            raise EdgeportError(f"serve: {folder}: task '{manifest.task}' has no serving route")
    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    for name, folder in specs.items():
        serve.run(build_app(name, os.path.abspath(folder), config, replicas, autoscale), name=name,
                  route_prefix=f"/models/{name}")


def run(specs: dict, config: ServeConfig, host: str, port: int, replicas: int = 1, autoscale=None) -> None:
    """`edgeport serve --ray`: deploy, then serve until SIGINT/SIGTERM, then shut Serve down."""
    from ray import serve

    done = threading.Event()
    try:
        start(specs, config, host, port, replicas, autoscale)
        for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
            signal.signal(sig, lambda *_: done.set())
        print(f"edgeport: Ray Serve on http://{host}:{port}/models/<name>/<route> ({', '.join(specs)}); "
              "Ctrl-C stops", flush=True)
        done.wait()
    except (KeyboardInterrupt, SystemExit):  # stopped while deploying (Ray's own handler exits)
        pass
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the shutdown short
        signal.signal(sig, signal.SIG_IGN)
    print("edgeport: shutting Ray Serve down (in-flight requests finish first)", flush=True)
    serve.shutdown()
