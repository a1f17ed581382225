"""Triton Python-backend model: text (TYPE_STRING) -> the token tensors an edgeport ONNX export takes.

Copied by `edgeport triton-repo` into `<model>_tokenizer/1/model.py`, next to `tokenizer.json` and
`tokenizer_settings.json` (pad id, longest sequence, tensor names and dtypes, bucket size). Needs only
numpy and `tokenizers` in Triton's Python environment, not edgeport. The interface
(TritonPythonModel.initialize/execute, pb_utils.Tensor, InferenceResponse, TritonError) is the Python
backend's (https://github.com/triton-inference-server/python_backend). Each request's rows are padded to
the longest row rounded up to `bucket` tokens, so that Triton's dynamic batcher, which only batches
requests of equal shapes, finds more of them.
"""

import json
import os

import numpy as np

try:
    import triton_python_backend_utils as pb_utils  # present inside Triton only
except ImportError:
    pb_utils = None


def load_settings(folder: str):
    """(tokenizers.Tokenizer, settings dict) from a version folder."""
    from tokenizers import Tokenizer

    with open(os.path.join(folder, "tokenizer_settings.json")) as f:
        settings = json.load(f)
    return Tokenizer.from_file(os.path.join(folder, "tokenizer.json")), settings


def encode(tokenizer, texts: list, settings: dict) -> dict:
    """Texts -> {tensor name: (len(texts), S) array}; S = longest row rounded up to `bucket`, at most
    `max_length`. Raises ValueError for an empty text or one longer than `max_length` tokens."""
    encs = []
    for t in texts:
        if not t.strip():
            raise ValueError("empty text")
        e = tokenizer.encode(t)
        if len(e.ids) > settings["max_length"]:
            raise ValueError(f"text is {len(e.ids)} tokens, longer than {settings['max_length']}")
        encs.append(e)
    longest = max(len(e.ids) for e in encs)
    S = min(-(-longest // settings["bucket"]) * settings["bucket"], settings["max_length"])
    rows = {"input_ids": np.full((len(encs), S), settings["pad_token_id"]),
            "attention_mask": np.zeros((len(encs), S)), "token_type_ids": np.zeros((len(encs), S))}
    for r, e in enumerate(encs):
        n = len(e.ids)
        rows["input_ids"][r, :n], rows["attention_mask"][r, :n], rows["token_type_ids"][r, :n] = \
            e.ids, e.attention_mask, e.type_ids
    return {name: rows[name].astype(dtype) for name, dtype in settings["outputs"].items()}


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer, self.settings = load_settings(folder)

    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()  # (n, 1) bytes
            texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in text.reshape(-1)]
            try:
                tensors = encode(self.tokenizer, texts, self.settings)
            except ValueError as e:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, value) for name, value in tensors.items()]))
        return responses
