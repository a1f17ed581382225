"""Export contracts as data: input/output names, symbolic axes, tolerances, positions.

Two kinds, one interface (what `export()` and the exporters read):
- `Contract` (encoders): inputs (B, S) or (B, C, S) for multiple-choice; outputs per task head.
- `DecoderContract` (text-generation): input_ids, attention_mask, position_ids and a KV cache, stacked
  (reference_models/decoder.py's cache contract) or per layer (export/kv_layout.py); one graph for
  prefill and decode.

Both give `input_names`, `output_names`, `dynamic_axes()` (torch.onnx), `sample_args()` (torch tensors
the ONNX tracer runs on), `io_specs(dtype, static)` (the manifest's inputs and outputs), `max_positions`
and the parity tolerance: |artifact - reference| <= atol + rtol * max|reference| per output (fp32).
What differs in the pipeline is theirs too: `write_tokenizer(...)`, `validate(...)` and
`max_sequence_length(...)`, with the progress wording in `validating` and `shape_label`. Another kind of
contract (an encoder with extra inputs, say) plugs into `export.export_reference` by giving the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import TensorSpec
from edgeport.reference_models.heads import head_for, output_dims
from edgeport.reference_models.decoder import DECODER_INPUTS, DECODER_TASK_OUTPUTS

DEFAULT_OPSET = 17  # every op the encoders and decoders need; onnxruntime 1.20+ runs it


@dataclass
class Contract:
    """Encoder I/O. Shapes: inputs int (B, S), or (B, C, S) for multiple-choice; outputs float32 as
    `output_dims` says (ints, or the symbolic "batch", "sequence", "choices")."""

    inputs: list  # input names, in forward() order
    input_dims: list  # symbolic dims shared by every input, e.g. ["batch", "sequence"]
    outputs: list  # output names
    output_dims: dict  # output name -> dims (ints or "batch"/"sequence")
    vocab_size: int
    type_vocab_size: int
    max_positions: int
    atol: float = 1e-4
    rtol: float = 1e-4
    kind = "encoder"
    # Tied weights reach the graph as W and a constant-folded W^T: store the matrix once (onnx.py).
    share_transposed: bool = True

    @property
    def input_names(self) -> list:
        """Input names in forward() order."""
        return list(self.inputs)

    @property
    def output_names(self) -> list:
        """Output names in the model's return order."""
        return list(self.outputs)

    def dynamic_axes(self) -> dict:
        """torch.onnx dynamic_axes: every input and output axis named by a string is dynamic."""
        axes = {n: dict(enumerate(self.input_dims)) for n in self.inputs}
        for name, dims in self.output_dims.items():
            axes[name] = {i: d for i, d in enumerate(dims) if isinstance(d, str)}
        return axes

    def sample_args(self) -> tuple:
        """int64 torch tensors at batch 2, length 16, one padded row, in forward() order."""
        import torch

        from edgeport.export.validate import sample_inputs

        feeds = sample_inputs(self, batch=2, seq=16, padded_rows=1)
        return tuple(torch.from_numpy(feeds[n]) for n in self.inputs)

    def input_specs(self, dtype: str, batch=None, seq=None) -> list:
        """Manifest TensorSpecs of the inputs (`dtype`: int64 or int32); batch/seq fix those axes."""
        fix = {"batch": batch or "batch", "sequence": seq or "sequence"}
        return [TensorSpec(n, dtype, [fix.get(d, d) for d in self.input_dims]) for n in self.inputs]

    def output_specs(self, batch=None, seq=None) -> list:
        """Manifest TensorSpecs of the float32 outputs; batch/seq fix those axes."""
        fix = {"batch": batch or "batch", "sequence": seq or "sequence"}
        return [TensorSpec(n, "float32", [fix.get(d, d) if isinstance(d, str) else d for d in dims])
                for n, dims in self.output_dims.items()]

    def io_specs(self, dtype: str, static: tuple | None) -> tuple[list, list]:
        """(inputs, outputs) TensorSpecs; `static` = (batch, seq) fixes those axes."""
        fix = static or (None, None)
        return self.input_specs(dtype, *fix), self.output_specs(*fix)

    def longest_static_len(self) -> int:
        """The longest static sequence length the positions allow."""
        return self.max_positions

    validating = "validating against the reference"
    shape_label = ""  # ParityCheck.shape is [batch, sequence]

    def write_tokenizer(self, ref, lowered, static: tuple | None, out: Path, steps) -> tuple:
        """Copy/build the tokenizer into `out` -> (TokenizerInfo or None, None): encoders add no manifest block."""
        from edgeport.reference_models.tokenizer import has_tokenizer, packaged_uncased_vocab_dir, write_tokenizer

        src = ref.folder if ref.folder is not None and has_tokenizer(ref.folder) else None
        if src is None and ref.random_weights and ref.family.name in ("mobilebert", "bert"):
            src = packaged_uncased_vocab_dir()  # the presets' real uncased WordPiece vocab
        if src is None and ref.folder is None:  # any other preset: a byte-level tokenizer fit to its vocabulary
            from edgeport.reference_models.preset_tokenizer import write_preset_tokenizer

            steps.note("preset: byte-level tokenizer fit to its vocabulary (the random weights give it no meaning)")
            return write_preset_tokenizer(ref.config.vocab_size, out, True, ref.config.pad_token_id or 0), None
        if src is None:
            steps.note("warning: no tokenizer files found; the runtime pipelines will need one")
            return None, None
        return write_tokenizer(src, out), None

    def validate(self, ref, path: Path, lowered, static: tuple | None, block) -> list:
        """Parity over `validate.grid_for` through the runtime's Session (with the lowering's custom-op
        library when it has one); ParityError on a miss."""
        from edgeport.export import validate

        session = validate.validation_session(path, lowered.validation)
        return validate.check(ref.model, session, self, validate.grid_for(self, static))

    def max_sequence_length(self, static: tuple | None, block) -> int:
        """The manifest's max_sequence_length: the static length, else the positions."""
        return static[1] if static else self.max_positions


def encoder_contract(cfg, task: str, hidden_size: int, input_names=None) -> Contract:
    """Inputs are exactly those the model uses: no token_type_ids when type_vocab_size is 0.

    `input_names`: what the task model says it takes (its `input_names`), when it says.
    """
    type_vocab = int(getattr(cfg, "type_vocab_size", 0) or 0)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if type_vocab > 0 else [])
    if input_names is not None:
        inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tuple(input_names)]
    input_dims = ["batch", "choices", "sequence"] if head_for(task).choices else ["batch", "sequence"]
    dims = output_dims(task, cfg, hidden_size)
    # max_words: RoBERTa-style positions (LUKE) start after the pad id, so fewer words than table rows;
    # MEGA calls it max_positions; a family with neither has no table limit we know of
    max_pos = (getattr(cfg, "max_words", None) or getattr(cfg, "max_position_embeddings", None)
               or getattr(cfg, "max_positions", None) or getattr(cfg, "n_positions", None) or 512)  # GPT-2: n_positions
    return Contract(inputs, input_dims, list(dims), dims, cfg.vocab_size, type_vocab, max_pos)


DECODE_ROOM = 8  # a static prefill must leave this many positions to decode into


@dataclass
class DecoderContract:
    """Decoder I/O: input_ids, position_ids (B, S) int; attention_mask (B, P+S) int;
    past_keys/past_values (L, B, KV, P, D) float32 -> logits (B, S, V), present_* (L, B, KV, P+S, D);
    with kv_layout "per_layer" the written graph takes past_key_values.{i}.key/.value (B, KV, P, D) and
    gives present.{i}.key/.value (B, KV, P+S, D) instead (export/kv_layout.py)."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int
    sliding_window: int | None
    atol: float = 1e-4
    rtol: float = 1e-4
    kind = "decoder"
    share_transposed: bool = False  # keep lm_head weights as MatMul initializers (the int4 quantizer needs them)
    # the written graph's cache I/O: "stacked" (as traced) or "per_layer" (export/kv_layout.py rewrites
    # the traced graph); input_names/output_names/dynamic_axes/sample_args are the trace's, always stacked
    kv_layout: str = "stacked"

    @property
    def input_names(self) -> list:
        """input_ids, attention_mask, position_ids, past_keys, past_values."""
        return list(DECODER_INPUTS)

    @property
    def output_names(self) -> list:
        """logits, present_keys, present_values."""
        return list(DECODER_TASK_OUTPUTS["text-generation"])

    def dims(self, cache_axis: str, seq: str = "sequence") -> dict:
        """Dims of ids/positions (B, S), the cache (L, B, KV, `cache_axis`, D) and logits (B, S, V)."""
        cache = [self.layers, "batch", self.kv_heads, cache_axis, self.head_dim]
        return {"input_ids": ["batch", seq], "position_ids": ["batch", seq], "past_keys": cache,
                "past_values": cache, "logits": ["batch", seq, self.vocab_size]}

    def dynamic_axes(self) -> dict:
        """torch.onnx dynamic_axes: batch, sequence, past and total (past + sequence)."""
        cache_in, cache_out = {1: "batch", 3: "past"}, {1: "batch", 3: "total"}
        return {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
                "position_ids": {0: "batch", 1: "sequence"}, "past_keys": cache_in, "past_values": cache_in,
                "logits": {0: "batch", 1: "sequence"}, "present_keys": cache_out, "present_values": cache_out}

    def sample_args(self, batch=2, past=3, new=4) -> tuple:
        """Seeded torch feeds with a non-empty past, so both cache axes trace as dynamic."""
        import torch

        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1, self.vocab_size, (batch, new), generator=g)
        mask = torch.ones(batch, past + new, dtype=torch.long)
        pos = torch.arange(past, past + new)[None].expand(batch, -1).contiguous()
        cache = torch.randn(self.layers, batch, self.kv_heads, past, self.head_dim, generator=g)
        return ids, mask, pos, cache, cache.clone()

    def io_specs(self, dtype: str, static: tuple | None = None) -> tuple[list, list]:
        """(inputs, outputs) TensorSpecs with symbolic cache axes, in the written graph's `kv_layout`
        (stacked (L, B, KV, past, D); per_layer (B, KV, past, D) each); a static artifact's shapes are per
        signature, recorded in the manifest's `decoder` block."""
        from edgeport.export.kv_layout import cache_names

        d = self.dims("past")
        ins = [TensorSpec(n, dtype, d[n]) for n in ("input_ids", "position_ids")]
        ins.insert(1, TensorSpec("attention_mask", dtype, ["batch", "past + sequence"]))
        past, present = d["past_keys"], self.dims("past + sequence")["past_keys"]
        if self.kv_layout == "per_layer":
            past, present = past[1:], present[1:]
        past_names, present_names = cache_names(self.kv_layout, self.layers)
        ins += [TensorSpec(n, "float32", past) for n in past_names]
        outs = [TensorSpec("logits", "float32", d["logits"])] + [TensorSpec(n, "float32", present)
                                                                  for n in present_names]
        return ins, outs

    def longest_static_len(self) -> int:
        """The longest static prefill: it must leave DECODE_ROOM positions to decode into."""
        return self.max_positions - DECODE_ROOM

    validating = "validating against the reference with and without the KV cache"
    shape_label = "[batch, past, new] "

    def write_tokenizer(self, ref, lowered, static: tuple | None, out: Path, steps) -> tuple:
        """-> (TokenizerInfo or None, the manifest's `decoder` block); see export/decoders.py."""
        from edgeport.export import decoders

        return decoders.tokenizer_and_info(ref, self, lowered, static is not None, out, steps)

    def validate(self, ref, path: Path, lowered, static: tuple | None, block) -> list:
        """Parity through the KV cache with the runtime's decoder backend (export/decoders.py)."""
        from edgeport.export import decoders

        return decoders.validate(ref, path, self, block, static)

    def max_sequence_length(self, static: tuple | None, block) -> int:
        """The longest sequence the artifact runs (the decoder block's max_tokens)."""
        return block["max_tokens"]


def decoder_contract(ref) -> DecoderContract:
    """The text-generation contract of a loaded decoder reference; EdgeportError for other tasks."""
    if ref.task != "text-generation":
        raise EdgeportError(f"decoder export supports the text-generation task (got '{ref.task}')")
    L, KV, D = ref.model.backbone.cache_dims
    cfg = ref.config
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions")
    return DecoderContract(L, KV, D, cfg.vocab_size, max_pos, getattr(cfg, "sliding_window", None))


def contract_for(ref) -> Contract | DecoderContract:
    """The contract for a loaded reference: a decoder's for text-generation families, LUKE's entity
    contract for a task model that reads entities, else the encoder's."""
    if "text-generation" in ref.family.tasks and ref.task == "text-generation":
        return decoder_contract(ref)  # a decoder's classifier takes (B, S) ids and mask: the encoder contract
    if getattr(ref.model, "reads_entities", False):  # LUKE's entity tasks: words + entities (export/luke.py)
        from edgeport.export.luke import entity_contract

        return entity_contract(ref)
    hidden = getattr(ref.config, "hidden_size", None) or getattr(ref.config, "n_embd")
    names = getattr(ref.model, "input_names", None)
    names = names() if callable(names) else names
    return encoder_contract(ref.config, ref.task, hidden, names)
