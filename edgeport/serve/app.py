"""The FastAPI app of `edgeport serve`: models, batchers, limits, errors, health, metrics.

    app = create_app({"minilm": "out/minilm"}, ServeConfig(max_batch=32))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes live in task_routes (per-task JSON), openai_routes (/v1) and kserve (/v2). Every error is JSON
with a message and a 4xx status (503 when a queue is full, 504 past the request timeout); under /v2
the body is KServe's `{"error": "..."}`, elsewhere OpenAI's `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgeport import __version__
from edgeport.errors import EdgeportError
from edgeport.serve.batching import BatchingFailed, MicroBatcher, QueueFull
from edgeport.serve.config import ServeConfig
from edgeport.serve.metrics import Metrics
from edgeport.serve.models import TASK_ROUTES, ServedModel

log = logging.getLogger("edgeport.serve")


class ApiError(Exception):
    """An HTTP error answer: status, one-line message, error type (OpenAI's `type` field) and `code`
    (OpenAI's `code` field, e.g. "context_length_exceeded"; the HTTP status when None)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", headers=None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.headers, self.code = status, message, type_, headers or {}, code


class ServerState:
    """The models and their batchers; `submit` queues one request and applies the timeout."""

    def __init__(self, models: dict, config: ServeConfig, metrics: Metrics):
        self.models, self.config, self.metrics = models, config, metrics
        self.batchers = {}

    def start(self):
        c = self.config
        for name, m in self.models.items():
            on_batch, on_depth = self.metrics.batch_hooks(name)
            self.batchers[name] = MicroBatcher(m.run, c.max_batch, c.max_wait_ms, c.max_queue, c.workers,
                                               on_batch, on_depth, name)
            self.batchers[name].start()

    def drain(self):
        """Shutdown has begun: every batcher runs what it holds now, without waiting out max_wait_ms."""
        for b in self.batchers.values():
            b.drain()

    async def close(self):
        self.drain()
        await asyncio.gather(*(b.close() for b in self.batchers.values()))

    def model(self, name: str, task: str | None = None) -> ServedModel:
        """The model called `name`; 404 if none, 400 if its task is not `task`."""
        m = self.models.get(name)
        if m is None:
            raise ApiError(404, f"unknown model '{name}' (served: {', '.join(self.models)})", "not_found_error")
        if task is not None and m.task != task:
            raise ApiError(400, f"model '{name}' is a {m.task} model; its route is "
                                f"/models/{name}/{TASK_ROUTES[m.task]}")
        return m

    async def submit(self, name: str, key: tuple, payload: dict, rows: int):
        try:
            return await asyncio.wait_for(self.batchers[name].submit(key, payload, rows), self.config.timeout_s)
        except QueueFull as e:
            raise ApiError(503, f"model '{name}' is busy: {e}; retry later", "server_busy",
                           {"Retry-After": str(self.config.retry_after_s)}) from None
        except BatchingFailed as e:
            raise ApiError(503, f"model '{name}': {e}; retry later", "server_busy",
                           {"Retry-After": str(self.config.retry_after_s)}) from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within the {self.config.timeout_s:g} s request timeout",
                           "timeout") from None
        except EdgeportError as e:
            raise ApiError(400, str(e)) from None

    def check_rows(self, texts: list, what: str = "text"):
        """Limits on one request's rows: 400 for none, empty ones or text that is not valid Unicode (a lone
        surrogate, which the tokenizer cannot take), 413 for too many or too long."""
        from edgeport.runtime.pipelines.base import check_text

        c = self.config
        if not texts:
            raise ApiError(400, f"give at least one {what}")
        if len(texts) > c.max_items:
            raise ApiError(413, f"{len(texts)} {what}s in one request; the limit is {c.max_items}")
        for t in texts:
            if not t or not t.strip():
                raise ApiError(400, f"empty {what}: give some words to run on")
            if len(t) > c.max_text_chars:
                raise ApiError(413, f"a {what} is {len(t)} characters; the limit is {c.max_text_chars}")
            try:
                check_text(t, what)
            except EdgeportError as e:
                raise ApiError(400, str(e)) from None


class SafeJSONResponse(JSONResponse):
    """Starlette's JSONResponse (compact, UTF-8) whose rendering never fails on text that is not valid
    Unicode: a lone surrogate (JSON's "\\ud800" in a request, echoed back as a model name, a tensor name or a
    request id) goes out as the JSON escape \\ud800 instead of raising UnicodeEncodeError (a 500)."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace")


def _printable(message: str) -> str:
    """`message` with characters UTF-8 cannot encode (lone surrogates) written as backslash escapes, so an
    error that quotes a bad value reads "\\ud800" in the client's text rather than holding the surrogate."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_body(path: str, status: int, message: str, type_: str, code: str | None = None) -> dict:
    message = _printable(message)
    if path.startswith("/v2"):
        return {"error": message}  # KServe v2 / Triton error body
    return {"error": {"message": message, "type": type_, "code": code or status}}


def _install_error_handlers(app: FastAPI):
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return SafeJSONResponse(_error_body(request.url.path, e.status, e.message, e.type, e.code), e.status,
                            headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        # /models/{model}/{route} with an unknown model or another task's route: that is the error to
        # name (404 / 400), not the body fields this route would have wanted.
        parts = request.url.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "models" and parts[2] in TASK_ROUTES.values():
            task = next(t for t, r in TASK_ROUTES.items() if r == parts[2])
            try:
                request.app.state.edgeport.model(parts[1], task)
            except ApiError as wrong:
                return await api_error(request, wrong)
        errs = e.errors()
        msg = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg', '')}" for err in errs[:3])
        return SafeJSONResponse(_error_body(request.url.path, 422, msg or "invalid request", "invalid_request_error"),
                                422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return SafeJSONResponse(_error_body(request.url.path, e.status_code, str(e.detail), "invalid_request_error"),
                            e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        log.exception("internal error on %s", request.url.path)
        body = _error_body(request.url.path, 500, f"internal error: {type(e).__name__}", "server_error")
        return SafeJSONResponse(body, 500)


class LimitsAndMetrics:
    """ASGI middleware: 413 for bodies over max_body_bytes (declared or streamed), request metrics."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, limit, status = time.perf_counter(), self.state.config.max_body_bytes, [500]
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            body = _error_body(scope["path"], 413, f"request body over {limit} bytes", "invalid_request_error")
            resp = SafeJSONResponse(body, 413)
            await resp(scope, receive, send)
            self._observe(scope, 413, t0)
            return
        seen = [0]

        async def limited_receive():
            msg = await receive()
            seen[0] += len(msg.get("body", b""))
            if seen[0] > limit:
                raise StarletteHTTPException(413, f"request body over {limit} bytes")
            return msg

        async def send_status(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, limited_receive, send_status)
        finally:
            self._observe(scope, status[0], t0)

    def _observe(self, scope, code, t0):
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.state.metrics.observe_request(route, code, time.perf_counter() - t0)


def load_models(specs: dict, config: ServeConfig) -> dict:
    """{name: folder} -> {name: ServedModel}; EdgeportError if any folder cannot be served."""
    return {name: ServedModel(name, Path(folder), config) for name, folder in specs.items()}


def create_app(specs: dict, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving `specs` ({name: export folder} or {name: ServedModel}).

    Models are opened here (errors surface before the server listens); batchers start with the app's
    lifespan and drain on shutdown, after uvicorn has let in-flight requests finish.
    """
    from edgeport.serve import kserve, openai_routes, task_routes

    config = (config or ServeConfig()).check()
    models = {n: m if isinstance(m, ServedModel) else ServedModel(n, m, config) for n, m in specs.items()}
    state = ServerState(models, config, Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.start()
        yield
        await state.close()

    app = FastAPI(title="edgeport serve", version=__version__, lifespan=lifespan,
                  default_response_class=SafeJSONResponse,
                  description="Exported transformer models behind per-task JSON, OpenAI-compatible (/v1) and "
                              "KServe v2 (/v2) routes, with dynamic micro-batching.")
    app.state.edgeport = state
    _install_error_handlers(app)
    app.add_middleware(LimitsAndMetrics, state=state)
    app.include_router(task_routes.router(state))
    app.include_router(openai_routes.router(state))
    app.include_router(kserve.router(state))

    @app.get("/health", tags=["health"], summary="Liveness: 200 while the server runs")
    async def health() -> dict:
        return {"status": "ok", "models": list(models)}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (text exposition format)",
             response_class=Response)
    async def metrics():
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    return app


def dumps(obj) -> str:
    """Compact JSON for server-sent events."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
