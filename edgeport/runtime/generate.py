"""Text generation over an exported decoder: numpy + tokenizers + onnxruntime or LiteRT (never torch).

    gen = TextGenerator("out/mistral")                       # export folder (edgeport.json)
    gen.generate("Once upon a time", max_new_tokens=32)      # greedy
    gen.generate(["a", "b c"], temperature=0.8, top_p=0.9, seed=0, on_token=print)

Everything comes from the manifest's `decoder` block: cache layout ("stacked": (L, B, KV, P, D) per
direction; "per_layer": (B, KV, P, D) per layer and direction) and its input/output names, left padding,
special tokens, static cache and signatures (TFLite), the longest sequence it can run.

Backends (one interface: reset(batch), step(ids, new_mask, positions) -> logits (B, S, V), cache()):
- OrtDecoder: one graph; the present keys/values stay OrtValues owned by onnxruntime and are bound
  back as the next call's past through IOBinding (never copied to numpy between steps).
- LiteRTDecoder: `prefill` (B, Sp) and `decode` (B, 1) signatures over a static rolling cache of C
  slots; a prompt is left-padded to a multiple of Sp and run chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.manifest import read_manifest
from edgeport.runtime.pipelines.base import check_text


def positions_from_mask(mask: np.ndarray, new_tokens: int) -> np.ndarray:
    """(B, P+S) 1/0 mask -> (B, S) positions: running count of real tokens minus one, 0 on padding."""
    pos = np.cumsum(mask, axis=1) - 1
    pos = np.where(mask == 0, 0, pos)
    return pos[:, pos.shape[1] - new_tokens:].astype(np.int64)


def cache_io(info: dict) -> tuple[list, list]:
    """(past input names, present output names) of a decoder block, key before value: ["past_keys",
    "past_values"] -> ["present_keys", "present_values"] (layout "stacked"), or past_key_values.{i}.key,
    past_key_values.{i}.value, ... -> present.{i}.key, ... (layout "per_layer"; export/kv_layout.py)."""
    return list(info["inputs"]), list(info["outputs"])


def empty_past(info: dict, batch: int) -> dict:
    """{past input name: float32 zeros} for a first call: (L, B, KV, 0, D) stacked, (B, KV, 0, D) per layer."""
    shape = (batch, info["kv_heads"], 0, info["head_dim"])
    if info.get("layout", "stacked") == "stacked":
        shape = (info["layers"], *shape)
    return {name: np.zeros(shape, np.float32) for name in cache_io(info)[0]}


class OrtDecoder:
    """One ONNX graph for prefill and decode; the present keys/values stay onnxruntime OrtValues and are
    bound back as the next past (int64 ids/mask/positions), one OrtValue per cache tensor of the layout
    (two stacked ones, or a key and a value per layer: each bound where the graph reads it, no copy).
    Where this onnxruntime build has the CUDA provider, the session runs on it and the cache stays in
    CUDA memory between steps (IOBinding to device buffers; only logits come back to the host); elsewhere
    everything lives in CPU memory."""

    backend = "onnxruntime"

    def __init__(self, path, info: dict, threads: int | None = None):
        import onnxruntime as ort

        from edgeport.runtime.session import ort_session

        self.device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        providers = (["CUDAExecutionProvider"] if self.device == "cuda" else []) + ["CPUExecutionProvider"]
        self.sess = ort_session(path, threads, providers=providers)
        self.ort, self.info = ort, info
        self.past_names, self.present_names = cache_io(info)
        self.max_batch, self.prefill_len = None, None

    def reset(self, batch: int):
        """Start `batch` empty rows: an empty past (empty_past) and mask."""
        empty = empty_past(self.info, batch).values()
        self.past = [self.ort.OrtValue.ortvalue_from_numpy(a, self.device, 0) for a in empty]
        self.mask = np.zeros((batch, 0), np.int64)

    def step(self, ids, new_mask, positions) -> np.ndarray:
        """ids/new_mask/positions (B, S) -> logits (B, S, V); the cache grows by S inside onnxruntime."""
        self.mask = np.concatenate([self.mask, np.asarray(new_mask, np.int64)], axis=1)  # (B, P+S)
        b = self.sess.io_binding()
        b.bind_cpu_input("input_ids", np.ascontiguousarray(ids, np.int64))
        b.bind_cpu_input("attention_mask", self.mask)
        b.bind_cpu_input("position_ids", np.ascontiguousarray(positions, np.int64))
        for name, value in zip(self.past_names, self.past):
            b.bind_ortvalue_input(name, value)
        b.bind_output("logits", "cpu")
        for name in self.present_names:
            b.bind_output(name, self.device)  # the next step's past, left where the session computed it
        self.sess.run_with_iobinding(b)
        logits, *self.past = b.get_outputs()
        return logits.numpy()

    def cache(self):
        """(keys, values) float32 (L, B, KV, P, D): the cache after the last step (a per-layer cache is
        stacked here, a copy: for checks, never on the generation path)."""
        if self.info.get("layout", "stacked") == "stacked":
            return self.past[0].numpy(), self.past[1].numpy()
        return np.stack([v.numpy() for v in self.past[0::2]]), np.stack([v.numpy() for v in self.past[1::2]])


class LiteRTDecoder:
    """`prefill` (B, Sp) and `decode` (B, 1) signatures over a static rolling cache of C slots (int32
    feeds, static batch: smaller batches are padded with masked rows)."""

    backend = "litert"

    def __init__(self, path, info: dict, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise EdgeportError("running .tflite needs ai-edge-litert: pip install 'edgeport[litert]'") from None
        from edgeport.runtime.session import resolve_threads

        self.interp = Interpreter(model_path=str(path), num_threads=resolve_threads(threads))
        sigs = self.interp.get_signature_list()
        if set(sigs) < {"prefill", "decode"}:
            raise EdgeportError(f"{path}: needs 'prefill' and 'decode' signatures (has {', '.join(sigs)})")
        self.run = {n: self.interp.get_signature_runner(n) for n in ("prefill", "decode")}
        shape = self.run["prefill"].get_input_details()["input_ids"]["shape"]
        self.max_batch, self.prefill_len = int(shape[0]), int(shape[1])
        self.cache_len = info["static_cache"]
        self.info = info

    def reset(self, batch: int):
        """Start `batch` rows (<= the static batch): zero cache slots, all masked. EdgeportError for a larger
        batch."""
        if batch > self.max_batch:
            raise EdgeportError(f"this TFLite artifact runs batches of {self.max_batch}; got {batch} prompts")
        i = self.info
        self.batch = batch
        shape = (i["layers"], self.max_batch, i["kv_heads"], self.cache_len, i["head_dim"])
        self.keys, self.values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.slot_mask = np.zeros((self.max_batch, self.cache_len), np.int32)  # (B, C) real slots

    def _call(self, sig: str, ids, mask, pos) -> np.ndarray:
        full = np.concatenate([self.slot_mask, mask], axis=1)  # (B, C+S)
        out = self.run[sig](input_ids=ids, attention_mask=full, position_ids=pos, past_keys=self.keys,
                            past_values=self.values)
        self.keys, self.values = out["present_keys"], out["present_values"]
        self.slot_mask = full[:, ids.shape[1]:]
        return out["logits"]

    def step(self, ids, new_mask, positions) -> np.ndarray:
        """ids/new_mask/positions (B, S) -> logits (B, S, V); prompts longer than the prefill run in chunks."""
        B, S = ids.shape
        rows = self.max_batch - B  # static batch: pad with fully masked rows, dropped afterwards
        feeds = [np.pad(np.asarray(a, np.int32), ((0, rows), (0, 0))) for a in (ids, new_mask, positions)]
        if S == 1:
            return self._call("decode", *feeds)[:B]
        sp = self.prefill_len
        lead = -S % sp  # left-pad the first chunk to a multiple of the prefill length
        feeds = [np.pad(a, ((0, 0), (lead, 0))) for a in feeds]
        outs = [self._call("prefill", *(a[:, t:t + sp] for a in feeds)) for t in range(0, S + lead, sp)]
        return np.concatenate(outs, axis=1)[:B, lead:]

    def cache(self):
        """(keys, values) float32 (L, B_static, KV, C, D): the rolling cache."""
        return self.keys, self.values


def open_decoder(path, info: dict, threads: int | None = None):
    """The decoder backend for an artifact file: OrtDecoder (.onnx, growing cache bound through IOBinding)
    or LiteRTDecoder (.tflite, prefill/decode signatures over a static cache).

    info: the manifest's `decoder` block (layers, kv_heads, head_dim, static_cache, ...); threads: CPU
    threads (default: all cores). Both give reset(batch), step(ids, new_mask, positions) -> logits
    (B, S, V) float32 and cache() -> (keys, values) (L, B, KV, slots, D). Raises EdgeportError for
    another file type or an artifact the backend cannot load.
    """
    p = Path(path)
    if p.suffix == ".tflite":
        return LiteRTDecoder(p, info, threads)
    if p.suffix == ".onnx":
        return OrtDecoder(p, info, threads)
    raise EdgeportError(f"{p}: generation runs .onnx or .tflite decoders")


# ---------------------------------------------------------------- sampling

@dataclass
class Sampling:
    """Sampling settings; `check()` raises EdgeportError on values out of range."""

    temperature: float = 0.0  # 0: greedy (argmax)
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # nucleus: smallest set of tokens whose probability reaches top_p
    seed: int | None = None

    def check(self):
        """EdgeportError naming the first setting out of range: temperature finite and >= 0, top_k >= 0,
        top_p finite with 0 < top_p <= 1, seed None or >= 0 (numpy's default_rng refuses negative seeds)."""
        import math

        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise EdgeportError(f"sampling: temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise EdgeportError(f"sampling: top-k must be >= 0 (0: no cut), got {self.top_k}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise EdgeportError(f"sampling: top-p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and self.seed < 0:
            raise EdgeportError(f"sampling: seed must be >= 0, got {self.seed}")


def next_tokens(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> np.ndarray:
    """(B, V) logits -> (B,) token ids."""
    if s.temperature == 0:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / s.temperature
    if s.top_k and s.top_k < z.shape[-1]:
        kth = np.partition(z, -s.top_k, axis=-1)[:, -s.top_k:].min(-1, keepdims=True)  # (B, 1)
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if s.top_p < 1:
        order = np.argsort(-p, axis=-1)  # (B, V) most likely first
        sorted_p = np.take_along_axis(p, order, -1)
        drop = np.cumsum(sorted_p, -1) - sorted_p >= s.top_p  # mass before this token already reaches top_p
        np.put_along_axis(p, order, np.where(drop, 0.0, sorted_p), -1)
        p /= p.sum(-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    return np.minimum((np.cumsum(p, -1) < u).sum(-1), p.shape[-1] - 1)


def generate_ids(decoder, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, sampling: Sampling | None = None,
                 stop_token_ids=(), pad_token_id: int = 0, on_token: Callable | None = None,
                 max_total: int | None = None) -> np.ndarray:
    """(B, S) left-padded prompt -> (B, S + n) tokens, n <= max_new_tokens (as HF generate).

    Rows that emitted a stop token continue with `pad_token_id`; stops when every row is done.
    `on_token(row, token_id)` is called for each new token of a row still running.
    """
    sampling = sampling or Sampling()
    sampling.check()
    rng = np.random.default_rng(sampling.seed)
    B, S = ids.shape
    if max_new_tokens < 1:  # before the length check, which would blame the prompt
        raise EdgeportError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if max_total is not None:
        max_new_tokens = min(max_new_tokens, max_total - S)
        if max_new_tokens < 1:
            raise EdgeportError(f"the prompt is {S} tokens; this artifact runs at most {max_total} in all")
    decoder.reset(B)
    stop = np.array(sorted(set(stop_token_ids)), np.int64)
    done = np.zeros(B, bool)
    tokens, step, new_mask, pos = [ids], ids, mask, positions_from_mask(mask, S)
    for _ in range(max_new_tokens):
        logits = decoder.step(step, new_mask, pos)[:, -1]  # (B, V)
        nxt = np.where(done, pad_token_id, next_tokens(logits, sampling, rng)).astype(np.int64)
        if on_token is not None:
            for r in np.flatnonzero(~done):
                on_token(int(r), int(nxt[r]))
        done |= np.isin(nxt, stop)
        tokens.append(nxt[:, None])
        step, new_mask, pos = nxt[:, None], np.ones((B, 1), np.int64), pos[:, -1:] + 1
        if done.all():
            break
    return np.concatenate(tokens, axis=1)


# ---------------------------------------------------------------- text in, text out

class TextGenerator:
    """An export folder (or its artifact) with its tokenizer: prompts in, continuations out."""

    def __init__(self, path, threads: int | None = None):
        manifest, folder = read_manifest(path)
        if manifest.task != "text-generation" or not manifest.decoder:
            raise EdgeportError(f"{folder}: not a text-generation export (task {manifest.task})")
        if manifest.tokenizer is None:
            raise EdgeportError(f"{folder}: the export has no tokenizer.json; export from a checkpoint folder "
                                "that has one (or vocab.json + merges.txt)")
        from tokenizers import Tokenizer

        self.manifest, self.info = manifest, manifest.decoder
        self.tokenizer = Tokenizer.from_file(str(folder / manifest.tokenizer.file))
        self.decoder = open_decoder(folder / manifest.artifact, self.info, threads)

    @property
    def pad_token_id(self) -> int:
        """The id padded rows are filled with (the manifest's pad, else the first eos)."""
        return int(self.info.get("pad_token_id") or 0)

    def encode(self, prompts: list) -> tuple[np.ndarray, np.ndarray]:
        """Prompts -> (B, S) ids and mask, left-padded."""
        rows = []
        for p in prompts:
            if not isinstance(p, str) or not p:
                raise EdgeportError("empty prompt: give some text to continue")
            check_text(p, "prompt")
            rows.append(self.tokenizer.encode(p).ids)
        if not all(rows):
            raise EdgeportError("a prompt encodes to no tokens")
        S = max(len(r) for r in rows)
        ids = np.full((len(rows), S), self.pad_token_id, np.int64)
        mask = np.zeros((len(rows), S), np.int64)
        for i, r in enumerate(rows):
            ids[i, S - len(r):], mask[i, S - len(r):] = r, 1
        return ids, mask

    def generate(self, prompts, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None, stop_token_ids=None, on_token=None):
        """A prompt (str) -> its continuation (str); a list of prompts -> a list, batched with left padding."""
        single = isinstance(prompts, str)
        ids, mask = self.encode([prompts] if single else list(prompts))
        stop = self.info.get("eos_token_ids", []) if stop_token_ids is None else stop_token_ids
        out = generate_ids(self.decoder, ids, mask, max_new_tokens, Sampling(temperature, top_k, top_p, seed),
                           stop, self.pad_token_id, on_token, self.info.get("max_tokens"))
        texts = [self.decode_new(row, stop) for row in out[:, ids.shape[1]:]]
        return texts[0] if single else texts

    def decode_new(self, new_tokens, stop=()) -> str:
        """New tokens up to (not including) the first stop token, as text."""
        keep = []
        for t in new_tokens:
            if int(t) in stop:
                break
            keep.append(int(t))
        return self.tokenizer.decode(keep)
