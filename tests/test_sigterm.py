"""SIGTERM during a long command unwinds like Ctrl-C: the export's hidden temp folder (atomic_output_dir) and
auto's work folder are removed, the output folder is not created, the exit status is 143 with one line."""

import signal
import subprocess
import sys
import time


def test_sigterm_during_export_leaves_no_temp_folder(tmp_path):
    out = tmp_path / "cls"
    proc = subprocess.Popen([sys.executable, "-m", "edgeport.cli", "export", "--model", "bert-tiny", "--task",
                             "text-classification", "--target", "auto", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".cls.") for p in tmp_path.iterdir()):  # auto's work folder exists
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "edgeport: terminated"
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
