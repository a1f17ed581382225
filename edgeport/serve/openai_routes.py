"""OpenAI-compatible routes: /v1/models, /v1/embeddings, /v1/completions, /v1/chat/completions.

Request and response fields follow OpenAI's API reference (https://platform.openai.com/docs/api-reference):
embeddings come as float lists or, with encoding_format "base64", as base64 of little-endian float32
(what the `openai` Python client asks for by default); `stream: true` answers server-sent events,
one JSON chunk per `data:` line, ending with `data: [DONE]`; usage counts tokens of the served
model's own tokenizer. Embeddings are mean-pooled and L2-normalised (unit length, as OpenAI's are).
Chat messages become one prompt, `"{role}: {content}\n"` per message, then `"assistant:"`; every
message needs `content` (422 naming `messages.{i}.content` otherwise) but one with tool_calls, which answers
400 (tool calls not supported; so does one with function_call); a content that is not valid Unicode (a lone
surrogate) answers 400 naming `messages.{i}.content` and the character. OpenAI parameters this server does
not implement (n > 1, logprobs (0 included), echo, best_of > 1, suffix, penalties, logit_bias, tools,
tool_choice, functions, function_call, response_format other than text, modalities other than text, audio)
answer 400 "not supported by this server" when set. Integer fields refuse booleans (`"n": true` is 422).
Lengths as OpenAI's: /v1/completions generates at most 16 tokens unless `max_tokens` says otherwise;
prompt tokens + max_tokens over the artifact's length limit answer 400 (code "context_length_exceeded")
instead of stopping early; chat without max_tokens takes what the limit leaves after the prompt.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator, model_validator

from edgeport.serve.task_routes import as_list, generate_rows


class EmbeddingsRequest(BaseModel):
    model: str
    input: str | list[str] = Field(description="text or texts (token-id inputs are not accepted)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, strict=True, description="must equal the model's width if given")
    user: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, strict=True, description="only 1 is supported (400 otherwise)")
    logprobs: int | bool | None = Field(None, description="not supported: 400 unless null or false (0 too: "
                                        "OpenAI's completions return the chosen token's logprob for 0)")
    presence_penalty: float = Field(0, description="not supported: 400 unless 0")
    frequency_penalty: float = Field(0, description="not supported: 400 unless 0")
    logit_bias: dict | None = Field(None, description="not supported: 400 unless null or empty")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1, strict=True)
    user: str | None = None


DEFAULT_COMPLETION_TOKENS = 16  # max_tokens of /v1/completions when not given (OpenAI's documented default)


def unsupported(req) -> str | None:
    """The first parameter of `req` set to something this server does not do (OpenAI's API has it), as
    "name=value", or None. Such requests answer 400 instead of a silently different answer."""
    checks = {"n": lambda v: v != 1, "logprobs": lambda v: v is not None and v is not False, "echo": bool,
              "best_of": lambda v: v not in (None, 1), "suffix": lambda v: v is not None,
              "top_logprobs": lambda v: v is not None, "presence_penalty": lambda v: v != 0,
              "frequency_penalty": lambda v: v != 0, "logit_bias": bool, "tools": bool,
              "tool_choice": lambda v: v not in (None, "none"), "functions": bool,
              "function_call": lambda v: v not in (None, "none"),
              "response_format": lambda v: v is not None and v.get("type") != "text",
              "modalities": lambda v: v not in (None, ["text"]), "audio": lambda v: v is not None}
    for name, bad in checks.items():
        value = getattr(req, name, None)
        if bad(value):
            return f"{name}={json.dumps(value)}"
    return None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = Field(False, description="not supported: 400 unless false")
    best_of: int | None = Field(None, strict=True, description="not supported: 400 unless null or 1")
    suffix: str | None = Field(None, description="not supported: 400 unless null")
    max_tokens: int | None = Field(DEFAULT_COMPLETION_TOKENS, ge=1, strict=True, description=(
        f"tokens to generate at most (default {DEFAULT_COMPLETION_TOKENS}, also when null); prompt tokens + "
        "max_tokens over the model's length limit answer 400"))


class ChatMessage(BaseModel):
    """One chat message. `content` is required, a string or a list of text parts (a missing or null content
    answers 422 naming `messages.{i}.content`), except on a message with tool_calls, which OpenAI lets go
    without content: that one parses, and the route answers 400, tool calls not being supported."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] = Field(description="the message text, or a list of text parts")
    tool_calls: list | None = Field(None, description="not supported: 400 (an assistant message may carry "
                                    "them without content, as in OpenAI's API)")
    function_call: dict | None = Field(None, description="tool_calls' older form: not supported, 400 likewise")

    @model_validator(mode="before")
    @classmethod
    def _tool_calls_need_no_content(cls, data):
        """As OpenAI's API: an assistant message with tool_calls may leave content out (the route then says
        tool calls are not supported, rather than 'content: Field required')."""
        if isinstance(data, dict) and (data.get("tool_calls") or data.get("function_call")) and \
                data.get("content") is None:
            return {**data, "content": ""}
        return data

    @field_validator("content", mode="before")
    @classmethod
    def _content_required(cls, v):
        if v is None:
            raise ValueError("content is required: a string or a list of text parts, not null")
        return v


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    top_logprobs: int | None = Field(None, strict=True, description="not supported: 400 unless null")
    tools: list | None = Field(None, description="not supported: 400 unless null or empty")
    tool_choice: str | dict | None = Field(None, description='not supported: 400 unless null or "none"')
    functions: list | None = Field(None, description="not supported: 400 unless null or empty")
    function_call: str | dict | None = Field(None, description='not supported: 400 unless null or "none"')
    response_format: dict | None = Field(None, description='not supported: 400 unless null or {"type": "text"}')
    modalities: list[str] | None = Field(None, description='not supported: 400 unless null or ["text"]')
    audio: dict | None = Field(None, description="not supported: 400 unless null")
    max_tokens: int | None = Field(None, ge=1, strict=True, description="as max_completion_tokens (OpenAI's older "
                                   "name)")
    max_completion_tokens: int | None = Field(None, ge=1, strict=True, description=(
        "tokens to generate at most; prompt tokens + this over the model's length limit answer 400; when "
        "neither is given, what the limit leaves after the prompt (at most the server's --max-new-tokens)"))


def chat_prompt(messages: list) -> str:
    """Messages -> one prompt: `role: content` lines, then `assistant:` (the documented template).

    Raises ApiError 400 for content parts that are not text, and for a content that is not valid Unicode (a
    lone surrogate), naming `messages.{i}.content` and the character index within that content."""
    from edgeport.errors import EdgeportError
    from edgeport.runtime.pipelines.base import check_text
    from edgeport.serve.app import ApiError

    lines = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in content):
                raise ApiError(400, "only text content parts are supported")
            content = "".join(part["text"] for part in content)
        try:
            check_text(content or "", f"messages.{i}.content")
        except EdgeportError as e:
            raise ApiError(400, str(e)) from None
        lines.append(f"{m.role}: {content or ''}\n")
    return "".join(lines) + "assistant:"


def fit_context(state, model: str, prompts: list, max_tokens: int | None, what: str = "prompt") -> int:
    """The max_new_tokens to generate for `prompts` on text-generation model `model`.

    Like OpenAI, prompt tokens + max_tokens must fit the model's context: the artifact's length limit
    (ServedModel.max_total: prompt and generated tokens together, what the runtime caps a batch at).
    max_tokens None: what the limit leaves after the longest prompt, at most the server's max_new_tokens.
    Raises ApiError 404/400 (unknown model, another task, empty prompt) and 400 with code
    "context_length_exceeded" naming the limit, the prompt tokens and the requested tokens.
    """
    from edgeport.serve.app import ApiError

    m = state.model(model, "text-generation")
    state.check_rows(prompts, "prompt")
    limit = m.max_total
    counts = [len(e.ids) for e in m.tokenizer.encode_batch(prompts)]  # as TextGenerator.encode counts them
    longest = max(range(len(counts)), key=counts.__getitem__)
    n, which = counts[longest], (f"{what} {longest + 1} of {len(prompts)}" if len(prompts) > 1 else f"the {what}")
    if max_tokens is None:
        if n >= limit:
            raise ApiError(400, f"{which} is {n} tokens; model '{model}' runs at most {limit} tokens of prompt and "
                                "completion together: no room to generate any; shorten it", code="context_length_exceeded")
        return min(state.config.max_new_tokens, limit - n)
    if n + max_tokens > limit:
        raise ApiError(400, f"{which} is {n} tokens and {max_tokens} more were requested ({n + max_tokens} in "
                            f"all); model '{model}' runs at most {limit} tokens of prompt and completion together: "
                            "shorten the prompt or ask for fewer tokens", code="context_length_exceeded")
    return max_tokens


def cut_at_stop(text: str, stops: list) -> tuple[str, bool]:
    """(text before the first stop string, whether one was found)."""
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[:min(hits)], True) if hits else (text, False)


def tokens_until_stop(tokenizer, ids: list, stops: list) -> int:
    """Generated tokens up to the one whose text completes the first stop string (what a stream sends before
    it stops); len(ids) when no stop string shows. `ids` as _run_generate records them."""
    for k in range(1, len(ids) + 1):
        if cut_at_stop(tokenizer.decode(ids[:k]), stops)[1]:
            return k
    return len(ids)


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def router(state) -> APIRouter:
    from edgeport.serve.app import ApiError

    r = APIRouter(prefix="/v1", tags=["openai"])

    @r.get("/models", summary="Models (OpenAI list format)")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "edgeport"}
                                           for n in state.models]}

    @r.post("/embeddings", summary="Embeddings (OpenAI-compatible)")
    async def embeddings(req: EmbeddingsRequest) -> dict:
        m = state.model(req.model, "feature-extraction")
        texts = as_list(req.input)
        state.check_rows(texts, "input")
        out = await state.submit(req.model, ("embeddings", "mean", True), {"texts": texts}, len(texts))
        if req.dimensions is not None and req.dimensions != len(out[0]):
            raise ApiError(400, f"model '{req.model}' gives {len(out[0])} dimensions, not {req.dimensions}")
        tokens = sum(len(e.ids) for e in m.tokenizer.encode_batch(texts))
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64"
                 else v.tolist()} for i, v in enumerate(out)]
        return {"object": "list", "data": data, "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def refuse_unsupported(req):
        bad = unsupported(req)
        if bad is not None:
            raise ApiError(400, f"{bad} is not supported by this server (leave it out)")
        for i, m in enumerate(getattr(req, "messages", [])):
            if m.tool_calls or m.function_call:
                raise ApiError(400, f"messages.{i}: tool calls are not supported by this server")

    @r.post("/completions", summary="Text completions (OpenAI-compatible; SSE when stream is true)")
    async def completions(req: CompletionRequest):
        refuse_unsupported(req)
        prompts = as_list(req.prompt)
        if req.stream and len(prompts) != 1:
            raise ApiError(400, "stream takes one prompt")
        max_new = fit_context(state, req.model, prompts, req.max_tokens or DEFAULT_COMPLETION_TOKENS)
        model = state.models[req.model]
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
        if req.stream:
            return await _stream(state, req, prompts[0], max_new, meta, chat=False)
        rows = await generate_rows(state, req.model, prompts, max_new, req.temperature, 0, req.top_p, req.seed)
        choices, stops, completion = [], as_list(req.stop or []), 0
        for i, row in enumerate(rows):
            text, hit = cut_at_stop(row["text"], stops)
            choices.append({"index": i, "text": text, "logprobs": None,
                            "finish_reason": "stop" if hit else row["finish_reason"]})
            completion += tokens_until_stop(model.tokenizer, row["token_ids"], stops) if hit else \
                row["completion_tokens"]
        return {**meta, "object": "text_completion", "choices": choices,
                "usage": usage(sum(r["prompt_tokens"] for r in rows), completion)}

    @r.post("/chat/completions", summary="Chat completions (OpenAI-compatible; SSE when stream is true)")
    async def chat(req: ChatRequest):
        refuse_unsupported(req)
        prompt = chat_prompt(req.messages)
        max_new = fit_context(state, req.model, [prompt], req.max_completion_tokens or req.max_tokens,
                              "chat prompt (messages in the chat template)")
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
        if req.stream:
            return await _stream(state, req, prompt, max_new, meta, chat=True)
        row = (await generate_rows(state, req.model, [prompt], max_new, req.temperature, 0, req.top_p, req.seed))[0]
        stops = as_list(req.stop or [])
        text, hit = cut_at_stop(row["text"], stops)
        completion = tokens_until_stop(state.models[req.model].tokenizer, row["token_ids"], stops) if hit else \
            row["completion_tokens"]
        return {**meta, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": "stop" if hit else row["finish_reason"]}],
                "usage": usage(row["prompt_tokens"], completion)}

    return r


class _ClientGone(Exception):
    """Raised in the generation thread once the streaming client has gone: stops generating."""


async def _stream(state, req, prompt: str, max_new: int, meta: dict, chat: bool):
    """Start generating; errors before the first token answer as usual, then SSE chunks follow."""
    from edgeport.serve.app import dumps

    loop, events, gone = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

    def on_token(row, token):  # runs in the worker thread
        if gone.is_set():
            raise _ClientGone()
        loop.call_soon_threadsafe(events.put_nowait, token)

    task = asyncio.ensure_future(generate_rows(state, req.model, [prompt], max_new, req.temperature, 0,
                                               req.top_p, req.seed, on_token))
    def finished(t):
        if not t.cancelled():
            t.exception()  # retrieved here: a stream that stopped early leaves _ClientGone behind
        events.put_nowait(None)

    task.add_done_callback(finished)
    first = await events.get()
    if first is None:
        task.result()  # raises the request's ApiError (400, 503, 504, ...)
    model = state.models[req.model]
    stop_ids = set(model.manifest.decoder.get("eos_token_ids", []))
    stops = as_list(req.stop or [])
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text=None, finish=None, role=False):
        if chat:
            delta = ({"role": "assistant", "content": ""} if role else {}) | ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return f"data: {dumps({**meta, 'object': kind, 'choices': [choice]})}\n\n"

    async def events_out():
        ids, sent, hit, token = [], "", False, first
        try:
            if chat:
                yield chunk(role=True)
            while token is not None and not hit:
                if token not in stop_ids:
                    ids.append(token)
                text = model.tokenizer.decode(ids)
                text, hit = cut_at_stop(text, stops)
                hold = 0 if hit else max((len(s) - 1 for s in stops), default=0)  # a stop string may be starting
                ready = text[:len(text) - hold] if hold else text
                if len(ready) > len(sent) and not ready.endswith("\ufffd"):  # whole characters only
                    yield chunk(ready[len(sent):])
                    sent = ready
                token = await events.get()
            if hit:
                gone.set()
            else:
                text = cut_at_stop(model.tokenizer.decode(ids), stops)[0]
                if len(text) > len(sent):
                    yield chunk(text[len(sent):])
            row = None if hit else (await task)[0]
            yield chunk(finish="stop" if hit or row["finish_reason"] == "stop" else "length")
            if req.stream_options and req.stream_options.include_usage:
                counts = usage(row["prompt_tokens"], row["completion_tokens"]) if row else \
                    usage(len(model.tokenizer.encode(prompt).ids), len(ids))
                yield f"data: {dumps({**meta, 'object': kind, 'choices': [], 'usage': counts})}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # client gone (or stop string): the worker thread stops at its next token
            gone.set()
            if not task.done():
                task.cancel()

    return StreamingResponse(events_out(), media_type="text/event-stream")
