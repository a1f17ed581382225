"""What memory the tools think they have: `ulimit -v` caps it (the export preflight read only MemAvailable and
the cgroup), and `edgeport inspect` does not load an artifact that would not fit (a streamed 7B export may be
larger than the memory of the machine that made it); it shows the manifest's inputs and outputs instead."""

import resource
import subprocess
import sys

from edgeport.cli import main
from edgeport.manifest import read_manifest


def test_address_space_limit_caps_available_memory():
    limit = 3 * 2**30  # well under this machine's free memory, above the interpreter's own virtual size
    code = ("from edgeport.runtime.machine import available_memory_bytes as a; import resource; "
            "print(a(), resource.getrlimit(resource.RLIMIT_AS)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))).stdout.split()
    capped, seen_limit = int(out[0]), int(out[1])
    assert seen_limit == limit
    assert 0 < capped < limit  # the limit less what the interpreter has mapped already
    from edgeport.runtime.machine import available_memory_bytes

    assert available_memory_bytes() > 0


def test_inspect_skips_loading_an_artifact_that_would_not_fit(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bert"
    assert main(["export", "--model", "bert-tiny", "--task", "text-classification", "-o", str(out)]) == 0
    m, _ = read_manifest(out)
    import edgeport.runtime.machine as machine

    monkeypatch.setattr(machine, "available_memory_bytes", lambda: m.size_bytes)  # needs 2x its size to load
    import edgeport.runtime as rt

    def refuse(*_a, **_k):
        raise AssertionError("inspect loaded the artifact")

    monkeypatch.setattr(rt, "load", refuse)
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not loaded (" in text and "inputs and outputs from the manifest" in text
    for spec in m.inputs + m.outputs:
        assert f" {spec.name} " in text
    monkeypatch.undo()  # this machine's real free memory: the tiny artifact loads
    assert main(["inspect", str(out)]) == 0
    assert "not loaded" not in capsys.readouterr().out
