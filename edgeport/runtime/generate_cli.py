"""`edgeport generate ARTIFACT --prompt ...`: stream a continuation to stdout. Cheap to import."""

from __future__ import annotations

import sys


def check_options(a) -> None:
    """EdgeportError (one line, naming the flag) for a sampling or length option out of range, before the
    artifact is read: --max-new-tokens >= 1, --temperature finite >= 0, --top-k >= 0, --top-p finite in
    (0, 1], --seed >= 0 (numpy's default_rng refuses negative seeds)."""
    import math

    from edgeport.errors import EdgeportError

    bad = [(a.max_new_tokens < 1, f"--max-new-tokens must be at least 1, got {a.max_new_tokens}"),
           (not (math.isfinite(a.temperature) and a.temperature >= 0),
            f"--temperature must be a finite number >= 0 (0: greedy), got {a.temperature}"),
           (a.top_k < 0, f"--top-k must be >= 0 (0: no cut), got {a.top_k}"),
           (not (math.isfinite(a.top_p) and 0 < a.top_p <= 1), f"--top-p must be in (0, 1], got {a.top_p}"),
           (a.seed is not None and a.seed < 0, f"--seed must be >= 0, got {a.seed}")]
    for wrong, says in bad:
        if wrong:
            raise EdgeportError(says)


def _cmd_generate(a):
    from edgeport.errors import EdgeportError
    from edgeport.manifest import read_manifest
    from edgeport.runtime.generate import TextGenerator
    from edgeport.runtime.run_cli import random_weights_note

    check_options(a)
    manifest = read_manifest(a.artifact)[0]
    if manifest.task != "text-generation":  # the way back from run's pointer here
        raise EdgeportError(f"{a.artifact} is a {manifest.task} export, not text-generation: run it with "
                            f"`edgeport run {a.artifact} --text TEXT`")
    gen = TextGenerator(a.artifact, threads=a.threads)
    note = random_weights_note(manifest)  # printed with the first token: a refused prompt or option stays one line
    stop = set(gen.info.get("eos_token_ids") or [])
    new: list = []
    shown = ""

    def stream(row, token):  # decode everything so far and print what is new (multi-byte safe)
        nonlocal shown, note
        if note:
            print(note, file=sys.stderr, flush=True)
            note = None
        if token in stop:
            return
        new.append(token)
        text = gen.tokenizer.decode(new)
        if text.startswith(shown) and not text.endswith("\ufffd"):
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text

    text = gen.generate(a.prompt, max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k,
                        top_p=a.top_p, seed=a.seed, on_token=stream)
    sys.stdout.write(text[len(shown):] if text.startswith(shown) else "")
    sys.stdout.write("\n")


def register(subparsers):
    """Add `edgeport generate` to the CLI's subparsers."""
    g = subparsers.add_parser("generate", help="continue a prompt with an exported decoder (text-generation)")
    g.add_argument("artifact", help="export folder or its .onnx/.tflite")
    g.add_argument("--prompt", required=True, help="text to continue")
    g.add_argument("--max-new-tokens", type=int, default=32, help="most tokens to add (default 32)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    g.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    g.add_argument("--seed", type=int, help="random seed for sampling")
    g.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    g.set_defaults(fn=_cmd_generate)
