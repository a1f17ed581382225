"""Golden tokenizer outputs for LUKE and mLUKE, made once with transformers 4.57.6.

transformers 5.x is reported to put <s> where LukeTokenizer / MLukeTokenizer's <ent> and <ent2> markers
go in the entity task modes; on the files made here 5.23's MLukeTokenizer does not load a 4.57-saved
folder and its LukeTokenizer raises when truncating. 4.57.6's tokenizers are the original slow ones. This
script builds a throwaway venv with that release and, inside it:

1. builds two small vocabularies from the multilingual corpus below and saves them with the
   transformers tokenizer's own `save_pretrained`, into tests/golden/luke/<family>/:
     mluke  a sentencepiece BPE model (identity normalisation, XLM-R's id layout: unk 0, <s> 1, </s> 2)
            + entity_vocab.json with language-prefixed names ("en:Tokyo"), as MLukeTokenizer reads them
     luke   a byte-level BPE (vocab.json + merges.txt, trained with `tokenizers`) + entity_vocab.json
2. saves a tiny mLUKE entity-classification checkpoint (random weights, seeded) with that tokenizer
   into tests/golden/luke/mluke-tiny-entity-classification/: the export, pipeline and CLI tests and
   the README example use it as a real checkpoint folder;
3. runs every case of CASES through the 4.57.6 tokenizer of each family and writes cases.json:
     [{"name", "family", "task", "call": {the tokenizer's keyword arguments}, "init": {constructor
       overrides}, "expected": {output name: nested lists of ints}}]

Usage: python scripts/make_luke_golden.py [--venv /tmp/hf457-luke] [--out tests/golden/luke]
The venv: python3.11 -m venv DIR; DIR/bin/pip install torch==2.13.0 transformers==4.57.6 sentencepiece tokenizers
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch==2.13.0", "transformers==4.57.6", "sentencepiece", "tokenizers")

CORPUS = [
    "Beyoncé lives in Los Angeles.", "Tokyo is the capital of Japan.", "Moscow is the capital of Russia.",
    "New York City is the largest city in the United States.", "Cairo is the capital of Egypt.",
    "The quick brown fox jumps over the lazy dog.", "Paris and Berlin are cities in Europe.",
    "東京は日本の首都です。", "大阪は日本の都市です。", "Москва — столица России.", "Санкт-Петербург — город в России.",
    "القاهرة هي عاصمة مصر", "Ελλάδα και Αθήνα", "Zürich, München und Köln liegen in Europa.",
    "Numbers like 2024 and 3.14 appear in text.", "She said: it's what they'd done, isn't it?",
]

ENTITIES = {  # the four special entities first, as LUKE's vocabularies have them
    "mluke": ["[PAD]", "[UNK]", "[MASK]", "[MASK2]", "en:Tokyo", "en:Japan", "en:Beyoncé", "en:Los Angeles",
              "en:Moscow", "ja:東京", "ja:日本", "ru:Москва", "ru:Россия", "ar:القاهرة", "ar:مصر"],
    "luke": ["[PAD]", "[UNK]", "[MASK]", "[MASK2]", "Tokyo", "Japan", "Beyoncé", "Los Angeles", "Moscow",
             "Russia", "Cairo", "Egypt", "New York City"],
}

BEY = "Beyoncé lives in Los Angeles."
LONG = "Tokyo is the capital of Japan and Moscow is the capital of Russia, and Cairo is the capital of Egypt."


def every_word_span(text: str) -> list:
    """All (start, end) spans over whole words: what entity-span classification (NER) enumerates."""
    import re

    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    return [(s, e) for i, (s, _) in enumerate(words) for (_, e) in words[i:]]


# name -> (families, task, call). Spans are given as substrings (their first occurrence) or (start, end);
# "entities" may be a dict per family. "batch": a list of texts/spans called as one batch.
CASES = {
    "words-only": (("mluke", "luke"), None, dict(text="Tokyo is the capital of Japan.")),
    "words-with-mask-token": (("mluke", "luke"), None, dict(text="Tokyo is the <mask> of Japan.")),
    "spans-masked-entities": (("mluke", "luke"), None, dict(text=BEY, entity_spans=["Beyoncé", "Los Angeles"])),
    "spans-named-entities": (("mluke", "luke"), None, dict(
        text=BEY, entity_spans=["Beyoncé", "Los Angeles"],
        entities={"mluke": ["en:Beyoncé", "en:Nowhere"], "luke": ["Beyoncé", "Nowhere"]})),
    "spans-nested-none-mode": (("mluke", "luke"), None, dict(
        text="New York City is the largest city.", entity_spans=["New York City", "New York", "York City"])),
    "span-whole-text": (("mluke", "luke"), None, dict(text="Japan", entity_spans=[(0, 5)])),
    "span-inside-a-word": (("mluke", "luke"), None, dict(text="Tokyoites love Tokyo.", entity_spans=[(0, 5)])),
    "pair-with-spans": (("mluke", "luke"), None, dict(
        text="Tokyo is in Japan.", text_pair="Moscow is the capital of Russia.", entity_spans=["Tokyo", "Japan"],
        entity_spans_pair=["Moscow"], entities={"mluke": ["en:Tokyo", "en:Japan"], "luke": ["Tokyo", "Japan"]},
        entities_pair={"mluke": ["en:Moscow"], "luke": ["Moscow"]})),
    "pair-without-spans": (("mluke", "luke"), None, dict(text="Tokyo is in Japan.", text_pair="Cairo is in Egypt.")),
    "entity-classification-first": (("mluke", "luke"), "entity_classification",
                                    dict(text=BEY, entity_spans=["Beyoncé"])),
    "entity-classification-middle": (("mluke", "luke"), "entity_classification",
                                     dict(text=BEY, entity_spans=["Los Angeles"])),
    "entity-pair-head-first": (("mluke", "luke"), "entity_pair_classification",
                               dict(text=BEY, entity_spans=["Beyoncé", "Los Angeles"])),
    "entity-pair-tail-first": (("mluke", "luke"), "entity_pair_classification",
                               dict(text=BEY, entity_spans=["Los Angeles", "Beyoncé"])),
    "entity-pair-adjacent": (("mluke", "luke"), "entity_pair_classification",
                             dict(text="Los Angeles, California", entity_spans=["Los Angeles", "California"])),
    "entity-span-every-word": (("mluke", "luke"), "entity_span_classification",
                               dict(text="Beyoncé lives in Los Angeles", entity_spans="every-word")),
    "truncation-drops-late-entities": (("mluke", "luke"), None, dict(
        text=LONG, entity_spans=["Tokyo", "Japan", "Egypt"], max_length=12, truncation=True)),
    "truncation-pair-longest-first": (("mluke", "luke"), None, dict(
        text=LONG, text_pair="Beyoncé lives in Los Angeles.", entity_spans=["Tokyo", "Egypt"],
        entity_spans_pair=["Beyoncé"], max_length=20, truncation=True)),
    "entity-truncation": (("mluke", "luke"), None, dict(
        text=LONG, entity_spans=["Tokyo", "Japan", "Moscow", "Russia", "Cairo"], max_length=64, max_entity_length=3,
        truncation=True)),
    "entity-truncation-pair": (("mluke", "luke"), None, dict(
        text="Tokyo is in Japan.", text_pair=BEY, entity_spans=["Tokyo", "Japan"],
        entity_spans_pair=["Beyoncé", "Los Angeles"], max_length=64, max_entity_length=3, truncation=True)),
    "padding-max-length": (("mluke", "luke"), None, dict(
        text=BEY, entity_spans=["Beyoncé", "Los Angeles"], max_length=24, max_entity_length=4, padding="max_length")),
    "long-mention": (("mluke", "luke"), "entity_span_classification", dict(
        text=LONG, entity_spans=[(0, 29), (0, 5)]), dict(max_mention_length=3)),
    "entity-classification-truncated-padded": (("mluke", "luke"), "entity_classification", dict(
        text=LONG, entity_spans=["Tokyo"], max_length=16, truncation=True, padding="max_length")),
    "entity-classification-span-truncated-away": (("mluke", "luke"), "entity_classification", dict(
        text=LONG, entity_spans=["Moscow"], max_length=16, truncation=True, padding="max_length")),
    "japanese-pair": (("mluke", "luke"), "entity_pair_classification",
                      dict(text="東京は日本の首都です。", entity_spans=["東京", "日本"])),
    "japanese-named": (("mluke",), None, dict(text="東京は日本の首都です。", entity_spans=["東京", "日本"],
                                              entities={"mluke": ["ja:東京", "ja:日本"]})),
    "russian-spans": (("mluke", "luke"), "entity_span_classification",
                      dict(text="Москва — столица России.", entity_spans=["Москва", "России", "Москва — столица"])),
    "arabic-classification": (("mluke", "luke"), "entity_classification",
                              dict(text="القاهرة هي عاصمة مصر", entity_spans=["مصر"])),
    "batch-longest": (("mluke", "luke"), "entity_span_classification", dict(
        batch=[("Tokyo is the capital of Japan.", ["Tokyo", "Japan", "capital of Japan"]),
               ("Beyoncé lives in Los Angeles.", ["Beyoncé"]),
               ("Москва — столица России.", ["Москва", "России"])], padding=True)),
    "batch-max-length": (("mluke", "luke"), None, dict(
        batch=[("Tokyo is the capital of Japan.", ["Tokyo"]), (BEY, ["Beyoncé", "Los Angeles"])],
        padding="max_length", max_length=20), dict(max_entity_length=3)),
}


def resolve_spans(text: str, spans) -> list:
    if spans == "every-word":
        return every_word_span(text)
    out = []
    for s in spans:
        if isinstance(s, str):
            i = text.index(s)
            out.append((i, i + len(s)))
        else:
            out.append(tuple(s))
    return out


def resolved_call(family: str, call: dict) -> dict:
    """The case's call with spans as (start, end) and entities for this family; JSON-ready."""
    c = dict(call)
    if "batch" in c:
        texts = [t for t, _ in c["batch"]]
        c["entity_spans"] = [resolve_spans(t, s) for t, s in c.pop("batch")]
        c["text"] = texts
    else:
        for key, text_key in (("entity_spans", "text"), ("entity_spans_pair", "text_pair")):
            if key in c:
                c[key] = resolve_spans(c[text_key], c[key])
    for key in ("entities", "entities_pair"):
        if isinstance(c.get(key), dict):
            c[key] = c[key][family]
    return c


# ---- outside: the throwaway venv -------------------------------------------------------------------

def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default="/tmp/hf457-luke")
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden" / "luke"))
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        return make_all(Path(args.out))
    python = ensure_venv(Path(args.venv))
    subprocess.run([str(python), __file__, "--inside", "--out", args.out], check=True)


# ---- inside: transformers 4.57.6 -------------------------------------------------------------------

def write_entity_vocab(folder: Path, family: str) -> Path:
    path = folder / "entity_vocab.json"
    path.write_text(json.dumps({name: i for i, name in enumerate(ENTITIES[family])}, ensure_ascii=False, indent=1))
    return path


def build_mluke(folder: Path):
    import sentencepiece as spm
    from transformers import MLukeTokenizer

    tmp = folder / "_build"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "corpus.txt").write_text("\n".join(CORPUS * 4) + "\n")
    spm.SentencePieceTrainer.train(input=str(tmp / "corpus.txt"), model_prefix=str(tmp / "sp"), vocab_size=260,
                                   model_type="bpe", character_coverage=1.0, normalization_rule_name="identity",
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2)
    tok = MLukeTokenizer(vocab_file=str(tmp / "sp.model"), entity_vocab_file=str(write_entity_vocab(tmp, "mluke")))
    tok.save_pretrained(str(folder))
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


def build_luke(folder: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LukeTokenizer

    tmp = folder / "_build"
    tmp.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=420, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp))
    tok = LukeTokenizer(vocab_file=str(tmp / "vocab.json"), merges_file=str(tmp / "merges.txt"),
                        entity_vocab_file=str(write_entity_vocab(tmp, "luke")))
    tok.save_pretrained(str(folder))
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


def build_checkpoint(folder: Path, tokenizer_folder: Path):
    """A tiny LukeForEntityClassification over the mLUKE test vocabulary, saved with its tokenizer."""
    import torch
    from transformers import LukeConfig, LukeForEntityClassification, MLukeTokenizer

    tok = MLukeTokenizer.from_pretrained(str(tokenizer_folder), task="entity_classification")
    cfg = LukeConfig(vocab_size=len(tok), entity_vocab_size=len(ENTITIES["mluke"]), entity_emb_size=16,
                     hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=130, type_vocab_size=1,
                     id2label={0: "person", 1: "location", 2: "organization"},
                     label2id={"person": 0, "location": 1, "organization": 2})
    torch.manual_seed(0)
    model = LukeForEntityClassification(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # larger than the 0.02 init, so the labels' scores differ visibly
        for _, t in sorted(model.state_dict().items()):
            if t.is_floating_point():
                t.add_(0.2 * torch.randn(t.shape, generator=g))
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))


def run_case(folder: Path, family: str, task, call: dict, init: dict) -> dict:
    from transformers import LukeTokenizer, MLukeTokenizer

    cls = MLukeTokenizer if family == "mluke" else LukeTokenizer
    tok = cls.from_pretrained(str(folder), task=task, **init)
    kw = dict(call)
    text = kw.pop("text")
    if isinstance(text, list):  # a batch: spans as lists of tuples per row
        kw["entity_spans"] = [[tuple(s) for s in row] for row in kw["entity_spans"]]
    else:
        for key in ("entity_spans", "entity_spans_pair"):
            if key in kw:
                kw[key] = [tuple(s) for s in kw[key]]
    enc = tok(text, return_token_type_ids=True, **kw)
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in enc.items()}


def make_all(out_dir: Path):
    import transformers

    out_dir.mkdir(parents=True, exist_ok=True)
    build_mluke(out_dir / "mluke")
    build_luke(out_dir / "luke")
    build_checkpoint(out_dir / "mluke-tiny-entity-classification", out_dir / "mluke")
    cases = []
    for name, spec in CASES.items():
        families, task, call = spec[:3]
        init = spec[3] if len(spec) > 3 else {}
        for family in families:
            c = resolved_call(family, call)
            expected = run_case(out_dir / family, family, task, c, init)
            cases.append({"name": f"{family}/{name}", "family": family, "task": task, "init": init,
                          "call": c, "expected": expected})
    (out_dir / "cases.json").write_text(json.dumps(cases, ensure_ascii=False, indent=None) + "\n")
    (out_dir / "VERSIONS.json").write_text(json.dumps(
        {"transformers": transformers.__version__, "torch": __import__("torch").__version__, "made_by": "scripts/make_luke_golden.py"}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out_dir}")


if __name__ == "__main__":
    main()
