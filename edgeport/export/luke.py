"""LUKE / mLUKE export: the entity inputs' contract, their sample feeds, the parity grid, the tokenizer files.

`EntityContract` plugs into the one export pipeline (export.export_reference) as the encoder and decoder
contracts do: `contracts.contract_for` returns it for a task model that reads entities. Inputs (int64 for
ONNX, int32 for TFLite), dims as the manifest records them:

    input_ids, attention_mask[, token_type_ids]           (batch, sequence)
    entity_ids, entity_attention_mask[,
      entity_token_type_ids]                              (batch, entities)
    entity_position_ids                                   (batch, entities, mention)   -1 = no position
    entity_start_positions, entity_end_positions          (batch, entities)   entity-span-classification

ONNX keeps every one of those axes dynamic; TFLite fixes them at export time (entities: 1 for
entity-classification, 2 for entity-pair-classification, STATIC_ENTITIES otherwise; mention: the
tokenizer's max_mention_length). Word-only tasks (text/token classification, question answering,
multiple choice) use the plain encoder contract. Parity is checked over word and entity lengths
(`grid`), with padded words and padded entities in the padded rows.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeport.errors import ParityError
from edgeport.manifest import ParityCheck, TensorSpec, TokenizerInfo

STATIC_ENTITIES = 16  # TFLite entity slots for span classification, fill-mask and feature-extraction
DEFAULT_MENTION = 30  # transformers' LukeTokenizer default max_mention_length
MIN_ENTITIES = {"entity-pair-classification": 2}  # the head reads entities 0 and 1
TOKENIZER_FILES = ("sentencepiece.bpe.model", "vocab.json", "merges.txt", "entity_vocab.json",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
_DIMS = {"sequence": ("batch", "sequence"), "entities": ("batch", "entities"),
         "mention": ("batch", "entities", "mention")}
_INPUT_AXES = {"entity_position_ids": "mention"}  # others: entity_* -> entities, word inputs -> sequence


def input_dims(name: str) -> tuple:
    """Symbolic dims of one LUKE input."""
    kind = _INPUT_AXES.get(name) or ("entities" if name.startswith("entity_") else "sequence")
    return _DIMS[kind]


@dataclass
class EntityContract:
    """The I/O contract of a LUKE task graph with entity inputs (the encoder Contract's interface:
    names, dynamic axes, sample args, manifest specs, tolerance)."""

    inputs: list
    output_dims: dict  # output name -> dims (ints or symbolic names)
    vocab_size: int
    entity_vocab_size: int
    type_vocab_size: int
    max_positions: int  # word positions the model can embed (RoBERTa: the table minus pad + 1)
    pad_token_id: int
    min_entities: int = 1
    static_entities: int = STATIC_ENTITIES
    mention: int = DEFAULT_MENTION
    atol: float = 1e-4
    rtol: float = 1e-4
    kind = "entity-encoder"
    share_transposed: bool = True
    notes: dict = field(default_factory=dict)

    @property
    def outputs(self) -> list:
        return list(self.output_dims)

    input_names = property(lambda self: list(self.inputs))
    output_names = property(lambda self: list(self.output_dims))

    def dynamic_axes(self) -> dict:
        axes = {n: dict(enumerate(input_dims(n))) for n in self.inputs}
        for name, dims in self.output_dims.items():
            axes[name] = {i: d for i, d in enumerate(dims) if isinstance(d, str)}
        return axes

    def sample_args(self) -> tuple:
        """torch int64 feeds at batch 2, length 16, 3 entities, one padded row (what torch.onnx traces)."""
        feeds = sample_feeds(self, 2, 16, max(3, self.min_entities), padded_rows=1)
        return tuple(torch.from_numpy(feeds[n]) for n in self.inputs)

    def _fix(self, static) -> dict:
        if not static:
            return {}
        batch, seq = static[:2]
        return {"batch": batch, "sequence": seq, "entities": self.static_entities, "mention": self.mention}

    def input_specs(self, dtype: str, batch=None, seq=None) -> list:
        """Manifest TensorSpecs of the inputs; batch/seq given = static (entities and mention fixed too)."""
        fix = self._fix((batch, seq) if batch else None)
        return [TensorSpec(n, dtype, [fix.get(d, d) for d in input_dims(n)]) for n in self.inputs]

    def output_specs(self, batch=None, seq=None) -> list:
        """Manifest TensorSpecs of the float32 outputs; batch/seq given = static."""
        fix = self._fix((batch, seq) if batch else None)
        return [TensorSpec(n, "float32", [fix.get(d, d) if isinstance(d, str) else d for d in dims])
                for n, dims in self.output_dims.items()]

    def io_specs(self, dtype: str, static: tuple | None) -> tuple:
        """(inputs, outputs) TensorSpecs; `static` = (batch, seq) fixes every axis."""
        fix = static or (None, None)
        return self.input_specs(dtype, *fix), self.output_specs(*fix)

    def longest_static_len(self) -> int:
        """The longest word sequence the RoBERTa positions allow (the table minus pad_token_id + 1)."""
        return self.max_positions

    def sample_inputs(self, batch: int, seq: int, padded_rows: int, seed: int = 0) -> dict:
        """validate.sample_inputs for this contract: `sample_feeds` with the static entity slots."""
        return sample_feeds(self, batch, seq, self.static_entities, padded_rows, seed)

    validating = "validating against the reference over word and entity lengths"
    shape_label = "[batch, sequence, entities] "

    def write_tokenizer(self, ref, lowered, static, out: Path, steps) -> tuple:
        """The LUKE tokenizer files -> (TokenizerInfo or None, None)."""
        tok = write_tokenizer(ref.folder, out)
        if tok is None:
            steps.note("warning: no LUKE tokenizer files (entity_vocab.json, ...); the runtime pipelines need them")
        return tok, None

    def validate(self, ref, path: Path, lowered, static, block) -> list:
        """Parity over `grid` through the runtime's Session; ParityError on a miss."""
        from edgeport.export.validate import validation_session

        return check(ref.model, validation_session(path, lowered.validation), self, grid(self, static))

    def max_sequence_length(self, static, block) -> int:
        """The manifest's max_sequence_length: the static length, else the positions."""
        return static[1] if static else self.max_positions


def entity_contract(ref, mention: int | None = None) -> EntityContract:
    """The contract of a loaded LUKE reference whose task reads entities (ENTITY_INPUT_TASKS)."""
    from edgeport.reference_models.heads import output_dims

    cfg, task, H = ref.config, ref.task, ref.config.hidden_size
    own = {  # LUKE's outputs beyond the shared heads' (reference_models/luke.py ENTITY_OUTPUTS)
        "feature-extraction": {"last_hidden_state": ["batch", "sequence", H],
                               "entity_last_hidden_state": ["batch", "entities", H]},
        "fill-mask": {"logits": ["batch", "sequence", cfg.vocab_size],
                      "entity_logits": ["batch", "entities", cfg.entity_vocab_size]},
    }
    outs = own[task] if task in own else output_dims(task, cfg, H)
    static_e = {"entity-classification": 1, "entity-pair-classification": 2}.get(task, STATIC_ENTITIES)
    return EntityContract(list(ref.model.input_names()), outs, cfg.vocab_size, cfg.entity_vocab_size,
                          cfg.type_vocab_size, cfg.max_words, cfg.pad_token_id,
                          MIN_ENTITIES.get(task, 1), static_e, mention or tokenizer_mention(ref.folder))


def tokenizer_mention(folder) -> int:
    """max_mention_length from the checkpoint's tokenizer_config.json (default 30)."""
    cfg = Path(folder) / "tokenizer_config.json" if folder is not None else None
    if cfg is not None and cfg.is_file():
        return int(json.loads(cfg.read_text(encoding="utf-8")).get("max_mention_length") or DEFAULT_MENTION)
    return DEFAULT_MENTION


def sample_feeds(c: EntityContract, batch: int, seq: int, entities: int, padded_rows: int, seed: int = 0) -> dict:
    """Random words and entities. Padded rows (the last `padded_rows`) keep a shorter word prefix
    and pad their last entity slot (id [PAD] 0, mask 0, positions -1, start/end 0). Every real
    entity mentions 1-3 real word positions (the first is never <s> at 0), -1 beyond."""
    rng = np.random.default_rng(seed + 7919 * batch + 31 * seq + entities)
    ids = rng.integers(c.pad_token_id + 1, c.vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    ent_ids = rng.integers(1, c.entity_vocab_size, size=(batch, entities), dtype=np.int64)
    ent_mask = np.ones((batch, entities), np.int64)
    pos = np.full((batch, entities, c.mention), -1, np.int64)
    starts, ends = np.zeros((batch, entities), np.int64), np.zeros((batch, entities), np.int64)
    for r in range(batch):
        keep = seq if r < batch - padded_rows else max(2, seq // (2 + r))
        mask[r, keep:], ids[r, keep:] = 0, c.pad_token_id
        real = entities - (1 if r >= batch - padded_rows and entities > c.min_entities else 0)
        ent_mask[r, real:], ent_ids[r, real:] = 0, 0
        for e in range(real):
            a = int(rng.integers(1, max(2, keep - 1)))
            n = int(min(rng.integers(1, 4), keep - a, c.mention))
            pos[r, e, :n] = np.arange(a, a + n)
            starts[r, e], ends[r, e] = a, a + n - 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
             "entity_ids": ent_ids, "entity_attention_mask": ent_mask, "entity_token_type_ids": np.zeros_like(ent_ids),
             "entity_position_ids": pos, "entity_start_positions": starts, "entity_end_positions": ends}
    if c.type_vocab_size > 1:
        feeds["token_type_ids"][:, seq // 2:] = 1
    return {n: feeds[n] for n in c.inputs}


def grid(c: EntityContract, static: tuple | None) -> list:
    """(batch, seq, entities, padded_rows): each word length with two entity counts, batch 1 unpadded
    and batch 3 with two padded rows. Static artifacts: their one shape, unpadded and padded."""
    if static:
        batch, seq = static[:2]
        return [(batch, seq, c.static_entities, 0), (batch, seq, c.static_entities, batch)]
    lengths = [s for s in (8, 37, 128) if s <= c.max_positions] or [c.max_positions]
    e0 = c.min_entities
    points = []
    for i, s in enumerate(lengths):
        points += [(1, s, e0 + i, 0), (3, s, e0 + 2 + i, 2)]
    return points


def check(model, session, c: EntityContract, points: list) -> list:
    """Every output at every grid point vs the reference; ParityError names the worst miss."""
    from edgeport.export.validate import raise_on_misses

    checks = []
    for batch, seq, ents, padded in points:
        feeds = sample_feeds(c, batch, seq, ents, padded)
        with torch.inference_mode():
            want = model(**{n: torch.from_numpy(v) for n, v in feeds.items()})
        got = session.run(feeds)
        for name, w in zip(c.outputs, want):
            w = w.float().numpy()
            if name not in got:
                raise ParityError(f"artifact has no output '{name}' (it has {', '.join(got)})")
            if got[name].shape != w.shape:
                raise ParityError(f"shape mismatch on '{name}' at [batch, sequence, entities] {[batch, seq, ents]}: "
                                  f"artifact {list(got[name].shape)}, reference {list(w.shape)}")
            diff = float(np.max(np.abs(got[name].astype(np.float64) - w)))
            tol = c.atol + c.rtol * float(np.max(np.abs(w)))
            checks.append(ParityCheck(name, [batch, seq, ents], padded, diff, tol, bool(diff <= tol)))
    return raise_on_misses(checks, "[batch, sequence, entities]")


def write_tokenizer(folder: Path | None, out: Path) -> TokenizerInfo | None:
    """Copy the LUKE/mLUKE tokenizer files (runtime/luke_tokenizer.py reads them); None when the
    checkpoint has none (a preset)."""
    if folder is None or not (Path(folder) / "entity_vocab.json").is_file():
        return None
    from edgeport.runtime.luke_tokenizer import LukeTokenizer

    tok = LukeTokenizer.from_folder(folder)  # refuses incomplete files before they are shipped
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(folder) / name).is_file():
            shutil.copy2(Path(folder) / name, out / name)
            copied.append(name)
    mask = "<mask>" if "<mask>" in tok.specials else None
    return TokenizerInfo(file="entity_vocab.json", pad_token_id=tok.pad_id, mask_token=mask, extra_files=copied,
                         kind="luke")
