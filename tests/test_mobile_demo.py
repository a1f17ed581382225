"""The mobile demo (mobile_demo/): its Java and JavaScript QA cores on fixtures from the Python pipeline,
and the phone web page in headless Chromium answering like the Python pipeline on the same artifacts.

Each test shells out to the tool it needs (javac/java with JUnit 4, node, chromium) and is skipped, with
the reason, where that tool is absent; .ci/run installs all of them, so CI runs every one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "mobile_demo"
WEB = DEMO / "web"
JUNIT = Path("/usr/share/java/junit4.jar")
CHROMIUM = Path("/usr/bin/chromium")

sys.path.insert(0, str(DEMO / "scripts"))
import install_export
import run_e2e


def _run(cmd, cwd, env=None, timeout=600):
    r = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.mark.skipif(shutil.which("javac") is None or not JUNIT.is_file(),
                    reason="needs javac and Debian's junit4 (apt-get install openjdk-17-jdk-headless junit4)")
def test_java_core_junit():
    out = _run(["bash", str(DEMO / "android" / "core" / "run_tests.sh")], cwd=DEMO)
    assert "OK (" in out, out


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (>= 20) for node --test")
def test_js_core_node_test():
    out = _run(["node", "--test", "test/"], cwd=WEB)
    assert "# fail 0" in out and "# pass 0" not in out, out


def _export(tmp: Path) -> dict:
    """mobilebert-tiny question-answering TFLite at 256 tokens (its positions), fp32 and int8."""
    cli = [sys.executable, "-m", "edgeport.cli"]
    fp32, int8 = tmp / "fp32", tmp / "int8"
    _run(cli + ["export", "--model", "mobilebert-tiny", "--target", "tflite", "--task", "question-answering",
                "--seq-len", "256", "-o", str(fp32), "-q"], cwd=tmp)
    _run(cli + ["quantize", str(fp32), "--scheme", "int8", "-o", str(int8), "-q"], cwd=tmp)
    return {"int8": int8, "fp32": fp32}


@pytest.mark.skipif(shutil.which("node") is None or not CHROMIUM.is_file()
                    or not (WEB / "node_modules" / "playwright-core").is_dir(),
                    reason="needs node, Debian's chromium and `npm ci` in mobile_demo/web (playwright-core)")
def test_web_demo_in_chromium_answers_like_the_python_pipeline(tmp_path):
    _run(["node", "setup.mjs"], cwd=WEB)  # LiteRT.js into the page's own folder
    models = _export(tmp_path)
    r = run_e2e.run(models, os.environ.get("MOBILE_DEMO_SCREENSHOT"))
    assert r.returncode == 0, f"{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert "# pass 1" in r.stdout and "# skipped 0" in r.stdout, r.stdout


class _ReplaySession:
    """A session answering each window with the logits stored in the fixtures for the same input_ids."""

    def __init__(self, cases, seq_len):
        from edgeport.runtime.session import IOSpec

        self.inputs = [IOSpec(n, "int32", [1, seq_len]) for n in ("input_ids", "attention_mask", "token_type_ids")]
        self.seq_len = seq_len
        self.windows = {tuple(w["input_ids"]): w for c in cases for w in c["windows"]}

    def run(self, feeds):
        import numpy as np

        n = int(feeds["attention_mask"][0].sum())
        w = self.windows[tuple(int(i) for i in feeds["input_ids"][0, :n])]
        pad = lambda v: np.pad(np.array(v, np.float32), (0, self.seq_len - n))[None]
        return {"start_logits": pad(w["start_logits"]), "end_logits": pad(w["end_logits"])}


def test_fixtures_still_match_the_python_pipeline():
    """The Python pipeline, fed the stored logits, still gives the stored answers: if its semantics change,
    this fails and the fixtures (and the Java/JS cores) must follow (scripts/make_fixtures.py)."""
    import json

    from edgeport.manifest import read_manifest
    from edgeport.runtime.pipelines import QuestionAnswering

    fx = json.loads((DEMO / "fixtures" / "qa_fixtures.json").read_text())
    manifest, folder = read_manifest(DEMO / "fixtures")
    qa = QuestionAnswering(_ReplaySession(fx["cases"], fx["settings"]["max_seq_len"]), manifest, folder)
    for c in fx["cases"]:
        got = qa(c["question"], c["context"], top_k=c["top_k"], handle_impossible_answer=c["handle_impossible_answer"])
        got = got if isinstance(got, list) else [got]
        assert [(a["answer"], a["start"], a["end"]) for a in got] == \
            [(a["answer"], a["start"], a["end"]) for a in c["answers"]], c["name"]
        assert [a["score"] for a in got] == pytest.approx([a["score"] for a in c["answers"]], rel=1e-12), c["name"]


def _fake_export(folder: Path, task: str = "question-answering") -> Path:
    """An export folder with the fixtures' manifest and tokenizer and a stand-in artifact (its sha256 recorded)."""
    import hashlib
    import json

    folder.mkdir()
    m = json.loads((DEMO / "fixtures" / "edgeport.json").read_text())
    (folder / m["artifact"]).write_bytes(b"not a real model")
    m.update(task=task, sha256=hashlib.sha256(b"not a real model").hexdigest())
    (folder / "edgeport.json").write_text(json.dumps(m))
    (folder / "tokenizer.json").write_text((DEMO / "fixtures" / "tokenizer.json").read_text())
    return folder


def test_install_export_copies_a_checked_export(tmp_path, monkeypatch):

    monkeypatch.setitem(install_export.DESTINATIONS, "web", tmp_path / "web-model")
    dest = install_export.install(_fake_export(tmp_path / "exp"), "web", "int8")
    assert sorted(p.name for p in dest.iterdir()) == ["edgeport.json", "model.tflite", "tokenizer.json"]


def test_install_export_refuses_bad_folders(tmp_path, monkeypatch, capsys):

    monkeypatch.setitem(install_export.DESTINATIONS, "android", tmp_path / "assets")
    assert install_export.main([str(tmp_path), "--to", "android"]) == 2  # no edgeport.json
    assert "no edgeport.json" in capsys.readouterr().err
    assert install_export.main([str(_fake_export(tmp_path / "fm", task="fill-mask")), "--to", "android"]) == 2
    assert "question-answering" in capsys.readouterr().err
    changed = _fake_export(tmp_path / "changed")
    (changed / "model.tflite").write_bytes(b"edited after export")
    assert install_export.main([str(changed), "--to", "android"]) == 2
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "assets").exists()  # nothing half-copied


def test_install_export_refuses_names_that_leave_the_models_folder(tmp_path, monkeypatch, capsys):
    """--name becomes the folder the install replaces: '..' deleted every installed model (rmtree of the
    assets folder), '../x' wrote outside it. Only [A-Za-z0-9_-]+, the rule serve.mjs applies to ?model=."""
    assets = tmp_path / "app" / "assets"
    (assets / "int8").mkdir(parents=True)
    (assets / "int8" / "keep.txt").write_text("installed before")
    monkeypatch.setitem(install_export.DESTINATIONS, "android", assets)
    export = _fake_export(tmp_path / "exp")
    for name in ("..", "../escaped", "a/b", ""):
        assert install_export.main([str(export), "--to", "android", "--name", name]) == 2
        assert "--name must match" in capsys.readouterr().err
    assert (assets / "int8" / "keep.txt").read_text() == "installed before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "exp"]
