"""The runtime: what production servers and devices install. numpy + tokenizers + one backend.

    sess = edgeport.runtime.load("out/model.onnx")     # Session: .inputs, .outputs, .run(feeds)
    qa = edgeport.runtime.pipeline("out/")              # task pipeline chosen by the manifest
"""

from __future__ import annotations

from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME, read_manifest
from edgeport.runtime.session import IOSpec, LiteRTSession, OrtSession, Session, open_session


def load(path, **kw) -> Session:
    """A Session for an artifact (file, or export folder holding edgeport.json).

    The manifest, when there is one, is attached as `session.manifest` (else None).
    """
    p = Path(path)
    manifest = None
    if p.is_dir() or (p.parent / MANIFEST_NAME).is_file():
        manifest, folder = read_manifest(p)
        p = folder / manifest.artifact
    sess = open_session(p, **_signature(manifest), **kw)
    sess.manifest = manifest
    return sess


def pipeline(path, truncate: bool | str = False, **kw):
    """The task pipeline for an export folder (or its artifact), chosen by the manifest's task.
    `truncate`: False, True, or a strategy (longest_first, only_first, only_second): see Pipeline."""
    from edgeport.runtime.pipelines import PIPELINES

    manifest, folder = read_manifest(path)
    if manifest.task not in PIPELINES:
        hint = (": generate text with `edgeport generate FOLDER --prompt TEXT` (edgeport.runtime.generate)"
                if manifest.task == "text-generation" else "")
        raise EdgeportError(f"no pipeline for task '{manifest.task}'{hint}")
    cls = PIPELINES[manifest.task]
    kind = manifest.tokenizer.kind if manifest.tokenizer else None
    if kind and kind != getattr(cls, "tokenizer_kind", "tokenizers"):  # e.g. LUKE fill-mask: words + entities
        raise EdgeportError(f"no {manifest.task} pipeline for {manifest.family} exports with entity inputs yet; "
                            "tokenize with edgeport.runtime.luke_tokenizer.LukeTokenizer and run edgeport.runtime.load")
    sess = open_session(folder / manifest.artifact, **_signature(manifest), **kw)
    sess.manifest = manifest
    return cls(sess, manifest, folder, truncate=truncate)


def _signature(manifest) -> dict:
    """open_session's keyword for the manifest's TFLite signature key (none for ONNX or older manifests)."""
    return {"signature_key": manifest.signature_key} if manifest is not None and manifest.signature_key else {}


__all__ = ["load", "pipeline", "Session", "OrtSession", "LiteRTSession", "IOSpec"]
