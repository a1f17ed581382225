"""User mistakes are one line (README: `edgeport: error: ...`, exit 2): argparse's usage errors, a port
number out of range for `serve`, and running out of memory past the memory check (std::bad_alloc in the
exporter, ENOMEM from mmap) instead of a traceback."""

import errno

import pytest

from edgeport import cli


@pytest.mark.parametrize("argv, says, cmd", [
    (["run", "--top-k", "x"], "run: argument --top-k: invalid int value: 'x'", "run"),
    (["export", "--cpu-class"], "export: argument --cpu-class: expected one argument", "export"),
    (["serve", "f", "--port", "99999"], "serve: argument --port: 99999 is not a TCP port (0-65535)", "serve"),
    (["serve", "f", "--port", "http"], "serve: argument --port: not a port number: 'http'", "serve"),
    (["list", "--bogus"], "list: unrecognized arguments: --bogus", "list"),  # was "edgeport: error: edgeport: ..."
    (["run", "f", "--text", "x", "--topk", "3"], "run: unrecognized arguments: --topk 3", "run"),
    ([], "the following arguments are required: cmd", None),
])
def test_usage_errors_are_one_line(argv, says, cmd, capsys):
    """One `edgeport: error:` prefix, the program named once, the help of the command that was meant."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == f"edgeport: error: {says} (see `edgeport{' ' + cmd if cmd else ''} --help`)\n"


@pytest.mark.parametrize("exc", [MemoryError("std::bad_alloc"), OSError(errno.ENOMEM, "Cannot allocate memory")])
def test_out_of_memory_is_one_line(exc, monkeypatch, capsys):
    def run_out(_args):
        raise exc

    monkeypatch.setattr(cli, "_cmd_list", run_out)  # parser() binds `list` to cli._cmd_list when called
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgeport: error: out of memory during `list`")


def test_other_os_errors_are_not_called_out_of_memory(monkeypatch):
    def fail(_args):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cli, "_cmd_list", fail)
    with pytest.raises(OSError):
        cli.main(["list"])


def test_a_broken_pipe_is_still_not_an_error(monkeypatch):
    """BrokenPipeError is an OSError: the out-of-memory handler must not take it (`edgeport list | head`)."""
    import sys

    def piped(_args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(cli, "_cmd_list", piped)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # main points stdout at os.devnull; undone after the test
    assert cli.main(["list"]) == 0


def test_thread_counts_below_one_are_refused(tmp_path, capsys):
    from edgeport.errors import EdgeportError
    from edgeport.runtime.session import default_threads, resolve_threads

    assert resolve_threads(None) == default_threads() and resolve_threads(3) == 3
    for bad in (0, -3):
        with pytest.raises(EdgeportError, match=f"--threads must be at least 1, got {bad}"):
            resolve_threads(bad)
    out = tmp_path / "cls"
    assert cli.main(["export", "--model", "bert-tiny", "--task", "text-classification", "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["run", str(out), "--text", "a cat", "--threads", "0"]) == 2
    assert capsys.readouterr().err == "edgeport: error: --threads must be at least 1, got 0\n"


def test_serve_on_a_port_in_use_is_one_line(tmp_path, capsys):
    import socket

    out = tmp_path / "cls"
    assert cli.main(["export", "--model", "bert-tiny", "--task", "text-classification", "-o", str(out), "-q"]) == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        capsys.readouterr()
        assert cli.main(["serve", str(out), "--port", str(port)]) == 2
        err = capsys.readouterr().err
    assert err.startswith(f"edgeport: error: serve: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1
    assert cli.main(["serve", str(out), "--host", "no-such-host.invalid"]) == 2
    assert "cannot listen on no-such-host.invalid:8000" in capsys.readouterr().err
