"""`edgeport run ARTIFACT --text ...`: one pipeline call, its result printed as JSON. Cheap to import.

Every task option belongs to the tasks in TASK_OPTIONS; an option the artifact's task does not use is
refused (EdgeportError -> one line, exit 2), never silently ignored.
"""

from __future__ import annotations

import argparse
import json

from edgeport.errors import EdgeportError

QA = "question-answering"
_TEXT_TASKS = ("fill-mask", "text-classification", "token-classification", "feature-extraction")
NSP = "next-sentence-prediction"
ENTITY_TASKS = ("entity-classification", "entity-pair-classification", "entity-span-classification")  # LUKE
# option dest -> (its flag, the tasks that use it)
TASK_OPTIONS = {
    "text_pair": ("--text-pair", ("text-classification", NSP)),
    "function_to_apply": ("--function-to-apply", ("text-classification",)),
    "question": ("--question", (QA,)),
    "top_k": ("--top-k", ("fill-mask", QA)),
    "pooling": ("--pooling", ("feature-extraction",)),
    "truncate": ("--truncate", _TEXT_TASKS + ENTITY_TASKS),
    "entity_spans": ("--entity-spans", ENTITY_TASKS),
    "aggregation_strategy": ("--aggregation-strategy", ("token-classification",)),
    "max_answer_len": ("--max-answer-len", (QA,)),
    "doc_stride": ("--doc-stride", (QA,)),
    "max_seq_len": ("--max-seq-len", (QA,)),
    "max_question_len": ("--max-question-len", (QA,)),
    "handle_impossible_answer": ("--handle-impossible-answer", (QA,)),
    "align_to_words": ("--no-align-to-words", (QA,)),
}


def check_options(task: str, args) -> None:
    """Refuse (EdgeportError) every option given on the command line that `task` does not use."""
    for dest, (flag, tasks) in TASK_OPTIONS.items():
        if getattr(args, dest, None) is not None and task not in tasks:
            used = sorted(f for f, ts in TASK_OPTIONS.values() if task in ts)
            raise EdgeportError(f"{flag} is not used by {task} artifacts (options for {task}: "
                                f"{', '.join(used) or 'none besides --text'})")


def _given(args, *dests) -> dict:
    """Keyword arguments for the options given on the command line (pipeline defaults otherwise)."""
    return {d: getattr(args, d) for d in dests if getattr(args, d) is not None}


def run(args) -> object:
    """The JSON-ready result of the artifact's pipeline on the command line's inputs.

    EdgeportError (one line) for a text-generation export (naming `edgeport generate`), an option the
    task does not use, a missing --text, and the pipeline's own refusals."""
    from edgeport.manifest import read_manifest
    from edgeport.runtime import pipeline

    manifest, _ = read_manifest(args.artifact)
    if manifest.task == "text-generation":  # before the options: --question, --top-k ... mean nothing here
        raise EdgeportError(f"{args.artifact} is a text-generation export: continue a prompt with "
                            f"`edgeport generate {args.artifact} --prompt TEXT` (`edgeport run` runs the other tasks)")
    if getattr(args, "prompt", None) is not None:  # generate's option, taken here only to point there
        raise EdgeportError(f"--prompt is `edgeport generate`'s option (text-generation exports); {args.artifact} is "
                            f"a {manifest.task} export: give its input with --text")
    check_options(manifest.task, args)
    if args.text is None:  # main() prefixes "edgeport: error: ": the program is named once
        context = ", the context to answer from" if manifest.task == QA else ""
        raise EdgeportError(f"run needs --text (the input text{context})")
    if manifest.task == QA and not args.question:
        raise EdgeportError("question-answering needs --question (and --text, the context to answer from)")
    # --truncate alone: longest_first (transformers' truncation=True); the LUKE tokenizer takes a bool
    truncate = bool(args.truncate) if manifest.task in ENTITY_TASKS else (args.truncate or False)
    p = pipeline(args.artifact, truncate=truncate, threads=args.threads)
    if p.task == QA:
        return p(args.question, args.text, **_given(args, "top_k", "max_answer_len", "doc_stride", "max_seq_len",
                                                    "max_question_len", "handle_impossible_answer",
                                                    "align_to_words"))
    if p.task in ENTITY_TASKS:
        from edgeport.runtime.pipelines.entity import parse_spans

        if not args.entity_spans:
            raise EdgeportError(f"{p.task} needs --entity-spans START:END[,START:END...] (character offsets)")
        return p(args.text, parse_spans(args.entity_spans))
    if p.task == "fill-mask":
        return p(args.text, **_given(args, "top_k"))
    if p.task == "text-classification":
        return p(args.text, pairs=args.text_pair, **_given(args, "function_to_apply"))[0]
    if p.task == NSP:
        return p(args.text, args.text_pair)[0]
    if p.task == "token-classification":
        return p(args.text, **_given(args, "aggregation_strategy"))
    if p.task == "feature-extraction":
        pooling = args.pooling or "mean"
        emb = p(args.text, pooling=pooling)[0]  # (H,) pooled; (S, H) for "none", one vector per token
        head = {"pooling": pooling, "dim": int(emb.shape[-1])}
        if pooling == "none":
            head["tokens"] = int(emb.shape[0])
        note = "first 8 values" + (" of the first token's vector" if pooling == "none" else "")
        return {**head, "embedding": [round(float(x), 5) for x in emb.reshape(-1, emb.shape[-1])[0, :8]],
                "note": note}
    return p(args.text)[0]


def random_weights_note(manifest) -> str | None:
    """The reminder `run`/`generate` print on stderr for an export with random weights, else None."""
    if not manifest.random_weights:
        return None
    return (f"note: {manifest.source or 'this export'} has random weights (a preset or a head the checkpoint "
            "lacked): its outputs mean nothing until exported from trained weights")


def _cmd_run(args):
    import sys

    from edgeport.manifest import read_manifest

    result = run(args)
    note = random_weights_note(read_manifest(args.artifact)[0])
    if note:
        print(note, file=sys.stderr)
    print(json.dumps(result, indent=2, ensure_ascii=False))


def register(subparsers):
    """Add the `run` subcommand to `edgeport`'s subparsers (cli.COMMAND_MODULES)."""
    r = subparsers.add_parser("run", help="run an exported artifact on text (pipeline options as transformers')")
    r.add_argument("artifact", help="export folder or its .onnx/.tflite")
    r.add_argument("--text", help="input text (the context for question-answering); required (checked after the "
                   "export's task: a text-generation export is pointed to `edgeport generate`)")
    r.add_argument("--text-pair", help="second text of a sentence pair (text-classification, "
                   "next-sentence-prediction: the is-next probability of B after A)")
    r.add_argument("--function-to-apply", choices=("softmax", "sigmoid", "none"),
                   help="text-classification scores (default: as the model's config says, like transformers' "
                   "pipeline: sigmoid for multi-label or one label, none for regression, else softmax)")
    r.add_argument("--question", help="question (question-answering)")
    r.add_argument("--top-k", type=int, help="fill-mask candidates (default 5); question-answering answers (default 1)")
    r.add_argument("--pooling", choices=("mean", "cls", "none"), help="feature-extraction pooling (default mean; "
                   "none: one vector per token, the output shows their count and the first token's)")
    r.add_argument("--aggregation-strategy", choices=("none", "simple", "first", "average", "max"),
                   help="token-classification: group tokens into words/entities (default none)")
    r.add_argument("--max-answer-len", type=int, help="question-answering: longest answer in tokens (default 15)")
    r.add_argument("--doc-stride", type=int, help="question-answering: context tokens shared by consecutive "
                   "windows of a long context (default min(max-seq-len / 2, 128))")
    r.add_argument("--max-seq-len", type=int, help="question-answering: window length in tokens (default: the "
                   "artifact's static length, else min(positions, 384))")
    r.add_argument("--max-question-len", type=int, help="question-answering: question cut to this many tokens "
                   "(default 64)")
    r.add_argument("--handle-impossible-answer", action="store_true", default=None,
                   help="question-answering: the empty answer competes (score: the [CLS] span)")
    r.add_argument("--no-align-to-words", dest="align_to_words", action="store_false", default=None,
                   help="question-answering: keep token spans instead of widening them to whole words")
    r.add_argument("--entity-spans", metavar="S:E,...", help="LUKE entity tasks: character spans of the entities "
                   "(end exclusive), e.g. 0:7 (entity), 0:7,17:28 (head, tail), or every candidate span")
    r.add_argument("--truncate", nargs="?", const="longest_first", default=None,
                   choices=("longest_first", "only_first", "only_second"),
                   help="cut text longer than the artifact accepts with the tokenizer's truncation, keeping "
                   "[CLS]/[SEP] (default strategy longest_first; pairs may use only_first/only_second; not "
                   "question-answering: it splits long contexts into windows)")
    r.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    r.add_argument("--prompt", help=argparse.SUPPRESS)  # generate's: taken only to point there (run())
    r.set_defaults(fn=_cmd_run)
