"""Schema-driven fuzzing of the whole REST API from the OpenAPI document the edge serves: never a 5xx.

Bounded and deterministic: Hypothesis derandomized with a fixed seed, a few hundred cases in all, valid
(positive) and invalid (negative) data, with and without an API key. The SSE stream is excluded (an endless
response). Uses schemathesis' Python API (`schema.as_strategy()` with Hypothesis), since its pytest plugin
does not run under pytest 9.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.support.stack import EdgeStack

RUNS = [  # (mode, examples, send the API key)
    (GenerationMode.POSITIVE, 200, True),
    (GenerationMode.NEGATIVE, 120, True),
    (GenerationMode.POSITIVE, 90, False),  # enough for every one of the 8 operations to be drawn
]


@pytest.mark.parametrize(("mode", "examples", "with_key"), RUNS,
                         ids=[f"{mode.value}-{'key' if key else 'nokey'}" for mode, _, key in RUNS])
def test_no_server_errors(edge_stack: EdgeStack, mode: GenerationMode, examples: int, with_key: bool) -> None:
    schema = schemathesis.openapi.from_url(f"{edge_stack.base_url}/openapi.json").exclude(path_regex="^/realtime/")
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
        assert len(operations) == 8, f"only {operations} were exercised"  # every operation but the streams
    else:
        assert len(operations) >= 4, f"only {operations} were exercised"  # those with inputs to break
    if mode is GenerationMode.POSITIVE and with_key:
        assert any(status == 200 for _, status in statuses), statuses



def is_http_field_value(value: str) -> bool:
    return all(char == "\t" or (char >= " " and char != "\x7f") for char in value)


def steer(case, symbol: str) -> None:  # type: ignore[no-untyped-def]
    """Makes a generated valid request valid for the platform's state too, which no static document can
    state: ticks name a registered, active symbol and an event time not in the future and within the ticks kept
    (RETENTION_TICKS_DAYS, 30 here: a moving horizon); a history range
    is not inverted and has an interval only for candles (rules across two parameters). Everything else (every rule the document declares) is left to the generator."""
    if case.operation.path == "/api/v1/webhooks/ticks" and isinstance(case.body, dict):
        now = datetime.now(timezone.utc)
        for item in case.body.get("items") or []:
            if isinstance(item, dict):
                item["symbol"] = symbol
                moment = item.get("eventTime")
                try:
                    parsed = datetime.fromisoformat(str(moment).replace("Z", "+00:00"))
                except ValueError:
                    continue
                if parsed.tzinfo is None or parsed > now or parsed < now - timedelta(days=28):
                    item["eventTime"] = (now - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    if case.operation.path == "/api/v1/webhooks/symbols" and isinstance(case.body, dict):
        # Never deactivate the symbol the ticks use.
        case.body["items"] = [item for item in case.body.get("items") or []
                              if not (isinstance(item, dict) and item.get("symbol") == symbol)] or case.body.get("items")
    query = case.query or {}
    query.pop("pageToken", None)  # page tokens come from a previous response; a made-up one is refused
    if query.get("timeZone"):
        # Zone names are the IANA database's, which no pattern states: any generated one stands for a real zone.
        query["timeZone"] = ("UTC", "Europe/Berlin", "America/New_York", "+05:30")[len(str(query["timeZone"])) % 4]
    if case.operation.path == "/api/v1/ticker/24hr" and query.get("symbol"):
        # Comma lists of symbols: a pattern cannot bound each symbol's length, so name the registered one.
        query["symbol"] = [symbol]
    if case.operation.path.endswith("/history") and query.get("view") in ("ticks", "metrics1m"):
        for candles_only in ("interval", "fill", "numbers"):  # these belong to candles (view=ohlc1m)
            query.pop(candles_only, None)
    if case.operation.path.endswith("/history") and "from" in query and "to" in query:
        try:
            start = datetime.fromisoformat(str(query["from"]).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(query["to"]).replace("Z", "+00:00"))
        except ValueError:
            return
        if start >= end:
            del query["to"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_every_check_passes_over_the_whole_api(edge_stack: EdgeStack, symbol: str, mode: GenerationMode) -> None:
    """schemathesis with every check (status codes, content types, response schemas, positive data accepted,
    negative data rejected, ...) and 100 examples per operation. The SSE stream is an endless response:
    its valid requests are covered by the event conformance test, its invalid ones here."""
    schema = schemathesis.openapi.from_url(f"{edge_stack.base_url}/openapi.json")
    if mode is GenerationMode.POSITIVE:
        schema = schema.exclude(path_regex="^/realtime/")
    headers = {"x-api-key": edge_stack.api_key}
    statuses: Counter[tuple[str, int]] = Counter()

    @hypothesis.given(case=schema.as_strategy(generation_mode=mode))
    @hypothesis.settings(max_examples=100 * 8, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=True)
    @hypothesis.seed(20241124)
    def check(case) -> None:  # type: ignore[no-untyped-def]
        if mode is GenerationMode.POSITIVE:  # invalid requests stay exactly as generated
            steer(case, symbol)
        # A header value with control characters is not HTTP at all (RFC 9110 field-value): the server's HTTP
        # parser refuses the message before any application code, as it must, with its own plain 400.
        hypothesis.assume(all(is_http_field_value(str(value)) for value in (case.headers or {}).values()))
        # Nor is a request line past the HTTP server's limit (uvicorn's parser: 64 KiB), refused the same way.
        hypothesis.assume(len(urlencode(case.query or {}, doseq=True)) < 60_000)
        response = case.call_and_validate(base_url=edge_stack.base_url, headers=headers, timeout=15)
        statuses[(case.operation.label, response.status_code)] += 1

    check()
    print(sorted(statuses.items()))
    operations = {label for label, _ in statuses}
    assert len(operations) >= 6, operations
    if mode is GenerationMode.POSITIVE:
        assert sum(n for (label, status), n in statuses.items() if status == 200) > 100, statuses
