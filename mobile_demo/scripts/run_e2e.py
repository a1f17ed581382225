"""Run the web demo's end-to-end test (mobile_demo/web/e2e/) on given exports.

    python mobile_demo/scripts/run_e2e.py --int8 EXPORT_DIR --fp32 EXPORT_DIR [--screenshot PNG]

Computes the Python pipeline's answers (edgeport.runtime.pipeline) on the end-to-end cases for each
export, writes the test's config and runs `node --test e2e/` in mobile_demo/web with it: headless
Chromium under phone emulation must give the same answers from the same files. Exit code: node's.
Needs `npm ci` and `node setup.mjs` in mobile_demo/web, and Debian's chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qa_cases import CASES

WEB = Path(__file__).resolve().parents[1] / "web"
CHROMIUM = "/usr/bin/chromium"
# One window and several, Unicode (accents, emoji outside the BMP, CJK), punctuation, unknown words, the null answer.
E2E_CASES = ["short_top3", "long_stride_top5", "accents_precomposed", "emoji", "cjk", "two_word_context_null",
             "punctuation", "unknown_words"]


def expected_answers(folder) -> list:
    """The Python pipeline's answers on the end-to-end cases, and the top 3 the page's Ask button shows."""
    import edgeport.runtime as rt

    qa = rt.pipeline(folder)
    listed = lambda r: r if isinstance(r, list) else [r]
    out = []
    for name, question, context, top_k, null in (c for c in CASES if c[0] in E2E_CASES):
        out.append({"name": name, "question": question, "context": context, "top_k": top_k,
                    "handle_impossible_answer": null,
                    "answers": listed(qa(question, context, top_k=top_k, handle_impossible_answer=null)),
                    "answers_top3": listed(qa(question, context, top_k=3))})
    return out


def run(models: dict, screenshot: str | None = None) -> subprocess.CompletedProcess:
    """models: name (int8, fp32) -> export folder. Returns node's completed process (output captured)."""
    config = {"models": {k: str(Path(v).resolve()) for k, v in models.items()},
              "expected": {k: expected_answers(v) for k, v in models.items()},
              "screenshot": str(Path(screenshot).resolve()) if screenshot else None, "chromium": CHROMIUM}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e2e.json"
        path.write_text(json.dumps(config))
        return subprocess.run(["node", "--test", "e2e/"], check=False, cwd=WEB, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "E2E_CONFIG": str(path)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--int8", required=True, help="int8 export folder (the page's default model)")
    ap.add_argument("--fp32", required=True)
    ap.add_argument("--screenshot", help="PNG path for a screenshot of the page after asking (int8 model)")
    args = ap.parse_args(argv)
    r = run({"int8": args.int8, "fp32": args.fp32}, args.screenshot)
    print(r.stdout[-4000:], r.stderr[-2000:], sep="\n")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
