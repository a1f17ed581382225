"""Accuracy budgets for `--target auto` / `--quantize auto`: parsing, defaults, and the metrics they bound.

    parse_budget("top1>=0.99")                  # one bound
    parse_budget("cos>=0.995, maxdiff<=0.05")   # every bound must hold

Metrics (each candidate's outputs against the float reference's, on the same fixed inputs; numpy only):

    top1     fraction of positions whose argmax over the last axis agrees with the reference's: per real
             token for per-token outputs (fill-mask, token-classification, next-token logits of a decoder),
             per text for pooled ones (text-classification), and over the real tokens of each text for
             question answering's start/end logits (the span argmax). Not defined for feature-extraction.
    cos      the smallest cosine similarity over the inputs: feature-extraction compares mean-pooled
             embeddings (over real tokens), every other task each text's outputs flattened.
    maxdiff  the largest |candidate - reference| over every real position of every output.

Defaults (DEFAULT_BUDGETS): `cos>=0.99` for feature-extraction, `top1>=0.99` for every other task.
A bound must point the metric's way (`top1`/`cos` take `>=`, `maxdiff` takes `<=`); anything else is an
EdgeportError naming the syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgeport.errors import EdgeportError

# metric -> the comparison a bound on it must use (higher is better for top1 and cos, lower for maxdiff)
METRICS = {"top1": ">=", "cos": ">=", "maxdiff": "<="}
DEFAULT_BUDGETS = {"feature-extraction": "cos>=0.99"}
DEFAULT_BUDGET = "top1>=0.99"
SYNTAX = "METRIC>=X or maxdiff<=X, comma-separated (metrics: top1, cos, maxdiff), e.g. 'top1>=0.99'"

_BOUND = re.compile(r"^\s*([a-z0-9]+)\s*(>=|<=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Bound:
    """One bound: `metric op value`, e.g. top1 >= 0.99."""

    metric: str  # top1 | cos | maxdiff
    op: str  # ">=" | "<="
    value: float

    def holds(self, metrics: dict) -> bool:
        """True when metrics[metric] satisfies the bound (a missing or NaN metric never does)."""
        got = metrics.get(self.metric)
        if got is None or got != got:
            return False
        return got >= self.value if self.op == ">=" else got <= self.value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Budget:
    """Every bound must hold (`holds`); `text` is what the user wrote (or the default)."""

    bounds: tuple
    text: str

    def holds(self, metrics: dict) -> bool:
        """True when every bound holds on `metrics` ({metric: float})."""
        return all(b.holds(metrics) for b in self.bounds)

    @property
    def metrics(self) -> list:
        """The metric names the budget bounds, in order."""
        return [b.metric for b in self.bounds]


def default_budget(task: str) -> str:
    """The budget text used when none is given: cos>=0.99 for feature-extraction, top1>=0.99 otherwise."""
    return DEFAULT_BUDGETS.get(task, DEFAULT_BUDGET)


def parse_budget(text: str, task: str | None = None) -> Budget:
    """'top1>=0.99[, maxdiff<=0.1]' -> Budget. With `task`, also refuses metrics the task lacks (top1 on
    feature-extraction). Raises EdgeportError (one line, naming the syntax) on anything else: unknown metric,
    wrong direction, top1 outside [0, 1], cos outside [-1, 1], maxdiff below 0, an empty budget."""
    parts = [p for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise EdgeportError(f"--budget is empty; give {SYNTAX}")
    bounds = []
    for part in parts:
        m = _BOUND.match(part.lower())
        if m is None:
            raise EdgeportError(f"--budget '{part.strip()}' is not {SYNTAX}")
        metric, op, value = m[1], m[2], float(m[3])
        if metric not in METRICS:
            raise EdgeportError(f"--budget: unknown metric '{metric}'; metrics: {', '.join(METRICS)}")
        if op != METRICS[metric]:
            raise EdgeportError(f"--budget: {metric} takes '{METRICS[metric]}' (got '{part.strip()}')")
        low, high = {"top1": (0.0, 1.0), "cos": (-1.0, 1.0), "maxdiff": (0.0, float("inf"))}[metric]
        if not low <= value <= high:
            raise EdgeportError(f"--budget: {metric} is between {low:g} and {high:g} (got {value:g})")
        if metric == "top1" and task == "feature-extraction":
            raise EdgeportError("--budget: top1 is not defined for feature-extraction (use cos or maxdiff)")
        bounds.append(Bound(metric, op, value))
    return Budget(tuple(bounds), ", ".join(str(b) for b in bounds))


# ---------------------------------------------------------------- metrics

def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(ref: list, got: list, task: str) -> dict:
    """Metrics of candidate outputs `got` against reference outputs `ref`.

    ref/got: one {output name: float array} per input, real positions only (padding already dropped):
    (n, ...) for per-token outputs, (C,) or (n,) otherwise. Returns {"top1", "cos", "maxdiff", "inputs"}
    (top1 None for feature-extraction). Raises EdgeportError when shapes differ (a broken candidate).
    """
    hits = total = 0
    worst, cosines = 0.0, []
    for r, g in zip(ref, got):
        for name, want in r.items():
            have = np.asarray(g[name], np.float64)
            if have.shape != want.shape:
                raise EdgeportError(f"output '{name}' has shape {list(have.shape)}, the reference {list(want.shape)}")
            worst = max(worst, float(np.abs(have - want).max(initial=0.0)))
            if task == "feature-extraction":  # (n, H) -> mean-pooled (H,)
                cosines.append(_cosine(have.reshape(-1, want.shape[-1]).mean(0), want.reshape(-1, want.shape[-1]).mean(0)))
                continue
            cosines.append(_cosine(have.ravel(), want.ravel()))
            same = have.argmax(axis=-1) == want.argmax(axis=-1)
            hits, total = hits + int(np.sum(same)), total + int(np.size(same))
    top1 = None if task == "feature-extraction" else hits / max(total, 1)
    return {"top1": top1, "cos": min(cosines) if cosines else None, "maxdiff": worst, "inputs": len(ref)}
