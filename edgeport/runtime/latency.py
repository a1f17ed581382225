"""The shared timing core: call a function repeatedly and summarise its wall-clock latency.

    stats = measure(lambda: sess.run(feeds), warmup=3, calls=50)
    stats = measure(fn, min_seconds=2.0)          # as many calls as fit in ~2 s (at least min_calls)
    stats.median_ms, stats.p90_ms, stats.n

Used by `edgeport bench` (runtime/bench_cli.py) and `export --target auto` (export/auto.py). Torch-free:
imports only the standard library. Times are `time.perf_counter()` differences around each call, in
milliseconds; nothing is cached between calls of `measure`.

Percentiles use the nearest-rank method on the sorted samples (p-th percentile = the smallest sample
with at least p% of the samples at or below it), so every reported figure is a latency that was
actually observed; the median is `statistics.median` (mean of the two middle samples for even n).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edgeport.errors import EdgeportError


@dataclass(frozen=True)
class LatencyStats:
    """Summary of n timed calls; every field in milliseconds except n.

    median_ms <= p90_ms <= max_ms and min_ms <= median_ms always hold. `samples_ms` keeps each call's
    time in call order (for plots or pooling several runs with `LatencyStats.of`)."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    stdev_ms: float  # sample standard deviation; 0.0 when n == 1
    n: int
    samples_ms: list = field(repr=False, default_factory=list)

    @classmethod
    def of(cls, samples_ms) -> LatencyStats:
        """Stats of a non-empty sequence of per-call times in ms; EdgeportError when it is empty."""
        xs = [float(x) for x in samples_ms]
        if not xs:
            raise EdgeportError("no latency samples to summarise")
        return cls(median_ms=statistics.median(xs), p90_ms=percentile(xs, 90), mean_ms=statistics.fmean(xs),
                   min_ms=min(xs), max_ms=max(xs), stdev_ms=statistics.stdev(xs) if len(xs) > 1 else 0.0,
                   n=len(xs), samples_ms=xs)

    def to_dict(self, samples: bool = False) -> dict:
        """JSON-ready dict of the fields (samples_ms only when `samples`)."""
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def percentile(samples_ms, p: float) -> float:
    """Nearest-rank p-th percentile (0 < p <= 100) of a non-empty sequence: sorted[ceil(p/100*n) - 1]."""
    xs = sorted(samples_ms)
    if not xs or not 0 < p <= 100:
        raise EdgeportError(f"percentile {p} of {len(xs)} samples is undefined")
    return float(xs[max(0, math.ceil(p / 100 * len(xs)) - 1)])


def measure(fn: Callable[[], object], warmup: int = 3, calls: int | None = None, min_seconds: float | None = None,
            min_calls: int = 5, max_calls: int = 100_000) -> LatencyStats:
    """Time `fn()` (no arguments; its result is discarded) and return LatencyStats.

    warmup: untimed calls first (allocations, kernel selection, thread-pool start-up).
    calls: exactly this many timed calls; or, when None, min_seconds: keep calling until the timed calls
    add up to at least min_seconds and at least `min_calls` were made (never more than max_calls).
    Exactly one of calls / min_seconds must be given. Raises EdgeportError on bad counts; whatever `fn`
    raises propagates unchanged.
    """
    if (calls is None) == (min_seconds is None):
        raise EdgeportError("measure: give exactly one of calls or min_seconds")
    if warmup < 0 or (calls is not None and calls < 1) or (min_seconds is not None and min_seconds <= 0):
        raise EdgeportError(f"measure: bad counts (warmup={warmup}, calls={calls}, min_seconds={min_seconds})")
    for _ in range(warmup):
        fn()
    samples, total = [], 0.0
    target = calls if calls is not None else max_calls
    while len(samples) < target:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        samples.append(dt * 1e3)
        total += dt
        if calls is None and total >= min_seconds and len(samples) >= min_calls:
            break
    return LatencyStats.of(samples)


def check_seconds(seconds: float, flag: str = "--measure-seconds") -> None:
    """Refuse a timing budget (seconds) that is not finite and > 0: 0 or less times nothing, nan or inf never
    ends. Shared by `edgeport bench --seconds` and the auto searches' `--measure-seconds`.
    Raises EdgeportError naming `flag`."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise EdgeportError(f"{flag} must be > 0 and finite, got {seconds:g} (seconds)")
