"""edgeport.runtime.latency: the shared timing core (no timing assertions: counts and order statistics only)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.runtime.latency import LatencyStats, measure, percentile


@pytest.mark.parametrize("n", [1, 2, 7, 10, 101])
def test_percentiles_match_numpy_inverted_cdf(n):
    """Nearest rank equals numpy's 'inverted_cdf' percentile (Hyndman & Fan definition 1)."""
    xs = np.random.default_rng(n).exponential(3.0, n)
    for p in (50, 90, 99, 100):
        assert percentile(xs, p) == np.percentile(xs, p, method="inverted_cdf")
    s = LatencyStats.of(xs)
    assert s.median_ms == pytest.approx(np.median(xs))
    assert s.min_ms <= s.median_ms <= s.p90_ms <= s.max_ms and s.n == n


def test_measure_makes_exactly_warmup_plus_calls():
    count = []
    s = measure(lambda: count.append(1), warmup=4, calls=9)
    assert len(count) == 13 and s.n == 9 and len(s.samples_ms) == 9
    assert "samples_ms" not in s.to_dict() and len(s.to_dict(samples=True)["samples_ms"]) == 9


def test_measure_min_seconds_stops_after_the_budget():
    count = []
    s = measure(lambda: count.append(1), warmup=0, min_seconds=1e-9, min_calls=3)
    assert s.n == 3 == len(count)  # the budget is spent at once; min_calls still holds
    s = measure(lambda: None, warmup=0, min_seconds=10.0, max_calls=50)
    assert s.n == 50  # max_calls caps a budget that is never reached


@pytest.mark.parametrize("kw", [{}, {"calls": 3, "min_seconds": 1.0}, {"calls": 0}, {"min_seconds": -1},
                                {"calls": 2, "warmup": -1}])
def test_measure_refuses_bad_counts(kw):
    with pytest.raises(EdgeportError):
        measure(lambda: None, **kw)


def test_empty_samples_refused():
    with pytest.raises(EdgeportError):
        LatencyStats.of([])
