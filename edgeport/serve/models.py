"""A served model: an export folder opened through the runtime, run a batch of requests at a time.

Every request kind is a `key` tuple (kind first, then whatever parameters make rows incompatible:
fill-mask's top_k, the pooling, the sampling settings) and a payload; requests with equal keys can
share one model run. Results come straight from the runtime's pipelines (edgeport.runtime.pipeline)
and TextGenerator, so the server returns exactly what the pipeline returns for the same rows.

Threading: onnxruntime's InferenceSession.run is safe from several threads, so an ONNX encoder is
opened once and shared by the workers; a LiteRT Interpreter is not (one per worker), and a
TextGenerator keeps its KV cache on the object (one per worker, whatever the backend).
"""

from __future__ import annotations

import contextlib
import queue
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.manifest import read_manifest
from edgeport.serve.config import ServeConfig

# Task (the manifest's) -> route name under /models/{name}/...
TASK_ROUTES = {
    "text-classification": "classify",
    "fill-mask": "fill-mask",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "feature-extraction": "embeddings",
    "text-generation": "generate",
}


class ServedModel:
    """One export folder behind the server: `run(key, payloads)` -> one result per payload.

    Raises EdgeportError when the folder cannot be served (no manifest, a task without a pipeline,
    no tokenizer) at construction, and for bad rows (empty text, text too long) in `run`.
    """

    def __init__(self, name: str, folder: str | Path, config: ServeConfig):
        self.name, self.config = name, config
        self.manifest, self.folder = read_manifest(folder)
        self.task = self.manifest.task
        if self.task not in TASK_ROUTES:
            raise EdgeportError(f"serve: {folder}: task '{self.task}' has no serving route "
                                f"(served tasks: {', '.join(TASK_ROUTES)})")
        self.backend = "litert" if self.manifest.artifact.endswith(".tflite") else "onnxruntime"
        shared = self.backend == "onnxruntime" and self.task != "text-generation"
        first = self._open()
        # Read once here: asking a pooled runner later could wait for a busy worker on the event loop.
        session = getattr(first, "session", None)
        self.inputs = list(session.inputs) if session else []  # IOSpec: name, numpy dtype, shape (str = dynamic)
        self.outputs = list(session.outputs) if session else []
        self.tokenizer = first.tokenizer  # tokenizers.Tokenizer (thread-safe), for usage counts
        # v2 raw tensors: ids index the embedding tables, so they must lie in [0, vocabulary) (a negative id
        # would be read from the table's end by onnxruntime's Gather, without an error)
        self.id_limits = {"input_ids": self.tokenizer.get_vocab_size()} if self.tokenizer is not None else {}
        self._pool = queue.Queue()
        for i in range(config.workers):
            self._pool.put(first if shared or i == 0 else self._open())

    def _open(self):
        if self.task == "text-generation":
            from edgeport.runtime.generate import TextGenerator

            return TextGenerator(self.folder, threads=self.config.threads)
        from edgeport.runtime import pipeline
        from edgeport.runtime.session import ort_session_config

        spin = {} if self.config.spin else {"session.intra_op.allow_spinning": "0"}  # onnxruntime's config key
        with ort_session_config(spin):
            return pipeline(self.folder, truncate=self.config.truncate, threads=self.config.threads)

    @contextlib.contextmanager
    def _runner(self):
        """A pipeline (or generator) for this thread's batch; at most `workers` are out at once."""
        p = self._pool.get()
        try:
            yield p
        finally:
            self._pool.put(p)

    def run(self, key: tuple, payloads: list) -> list:
        """Run requests that share `key` as one batch; returns one result per payload, in order."""
        handler = getattr(self, "_run_" + key[0].replace("-", "_"))
        with self._runner() as p:
            return handler(p, key, payloads)

    # Each handler: concatenate the payloads' rows, one pipeline call, split back per payload.

    def _run_classify(self, p, key, payloads):
        texts = [t for pl in payloads for t in pl["texts"]]
        pairs = [t for pl in payloads for t in pl["pairs"]] if key[1] else None
        call = (lambda t, q: p(t, q)) if pairs else (lambda t, q: p(t))
        return _split(by_length(p, call, texts, pairs), payloads, "texts")

    def _run_fill_mask(self, p, key, payloads):
        texts = [t for pl in payloads for t in pl["texts"]]
        return _split(by_length(p, lambda t, _: p(t, top_k=key[1]), texts), payloads, "texts")

    def _run_token_classification(self, p, key, payloads):
        texts = [t for pl in payloads for t in pl["texts"]]
        return _split(by_length(p, lambda t, _: p(t, aggregation_strategy=key[1]), texts), payloads, "texts")

    def _run_question_answering(self, p, key, payloads):
        _, top_k, max_answer_len, doc_stride, impossible = key
        qs = [q for pl in payloads for q in pl["questions"]]
        cs = [c for pl in payloads for c in pl["contexts"]]
        out = p(qs, cs, top_k=top_k, max_answer_len=max_answer_len, doc_stride=doc_stride,
                handle_impossible_answer=impossible)
        return _split(out, payloads, "questions")

    def _run_embeddings(self, p, key, payloads):
        pooling, normalize = key[1], key[2]
        texts = [t for pl in payloads for t in pl["texts"]]
        emb = np.asarray(by_length(p, lambda t, _: list(p(t, pooling=pooling)), texts), np.float32)  # (B, H)
        if normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        return _split(list(emb), payloads, "texts")

    def _run_generate(self, p, key, payloads):
        """Prompts of every payload in one left-padded batch; tokens counted as they come."""
        _, max_new, temperature, top_k, top_p, seed = key[:6]  # a 7th element only keeps streams apart
        prompts = [t for pl in payloads for t in pl["prompts"]]
        stream = payloads[0].get("on_token") if len(payloads) == 1 else None  # streams run alone
        stop = set(p.info.get("eos_token_ids", []))
        new = [0] * len(prompts)
        stopped = [False] * len(prompts)

        def on_token(row, token):
            new[row] += 1
            stopped[row] = token in stop
            if stream is not None:
                stream(row, token)

        texts = p.generate(prompts, max_new_tokens=max_new, temperature=temperature, top_k=top_k, top_p=top_p,
                           seed=seed, on_token=on_token)
        prompt_tokens = p.encode(prompts)[1].sum(1).tolist()  # mask (B, S) -> real tokens per prompt
        rows = [{"text": t, "prompt_tokens": int(n), "completion_tokens": c, "finish_reason": "stop" if s else "length"}
                for t, n, c, s in zip(texts, prompt_tokens, new, stopped)]
        return _split(rows, payloads, "prompts")

    def _run_raw(self, p, key, payloads):
        """KServe v2: tensors concatenated along the batch axis, run, split back."""
        if not hasattr(p, "run_batch"):
            raise EdgeportError(f"model '{self.name}' is a decoder: use /v1/completions or "
                                f"/models/{self.name}/generate")
        names = list(payloads[0]["feeds"])
        feeds = {n: np.concatenate([pl["feeds"][n] for pl in payloads]) for n in names}
        try:
            out = p.run_batch(feeds)
        except EdgeportError:
            raise
        except Exception as e:  # the backend refused the tensors (ids out of range, ...): the client's doing
            raise EdgeportError(f"the model refused these tensors: {str(e).splitlines()[0][:300]}") from None
        rows = np.cumsum([len(next(iter(pl["feeds"].values()))) for pl in payloads])[:-1]
        return [{k: v for k, v in zip(out, parts)} for parts in zip(*(np.split(v, rows) for v in out.values()))]


PAD_SLACK_TOKENS = 64  # padding a group may add before it pays to start another model run
PAD_SLACK_RATIO = 0.2  # ... or this fraction of the group's real tokens, whichever is larger


def by_length(p, call, texts: list, pairs: list | None = None) -> list:
    """`call(texts, pairs)` -> one result per row, run over groups of similar token counts.

    A batch pads every row to its longest, so rows of 8 and 100 tokens cost 2 x 100: rows are sorted
    by length and cut wherever the group's padding would pass max(PAD_SLACK_TOKENS, PAD_SLACK_RATIO x
    its real tokens); results come back in input order. Static-shape artifacts (TFLite) pad every row
    to their one length anyway: one call.
    """
    if p.static_len or len(texts) < 2:
        return list(call(texts, pairs))
    encs = p.tokenizer.encode_batch(list(zip(texts, pairs)) if pairs else texts)
    lens = [len(e.ids) for e in encs]
    groups, cur, real = [], [], 0
    for i in sorted(range(len(texts)), key=lens.__getitem__):  # ascending: the newest row is the longest
        waste = lens[i] * (len(cur) + 1) - (real + lens[i])
        if cur and waste > max(PAD_SLACK_TOKENS, PAD_SLACK_RATIO * (real + lens[i])):
            groups.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += lens[i]
    groups.append(cur)
    out = [None] * len(texts)
    for g in groups:
        rows = call([texts[i] for i in g], [pairs[i] for i in g] if pairs else None)
        for i, r in zip(g, rows):
            out[i] = r
    return out


def _split(flat: list, payloads: list, field: str) -> list:
    """Flat per-row results -> one list per payload (payload i owns len(payload[field]) rows)."""
    out, i = [], 0
    for pl in payloads:
        n = len(pl[field])
        out.append(list(flat[i:i + n]))
        i += n
    return out
