"""CLI: bad input gives one clear line and exit 2, never a traceback or a half-written artifact."""

import os
import re
import subprocess
import sys

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_mobilebert

from edgeport.cli import main


def subprocess_cli(*args):
    """The real entry point in a fresh interpreter (used where process-level behaviour matters)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "edgeport.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """`main()` in this process (fast); its exit code and what it printed."""

    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


def assert_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("edgeport: error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


@pytest.fixture(scope="module")
def qa_folder(tmp_path_factory):
    folder, _ = make_mobilebert(tmp_path_factory.mktemp("qa"), "question-answering")
    return folder


def test_unknown_family_and_task(tmp_path, run_cli):
    assert_one_line_error(subprocess_cli("export", "--model", "bertoid", "-o", str(tmp_path / "o")), "unknown model 'bertoid'")
    assert_one_line_error(run_cli("export", "--model", "mobilebert-tiny", "--task", "summarize"),
                          "no task 'summarize'", "fill-mask")
    assert_one_line_error(run_cli("export", "--model", "mobilebert-tiny", "--target", "coreml"),
                          "unknown target 'coreml'")


def test_folder_without_config_or_weights(tmp_path, qa_folder, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("export", "--model", str(empty)), "no config.json")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((qa_folder / "config.json").read_text())
    assert_one_line_error(run_cli("export", "--model", str(no_weights)), "no weights")


def test_config_contradicting_weights(tmp_path, qa_folder, run_cli):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in qa_folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = (bad / "config.json").read_text().replace('"num_attention_heads": 2', '"num_attention_heads": 4')
    cfg = cfg.replace('"embedding_size": 32', '"embedding_size": 16')
    (bad / "config.json").write_text(cfg)
    assert_one_line_error(run_cli("export", "--model", str(bad), "--task", "question-answering"),
                          "config contradicts weights", "word_embeddings")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights(tmp_path, qa_folder, damage, run_cli):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in qa_folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    w = bad / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 64 + data[64:])
    assert_one_line_error(run_cli("export", "--model", str(bad), "-o", str(tmp_path / "o")),
                          "corrupt or truncated weights file")
    assert not (tmp_path / "o").exists()


def test_wrong_family_for_checkpoint(tmp_path, qa_folder, run_cli):
    assert_one_line_error(run_cli("export", "--model", "bert-tiny", "--checkpoint", str(qa_folder)),
                          "is a 'mobilebert' model, not 'bert'")


def test_unwritable_output_dir(tmp_path, run_cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run_cli("export", "--model", "mobilebert-tiny", "-o", str(blocker / "sub")),
                          "cannot write the output folder")
    other = tmp_path / "notours"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert_one_line_error(run_cli("export", "--model", "mobilebert-tiny", "-o", str(other)),
                          "not an edgeport output")
    assert (other / "precious.txt").read_text() == "keep me"


def test_seq_len_beyond_positions(tmp_path, run_cli):
    assert_one_line_error(run_cli("export", "--model", "mobilebert-tiny", "--target", "tflite", "--seq-len", "4096",
                                  "-o", str(tmp_path / "o")), "longer than the model's 256 positions")
    assert not (tmp_path / "o").exists()


def test_export_run_inspect_and_text_errors(tmp_path, qa_folder, run_cli):
    out = tmp_path / "qa"
    r = run_cli("export", "--model", str(qa_folder), "--task", "question-answering", "--target", "tflite",
                "--seq-len", "32", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "[4/5] validating" in r.stderr and "all 4 checks pass" in r.stderr
    r = run_cli("run", str(out), "--question", "who met bob?", "--text", "alice met bob in paris.")
    assert r.returncode == 0, r.stderr
    assert '"answer"' in r.stdout
    r = run_cli("inspect", str(out / "model.tflite"))
    assert r.returncode == 0 and "parity: pass over 4 checks" in r.stdout and "[1, 32]" in r.stdout
    assert_one_line_error(run_cli("run", str(out), "--question", "who?", "--text", "  "), "needs a context")
    r = run_cli("run", str(out), "--question", "who?", "--text", "bob " * 40)  # windows of 32 tokens
    assert r.returncode == 0 and '"answer": "bob"' in r.stdout, r.stderr
    assert_one_line_error(run_cli("run", str(out), "--text", "alice met bob"), "needs --question")
    assert_one_line_error(run_cli("run", str(tmp_path / "nothing"), "--text", "x"), "no such file or folder")
    assert_one_line_error(run_cli("inspect", str(qa_folder)), "no edgeport.json")


def test_empty_text_for_fill_mask(tmp_path, mobilebert_ckpt, run_cli):
    folder, _ = mobilebert_ckpt("fill-mask")
    out = tmp_path / "fm"
    assert main(["export", "--model", str(folder), "-o", str(out), "-q"]) == 0
    assert_one_line_error(run_cli("run", str(out), "--text", ""), "empty text")
    assert_one_line_error(run_cli("run", str(out), "--text", "no mask here"), "needs [MASK]")


def test_list_shows_every_family(run_cli):
    r = subprocess_cli("list")
    assert r.returncode == 0
    from edgeport.reference_models import families

    for name in families():
        assert f"\n{name}\n" in "\n" + r.stdout


@pytest.fixture(scope="module")
def decoder_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("dec") / "gpt2"
    assert main(["export", "--model", "gpt2-tiny", "-o", str(out), "-q"]) == 0
    return out


def test_run_and_generate_point_to_each_other(decoder_export, tmp_path, run_cli):
    """`run` on a text-generation export names `generate` (before judging its options or a missing --text);
    `generate` on another task's export names `run`."""
    for args in (["--question", "who?"], ["--text", "hi", "--question", "who?", "--top-k", "2"], []):
        assert_one_line_error(run_cli("run", str(decoder_export), *args),
                              f"text-generation export: continue a prompt with `edgeport generate {decoder_export} "
                              "--prompt TEXT`")
    cls = tmp_path / "cls"
    assert main(["export", "--model", "bert-tiny", "--task", "text-classification", "-o", str(cls), "-q"]) == 0
    assert_one_line_error(run_cli("generate", str(cls), "--prompt", "hi"),
                          f"text-classification export, not text-generation: run it with `edgeport run {cls} --text")
    r = run_cli("run", str(cls))
    assert_one_line_error(r, "edgeport: error: run needs --text (the input text)")
    assert r.stderr.count("edgeport") == 1, r.stderr  # the program named once
    # generate's --prompt given to run: pointed to generate for a decoder, to --text otherwise (was argparse's
    # "unrecognized arguments: --prompt hi")
    assert_one_line_error(run_cli("run", str(decoder_export), "--prompt", "hi"),
                          f"continue a prompt with `edgeport generate {decoder_export} --prompt TEXT`")
    assert_one_line_error(run_cli("run", str(cls), "--prompt", "hi"),
                          "--prompt is `edgeport generate`'s option", "give its input with --text")


def test_a_file_where_a_folder_is_wanted(decoder_export, tmp_path, run_cli):
    """`serve` takes export folders: a file is called a file (naming its folder when that holds the manifest),
    not 'no such export folder'; run/inspect take the artifact file too, and a stray file is called one."""
    onnx = decoder_export / "model.onnx"
    assert_one_line_error(run_cli("serve", str(onnx)), f"serve: {onnx} is a file; serve takes an export folder",
                          f"give its folder, {decoder_export}, which holds edgeport.json")
    stray = tmp_path / "notes.txt"
    stray.write_text("x")
    r = run_cli("serve", str(stray))
    assert_one_line_error(r, f"serve: {stray} is a file")
    assert "give its folder" not in r.stderr
    assert_one_line_error(run_cli("serve", str(tmp_path / "gone")), "no such export folder")
    assert_one_line_error(run_cli("inspect", str(stray)), "a file outside any export folder")
    r = run_cli("inspect", str(onnx))
    assert r.returncode == 0 and "gpt2 text-generation" in r.stdout


@pytest.mark.parametrize("model, args, says", [
    ("bert-tiny", ["--kv-layout", "per-layer"], "bert-tiny exports feature-extraction, which has none"),
    ("gpt2-tiny", ["--task", "text-classification", "--kv-layout", "stacked"], "exports text-classification"),
    ("QA_FOLDER", ["--kv-layout", "per-layer"], "exports fill-mask, which has none"),  # a checkpoint folder
    ("bert-tiny", ["--target", "tflite", "--cpu-class", "avx2"], "--target tflite does not run there"),
    ("gpt2-tiny", ["--target", "tensorrt", "--cpu-class", "avx512_vnni"], "--target tensorrt does not run there"),
])
def test_export_options_that_cannot_apply_are_refused_before_loading(model, args, says, qa_folder, tmp_path,
                                                                     monkeypatch, run_cli):
    """--kv-layout for a model without a KV cache, --cpu-class for a target not run by onnxruntime on x86:
    one line before the model is built (it was refused after building, or --cpu-class silently ignored)."""
    import edgeport.export

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(edgeport.export, "load", no_loading)
    monkeypatch.setattr(edgeport.export, "load_reference", no_loading, raising=False)
    model = str(qa_folder) if model == "QA_FOLDER" else model
    r = run_cli("export", "--model", model, *args, "-o", str(tmp_path / "o"))
    assert_one_line_error(r, says, "drop --kv-layout" if "--kv-layout" in args else "drop --cpu-class")
    assert r.stderr.count("\n") == 1 and not (tmp_path / "o").exists()


def _make_tiny_checkpoint(folder: Path, monkeypatch) -> None:
    """`benchmarks/bench_export_memory.py make` (the README's export-at-scale checkpoint) at a tiny size: a
    random 2-layer Mistral safetensors checkpoint with its tokenizer, written to `folder`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_export_memory

    monkeypatch.setitem(bench_export_memory.SIZES, "tiny", dict(hidden_size=32, intermediate_size=64,
                                                                 num_hidden_layers=2, num_attention_heads=4,
                                                                 num_key_value_heads=2))
    bench_export_memory.main(["make", "--size", "tiny", "--out", str(folder)])


def test_a_made_checkpoint_exports_ready_to_generate(tmp_path, monkeypatch, run_cli):
    """The README's export-at-scale snippet (bench_export_memory.py make, then export --streaming) at a tiny
    size: `make` saves a tokenizer with the checkpoint, so `edgeport generate` on the export runs (it refused:
    'the export has no tokenizer.json')."""
    _make_tiny_checkpoint(tmp_path / "ckpt", monkeypatch)
    out = tmp_path / "stream"
    r = run_cli("export", "--model", str(tmp_path / "ckpt"), "--target", "onnx", "--streaming", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("generate", str(out), "--prompt", "t5 t9 t11", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    words = r.stdout.split()
    assert 1 <= len(words) <= 4 and all(w.startswith("t") or w in ("<s>", "<unk>") for w in words), r.stdout


@pytest.mark.parametrize("args, says", [
    (["--prompt", ""], "empty prompt"),
    (["--prompt", "hi", "--temperature", "-1"], "--temperature must be a finite number >= 0 (0: greedy), got -1.0"),
    (["--prompt", "hi", "--temperature", "nan"], "--temperature must be a finite number >= 0 (0: greedy), got nan"),
    (["--prompt", "hi", "--temperature", "inf"], "--temperature must be a finite number >= 0"),
    (["--prompt", "hi", "--top-k", "-2"], "--top-k must be >= 0 (0: no cut), got -2"),
    (["--prompt", "hi", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--prompt", "hi", "--top-p", "nan"], "--top-p must be in (0, 1], got nan"),
    (["--prompt", "hi", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--prompt", "hi", "--seed", "-1"], "--seed must be >= 0, got -1"),  # was numpy's ValueError, a traceback
    (["--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
])
def test_generate_refusals_are_one_line_on_a_random_weights_export(decoder_export, args, says, run_cli):
    """The random-weights reminder comes with the first token, so a refused prompt or option is the only
    line on stderr; a run that generates still prints the reminder."""
    r = run_cli("generate", str(decoder_export), *args)
    assert_one_line_error(r, says)
    assert r.stderr.count("\n") == 1, r.stderr
    r = run_cli("generate", str(decoder_export), "--prompt", "hi", "--max-new-tokens", "2")
    assert r.returncode == 0 and "has random weights" in r.stderr


def test_sampling_settings_out_of_range_name_the_setting():
    """The Python API's check (runtime.generate.Sampling) names which setting is wrong; nan is out of range."""
    from edgeport.errors import EdgeportError
    from edgeport.runtime.generate import Sampling

    for kw, says in (({"temperature": float("nan")}, "temperature must be a finite number >= 0, got nan"),
                     ({"top_k": -1}, "top-k must be >= 0"), ({"top_p": float("nan")}, "top-p must be in (0, 1]"),
                     ({"seed": -1}, "seed must be >= 0, got -1")):
        with pytest.raises(EdgeportError, match=re.escape(says)):
            Sampling(**kw).check()
    Sampling(0.7, 5, 0.9, 0).check()


def test_version(capsys):
    """`edgeport --version` prints the installed package's version (importlib.metadata), exit 0."""
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"edgeport {version('edgeport')}\n"
    assert version("edgeport") == __import__("edgeport").__version__  # pyproject and the package agree


def test_streaming_to_tflite_is_refused_before_the_checkpoint_is_read(tmp_path, monkeypatch, run_cli):
    """--streaming writes ONNX graphs only: TFLite is refused up front (it was refused at step [2/5], after
    the checkpoint was mapped)."""
    import edgeport.export.streaming as streaming

    def must_not_run(*a, **k):
        raise AssertionError("the checkpoint was read before the target was refused")

    monkeypatch.setattr(streaming, "load_lazy_reference", must_not_run)
    monkeypatch.setattr(streaming, "preflight", must_not_run)
    r = run_cli("export", "--model", str(tmp_path / "ckpt"), "--target", "tflite", "--streaming", "-o",
                str(tmp_path / "o"))
    assert_one_line_error(r, "--streaming writes ONNX graphs", "tflite")
    assert "[1/5]" not in r.stderr and not (tmp_path / "o").exists()


def test_inspect_of_a_streamed_int4_export_shows_its_accuracy(tmp_path, monkeypatch, run_cli):
    """`export --streaming --quantize int4` writes no float artifact and records no parity rows, but its
    manifest holds the int4 artifact's accuracy: inspect shows it (it stopped at 'no checks recorded')."""
    from edgeport.manifest import read_manifest

    _make_tiny_checkpoint(tmp_path / "ckpt", monkeypatch)
    out = tmp_path / "s4"
    r = run_cli("export", "--model", str(tmp_path / "ckpt"), "--streaming", "--quantize", "int4", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    m, _ = read_manifest(out)
    acc = m.quantization["accuracy"]
    r = run_cli("inspect", str(out))
    assert r.returncode == 0, r.stderr
    assert "from: made straight from the checkpoint; no float artifact" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith(f"  accuracy ({m.quantization['tag']} vs float"))
    assert f"perplexity {acc['perplexity_float']:.3f} -> {acc['perplexity_quantized']:.3f}" in line
    assert f"agreement {acc['greedy_next_token_agreement']:.1%}" in line
