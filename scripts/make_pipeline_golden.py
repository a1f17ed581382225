"""Golden pipeline outputs from transformers 4.57.6, the last release with extractive QA pipelines.

transformers 5.x dropped `QuestionAnsweringPipeline`; the runtime's QA pipeline is held to what
4.57.6's pipeline answers on the same weights. Run it with that release's interpreter:

    python3.11 -m venv /tmp/hf457
    /tmp/hf457/bin/pip install torch==2.13.0 transformers==4.57.6 onnxruntime tokenizers numpy
    /tmp/hf457/bin/python scripts/make_pipeline_golden.py [--out tests/golden/pipelines]

It writes, under --out:
    bert-qa-tiny/        a tiny BERT QA checkpoint (seeded random weights, save_pretrained, ~100 KB)
                         with vocab.txt and tokenizer_config.json (model_max_length 64)
    qa_golden.json       [{name, question, context, kwargs, expected}] where expected is what
                         `pipeline("question-answering")(question=, context=, **kwargs)` returned
                         (a dict, or a list of dicts when top_k > 1)
    tokenizer_golden.json {configs: {name: tokenizer_config}, texts: [...],
                         ids: {name: {"fast": [[...]], "slow": [[...]]}}} from BertTokenizerFast and the
                         pure-Python BertTokenizer built from the same vocab.txt + tokenizer_config.json
Deterministic: the same venv gives byte-identical weights and outputs.
"""

from __future__ import annotations

import argparse
import json
import string
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the a an is was of in on to and or who what where when paris france capital city river alice bob "
         "met saw went lives big small red blue book read reads cat dog sat mat nobody knows").split()
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "!", "'", "-"] + WORDS
         + list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase])

LONG = ("alice met bob in paris . the cat sat on the mat . bob reads a big red book in the city . "
        "the dog went to the river and saw a small blue cat . who lives in france ? nobody knows . ") * 5
QA_CASES = [
    # (name, question, context, kwargs)
    ("word-inside", "who?", "Tegucigalpa", {}),
    ("word-inside-unaligned", "who?", "Tegucigalpa", {"align_to_words": False}),
    ("score-normalised", "what?", "Nobody knows.", {}),
    ("short", "Who met Bob?", "Alice met Bob in Paris. The cat sat on the mat.", {}),
    ("top-k", "Who met Bob?", "Alice met Bob in Paris. The cat sat on the mat.", {"top_k": 5}),
    ("impossible", "Where?", "Alice met Bob in Paris.", {"handle_impossible_answer": True, "top_k": 3}),
    ("max-answer-len", "What did Bob read?", "Bob reads a big red book in the city of Paris.",
     {"max_answer_len": 2, "top_k": 2}),
    ("zero-width-context", "who?", "\u200b", {}),
    ("zero-width-context-impossible", "who?", "\u200b\u200b", {"handle_impossible_answer": True}),
    ("long-default", "Who lives in France?", LONG, {}),
    ("long-stride", "What did the dog see?", LONG, {"doc_stride": 16, "top_k": 4}),
    ("long-short-windows", "Where is the cat?", LONG, {"max_seq_len": 40, "doc_stride": 10, "top_k": 3,
                                                       "handle_impossible_answer": True}),
    ("long-unaligned", "Who lives in France?", LONG, {"align_to_words": False, "max_answer_len": 4}),
    ("accents-emoji", "Where?", "Zo\u00eb met Ren\u00e9e at the caf\u00e9 \U0001f600 in Paris.", {"top_k": 4}),
    ("tiny-context-top-k", "who?", "Bob", {"top_k": 5}),
    ("tiny-context-impossible", "who?", "Bob sat.", {"top_k": 8, "handle_impossible_answer": True}),
]

TOKENIZER_CONFIGS = {
    "uncased": {"do_lower_case": True},
    "uncased-keep-accents": {"do_lower_case": True, "strip_accents": False},
    "cased": {"do_lower_case": False},
    "cased-strip-accents": {"do_lower_case": False, "strip_accents": True},
    "no-chinese-split": {"do_lower_case": True, "tokenize_chinese_chars": False},
    "custom-specials": {"do_lower_case": True, "unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>",
                        "pad_token": "<pad>", "mask_token": "<mask>"},
}
TOKENIZER_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<pad>", "<unk>", "<s>", "</s>", "<mask>",
                    ".", ",", "!", "?", "'", "-", "\u4efb", "\u52a1", "\u4efb\u52a1", "##\u52a1", "m\u00f6chte",
                    "mochte", "caf\u00e9", "cafe", "Caf\u00e9", "Cafe", "Hello", "hello", "World", "world",
                    "na\u00efve", "naive", "\u00f6", "\u00e9", "##\u00f6", "##\u00e9", "\U0001f600"]
                   + list(string.ascii_letters) + ["##" + c for c in string.ascii_letters])
TOKENIZER_TEXTS = [
    "Hello World", "m\u00f6chte", "M\u00d6CHTE caf\u00e9", "Caf\u00e9 na\u00efve", "\u4efb\u52a1", "abc\u4efb\u52a1def",
    "smile \U0001f600 now", "tab\there", "a  \t\n  b", "  leading and trailing  ", "zero\u200bwidth",
    "soft\u00adhyphen", "ctrl\x01char", "bell\x07 and \x7f del", "nbsp\u00a0space", "e\u0301 combining",
    "hello,world!what?", "\ufeffbom", "it's well-known", "\u3000ideographic\u3000space",
    "x" * 120, "",
]


def build_qa_checkpoint(out: Path) -> Path:
    """Seeded tiny BERT QA model + vocab into out/bert-qa-tiny; returns the folder."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    folder = out / "bert-qa-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=64, initializer_range=0.3)
    torch.manual_seed(0)
    BertForQuestionAnswering(cfg).eval().save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 64}))
    return folder


def qa_golden(folder: Path) -> list:
    from transformers import BertForQuestionAnswering, BertTokenizerFast, pipeline

    qa = pipeline("question-answering", model=BertForQuestionAnswering.from_pretrained(str(folder)),
                  tokenizer=BertTokenizerFast.from_pretrained(str(folder)), device="cpu")
    rows = []
    for name, question, context, kwargs in QA_CASES:
        got = qa(question=question, context=context, **kwargs)
        rows.append({"name": name, "question": question, "context": context, "kwargs": kwargs, "expected": got})
    return rows


def tokenizer_golden() -> dict:
    from transformers import BertTokenizer, BertTokenizerFast

    ids = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "vocab.txt").write_text("\n".join(TOKENIZER_VOCAB) + "\n")
        for name, cfg in TOKENIZER_CONFIGS.items():
            (d / "tokenizer_config.json").write_text(json.dumps(cfg))
            fast = BertTokenizerFast.from_pretrained(str(d))
            slow = BertTokenizer.from_pretrained(str(d))
            ids[name] = {kind: [tok(t)["input_ids"] for t in TOKENIZER_TEXTS] for kind, tok in
                         (("fast", fast), ("slow", slow))}
            ids[name]["pairs"] = [fast(a, b)["input_ids"] for a, b in zip(TOKENIZER_TEXTS, TOKENIZER_TEXTS[1:])]
    return {"vocab": TOKENIZER_VOCAB, "configs": TOKENIZER_CONFIGS, "texts": TOKENIZER_TEXTS, "ids": ids}


def main() -> None:
    import transformers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden" / "pipelines"))
    a = ap.parse_args()
    if transformers.__version__ != "4.57.6":
        raise SystemExit(f"needs transformers 4.57.6 (this is {transformers.__version__}): see the docstring")
    out = Path(a.out)
    folder = build_qa_checkpoint(out)
    (out / "qa_golden.json").write_text(json.dumps(qa_golden(folder), indent=1, ensure_ascii=False) + "\n")
    (out / "tokenizer_golden.json").write_text(json.dumps(tokenizer_golden(), ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
