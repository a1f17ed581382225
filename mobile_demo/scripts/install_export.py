"""Copy an edgeport question-answering TFLite export into the Android app's assets or the web demo.

    python mobile_demo/scripts/install_export.py EXPORT_DIR --to android --name int8
    python mobile_demo/scripts/install_export.py EXPORT_DIR --to web --name fp32

Copies the artifact, edgeport.json and tokenizer.json into
  android: mobile_demo/android/app/src/main/assets/models/NAME/
  web:     mobile_demo/web/model/NAME/
after checking the manifest (task question-answering, target tflite, a tokenizer) and the artifact's
sha256 against it. Standard library only: Android Studio users need no edgeport install.
Exits 2 with a one-line message when the folder is not such an export.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1]
DESTINATIONS = {"android": DEMO / "android" / "app" / "src" / "main" / "assets" / "models", "web": DEMO / "web" / "model"}


class ExportError(Exception):
    """The folder is not a question-answering TFLite export (message says why)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_export(folder: Path) -> dict:
    """The manifest of a QA TFLite export folder; raises ExportError naming what is wrong."""
    mf = folder / "edgeport.json"
    if not mf.is_file():
        raise ExportError(f"{folder}: no edgeport.json here; is this an edgeport export folder?")
    try:
        m = json.loads(mf.read_text())
    except ValueError as e:
        raise ExportError(f"{mf}: not JSON ({e})") from None
    if m.get("task") != "question-answering" or m.get("target") != "tflite":
        raise ExportError(f"{folder}: a {m.get('task')} export for {m.get('target')}; the demo needs "
                          "--task question-answering --target tflite")
    if not m.get("tokenizer"):
        raise ExportError(f"{folder}: the export has no tokenizer")
    artifact = folder / m["artifact"]
    if not artifact.is_file():
        raise ExportError(f"{artifact}: missing")
    if m.get("sha256") and sha256(artifact) != m["sha256"]:
        raise ExportError(f"{artifact}: sha256 differs from edgeport.json's (file changed after export?)")
    return m


def install(folder: Path, to: str, name: str) -> Path:
    """Copy the export's files to DESTINATIONS[to]/name (replacing what was there); returns that folder."""
    m = check_export(folder)
    dest = DESTINATIONS[to] / name
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in (m["artifact"], "edgeport.json", m["tokenizer"]["file"]):
        shutil.copy2(folder / f, tmp / f)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)  # all or nothing: never a half-copied model folder
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("--to", choices=sorted(DESTINATIONS), required=True)
    ap.add_argument("--name", default="int8", help="model folder name: int8 (the app's default) or fp32")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):  # it becomes a folder the install replaces
        print(f"install_export: error: --name must match [A-Za-z0-9_-]+ (got '{args.name}')", file=sys.stderr)
        return 2
    try:
        dest = install(args.export_dir, args.to, args.name)
    except ExportError as e:
        print(f"install_export: error: {e}", file=sys.stderr)
        return 2
    print(f"installed {args.export_dir} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
