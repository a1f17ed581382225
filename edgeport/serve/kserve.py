"""Open Inference Protocol (KServe v2, as Triton speaks it) over HTTP/REST for raw tensors.

Routes (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):
GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}], .../ready;
POST /v2/models/{name}[/versions/{v}]/infer. Tensors are `{name, shape, datatype, data}` with `data`
flattened in row-major order, or, with Triton's binary tensor data extension (what `tritonclient`
sends by default), raw little-endian bytes after the JSON header, whose length is the
`Inference-Header-Content-Length` header and each tensor's size `parameters.binary_data_size`.
Requests of one model with the same per-row shapes are batched along axis 0.
A decoder's ONNX graph is served as it is (model metadata lists its inputs: ids, mask, positions and the
past cache, empty on a first call; outputs: logits and the present cache): one forward pass per request,
the client keeps the cache between calls. LiteRT decoders (two signatures) are not v2 models here.
"""

import json

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

# numpy dtype name <-> the protocol's datatype names
V2_TYPES = {"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
            "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16",
            "float32": "FP32", "float64": "FP64"}
NUMPY_TYPES = {v: k for k, v in V2_TYPES.items()}

_TENSOR_SCHEMA = {
    "type": "object", "required": ["name", "shape", "datatype"],
    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                   "datatype": {"type": "string", "enum": sorted(NUMPY_TYPES) + ["BYTES"]},
                   "data": {"type": "array", "items": {}}, "parameters": {"type": "object"}}}
INFER_REQUEST_SCHEMA = {
    "type": "object", "required": ["inputs"],
    "properties": {"id": {"type": "string"}, "parameters": {"type": "object"},
                   "inputs": {"type": "array", "items": _TENSOR_SCHEMA},
                   "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                          "properties": {"name": {"type": "string"},
                                                                         "parameters": {"type": "object"}}}}}}


def _dims(shape) -> list:
    """IOSpec shape -> protocol dims (-1 for dynamic)."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def tensor_metadata(specs) -> list:
    return [{"name": s.name, "datatype": V2_TYPES.get(s.dtype, s.dtype.upper()), "shape": _dims(s.shape)}
            for s in specs]


def parse_body(raw: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """(JSON header, trailing binary bytes); ValueError on a malformed body."""
    if header_length is not None:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"Inference-Header-Content-Length must be the JSON header's length in bytes, a "
                             f"non-negative integer (got '{header_length[:40]}')")
        n = int(text)
        if n > len(raw):
            raise ValueError(f"Inference-Header-Content-Length {n} is larger than the body ({len(raw)} bytes)")
        head, tail = raw[:n], raw[n:]
    else:
        head, tail = raw, b""
    obj = json.loads(head)
    if not isinstance(obj, dict) or not isinstance(obj.get("inputs"), list):
        raise ValueError("the request needs an 'inputs' list")
    return obj, tail


def decode_inputs(obj: dict, binary: bytes, specs: list, max_len: int, max_rows: int,
                  id_limits: dict | None = None, may_be_empty=()) -> dict:
    """Request tensors -> {name: array} checked against the model's inputs; ValueError with the reason.
    Integer inputs (ids, masks, token types, positions) must be >= 0; `id_limits` {name: n} also bounds an
    input above (input_ids < the tokenizer's vocabulary size). Dims are >= 1, except the dynamic ones after
    the first of the inputs named in `may_be_empty` (a decoder's past cache: length 0 on a first call)."""
    want = {s.name: s for s in specs}
    feeds, offset, sizes = {}, 0, {}
    for t in obj["inputs"]:
        if not isinstance(t, dict):
            raise ValueError("each input must be an object with name, shape, datatype")
        name, dtype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str):
            raise ValueError(f"each input's 'name' must be a string, got {json.dumps(name)[:60]}")
        if name not in want:
            raise ValueError(f"unknown input '{name}'; the model takes {', '.join(want)}")
        if name in feeds:
            raise ValueError(f"input '{name}' given twice")
        spec = want[name]
        if dtype != V2_TYPES.get(spec.dtype):
            raise ValueError(f"input '{name}' is {V2_TYPES.get(spec.dtype, spec.dtype)}, got datatype {dtype}")
        least = [0 if name in may_be_empty and i > 0 and _dims([d]) == [-1] else 1 for i, d in enumerate(spec.shape)]
        if (not isinstance(shape, list) or len(shape) != len(spec.shape)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= lo for d, lo in zip(shape, least))):
            kind = "non-negative" if 0 in least else "positive"
            raise ValueError(f"input '{name}' needs a shape of {len(spec.shape)} {kind} dims "
                             f"like {_dims(spec.shape)}")
        for i, (got, dim) in enumerate(zip(shape, spec.shape)):
            if isinstance(dim, int) and dim > 0 and got != dim and i > 0:
                raise ValueError(f"input '{name}' dim {i} must be {dim}, got {got}")
            if not (isinstance(dim, int) and dim > 0):
                if sizes.setdefault(dim, got) != got:
                    raise ValueError(f"dimension '{dim}' is {sizes[dim]} in one input and {got} in '{name}'")
        if shape[0] > max_rows or (len(shape) > 1 and shape[-1] > max_len):
            raise ValueError(f"input '{name}' shape {shape} is over the limits ({max_rows} rows, {max_len} positions)")
        n = int(np.prod(shape))
        np_type = np.dtype(NUMPY_TYPES[dtype])
        size = _params(t).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size != n * np_type.itemsize or offset + size > len(binary):
                raise ValueError(f"input '{name}': binary_data_size {size} does not fit shape {shape} {dtype}")
            arr = np.frombuffer(binary, np_type.newbyteorder("<"), n, offset).astype(np_type)
            offset += size
        else:
            arr = _from_json(t.get("data"), np_type, name)
        if arr.size != n:
            raise ValueError(f"input '{name}' has {arr.size} values for shape {shape}")
        if arr.dtype.kind in "iu" and arr.size:
            low, high, limit = int(arr.min()), int(arr.max()), (id_limits or {}).get(name)
            if low < 0 or (limit is not None and high >= limit):
                raise ValueError(f"input '{name}' holds {low if low < 0 else high}: its values must lie in "
                                 f"[0, {limit if limit is not None else 'inf'})")
        feeds[name] = arr.reshape(shape)
    missing = [n for n in want if n not in feeds]
    if missing:
        raise ValueError(f"missing input(s) {', '.join(missing)}")
    return feeds


def check_decoder_lengths(feeds: dict, specs: list, past_names) -> None:
    """A decoder's attention_mask (B, T) must cover the past and the new tokens: T == P + S, S the
    input_ids length, P the past cache's length (the first dynamic dim after the batch of the first past
    input, as the graph names it: (B, KV, P, D), or (L, B, KV, P, D) stacked). ValueError naming the three
    numbers otherwise: the graph would run (GroupQueryAttention reads the mask's sum as the total length)
    and write the new keys at the wrong place, or fail with onnxruntime's own text."""
    past = next((s for s in specs if s.name in past_names and s.name in feeds), None)
    if past is None or "attention_mask" not in feeds or "input_ids" not in feeds:
        return
    batch = next(s.shape[0] for s in specs if s.name == "input_ids")
    dims = [i for i, d in enumerate(past.shape) if isinstance(d, str) and d != batch]
    if not dims:
        return
    p, n, total = feeds[past.name].shape[dims[0]], feeds["input_ids"].shape[1], feeds["attention_mask"].shape[1]
    if total != p + n:
        raise ValueError(f"attention_mask has {total} positions; past {p} + new {n} = {p + n}")


def _params(obj: dict) -> dict:
    """An object's `parameters` (a dict, or absent); ValueError for anything else."""
    p = obj.get("parameters")
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise ValueError("'parameters' must be an object")
    return p


def _from_json(data, np_type, name) -> np.ndarray:
    if not isinstance(data, list):
        raise ValueError(f"input '{name}' needs 'data' (a flat list) or binary data")
    try:
        with np.errstate(all="raise"):
            arr = np.asarray(data)
            if arr.dtype == object or (arr.size and arr.dtype.kind not in "biuf"):
                raise ValueError
            if np_type.kind in "iu" and arr.dtype.kind == "f":
                raise ValueError
            lo, hi = (np.iinfo(np_type).min, np.iinfo(np_type).max) if np_type.kind in "iu" else (None, None)
            if lo is not None and arr.size and (arr.min() < lo or arr.max() > hi):
                raise ValueError
            return arr.astype(np_type).ravel()
    except (ValueError, TypeError, OverflowError, FloatingPointError):
        raise ValueError(f"input '{name}': data must be numbers of its datatype") from None


def check_outputs(obj: dict, specs: list) -> None:
    """The request's `outputs` (absent, or a list of {"name": str, "parameters"?: {...}} naming outputs of
    the model) and its `parameters`; ValueError naming what is wrong, before the model runs."""
    _params(obj)
    asked = obj.get("outputs")
    if asked is None:
        return
    names = [s.name for s in specs]
    if not isinstance(asked, list):
        raise ValueError(f"'outputs' must be a list of objects like {{\"name\": \"{names[0]}\"}}")
    for o in asked:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise ValueError(f"each output must be an object with a string 'name', like {{\"name\": \"{names[0]}\"}}; "
                             f"got {json.dumps(o)[:60]}")
        if o["name"] not in names:
            raise ValueError(f"unknown output '{o['name']}'; the model gives {', '.join(names)}")
        _params(o)


def encode_outputs(result: dict, specs: list, obj: dict) -> tuple[dict, bytes]:
    """Chosen outputs -> (JSON response part, binary tail) honouring each output's binary_data flag."""
    by_name = {s.name: s for s in specs}
    asked = obj.get("outputs")
    all_binary = bool(_params(obj).get("binary_data_output", False))
    if asked is None:
        asked = [{"name": n} for n in result]
    if not isinstance(asked, list):
        raise ValueError("'outputs' must be a list of {name, parameters}")
    outs, tail = [], []
    for o in asked:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in result:
            raise ValueError(f"unknown output '{name}'; the model gives {', '.join(by_name)}")
        arr = np.ascontiguousarray(result[name])
        entry = {"name": name, "datatype": V2_TYPES[arr.dtype.name], "shape": list(arr.shape)}
        if _params(o).get("binary_data", all_binary):
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = arr.ravel().tolist()
        outs.append(entry)
    return {"outputs": outs}, b"".join(tail)


def router(state) -> APIRouter:
    from edgeport.serve.app import ApiError, SafeJSONResponse

    from edgeport.serve.task_routes import model_path

    r = APIRouter(prefix="/v2", tags=["kserve-v2"])
    Model = model_path(state)  # noqa: N806 - a type

    def v2_model(name: str, version: str | None = None):
        m = state.model(name)
        if version not in (None, "", "1"):
            raise ApiError(404, f"model '{name}' has version 1 only", "not_found_error")
        return m

    @r.get("", summary="Server metadata")
    async def server_metadata() -> dict:
        from edgeport import __version__

        return {"name": "edgeport", "version": __version__, "extensions": ["binary_tensor_data"]}

    @r.get("/health/live", summary="Server liveness")
    async def live() -> dict:
        return {"live": True}

    @r.get("/health/ready", summary="Server readiness")
    async def ready() -> dict:
        return {"ready": True}

    @r.get("/models/{name}", summary="Model metadata")
    @r.get("/models/{name}/versions/{version}", summary="Model metadata (version 1)")
    async def metadata(name: Model, version: str | None = None) -> dict:
        m = v2_model(name, version)
        return {"name": name, "versions": ["1"], "platform": f"{m.backend}_{m.manifest.target}",
                "inputs": tensor_metadata(m.inputs), "outputs": tensor_metadata(m.outputs)}

    @r.get("/models/{name}/ready", summary="Model readiness")
    @r.get("/models/{name}/versions/{version}/ready", summary="Model readiness (version 1)")
    async def model_ready(name: Model, version: str | None = None) -> dict:
        v2_model(name, version)
        return {"name": name, "ready": True}

    extra = {"requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST_SCHEMA}}}}

    @r.post("/models/{name}/infer", summary="Inference on raw tensors", openapi_extra=extra)
    @r.post("/models/{name}/versions/{version}/infer", summary="Inference (version 1)", openapi_extra=extra)
    async def infer(name: Model, request: Request, version: str | None = None):
        m = v2_model(name, version)
        if not m.inputs:
            raise ApiError(400, f"model '{name}' is a LiteRT decoder (prefill and decode signatures over a static "
                                f"cache): use /v1/completions or /models/{name}/generate")
        try:
            obj, binary = parse_body(await request.body(), request.headers.get("inference-header-content-length"))
            feeds = decode_inputs(obj, binary, m.inputs, m.manifest.max_sequence_length, state.config.max_items,
                                  m.id_limits, m.may_be_empty)
            check_decoder_lengths(feeds, m.inputs, m.may_be_empty)
            check_outputs(obj, m.outputs)
        except ValueError as e:  # json.JSONDecodeError is a ValueError too
            raise ApiError(400, f"bad infer request: {e}") from None
        key = ("raw", tuple((k, v.shape[1:]) for k, v in sorted(feeds.items())))
        if not m.raw_batches:  # a batch axis other than 0 somewhere: this request runs alone
            key += (object(),)
        result = await state.submit(name, key, {"feeds": feeds}, feeds[m.inputs[0].name].shape[0])
        try:
            body, tail = encode_outputs(result, m.outputs, obj)
        except ValueError as e:
            raise ApiError(400, f"bad infer request: {e}") from None
        body = {"model_name": name, "model_version": "1", **({"id": obj["id"]} if "id" in obj else {}), **body}
        if not tail:
            return SafeJSONResponse(body)
        head = json.dumps(body).encode()
        return Response(head + tail, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(head))})

    return r
