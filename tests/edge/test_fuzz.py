"""Schema-driven fuzzing of the whole REST API from the OpenAPI document the edge serves: never a 5xx.

Bounded and deterministic: Hypothesis derandomized with a fixed seed, a few hundred cases in all, valid
(positive) and invalid (negative) data, with and without an API key. The SSE stream is excluded (an endless
response). Uses schemathesis' Python API (`schema.as_strategy()` with Hypothesis), since its pytest plugin
does not run under pytest 9.
"""

from __future__ import annotations

from collections import Counter

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.support.stack import EdgeStack

RUNS = [  # (mode, examples, send the API key)
    (GenerationMode.POSITIVE, 200, True),
    (GenerationMode.NEGATIVE, 120, True),
    (GenerationMode.POSITIVE, 40, False),
]


@pytest.mark.parametrize(("mode", "examples", "with_key"), RUNS,
                         ids=[f"{mode.value}-{'key' if key else 'nokey'}" for mode, _, key in RUNS])
def test_no_server_errors(edge_stack: EdgeStack, mode: GenerationMode, examples: int, with_key: bool) -> None:
    schema = schemathesis.openapi.from_url(f"{edge_stack.base_url}/openapi.json").exclude(path="/realtime/ticks")
    headers = {"x-api-key": edge_stack.api_key} if with_key else {}
    statuses: Counter[tuple[str, int]] = Counter()

    @hypothesis.given(case=schema.as_strategy(generation_mode=mode))
    @hypothesis.settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=True)
    @hypothesis.seed(20240501)
    def check(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call_and_validate(base_url=edge_stack.base_url, headers=headers,
                                          checks=[not_a_server_error], timeout=15)
        statuses[(case.operation.label, response.status_code)] += 1

    check()
    print(sorted(statuses.items()))
    operations = {label for label, _ in statuses}
    if mode is GenerationMode.POSITIVE:
        assert len(operations) == 7, f"only {operations} were exercised"  # every operation but the stream
    else:
        assert len(operations) >= 4, f"only {operations} were exercised"  # those with inputs to break
    if mode is GenerationMode.POSITIVE and with_key:
        assert any(status == 200 for _, status in statuses), statuses
