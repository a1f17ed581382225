"""Write the fixtures the mobile demo's Java and JavaScript cores are tested on.

    python mobile_demo/scripts/make_fixtures.py EXPORT_DIR [-o mobile_demo/fixtures/qa_fixtures.json]

EXPORT_DIR is a question-answering TFLite export (`edgeport export --model mobilebert --target tflite
--task question-answering --seq-len 384`). For every case of qa_cases.py the fixture holds what the
Python runtime (edgeport.runtime.pipeline) and the `tokenizers` library produce on it:
- `question_tokens`, `context_tokens`: ids, code-point offsets and word ids of each text alone;
- `windows`: per model window, its input_ids / token_type_ids / attention_mask (unpadded part; the
  rest is padding) and the start/end logits the artifact returned (float32 values);
- `answers`: the pipeline's answers (answer, start, end, score), best first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qa_cases import CASES, CLS_BOOST, CLS_BOOSTED

import edgeport.runtime as rt


def token_info(tokenizer, text: str) -> dict:
    """ids, tokens, [start, end) code-point offsets and word ids of `text` without special tokens."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    return {"ids": enc.ids, "tokens": enc.tokens, "offsets": [list(o) for o in enc.offsets],
            "word_ids": enc.word_ids}


def recorded_run(qa, question: str, context: str, top_k: int, handle_impossible: bool, cls_boost: float = 0.0):
    """Run the pipeline once, recording the feeds and outputs of every window (the [CLS] logits raised
    by `cls_boost` before the pipeline sees them)."""
    calls = []
    run = qa.run_batch

    def recording(feeds):
        out = run(feeds)
        for name in ("start_logits", "end_logits"):
            out[name][:, 0] += np.float32(cls_boost)
        calls.append((feeds, out))
        return out

    qa.run_batch = recording
    try:
        result = qa(question, context, top_k=top_k, handle_impossible_answer=handle_impossible)
    finally:
        del qa.run_batch
    return (result if isinstance(result, list) else [result]), calls


def windows_of(calls) -> list:
    rows = []
    for feeds, out in calls:
        for r in range(feeds["input_ids"].shape[0]):
            n = int(feeds["attention_mask"][r].sum())
            rows.append({
                "input_ids": feeds["input_ids"][r, :n].tolist(),
                "token_type_ids": feeds["token_type_ids"][r, :n].tolist(),
                "attention_mask_ones": n,
                "start_logits": [float(v) for v in out["start_logits"][r, :n].astype(np.float32)],
                "end_logits": [float(v) for v in out["end_logits"][r, :n].astype(np.float32)],
            })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export_dir")
    ap.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "fixtures" / "qa_fixtures.json"))
    args = ap.parse_args(argv)
    qa = rt.pipeline(args.export_dir)
    m = qa.manifest
    cases = []
    for name, question, context, top_k, handle_impossible in CASES:
        boost = CLS_BOOST if name in CLS_BOOSTED else 0.0
        answers, calls = recorded_run(qa, question, context, top_k, handle_impossible, boost)
        cases.append({"name": name, "question": question, "context": context, "top_k": top_k,
                      "handle_impossible_answer": handle_impossible, "cls_logit_boost": boost,
                      "question_tokens": token_info(qa.tokenizer, question),
                      "context_tokens": token_info(qa.tokenizer, context),
                      "windows": windows_of(calls),
                      "answers": [{k: a[k] for k in ("answer", "start", "end", "score")} for a in answers]})
    doc = {"made_by": "mobile_demo/scripts/make_fixtures.py",
           "artifact": {"family": m.family, "source": m.source, "sha256": m.sha256, "random_weights": m.random_weights,
                        "seq_len": qa.static_len},
           "settings": {"max_seq_len": qa.static_len, "doc_stride": min(qa.static_len // 2, 128),
                        "max_question_len": 64, "max_answer_len": 15},
           "cases": cases}
    out = Path(args.output)
    # The export's tokenizer and manifest travel with the fixtures: the cores' tests load them as the app does.
    (out.parent / "tokenizer.json").write_text((Path(args.export_dir) / m.tokenizer.file).read_text())
    manifest = json.loads((Path(args.export_dir) / "edgeport.json").read_text())
    manifest["parity"] = manifest["parity"][:1]
    (out.parent / "edgeport.json").write_text(json.dumps(manifest, indent=2) + "\n")
    out.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    nwin = sum(len(c["windows"]) for c in cases)
    nnull = sum(1 for c in cases if c["answers"] and c["answers"][0]["answer"] == "")
    print(f"wrote {args.output}: {len(cases)} cases, {nwin} windows, {nnull} with the null answer on top")
    return 0


if __name__ == "__main__":
    sys.exit(main())
