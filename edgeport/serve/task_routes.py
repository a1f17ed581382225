"""Per-task JSON routes: POST /models/{model}/{classify|fill-mask|token-classification|
question-answering|embeddings|generate}, and GET /models[/{model}].

Each takes one text or a list (batched inputs) and answers `{"model": name, "results": [...]}`, one
result per input, exactly what the runtime pipeline (edgeport.runtime.pipeline) returns for it.
"""


from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

Texts = str | list[str]


def as_list(x) -> list:
    return [x] if isinstance(x, str) else list(x)


def jsonable(x):
    """numpy scalars/arrays (at any depth) -> Python numbers/lists."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


class TextsIn(BaseModel):
    inputs: Texts = Field(description="one text or a list of texts", examples=["The cat sat on the mat."])


class ClassifyIn(TextsIn):
    pairs: Texts | None = Field(None, description="second texts of sentence pairs (same count as inputs)")


class FillMaskIn(TextsIn):
    top_k: int = Field(5, ge=1, le=100, description="candidates per mask token")


class EmbeddingsIn(TextsIn):
    pooling: Literal["mean", "cls", "none"] = Field(
        "mean", description="mean over real tokens, the first token, or none: every real token's vector")
    normalize: bool = Field(False, description="scale each embedding (each token's, with pooling none) to unit "
                                               "L2 norm")


class TokenClassificationIn(TextsIn):
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = Field(
        "simple", description="how word pieces group into entities (transformers' pipeline terms)")


class QuestionAnsweringIn(BaseModel):
    question: Texts = Field(description="question(s)")
    context: Texts = Field(description="context(s) the answer is taken from, one per question")
    top_k: int = Field(1, ge=1, le=20, description="answers per question (a list when above 1)")
    max_answer_len: int = Field(15, ge=1, le=512, description="longest answer in tokens")
    doc_stride: int | None = Field(None, ge=1, le=512, description="overlap of the windows a long context is "
                                   "split into (default: the pipeline's)")
    handle_impossible_answer: bool = Field(False, description="allow the empty answer")


class GenerateIn(BaseModel):
    prompt: Texts = Field(description="prompt(s) to continue")
    max_new_tokens: int = Field(32, ge=1, description=(
        "tokens to add at most, capped by the server's --max-new-tokens and by the artifact's length: a prompt "
        "stops where prompt + new tokens reach it, finish_reason 'length' (unlike /v1, which answers 400); a "
        "prompt that leaves no room at all answers 400"))
    temperature: float = Field(0.0, ge=0, le=10, description="0 = greedy")
    top_k: int = Field(0, ge=0, description="0 = no top-k cut")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


class ResultsOut(BaseModel):
    model: str
    results: list[Any] = Field(description="one entry per input, as the runtime pipeline returns it")


class EmbeddingsOut(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]] | list[list[list[float]]] = Field(
        description="(inputs, dim) float32 values; with pooling none, one (tokens, dim) list per input "
                    "(its real tokens, special ones included: the pipeline's own output)")


class Generation(BaseModel):
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


class GenerateOut(BaseModel):
    model: str
    results: list[Generation]


class ModelInfo(BaseModel):
    name: str
    task: str
    route: str
    family: str
    target: str
    precision: str
    backend: str
    max_sequence_length: int
    labels: dict | None = None


def model_info(m) -> ModelInfo:
    from edgeport.serve.models import TASK_ROUTES

    return ModelInfo(name=m.name, task=m.task, route=f"/models/{m.name}/{TASK_ROUTES[m.task]}",
                     family=m.manifest.family, target=m.manifest.target, precision=m.manifest.precision,
                     backend=m.backend, max_sequence_length=m.manifest.max_sequence_length, labels=m.manifest.labels)


def _texts(state, body, key, extra=None):
    texts = as_list(body.inputs)
    state.check_rows(texts)
    return key, {"texts": texts, **(extra or {})}, len(texts)


def _classify(state, body):
    from edgeport.serve.app import ApiError

    pairs = as_list(body.pairs) if body.pairs is not None else None
    if pairs is not None:
        if len(pairs) != len(as_list(body.inputs)):
            raise ApiError(400, f"{len(as_list(body.inputs))} inputs but {len(pairs)} pairs")
        state.check_rows(pairs, "pair text")
    return _texts(state, body, ("classify", pairs is not None), {"pairs": pairs or []})


def _question_answering(state, body):
    from edgeport.serve.app import ApiError

    qs, cs = as_list(body.question), as_list(body.context)
    if len(qs) != len(cs):
        raise ApiError(400, f"{len(qs)} questions but {len(cs)} contexts")
    state.check_rows(qs, "question")
    state.check_rows(cs, "context")
    key = ("question-answering", body.top_k, body.max_answer_len, body.doc_stride, body.handle_impossible_answer)
    return key, {"questions": qs, "contexts": cs}, len(qs)


def _generate(state, body):
    prompts = as_list(body.prompt)
    state.check_rows(prompts, "prompt")
    key = ("generate", min(body.max_new_tokens, state.config.max_new_tokens), float(body.temperature),
           int(body.top_k), float(body.top_p), body.seed)
    return key, {"prompts": prompts}, len(prompts)


# route -> (task, request model, prepare(state, body) -> (batch key, payload, rows), response builder)
ROUTES = {
    "classify": ("text-classification", ClassifyIn, _classify, None),
    "fill-mask": ("fill-mask", FillMaskIn, lambda st, b: _texts(st, b, ("fill-mask", b.top_k)), None),
    "token-classification": ("token-classification", TokenClassificationIn,
                             lambda st, b: _texts(st, b, ("token-classification", b.aggregation_strategy)), None),
    "question-answering": ("question-answering", QuestionAnsweringIn, _question_answering, None),
    "embeddings": ("feature-extraction", EmbeddingsIn,
                   lambda st, b: _texts(st, b, ("embeddings", b.pooling, b.normalize)),
                   lambda model, out: EmbeddingsOut(model=model, dim=out[0].shape[-1],
                                                    embeddings=[v.tolist() for v in out])),
    "generate": ("text-generation", GenerateIn, _generate, lambda model, out: GenerateOut(model=model, results=out)),
}


def respond(route: str, model: str, out: list):
    """The response object of a task route for the batch results `out`."""
    build = ROUTES[route][3]
    return build(model, out) if build else ResultsOut(model=model, results=jsonable(out))


async def handle(state, model: str, route: str, body):
    """Validate, queue and answer one per-task request (shared by the FastAPI and Ray Serve apps)."""
    task, _, prepare, _ = ROUTES[route]
    state.model(model, task)
    key, payload, rows = prepare(state, body)
    return respond(route, model, await state.submit(model, key, payload, rows))


def model_path(state):
    """The `model` path parameter, documented with the served names as examples."""
    return Annotated[str, Path(description="a served model's name", examples=list(state.models))]


def router(state) -> APIRouter:
    r = APIRouter(tags=["tasks"])
    Model = model_path(state)  # noqa: N806 - a type

    @r.get("/models", summary="Served models")
    async def list_models() -> list[ModelInfo]:
        return [model_info(m) for m in state.models.values()]

    @r.get("/models/{model}", summary="One served model")
    async def get_model(model: Model) -> ModelInfo:
        return model_info(state.model(model))

    @r.post("/models/{model}/classify", summary="Text classification (single texts or pairs)")
    async def classify(model: Model, body: ClassifyIn) -> ResultsOut:
        return await handle(state, model, "classify", body)

    @r.post("/models/{model}/fill-mask", summary="Fill-mask: candidates for each mask token of each text")
    async def fill_mask(model: Model, body: FillMaskIn) -> ResultsOut:
        return await handle(state, model, "fill-mask", body)

    @r.post("/models/{model}/token-classification", summary="Token classification (grouped entities)")
    async def token_classification(model: Model, body: TokenClassificationIn) -> ResultsOut:
        return await handle(state, model, "token-classification", body)

    @r.post("/models/{model}/question-answering", summary="Extractive question answering")
    async def question_answering(model: Model, body: QuestionAnsweringIn) -> ResultsOut:
        return await handle(state, model, "question-answering", body)

    @r.post("/models/{model}/embeddings", summary="Sentence embeddings (pooled token vectors)")
    async def embeddings(model: Model, body: EmbeddingsIn) -> EmbeddingsOut:
        return await handle(state, model, "embeddings", body)

    @r.post("/models/{model}/generate", summary="Text generation (greedy or sampled)")
    async def generate(model: Model, body: GenerateIn) -> GenerateOut:
        return await handle(state, model, "generate", body)

    return r


async def generate_rows(state, model, prompts, max_new, temperature, top_k, top_p, seed, on_token=None):
    """Queue prompts for a text-generation model; returns one dict per prompt (text, counts, finish)."""
    state.model(model, "text-generation")
    body = GenerateIn.model_construct(prompt=prompts, max_new_tokens=max_new, temperature=temperature, top_k=top_k,
                                      top_p=top_p, seed=seed)
    key, payload, rows = _generate(state, body)
    if on_token is not None:  # a stream runs alone: a key no other request has
        key, payload["on_token"] = key + (object(),), on_token
    return await state.submit(model, key, payload, rows)
