"""Golden outputs for the MEGA reference model, made once with transformers 4.57.6.

transformers 5.x dropped MEGA; 4.57.6 still has it (models/deprecated/mega). This script builds a
throwaway venv with that release, then, inside it, builds tiny MEGA models with seeded random weights,
saves each with `save_pretrained` into tests/golden/mega/<case>/ and writes golden.npz next to it:

    task                     the edgeport task of the saved head
    lengths                  the sequence lengths checked, e.g. [7, 12]
    input_ids_<L>            (B, L) int64, padded rows use pad_token_id; multiple-choice (2, 3, L)
    attention_mask_<L>       (B, L) int64, zeros at the end of the padded rows
    token_type_ids_<L>       (B, L) int64
    last_hidden_state_<L>    (B, L, H) float32: the backbone (`model.mega`; multiple-choice: the 6 rows)
    <output>_<L>             the head's outputs: logits, or start_logits and end_logits

Usage: python scripts/make_mega_golden.py [--venv /tmp/mega-golden-venv] [--out tests/golden/mega] [--only CASE ...]
Deterministic: the same venv gives byte-identical weights and outputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
TRANSFORMERS = "transformers==4.57.6"

# Shared tiny sizes: every case overrides a few switches.
BASE = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, intermediate_size=24, ema_projection_size=4,
            shared_representation_size=8, nffn_hidden_size=20, max_positions=32, initializer_range=0.2,
            pad_token_id=1)

# name -> (config overrides, HF head class, edgeport task, lengths). Decoder heads run HF's default
# path for decoders (use_cache=True: the EMA goes through `ema_step`), encoders the FFT path.
CASES = {
    "encoder-scalenorm-rotary": (
        dict(), "MegaForMaskedLM", "fill-mask", (7, 12)),
    "encoder-layernorm-simple-chunked": (
        dict(normalization_type="layernorm", relative_positional_bias="simple", use_chunking=True, chunk_size=4,
             add_token_type_embeddings=True, num_labels=3),
        "MegaForSequenceClassification", "text-classification", (3, 12)),
    "decoder-layernorm-rotary-postnorm": (
        dict(is_decoder=True, bidirectional=False, normalization_type="layernorm", normalize_before_mega=False,
             normalize_before_ffn=False, num_labels=5),
        "MegaForTokenClassification", "token-classification", (7, 12)),
    "decoder-scalenorm-simple-chunked-laplace": (
        dict(is_decoder=True, bidirectional=False, relative_positional_bias="simple", use_chunking=True,
             chunk_size=4, norm_affine=False, attention_activation="laplace"),
        "MegaForQuestionAnswering", "question-answering", (8, 12)),
    "encoder-rmsnorm-truncated-untied": (
        dict(normalization_type="rmsnorm", truncation=5, use_normalized_ffn=False, tie_word_embeddings=False,
             add_lm_hidden_dense_layer=False),
        "MegaForMaskedLM", "fill-mask", (7, 12)),
    "encoder-batchnorm-relu2-unidirectional": (
        dict(normalization_type="batchnorm", attention_activation="relu2", bidirectional=False,
             activation="gelu", nffn_hidden_size=12),
        "MegaForTokenClassification", "token-classification", (7, 12)),
    # Inputs (2, 3, L): two questions with three choices each; the backbone is checked on the 6 rows.
    "encoder-multiple-choice-chunked": (
        dict(use_chunking=True, chunk_size=4, normalization_type="layernorm"),
        "MegaForMultipleChoice", "multiple-choice", (3, 12)),  # chunked: L below or a multiple of chunk_size
    "decoder-causal-lm-chunked-dense": (
        dict(is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=4),
        "MegaForCausalLM", "causal-lm", (8, 12)),  # chunked decoder: whole chunks
    "decoder-causal-lm-rotary-untied": (
        dict(is_decoder=True, bidirectional=False, tie_word_embeddings=False, add_lm_hidden_dense_layer=False),
        "MegaForCausalLM", "causal-lm", (5, 12)),
}


# ---- outside: the throwaway venv -------------------------------------------------------------------

def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TRANSFORMERS, "safetensors"], check=True)
    return python


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default="/tmp/mega-golden-venv")
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden" / "mega"))
    ap.add_argument("--only", nargs="+", choices=sorted(CASES), help="make these cases only (others untouched)")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        return make_all(Path(args.out), args.only)
    python = ensure_venv(Path(args.venv))
    subprocess.run([str(python), __file__, "--inside", "--out", args.out] + (["--only", *args.only] if args.only else []),
                   check=True)


# ---- inside: transformers 4.57.6 -------------------------------------------------------------------

def perturb(model, seed: int):
    """Seeded values for every parameter and the BatchNorm statistics, so no norm or bias is trivial."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if not t.is_floating_point() or name.endswith("_float_tensor"):
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(0.02 + 0.5 * noise.abs())  # small: eps matters
            else:
                t.add_(0.1 * noise)


def make_inputs(cfg, length: int, seed: int):
    """Three rows: full, padded at the end (a partly padded chunk when chunking), mostly padding
    (whole chunks of it when chunking)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    B = 3
    ids = torch.randint(3, cfg.vocab_size, (B, length), generator=g)
    mask = torch.ones(B, length, dtype=torch.long)
    mask[1, length - length // 3 - 1:] = 0
    mask[2, max(1, length // 3):] = 0
    ids = ids.masked_fill(mask == 0, cfg.pad_token_id)
    types = torch.randint(0, cfg.type_vocab_size, (B, length), generator=g) if cfg.add_token_type_embeddings \
        else torch.zeros(B, length, dtype=torch.long)
    return ids, mask, types


def head_outputs(out, task: str) -> dict:
    if task == "question-answering":
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    return {"logits": out.logits}


def make_case(out_dir: Path, name: str, seed: int):
    import numpy as np
    import torch
    import transformers
    from transformers.models.deprecated.mega import MegaConfig

    overrides, head, task, lengths = CASES[name]
    torch.manual_seed(seed)
    cfg = MegaConfig(**{**BASE, **overrides})
    model = getattr(transformers, head)(cfg).eval()
    perturb(model, seed)
    folder = out_dir / name
    model.save_pretrained(folder)
    arrays = {"task": np.array(task), "lengths": np.array(lengths, dtype=np.int64)}
    with torch.no_grad():
        for i, L in enumerate(lengths):
            ids, mask, types = make_inputs(cfg, L, seed * 100 + i)
            if task == "multiple-choice":  # 6 rows -> (2 questions, 3 choices, L)
                more = make_inputs(cfg, L, seed * 100 + i + 50)
                ids, mask, types = (torch.cat([a, b]).view(2, 3, L) for a, b in zip((ids, mask, types), more))
            kw = dict(attention_mask=mask, token_type_ids=types)
            arrays.update({f"input_ids_{L}": ids, f"attention_mask_{L}": mask, f"token_type_ids_{L}": types})
            flat = {k: v.reshape(-1, L) for k, v in kw.items()}
            arrays[f"last_hidden_state_{L}"] = model.mega(ids.reshape(-1, L), **flat).last_hidden_state
            arrays.update({f"{k}_{L}": v for k, v in head_outputs(model(ids, **kw), task).items()})
    np.savez_compressed(folder / "golden.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    assert all(np.isfinite(np.asarray(v)).all() for k, v in arrays.items() if k != "task"), name


def make_all(out_dir: Path, only=None):
    import torch
    import transformers

    torch.use_deterministic_algorithms(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(CASES, start=1):  # a case's seed is its place in CASES, --only or not
        if not only or name in only:
            make_case(out_dir, name, seed)
    (out_dir / "VERSIONS.json").write_text(json.dumps(
        {"torch": torch.__version__, "transformers": transformers.__version__,
         "made_by": "scripts/make_mega_golden.py"}, indent=1) + "\n")
    print(f"wrote {len(only or CASES)} cases to {out_dir}")


if __name__ == "__main__":
    main()
