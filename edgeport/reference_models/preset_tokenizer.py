"""A tokenizer for presets (random weights, no tokenizer files): byte-level, fit to the preset's vocabulary.

Every export `edgeport list` offers must run in `edgeport run` / `generate`; a preset has no tokenizer
files, so it gets this one: the 256 byte symbols of byte-level BPE (GPT-2's byte-to-unicode alphabet, no
merges: one token per UTF-8 byte, so any text encodes and decodes back exactly), the special tokens its
task needs at the ids the config names, and `<unused_N>` filling the rest of the vocabulary. The ids mean
nothing to the random weights: it exists so the pipelines and generation run end to end on presets.
"""

from __future__ import annotations

from edgeport.errors import EdgeportError
from edgeport.manifest import TokenizerInfo

ENCODER_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DECODER_SPECIALS = ("<|endoftext|>",)


def byte_level_tokenizer(vocab_size: int, encoder: bool, pad_id: int = 0):
    """-> tokenizers.Tokenizer over `vocab_size` ids: the first special token ([PAD] for encoders,
    <|endoftext|> for decoders) at `pad_id`, the other specials then the 256 byte symbols at the lowest
    free ids, `<unused_N>` after. Encoders get BERT's template ([CLS] A [SEP] (B [SEP])).
    Raises EdgeportError when the vocabulary is too small (< 256 + specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel

    specials = ENCODER_SPECIALS if encoder else DECODER_SPECIALS
    alphabet = sorted(ByteLevel.alphabet())  # the 256 symbols standing for bytes
    if vocab_size < len(specials) + len(alphabet) or not 0 <= pad_id < vocab_size:
        raise EdgeportError(f"a preset vocabulary of {vocab_size} (pad id {pad_id}) is too small for a byte-level "
                            f"tokenizer ({len(specials) + len(alphabet)} ids needed)")
    free = (i for i in range(vocab_size) if i != pad_id)
    vocab = {specials[0]: pad_id}
    vocab.update({tok: next(free) for tok in specials[1:] + tuple(alphabet)})
    vocab.update({f"<unused_{i}>": i for i in free})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]" if encoder else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(specials))
    if encoder:
        cls, sep = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def write_preset_tokenizer(vocab_size: int, out_dir, encoder: bool, pad_id: int = 0) -> TokenizerInfo:
    """Write `byte_level_tokenizer(...)` as out_dir/tokenizer.json -> the manifest's TokenizerInfo."""
    tok = byte_level_tokenizer(vocab_size, encoder, pad_id)
    tok.save(str(out_dir / "tokenizer.json"))
    return TokenizerInfo(file="tokenizer.json", pad_token_id=pad_id, mask_token="[MASK]" if encoder else None)
