"""LUKE (https://arxiv.org/abs/2010.01057) and mLUKE (https://arxiv.org/abs/2110.08151): a RoBERTa
encoder that also reads entities. mLUKE is the same architecture with XLM-R's vocabulary.

    words    (B, S): word + RoBERTa position + token type embeddings
    entities (B, E): entity embedding (optionally projected entity_emb_size -> hidden) + the mean of
                     the position embeddings of the mention's word positions (entity_position_ids
                     (B, E, M), -1 = none) + token type embeddings
    encoder: BERT's post-LN layers over the concatenated (B, S + E) sequence; entity-aware
             self-attention gives word->word, word->entity, entity->word and entity->entity scores
             their own query projections (`use_entity_aware_attention`), else one query for all.

BERT's blocks (`bert.py`) are reused; LUKE adds the entity embeddings, the four-query attention and
the entity heads. Names follow transformers' Luke* classes so HF checkpoints load as is. The runtime
tokenizer that makes the entity inputs is edgeport/runtime/luke_tokenizer.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.reference_models.bert import BertConfig, Embeddings, Intermediate, Pooler, ResidualOutput
from edgeport.reference_models.blocks import activation, additive_mask, attention, init_weights
from edgeport.reference_models.heads import head_for, register_head
from edgeport.reference_models.registry import ENCODER_TASKS, register_family

# LUKE's entity heads (transformers' LukeForEntity*Classification), in the shared head registry. They read
# the entity states: the first entity, the first two concatenated, or every entity with the word states
# at its mention's first and last token.
register_head("entity-classification", outputs=("logits",), reads="entities", attr="classifier",
              module=lambda hidden, labels: nn.Linear(hidden, labels),
              dims=lambda cfg, h: {"logits": ["batch", cfg.num_labels]})
register_head("entity-pair-classification", outputs=("logits",), reads="entities", attr="classifier",
              module=lambda hidden, labels: nn.Linear(2 * hidden, labels, bias=False),
              dims=lambda cfg, h: {"logits": ["batch", cfg.num_labels]})
register_head("entity-span-classification", outputs=("logits",), reads="entities", attr="classifier",
              module=lambda hidden, labels: nn.Linear(3 * hidden, labels),
              dims=lambda cfg, h: {"logits": ["batch", "entities", cfg.num_labels]})

ENTITY_TASKS = ("entity-classification", "entity-pair-classification", "entity-span-classification")
TASKS = ENCODER_TASKS + ("multiple-choice",) + ENTITY_TASKS
# Tasks whose graph reads entities (the others are RoBERTa-like and take words only).
ENTITY_INPUT_TASKS = ("feature-extraction", "fill-mask") + ENTITY_TASKS
# LUKE's own outputs where they differ from the shared heads': entity states and entity predictions too.
ENTITY_OUTPUTS = {
    "feature-extraction": ("last_hidden_state", "entity_last_hidden_state"),
    "fill-mask": ("logits", "entity_logits"),
}


@dataclass
class LukeConfig(BertConfig):
    model_type = "luke"
    vocab_size: int = 50267
    entity_vocab_size: int = 500000
    entity_emb_size: int = 256  # entity embedding width; projected to hidden_size when they differ
    use_entity_aware_attention: bool = True  # four query projections (w2w, w2e, e2w, e2e) or one
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1  # RoBERTa's <pad>; word positions count from pad_token_id + 1

    @property
    def max_words(self) -> int:
        """The longest word sequence the position table embeds: RoBERTa-style positions run from
        pad_token_id + 1 (WordEmbeddings), so max_position_embeddings - pad_token_id - 1 (514 -> 512, the
        model_max_length of LUKE's released tokenizers). The export contracts' max_positions."""
        return self.max_position_embeddings - self.pad_token_id - 1


PRESETS = {
    # https://huggingface.co/studio-ousia/luke-base/blob/main/config.json
    "luke-base": {"model_type": "luke"},
    # studio-ousia/mluke-base: XLM-R base vocabulary (250002 + <ent>, <ent2>) and 1.2M entities, as in the
    # config of checkpoints fine-tuned from it (e.g. huggingface.co/LumousInTheWild/exp_acha_mluke_base_last)
    "mluke-base": {"model_type": "luke", "vocab_size": 250004, "entity_vocab_size": 1200001},
    "luke-tiny": {"model_type": "luke", "vocab_size": 1024, "entity_vocab_size": 64, "entity_emb_size": 16,
                  "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                  "max_position_embeddings": 130},
}


class WordEmbeddings(Embeddings):
    """BERT's embeddings with RoBERTa's positions: pad_token_id + 1 + the index among non-pad tokens
    (pad tokens get pad_token_id)."""

    def __init__(self, cfg: LukeConfig):
        super().__init__(cfg)
        self.pad = cfg.pad_token_id

    def forward(self, input_ids, token_type_ids):
        real = (input_ids != self.pad).long()
        positions = torch.cumsum(real, dim=1) * real + self.pad  # (B, S)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions))


class EntityEmbeddings(nn.Module):
    """entity (+ dense) + mean position embedding over the mention + token type, then LayerNorm."""

    def __init__(self, cfg: LukeConfig):
        super().__init__()
        self.entity_embeddings = nn.Embedding(cfg.entity_vocab_size, cfg.entity_emb_size)
        if cfg.entity_emb_size != cfg.hidden_size:
            self.entity_embedding_dense = nn.Linear(cfg.entity_emb_size, cfg.hidden_size, bias=False)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, entity_ids, entity_position_ids, entity_token_type_ids):
        e = self.entity_embeddings(entity_ids)  # (B, E, Ee)
        if hasattr(self, "entity_embedding_dense"):
            e = self.entity_embedding_dense(e)  # (B, E, H)
        used = (entity_position_ids != -1).to(e.dtype).unsqueeze(-1)  # (B, E, M, 1)
        pos = self.position_embeddings(entity_position_ids.clamp(min=0)) * used  # (B, E, M, H)
        pos = pos.sum(dim=-2) / used.sum(dim=-2).clamp(min=1e-7)  # (B, E, H): mean over the mention
        return self.LayerNorm(e + pos + self.token_type_embeddings(entity_token_type_ids))


class EntityAwareSelfAttention(nn.Module):
    """Self-attention over (B, S + E, H) = words then entities. Entity-aware: words query words with
    `query` and entities with `w2e_query`; entities query words with `e2w_query` and entities with
    `e2e_query`. Keys and values are shared. Plain form (or no entities): `query` for everything."""

    def __init__(self, cfg: LukeConfig):
        super().__init__()
        H = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.entity_aware = cfg.use_entity_aware_attention
        if self.entity_aware:
            self.w2e_query, self.e2w_query, self.e2e_query = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)

    def _split(self, x):  # (B, T, H*D) -> (B, H, T, D)
        B, T, HD = x.shape
        return x.view(B, T, self.heads, HD // self.heads).transpose(1, 2)

    def forward(self, x, bias, words: int):
        if not self.entity_aware or words == x.shape[1]:
            return attention(self.query(x), self.key(x), self.value(x), bias, self.heads)
        w, e = x[:, :words], x[:, words:]
        k, v = self._split(self.key(x)), self._split(self.value(x))  # (B, h, S+E, D)
        kw, ke = k[:, :, :words], k[:, :, words:]
        w_rows = torch.cat([self._split(self.query(w)) @ kw.transpose(2, 3),
                            self._split(self.w2e_query(w)) @ ke.transpose(2, 3)], dim=3)  # (B, h, S, S+E)
        e_rows = torch.cat([self._split(self.e2w_query(e)) @ kw.transpose(2, 3),
                            self._split(self.e2e_query(e)) @ ke.transpose(2, 3)], dim=3)  # (B, h, E, S+E)
        scores = torch.cat([w_rows, e_rows], dim=2) / math.sqrt(k.shape[-1]) + bias  # (B, h, S+E, S+E)
        out = torch.softmax(scores, dim=-1) @ v  # (B, h, S+E, D)
        B, h, T, D = out.shape
        return out.transpose(1, 2).reshape(B, T, h * D)


class Attention(nn.Module):
    def __init__(self, cfg: LukeConfig):
        super().__init__()
        self.self = EntityAwareSelfAttention(cfg)
        self.output = ResidualOutput(cfg, cfg.hidden_size)

    def forward(self, x, bias, words: int):
        return self.output(self.self(x, bias, words), x)


class Layer(nn.Module):
    """BERT's post-LN layer with the entity-aware attention (words and entities share the FFN)."""

    def __init__(self, cfg: LukeConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = ResidualOutput(cfg, cfg.intermediate_size)

    def forward(self, x, bias, words: int):
        a = self.attention(x, bias, words)
        return self.output(self.intermediate(a), a)


class Luke(nn.Module):
    """Backbone: words (B, S) [+ entities (B, E)] -> (word states (B, S, H), entity states (B, E, H)
    or None, pooled (B, H) or None)."""

    def __init__(self, cfg: LukeConfig, pooler: bool):
        super().__init__()
        self.embeddings = WordEmbeddings(cfg)
        self.entity_embeddings = EntityEmbeddings(cfg)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        if pooler:
            self.pooler = Pooler(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids=None, entity_ids=None, entity_attention_mask=None,
                entity_token_type_ids=None, entity_position_ids=None):
        zeros = torch.zeros_like
        x = self.embeddings(input_ids, token_type_ids if token_type_ids is not None else zeros(input_ids))
        S, mask = input_ids.shape[1], attention_mask
        if entity_ids is not None:
            types = entity_token_type_ids if entity_token_type_ids is not None else zeros(entity_ids)
            ent_mask = entity_attention_mask if entity_attention_mask is not None else torch.ones_like(entity_ids)
            x = torch.cat([x, self.entity_embeddings(entity_ids, entity_position_ids, types)], dim=1)  # (B, S+E, H)
            mask = torch.cat([attention_mask, ent_mask.to(attention_mask.dtype)], dim=1)
        bias = additive_mask(mask, x.dtype)  # (B, 1, 1, S+E)
        for layer in self.encoder.layer:
            x = layer(x, bias, S)
        words, ents = x[:, :S], (x[:, S:] if entity_ids is not None else None)
        return words, ents, (self.pooler(words) if hasattr(self, "pooler") else None)


class LMHead(nn.Module):
    """`lm_head`: RoBERTa's MLM head (dense, gelu, layer_norm, decoder + bias): (B, S, H) -> (B, S, V).

    The decoder is its own Linear: transformers 5.x keeps it apart from the word embeddings (4.x tied
    them and saved neither `lm_head.decoder.weight` nor `.bias`; LukeForTask.TIED_FALLBACKS fills them)."""

    def __init__(self, cfg: LukeConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    def forward(self, h):
        return self.decoder(self.layer_norm(F.gelu(self.dense(h))))


class EntityPredictionHead(nn.Module):
    """`entity_predictions`: transform (dense H -> Ee, act, LayerNorm), then scores against the tied
    entity embeddings + bias: (B, E, H) -> (B, E, entity_vocab_size)."""

    def __init__(self, cfg: LukeConfig, entity_embeddings: nn.Embedding):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(cfg.hidden_size, cfg.entity_emb_size)
        self.transform.LayerNorm = nn.LayerNorm(cfg.entity_emb_size, eps=cfg.layer_norm_eps)
        self.act = activation(cfg.hidden_act)
        self.bias = nn.Parameter(torch.zeros(cfg.entity_vocab_size))
        self.entity_embeddings = [entity_embeddings]  # tied, not registered twice

    def forward(self, h):
        t = self.transform.LayerNorm(self.act(self.transform.dense(h)))
        return F.linear(t, self.entity_embeddings[0].weight, self.bias)


class LukeForTask(nn.Module):
    """The backbone under `luke` plus one task head (transformers' LukeFor* heads).

    Inputs (int64): input_ids, attention_mask[, token_type_ids] (B, S), or (B, C, S) for
    multiple-choice; entity tasks, fill-mask and feature-extraction also entity_ids,
    entity_attention_mask[, entity_token_type_ids] (B, E), entity_position_ids (B, E, M);
    entity-span-classification also entity_start_positions, entity_end_positions (B, E).
    token_type_ids appear only when type_vocab_size > 1 (LUKE's checkpoints have 1).
    Outputs (float32): ENTITY_OUTPUTS for feature-extraction and fill-mask (with entity inputs; the
    word output alone without them), else the shared head registry's (heads.py): entity-classification
    and entity-pair-classification logits (B, labels), entity-span-classification (B, E, labels).
    """

    prefix = "luke"
    HEAD_PREFIXES = ("lm_head.", "entity_predictions.", "classifier.", "qa_outputs.", "luke.pooler.")
    # Checkpoints saved with tied weights (transformers 4.x, tie_word_embeddings) lack these: use the source.
    TIED_FALLBACKS = {"lm_head.decoder.weight": "luke.embeddings.word_embeddings.weight",
                      "lm_head.decoder.bias": "lm_head.bias"}

    def __init__(self, cfg: LukeConfig, task: str):
        super().__init__()
        self.task, self.cfg = task, cfg
        self.luke = Luke(cfg, pooler=task in ("text-classification", "multiple-choice"))
        if task not in TASKS:
            raise EdgeportError(f"unknown task '{task}' for luke; tasks: {', '.join(TASKS)}")
        self.head = head_for(task)
        if task == "fill-mask":
            self.lm_head = LMHead(cfg)
            self.entity_predictions = EntityPredictionHead(cfg, self.luke.entity_embeddings.entity_embeddings)
        elif task != "feature-extraction":
            self.add_module(self.head.attr, self.head.module(cfg.hidden_size, cfg.num_labels))

    @property
    def reads_entities(self) -> bool:
        """True when the task graph takes entity inputs (export: edgeport/export/luke.py's contract)."""
        return self.task in ENTITY_INPUT_TASKS

    def head_prefixes(self) -> tuple:
        return self.HEAD_PREFIXES

    def input_names(self) -> tuple:
        """The inputs this task's graph takes, in positional order (class docstring)."""
        types = self.cfg.type_vocab_size > 1
        names = ("input_ids", "attention_mask") + (("token_type_ids",) if types else ())
        if self.task in ENTITY_INPUT_TASKS:
            names += ("entity_ids", "entity_attention_mask") + (("entity_token_type_ids",) if types else ())
            names += ("entity_position_ids",)
        if self.task == "entity-span-classification":
            names += ("entity_start_positions", "entity_end_positions")
        return names

    def forward(self, *args, **feeds):
        """Positional inputs in `input_names()` order (what exporters pass), or by keyword (any of the
        names in the class docstring; absent ones as transformers treats them)."""
        feeds.update(zip(self.input_names(), args))
        return self._forward(**feeds)

    def _forward(self, input_ids, attention_mask, token_type_ids=None, entity_ids=None, entity_attention_mask=None,
                 entity_token_type_ids=None, entity_position_ids=None, entity_start_positions=None,
                 entity_end_positions=None):
        if self.head.choices:  # (B, C, S) -> rows (B*C, S) -> scores (B, C)
            B, C, S = input_ids.shape
            flat = [t.reshape(B * C, S) if t is not None else None for t in (input_ids, attention_mask, token_type_ids)]
            return (self.classifier(self.luke(*flat)[2]).view(B, C),)
        if self.task in ENTITY_TASKS and entity_ids is None:
            raise EdgeportError(f"{self.task} needs entity inputs (entity_ids, entity_position_ids)")
        words, ents, pooled = self.luke(input_ids, attention_mask, token_type_ids, entity_ids, entity_attention_mask,
                                        entity_token_type_ids, entity_position_ids)
        return self._head(words, ents, pooled, entity_start_positions, entity_end_positions)

    def _head(self, words, ents, pooled, starts, ends) -> tuple:
        t = self.task
        if t == "feature-extraction":
            return (words,) if ents is None else (words, ents)
        if t == "fill-mask":
            return (self.lm_head(words),) if ents is None else (self.lm_head(words), self.entity_predictions(ents))
        if self.head.reads == "entities":
            return (self.classifier(entity_features(t, words, ents, starts, ends)),)
        y = pooled if self.head.reads == "pooled" else words
        return self.head.finish(getattr(self, self.head.attr)(y))


def entity_features(task: str, words, ents, starts, ends):
    """What each entity head classifies: the first entity (B, H); the first two (B, 2H); per entity the
    word states at its mention's first and last token and its own state (B, E, 3H)."""
    if task == "entity-classification":
        return ents[:, 0]
    if task == "entity-pair-classification":
        return torch.cat([ents[:, 0], ents[:, 1]], dim=-1)
    H = words.shape[-1]
    start = torch.gather(words, 1, starts.unsqueeze(-1).expand(-1, -1, H))  # (B, E, H)
    end = torch.gather(words, 1, ends.unsqueeze(-1).expand(-1, -1, H))
    return torch.cat([start, end, ents], dim=-1)


@register_family("luke", config=LukeConfig, presets=PRESETS, tasks=TASKS, default_task="entity-classification")
def build(cfg: LukeConfig, task: str) -> LukeForTask:
    """LUKE / mLUKE for `task` under HF's prefix `luke`, HF-style random init."""
    model = LukeForTask(cfg, task)
    init_weights(model, cfg.initializer_range)
    return model.eval()
