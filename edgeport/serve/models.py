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
        # IOSpec lists (name, numpy dtype, shape: str = dynamic): the pipeline's session, or the decoder's graph
        session = getattr(first, "session", None)
        if session is not None:
            self.inputs, self.outputs = list(session.inputs), list(session.outputs)
        else:
            self.inputs, self.outputs = decoder_io(first)
        # v2 raw tensors of a decoder: the past inputs may be empty along their dynamic dims (a first call);
        # rows of several requests concatenate along axis 0 only where every input has its batch there
        # (a "stacked" cache (L, B, KV, P, D) has it on axis 1: such requests run alone)
        past = set((self.manifest.decoder or {}).get("inputs", [])) if self.task == "text-generation" else set()
        self.may_be_empty = {s.name for s in self.inputs if s.name in past}
        self.raw_batches = all(not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in self.inputs) \
            if self.task == "text-generation" else True
        self.tokenizer = first.tokenizer  # tokenizers.Tokenizer (thread-safe), for usage counts
        # v2 raw tensors: ids index the embedding tables, so they must lie in [0, vocabulary) (a negative id
        # would be read from the table's end by onnxruntime's Gather, without an error)
        self.id_limits = {"input_ids": self.tokenizer.get_vocab_size()} if self.tokenizer is not None else {}
        # text-generation: prompt + new tokens the artifact runs at most (the decoder block's max_tokens, what
        # generate_ids caps a batch at; else what the positions allow); None for the other tasks
        self.max_total = ((self.manifest.decoder or {}).get("max_tokens") or self.manifest.max_sequence_length
                          if self.task == "text-generation" else None)
        if self.max_total is not None:  # v2 raw tensors of a decoder: positions index the position table
            self.id_limits["position_ids"] = self.max_total
        types = type_vocab_size(session) if session is not None else None
        if types is not None:  # token types index their own (small) table
            self.id_limits["token_type_ids"] = types
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
        """One float32 array per text: (H,) pooled, or (S_i, H) with pooling "none" (the pipeline's rows)."""
        pooling, normalize = key[1], key[2]
        texts = [t for pl in payloads for t in pl["texts"]]
        emb = [np.asarray(e, np.float32) for e in by_length(p, lambda t, _: list(p(t, pooling=pooling)), texts)]
        if normalize:  # each vector (each token's with pooling "none") to unit L2 norm
            emb = [e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12) for e in emb]
        return _split(emb, payloads, "texts")

    def _run_generate(self, p, key, payloads):
        """Prompts of every payload in left-padded batches; tokens counted as they come. One row per prompt:
        text, prompt_tokens, completion_tokens, finish_reason and token_ids (the generated ids, stop token
        included, for the /v1 routes' usage after a stop string's cut; not part of the generate route's answer).

        A row generates at most min(max_new, max_total - its prompt tokens), then finish_reason "length"
        (as the runtime caps it). Padding counts against the limit, so rows are grouped by that cap: rows
        that have room for max_new run as one batch (its padded length still leaves room), a row nearer the
        limit only with rows of its own length; no row stops earlier because a longer prompt (another
        request's, maybe) shares its batch.
        """
        _, max_new, temperature, top_k, top_p, seed = key[:6]  # a 7th element only keeps streams apart
        prompts = [t for pl in payloads for t in pl["prompts"]]
        stream = payloads[0].get("on_token") if len(payloads) == 1 else None  # streams run alone
        stop = set(p.info.get("eos_token_ids", []))
        lens = [len(e.ids) for e in p.tokenizer.encode_batch(prompts)]  # real tokens per prompt, as p.encode
        new, stopped, texts = [0] * len(prompts), [False] * len(prompts), [None] * len(prompts)
        ids = [[] for _ in prompts]  # generated token ids per row (a stop string's cut counts them)
        groups = {}  # cap -> rows
        for i, n in enumerate(lens):
            groups.setdefault(min(max_new, self.max_total - n), []).append(i)
        for cap, rows in groups.items():
            def on_token(r, token, rows=rows):
                new[rows[r]] += 1
                ids[rows[r]].append(int(token))
                stopped[rows[r]] = token in stop
                if stream is not None:
                    stream(rows[r], token)

            # cap < 1: a prompt with no room left, which the runtime refuses naming its length (a 400)
            out = p.generate([prompts[i] for i in rows], max_new_tokens=cap if cap >= 1 else max_new,
                             temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, on_token=on_token)
            for i, t in zip(rows, out):
                texts[i] = t
        rows = [{"text": t, "prompt_tokens": n, "completion_tokens": c, "finish_reason": "stop" if s else "length",
                 "token_ids": i} for t, n, c, s, i in zip(texts, lens, new, stopped, ids)]
        return _split(rows, payloads, "prompts")

    def _run_raw(self, p, key, payloads):
        """KServe v2: tensors concatenated along the batch axis, run, split back. A decoder runs its ONNX
        graph once as given (past in, present out; the client keeps the cache), never generates."""
        if hasattr(p, "run_batch"):
            run = p.run_batch
        elif getattr(p.decoder, "sess", None) is not None:
            outs = [o.name for o in self.outputs]

            def run(feeds):
                return dict(zip(outs, p.decoder.sess.run(outs, feeds)))
        else:
            raise EdgeportError(f"model '{self.name}' is a LiteRT decoder (prefill and decode signatures over a "
                                f"static cache): use /v1/completions or /models/{self.name}/generate")
        names = list(payloads[0]["feeds"])
        feeds = {n: np.concatenate([pl["feeds"][n] for pl in payloads]) for n in names}
        try:
            out = run(feeds)
        except EdgeportError:
            raise
        except Exception as e:  # the backend refused the tensors (ids out of range, ...): the client's doing
            raise EdgeportError(f"the model refused these tensors: {str(e).splitlines()[0][:300]}") from None
        rows = np.cumsum([len(next(iter(pl["feeds"].values()))) for pl in payloads])[:-1]
        return [{k: v for k, v in zip(out, parts)} for parts in zip(*(np.split(v, rows) for v in out.values()))]


TYPE_PROBE_LIMIT = 16  # token type tables this large or larger are not probed (BERT's has 2)


def type_vocab_size(session) -> int | None:
    """The number of token types an onnxruntime encoder takes (its token type table's rows), found by
    running one row of one token (the static shape where there is one) with token_type_ids t = 1, 2, ...
    until onnxruntime refuses the index (Gather and EmbedLayerNormalization check their bounds); None
    for an artifact without token_type_ids, another backend, or no refusal below TYPE_PROBE_LIMIT.
    The manifest does not record the table's size; the graph does, and this reads it without `onnx`."""
    import onnxruntime as ort

    sess = getattr(session, "sess", None)
    names = {s.name for s in session.inputs}
    if not isinstance(sess, ort.InferenceSession) or "token_type_ids" not in names or \
            not names <= {"input_ids", "attention_mask", "token_type_ids"}:
        return None
    shape = {s.name: [d if isinstance(d, int) and d > 0 else 1 for d in s.shape] for s in session.inputs}
    dtype = {s.name: s.dtype for s in session.inputs}
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the refusals are expected: no error lines in the server's log
    for t in range(1, TYPE_PROBE_LIMIT):
        feeds = {n: np.full(shape[n], t if n == "token_type_ids" else 1 if n == "attention_mask" else 0,
                         dtype[n])
                 for n in names}
        try:
            sess.run(None, feeds, quiet)
        except Exception:  # noqa: BLE001 - onnxruntime's refusal of the index: the table has t rows
            return t if t > 1 else None  # t == 1: the row itself is refused (not a bound): no limit known
    return None


def decoder_io(gen) -> tuple[list, list]:
    """(inputs, outputs) as IOSpec lists of a TextGenerator's ONNX graph, the one graph that prefills and
    decodes: input_ids, attention_mask, position_ids (int64) and the past cache (float32) in; logits and
    the present cache out; dynamic dims are strings ("batch", "past", ...), as onnxruntime reports them.
    ([], []) for a LiteRT decoder: two signatures over a static cache, no single graph to describe."""
    from edgeport.runtime.session import _ORT_TYPES, IOSpec

    sess = getattr(gen.decoder, "sess", None)
    if sess is None:
        return [], []
    def spec(a):
        return IOSpec(a.name, _ORT_TYPES.get(a.type, a.type), list(a.shape))

    return [spec(i) for i in sess.get_inputs()], [spec(o) for o in sess.get_outputs()]


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
