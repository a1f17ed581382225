"""`edgeport serve` and `edgeport triton-repo`: argument parsing only (registered by edgeport.cli)."""

from __future__ import annotations

import argparse
import math

from edgeport.errors import EdgeportError


def _config(a):
    from edgeport.serve.config import ServeConfig

    return ServeConfig(max_batch=a.max_batch, max_wait_ms=a.max_wait_ms, max_queue=a.max_queue, workers=a.workers,
                       threads=a.threads, spin=not a.no_spin, timeout_s=a.timeout, max_body_bytes=a.max_body_bytes,
                       max_text_chars=a.max_text_chars, max_items=a.max_items, truncate=a.truncate,
                       max_new_tokens=a.max_new_tokens).check()


def _autoscale(text: str | None):
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    if not (sep and lo.isdigit() and hi.isdigit() and 0 <= int(lo) <= int(hi) and int(hi) >= 1):
        raise EdgeportError(f"--autoscale takes MIN:MAX replicas (like 1:4), got '{text}'")
    return int(lo), int(hi)


def _check_ray_options(a):
    """--replicas and --autoscale: Ray Serve's; refused without --ray, and checked before Ray starts."""
    if not a.ray:
        given = [f for f, v in (("--autoscale", a.autoscale), ("--replicas", a.replicas)) if v is not None]
        if given:
            verb = "work" if len(given) > 1 else "works"
            raise EdgeportError(f"serve: {' and '.join(given)} only {verb} with --ray (Ray Serve replicas); without "
                                "it one process serves, with --workers threads per model")
        return
    if a.replicas is not None and a.autoscale is not None:
        raise EdgeportError("serve: give --replicas or --autoscale, not both")
    if a.replicas is not None and a.replicas < 1:
        raise EdgeportError(f"serve: --replicas must be at least 1 (got {a.replicas})")


def _cmd_serve(a):
    from edgeport.serve.config import parse_model_specs

    _check_ray_options(a)
    specs, config = parse_model_specs(a.models), _config(a)
    if not (math.isfinite(a.graceful_timeout) and a.graceful_timeout >= 0):
        raise EdgeportError(f"serve: graceful-timeout must be a finite number of seconds >= 0 "
                            f"(got {a.graceful_timeout})")
    if a.ray:
        from edgeport.serve.ray_serve import run

        run(specs, config, a.host, a.port, replicas=a.replicas or 1, autoscale=_autoscale(a.autoscale))
        return
    try:
        import uvicorn
    except ImportError:
        raise EdgeportError("serving needs the serve extra: pip install 'edgeport[serve]'") from None
    from edgeport.serve.app import create_app

    _check_can_listen(a.host, a.port)
    app = create_app(specs, config)
    # uvicorn handles SIGTERM/SIGINT: stops accepting, lets in-flight requests finish (up to the
    # graceful timeout), then runs the app's shutdown. The batchers run their queued rows as the
    # shutdown begins (not after max-wait-ms), so those requests answer within the graceful timeout.
    _run_uvicorn(app, uvicorn.Config(app, host=a.host, port=a.port, log_level=a.log_level,
                                     timeout_graceful_shutdown=a.graceful_timeout))


def _run_uvicorn(app, config) -> None:
    """What uvicorn.run does for one process (the signal uvicorn re-raises after its clean shutdown ends
    serving; exit 3 if the server never started), with `app`'s batchers drained as uvicorn's shutdown begins
    (ServerState.drain: queued rows run now, not after max-wait-ms)."""
    import sys

    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            app.state.edgeport.drain()
            await super().shutdown(sockets)

    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # the CLI's Terminated too: a clean shutdown has happened
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE; it has logged why


def _cmd_triton_repo(a):
    from edgeport.serve.config import parse_model_specs
    from edgeport.serve.triton_repo import write_repository

    written = write_repository(parse_model_specs(a.models, "triton-repo"), a.output, max_batch=a.max_batch,
                               max_queue_delay_us=int(a.max_wait_ms * 1000), instances=a.instances,
                               preferred_batch=a.preferred_batch)
    for name in written:
        print(f"{a.output}/{name}")


def _check_can_listen(host: str, port: int) -> None:
    """EdgeportError (one line) when `host:port` cannot be bound (address in use, unknown host), before the
    models load; uvicorn would log its own lines and exit 3. Binds as uvicorn does (SO_REUSEADDR), then closes."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as e:  # socket.gaierror (unknown host) is an OSError too
        raise EdgeportError(f"serve: cannot listen on {host}:{port}: {e.strerror or e}") from None


def _port(text: str) -> int:
    """argparse type: a TCP port number 0-65535 (uvicorn would take 99999 and bind 99999 - 65536)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


def register(sub) -> None:
    """Adds `serve` and `triton-repo` to the edgeport CLI's subparsers."""
    s = sub.add_parser("serve", help="serve export folders over HTTP (per-task JSON, OpenAI /v1, KServe /v2)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("models", nargs="+", metavar="[NAME=]FOLDER", help="export folders; name: the folder's")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=_port, default=8000, help="TCP port, 0-65535 (0: any free port)")
    s.add_argument("--max-batch", type=int, default=32, help="rows per model run (dynamic micro-batching)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    s.add_argument("--max-queue", type=int, default=1024, help="queued rows per model before 503 + Retry-After")
    s.add_argument("--workers", type=int, default=1, help="threads running batches per model")
    s.add_argument("--threads", type=int, help="intra-op threads per session (default: all cores)")
    s.add_argument("--no-spin", action="store_true", help="onnxruntime threads sleep between runs instead of "
                   "spin-waiting (leaves the cores to the HTTP loop)")
    s.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (504 past it)")
    s.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    s.add_argument("--max-text-chars", type=int, default=20_000, help="longer texts get 413")
    s.add_argument("--max-items", type=int, default=256, help="more texts in one request get 413")
    s.add_argument("--max-new-tokens", type=int, default=512, help="new tokens one request generates at most "
                   "(any route; chat without max_tokens takes what the length limit leaves, up to this)")
    s.add_argument("--truncate", action="store_true", help="truncate texts longer than a model takes (else 400)")
    s.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--ray", action="store_true", help="deploy on Ray Serve instead (local Ray, or RAY_ADDRESS)")
    s.add_argument("--replicas", type=int, help="--ray: replicas per model (default 1)")
    s.add_argument("--autoscale", metavar="MIN:MAX", help="--ray: autoscale replicas between MIN and MAX")
    s.set_defaults(fn=_cmd_serve)

    t = sub.add_parser("triton-repo", help="write a Triton model repository (ONNX models, tokenizer, ensemble)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("models", nargs="+", metavar="[NAME=]FOLDER", help="ONNX export folders")
    t.add_argument("-o", "--output", required=True, help="repository folder to write")
    t.add_argument("--max-batch", type=int, default=32, help="max_batch_size of each model")
    t.add_argument("--max-wait-ms", type=float, default=5.0, help="dynamic batching max_queue_delay")
    t.add_argument("--preferred-batch", type=int, nargs="*", help="preferred_batch_size values (default: powers of 2)")
    t.add_argument("--instances", type=int, default=1, help="instance_group count (CPU)")
    t.set_defaults(fn=_cmd_triton_repo)
