"""Extractive question answering, answering as transformers 4.57.6's QuestionAnsweringPipeline does.

Contract followed (transformers 4.57.6, pipelines/question_answering.py, fast-tokenizer path):
- the context is cut into windows of at most `max_seq_len` tokens, [CLS] question [SEP] context [SEP],
  consecutive windows overlapping by `doc_stride` context tokens (the `tokenizers` library's
  truncation with `stride`, strategy only_second), first window first;
- per window, start and end logits outside the context (question, separators, padding) are set to
  -10000 except the [CLS] position, then each is softmaxed over the window; the null score of the
  window is p_start[CLS] * p_end[CLS], then both [CLS] probabilities are set to 0;
- span scores are p_start[i] * p_end[j] for i <= j < i + max_answer_len; the best `top_k * 2 + 10`
  (or `top_k` without word alignment) per window are kept, then mapped to characters of the context:
  with `align_to_words`, from the start of the first token's word to the end of the last token's word;
- answers with the same text (case-insensitive) across windows add their scores; the null answer
  (score: the smallest window null score) joins when `handle_impossible_answer`; best `top_k` by score.

Checked against goldens made by scripts/make_pipeline_golden.py (tests/test_pipelines_qa.py).
"""

from __future__ import annotations

import threading

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtime.pipelines.base import Pipeline, check_text

_MASKED = -10000.0  # the logit transformers gives positions that cannot be in an answer


def span_candidates(p_start: np.ndarray, p_end: np.ndarray, top_k: int, max_answer_len: int,
                    allowed: np.ndarray) -> list:
    """Best spans of one window: [(start_token, end_token, score)], best first.

    p_start, p_end: (S,) float probabilities (the [CLS] entries already zeroed); allowed: (S,) bool,
    tokens that may begin or end an answer. Spans with end < start or longer than max_answer_len
    tokens score 0. Takes the `top_k` highest of the (S, S) outer product (ties in numpy's argpartition
    order, as transformers' decode_spans), then drops spans that begin or end on a token not allowed.
    """
    outer = p_start[None, :, None] * p_end[None, None, :]  # (1, S, S)
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.ravel()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif flat.size < top_k:
        order = np.argsort(-flat)
    else:
        part = np.argpartition(-flat, top_k)[:top_k]
        order = part[np.argsort(-flat[part])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    keep = allowed[starts] & allowed[ends]
    return [(int(s), int(e), float(candidates[0, s, e])) for s, e in zip(starts[keep], ends[keep])]


def window_probabilities(start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray):
    """(S,) logits of one window -> (p_start, p_end, null_score): softmax over the window after
    masking positions not allowed to -10000; null_score = p_start[0] * p_end[0] (the [CLS] row),
    then both [CLS] entries set to 0. float64."""
    s = np.where(allowed, start_logits.astype(np.float64), _MASKED)
    e = np.where(allowed, end_logits.astype(np.float64), _MASKED)
    s = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    e = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
    null = float(s[0] * e[0])
    s[0] = e[0] = 0.0
    return s, e, null


def char_span(enc, s: int, e: int, align_to_words: bool) -> tuple:
    """Token span [s, e] of a window -> (start, end) characters of the context. With align_to_words,
    whole words (the word of token s to the word of token e); tokens that belong to no word
    ([CLS]) fall back to the tokens' own offsets, as transformers' `get_indices` does."""
    if align_to_words:
        ws, we = enc.token_to_word(s), enc.token_to_word(e)
        if ws is not None and we is not None:
            cs, ce = enc.word_to_chars(ws, 1), enc.word_to_chars(we, 1)
            if cs is not None and ce is not None:
                return cs[0], ce[1]
    return enc.offsets[s][0], enc.offsets[e][1]


class QuestionAnswering(Pipeline):
    """`qa(question, context, top_k=1, max_answer_len=15, handle_impossible_answer=False,
    align_to_words=True, doc_stride=None, max_seq_len=None, max_question_len=64)`.

    Returns `{"score": float, "start": int, "end": int, "answer": str}` (start/end: character offsets
    into `context`, answer = context[start:end]); a list of such dicts, best first, when more than one
    answer comes out (top_k > 1), exactly as transformers' pipeline. The null answer is
    `{"answer": "", "start": 0, "end": 0}`. A context whose characters the tokenizer deletes entirely
    (e.g. only zero-width spaces) gives that empty answer with score 0.

    max_seq_len: window length in tokens (default: the artifact's static length, else
    min(positions, 384)); static-shape artifacts get every window padded to their length.
    doc_stride: context tokens shared by consecutive windows (default min(max_seq_len // 2, 128)).
    max_question_len: the question is cut to this many tokens (transformers' slow-tokenizer rule).
    Lists of questions and contexts (same length) give a list of results.
    Raises EdgeportError on empty question/context, bad option values, or a question that leaves
    no room for the context.
    """

    task = "question-answering"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._windowers, self._lock = {}, threading.Lock()
        self.cls_id = self._cls_id()

    def _cls_id(self):
        for name in ("[CLS]", "<s>", "<cls>"):
            if self.tokenizer.token_to_id(name) is not None:
                return self.tokenizer.token_to_id(name)
        return None

    def __call__(self, question, context, *, top_k: int = 1, max_answer_len: int = 15,
                 handle_impossible_answer: bool = False, align_to_words: bool = True,
                 doc_stride: int | None = None, max_seq_len: int | None = None, max_question_len: int = 64):
        if isinstance(question, (list, tuple)) or isinstance(context, (list, tuple)):
            if not isinstance(question, (list, tuple)) or not isinstance(context, (list, tuple)) \
                    or len(question) != len(context):
                raise EdgeportError("questions and contexts must be lists of the same length")
            return [self(q, c, top_k=top_k, max_answer_len=max_answer_len,
                         handle_impossible_answer=handle_impossible_answer, align_to_words=align_to_words,
                         doc_stride=doc_stride, max_seq_len=max_seq_len, max_question_len=max_question_len)
                    for q, c in zip(question, context)]
        max_seq_len, doc_stride = self._check(question, context, top_k, max_answer_len, doc_stride,
                                              max_seq_len, max_question_len)
        windows = self._windows(self._cut_question(question, max_question_len), context, max_seq_len, doc_stride)
        out = self.run_batch(self.pad(windows).feeds)
        answers, null = [], 1e6
        for w, enc in enumerate(windows):
            n = len(enc.ids)
            allowed = np.array([sid == 1 for sid in enc.sequence_ids])  # (n,) context tokens
            allowed |= np.array(enc.ids) == self.cls_id  # [CLS] stays: it carries the null answer
            p_s, p_e, window_null = window_probabilities(out["start_logits"][w, :n], out["end_logits"][w, :n],
                                                         allowed)
            null = min(null, window_null)
            pre_k = top_k * 2 + 10 if align_to_words else top_k  # alignment may merge candidates
            for s, e, score in span_candidates(p_s, p_e, pre_k, max_answer_len, allowed):
                a, b = char_span(enc, s, e, align_to_words)
                _add_answer(answers, context, a, b, score)
        if handle_impossible_answer:
            answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

    def _check(self, question, context, top_k, max_answer_len, doc_stride, max_seq_len, max_question_len):
        """Validate options; returns (max_seq_len, doc_stride) with defaults filled in."""
        for name, value in (("question", question), ("context", context)):
            if not isinstance(value, str) or not value.strip():
                raise EdgeportError(f"question-answering needs a {name}: a string that is not blank")
            check_text(value, name)
        for name, value in (("top_k", top_k), ("max_answer_len", max_answer_len),
                            ("max_question_len", max_question_len)):
            if not isinstance(value, int) or value < 1:
                raise EdgeportError(f"{name} must be an integer >= 1 (got {value!r})")
        limit = self.static_len or min(self.max_len, 384)
        max_seq_len = limit if max_seq_len is None else max_seq_len
        if not isinstance(max_seq_len, int) or not 8 <= max_seq_len <= self.max_len:
            raise EdgeportError(f"max_seq_len must be between 8 and {self.max_len}, the length this artifact "
                                f"takes (got {max_seq_len!r})")
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        if not isinstance(doc_stride, int) or not 0 <= doc_stride < max_seq_len:
            raise EdgeportError(f"doc_stride must be between 0 and max_seq_len - 1 = {max_seq_len - 1} "
                                f"(got {doc_stride!r})")
        return max_seq_len, doc_stride

    def _cut_question(self, question: str, max_question_len: int) -> str:
        enc = self.tokenizer.encode(question, add_special_tokens=False)
        if len(enc.ids) <= max_question_len:
            return question
        return question[:enc.offsets[max_question_len - 1][1]]

    def _windows(self, question: str, context: str, max_seq_len: int, doc_stride: int) -> list:
        """[CLS] question [SEP] context-window [SEP] encodings, first window first."""
        whole = self.tokenizer.encode(question, context)
        if len(whole.ids) <= max_seq_len:
            return [whole]
        q = len(self.tokenizer.encode(question, add_special_tokens=False).ids)
        specials = self.tokenizer.post_processor.num_special_tokens_to_add(True) if self.tokenizer.post_processor else 0
        room = max_seq_len - q - specials  # context tokens per window
        if room <= doc_stride:  # tokenizers needs stride < room (it panics otherwise), as transformers fails
            raise EdgeportError(f"the question is {q} tokens: with max_seq_len {max_seq_len} and doc_stride "
                                f"{doc_stride} no context fits ({max(room, 0)} tokens left per window, more "
                                "than doc_stride needed); shorten the question or lower doc_stride")
        enc = self._windower(max_seq_len, doc_stride).encode(question, context)
        return [enc] + list(enc.overflowing)

    def _windower(self, max_seq_len: int, doc_stride: int):
        """A copy of the tokenizer truncating pairs into windows (one per setting; thread-safe)."""
        from tokenizers import Tokenizer

        key = (max_seq_len, doc_stride)
        with self._lock:
            if key not in self._windowers:
                tok = Tokenizer.from_str(self.tokenizer.to_str())
                tok.enable_truncation(max_seq_len, stride=doc_stride, strategy="only_second")
                self._windowers[key] = tok
            return self._windowers[key]


def _add_answer(answers: list, context: str, a: int, b: int, score: float) -> None:
    """Add a span's score to the answer with the same text (case-insensitive), or a new answer."""
    text = context[a:b]
    for ans in answers:
        if ans["answer"].lower() == text.lower():
            ans["score"] += score
            return
    answers.append({"score": score, "start": int(a), "end": int(b), "answer": text})
