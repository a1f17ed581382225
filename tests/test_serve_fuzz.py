"""Fuzz every route of `edgeport serve` from its own OpenAPI schema (schemathesis): no answer is a 5xx.

Bounded: FUZZ_EXAMPLES (5; EDGEPORT_FUZZ_EXAMPLES=50 for a longer run) valid and as many invalid
requests per operation (schemathesis' positive and negative generation), no shrinking, against a live
127.0.0.1 server holding every tiny export.
(schemathesis' own pytest plugin does not load under pytest 9, so hypothesis drives its strategies here.)
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from serve_helpers import running  # noqa: E402

from edgeport.serve.app import create_app  # noqa: E402
from edgeport.serve.config import ServeConfig  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("EDGEPORT_FUZZ_EXAMPLES", "5"))  # per operation and mode; more by hand


@pytest.fixture(scope="module")
def live(serve_exports):
    cfg = ServeConfig(max_batch=8, max_wait_ms=2, threads=1, max_new_tokens=8, max_items=8, max_text_chars=500)
    with running(create_app(serve_exports, cfg)) as url:
        yield url


def test_no_server_errors(live):
    schema = schemathesis.openapi.from_url(live + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    seen = {}
    for op in operations:
        for mode in schemathesis.GenerationMode:
            @settings(max_examples=FUZZ_EXAMPLES, phases=[Phase.explicit, Phase.generate], deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case):
                r = case.call(base_url=live, timeout=30)
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
                assert r.status_code < 500, f"{case.method} {case.formatted_path} -> {r.status_code}: {r.text[:300]}"

            try:
                fuzz()
            except Unsatisfiable:  # no invalid request exists (GET without parameters): nothing to send
                if mode != schemathesis.GenerationMode.NEGATIVE:
                    raise
    print(f"fuzz: {len(operations)} operations, status counts {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= len(operations) * 2, seen
    assert any(400 <= code < 500 for code in seen) and 200 in seen, seen  # both kinds of request reached the server
