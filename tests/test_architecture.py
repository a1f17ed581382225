"""The package's import graph obeys DESIGN.md's layering (read from the source with `ast`, nothing imported).

    reference_models -> export -> quantize        (data flows one way; serve sits on the runtime)
    ops: a leaf under export: torch and its own registry only
    runtime: a leaf every stage may call to run an artifact (export validates, quantize evaluates);
             it imports no torch, TensorFlow, reference model or exporter
    edgeport.errors / manifest / progress / qmoe_packing / schemes: shared leaves anybody may import

Every import counts, module level or inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "edgeport"

# Shared leaves: torch-free modules of plain data any part may import.
LEAVES = {"errors", "manifest", "progress", "qmoe_packing", "schemes"}

# part -> edgeport parts it must not import (besides the rules on third-party modules below)
FORBIDDEN = {
    "ops": {"export", "reference_models", "runtime", "quantize", "serve", "cli"},
    "reference_models": {"export", "quantize", "runtime", "serve", "cli"},
    "export": {"quantize", "serve", "cli"},
    "quantize": {"reference_models", "ops", "serve", "cli"},
    "runtime": {"export", "reference_models", "ops", "quantize", "serve", "cli"},
    "serve": {"export", "reference_models", "ops", "quantize", "cli"},
}
FORBIDDEN.update({leaf: set(FORBIDDEN) | {"cli"} for leaf in LEAVES})
THIRD_PARTY_FORBIDDEN = {
    "runtime": {"torch", "tensorflow", "keras", "litert_torch", "transformers"},
    "serve": {"torch", "tensorflow", "keras", "litert_torch", "transformers"},
    "ops": {"tensorflow", "keras"},
}
THIRD_PARTY_FORBIDDEN.update({leaf: {"torch", "tensorflow", "keras"} for leaf in LEAVES})


def part_of(module: str) -> str | None:
    """'edgeport.export.onnx' -> 'export'; 'edgeport.schemes' -> 'schemes'; other packages -> None."""
    bits = module.split(".")
    return bits[1] if bits[0] == "edgeport" and len(bits) > 1 else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import statement in the file, at any depth."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])  # a module's package; for __init__.py, the package itself
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            if mod == "edgeport":  # `from edgeport import export` names a part
                found += [(node.lineno, f"edgeport.{a.name}") for a in node.names]
    return found


def violations() -> list[str]:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for line, mod in imports_of(path):
            target = part_of(mod)
            if target is not None and target != part and target in FORBIDDEN.get(part, ()):
                bad.append(f"edgeport/{rel}:{line}: {part} imports {mod}")
            top = mod.split(".")[0]
            if top in THIRD_PARTY_FORBIDDEN.get(part, ()):
                bad.append(f"edgeport/{rel}:{line}: {part} imports {top}")
    return bad


def test_import_graph_follows_the_layers():
    bad = violations()
    assert not bad, "imports against DESIGN.md's layering:\n" + "\n".join(bad)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The walker itself: a planted ops -> export import (inside a function) is reported."""
    fake = tmp_path / "edgeport"
    (fake / "ops").mkdir(parents=True)
    (fake / "ops" / "x.py").write_text("def f():\n    from edgeport.export.onnx import export_onnx\n")
    (fake / "runtime").mkdir()
    (fake / "runtime" / "y.py").write_text("import torch\nfrom ..export import onnx\n")
    global PKG
    real, PKG = PKG, fake
    try:
        bad = violations()
    finally:
        PKG = real
    assert any("ops/x.py:2: ops imports edgeport.export.onnx" in b for b in bad), bad
    assert any("runtime/y.py:1: runtime imports torch" in b for b in bad), bad
    assert any("runtime/y.py:2: runtime imports edgeport.export" in b for b in bad), bad


@pytest.mark.parametrize("limit", [600])
def test_no_file_over_the_size_limit(limit):
    long = [f"{p.relative_to(PKG.parent)}: {n}" for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > limit]
    assert not long, f"files over {limit} lines: {long}"
