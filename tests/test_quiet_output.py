"""Third-party noise never reaches the user (issue 16, part 3): `edgeport export ... -q` to TFLite prints
nothing on stderr, progress lines are all a normal export prints there, errors still show, and lines
nobody knows pass through.
"""

import os
import subprocess
import sys

import pytest

from edgeport.noise import is_noise, third_party_quiet

# one real sample of each kind, as they appeared on this machine before the filter
SAMPLES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796083588.799400   25810 port.cc:153] oneDNN custom operations are on. You may see ...",
    "Failed to load /x/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library",
    "W1201 00:06:31.630000 25810 torch/utils/_pytree.py:630] <enum 'KernelPreference'> is an Enum subclass ...",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "\x1b[0;93m2026-11-30 22:10:01.123456 [W:onnxruntime:, graph.cc:4285 CleanUnusedInitializers] Removing "
    "initializer 'x'.\x1b[m",
]


def cli(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel")}
    return subprocess.run([sys.executable, "-m", "edgeport.cli", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("line", SAMPLES)
def test_known_noise_is_recognised(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", ["Segmentation fault", "edgeport: error: no such folder",
                                  "RuntimeError: converter failed on op X"])
def test_other_lines_are_not_noise(line):
    assert not is_noise(line)


def test_capture_drops_noise_and_replays_the_rest(capfd):
    with third_party_quiet():
        os.write(2, (SAMPLES[4] + "\nsomething real happened\n" + SAMPLES[0] + "\n").encode())
        print("progress line", file=sys.stderr)  # Python-level stderr stays live
    err = capfd.readouterr().err
    assert err.splitlines() == ["progress line", "something real happened"]


@pytest.fixture(scope="module")
def tflite_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "bert-tfl"
    r = cli("export", "--model", "bert-tiny", "--target", "tflite", "--task", "text-classification", "-q", "-o", str(out))
    return r, out


def test_quiet_tflite_export_prints_nothing(tflite_export):
    """The reported fault: oneDNN, absl, torchao, pytree and XNNPACK lines on every TFLite export, -q included."""
    r, out = tflite_export
    assert r.returncode == 0 and (out / "model.tflite").is_file()
    assert r.stderr == "" and r.stdout == ""


def test_quiet_quantize_and_run_print_only_their_result(tflite_export, tmp_path):
    _, out = tflite_export
    r = cli("quantize", str(out), "--scheme", "int4", "-q", "-o", str(tmp_path / "q4"))
    assert r.returncode == 0 and r.stderr == ""
    r = cli("run", str(out), "--text", "the cat sat")
    assert r.returncode == 0 and r.stderr.splitlines() == [l for l in r.stderr.splitlines() if "random weights" in l]


def test_errors_still_show():
    r = cli("export", "--model", "no-such-model", "-q")
    assert r.returncode == 2 and r.stderr.startswith("edgeport: error: unknown model")
