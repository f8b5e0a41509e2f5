"""INVALID_ARGUMENT within a byte budget: the status travels in trailers (grpc-message, percent-encoded, and
grpc-status-details-bin, the Status again in base64), and a C-core client (grpcio, the edge) refuses trailers
over 8 KiB with RESOURCE_EXHAUSTED, losing the BadRequest. Whatever the violations, the status fits, lists the
first ones in order and counts the rest in one last entry."""

from __future__ import annotations

import base64

import grpc
import pytest
from google.rpc import error_details_pb2

from marketdata.common import errors, rules
from marketdata.common.errors import FieldViolations, field_violations_of, invalid_argument_status, message_bytes

# What a client may see of one INVALID_ARGUMENT: well under C-core's 8 KiB metadata limit.
MAX_TRAILER_BYTES = 4096 + 256  # the budget, plus what ingest prefixes to a StreamTicks batch's message


def trailer_bytes(message: str, details: bytes) -> int:
    """grpc-message as sent plus grpc-status-details-bin as base64: the trailers of the status."""
    return message_bytes(message) + len(base64.b64encode(details))


def listed(status) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    bad_request = error_details_pb2.BadRequest()
    assert len(status.details) == 1 and status.details[0].Unpack(bad_request)
    return [(v.field, v.description) for v in bad_request.field_violations]


def assert_fits(error: grpc.RpcError, first: list[str], total: int) -> list[tuple[str, str]]:
    """A client-side error: INVALID_ARGUMENT whose BadRequest starts with the fields `first` and, when it does not
    list all `total` problems, ends with one entry counting the rest; its trailers are within the budget."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    violations = field_violations_of(error)
    assert [field for field, _ in violations[:len(first)]] == first, violations[:len(first) + 2]
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
    assert trailer_bytes(error.details(), details) <= MAX_TRAILER_BYTES
    assert all(len(description) <= errors.MAX_DESCRIPTION_CHARS for _, description in violations)
    if len(violations) < total:
        *shown, (_, summary) = violations
        assert summary == errors.not_listed(total - len(shown)), violations[-1]
    else:
        assert len(violations) == total
    return violations


def test_a_few_violations_are_listed_whole_and_a_long_one_cut() -> None:
    status = invalid_argument_status([("symbol", "required"), ("limit", "must be at most 5000")])
    assert listed(status) == [("symbol", "required"), ("limit", "must be at most 5000")]
    assert status.message == "invalid argument: symbol: required; limit: must be at most 5000"
    status = invalid_argument_status([("symbol", "required"), ("page_token", "x" * 9000)])
    assert listed(status) == [("symbol", "required"),
                              ("page_token", "x" * (errors.MAX_DESCRIPTION_CHARS - 1) + "…")]


@pytest.mark.parametrize(("count", "field", "description", "summarised"), [
    (100, "items[{i}].symbol", f"'sym{{i}}usdt' is not a symbol: {rules.SYMBOL_RULE_TEXT}", True),
    (10_000, "items[{i}].price", "must be a finite number from 1e-12 to 1e+12, got 0.0", True),
    (300, "x" * 9000 + "[{i}]", "é✓\x00" * 9000, True),  # long, non-ASCII, control characters: all cut
    (3, "f{i}", "\x01" * 5000, False),  # three cut descriptions fit
])
def test_many_or_long_violations_fit_the_budget(count: int, field: str, description: str, summarised: bool) -> None:
    violations = [(field.format(i=i), description.format(i=i)) for i in range(count)]
    status = invalid_argument_status(violations)
    assert trailer_bytes(status.message, status.SerializeToString()) <= errors.MAX_STATUS_BYTES
    assert message_bytes(status.message) <= errors.MAX_MESSAGE_BYTES
    *entries, last = listed(status)
    assert last[1].endswith("more problems not listed") == summarised, last
    if summarised:
        assert entries and last[1] == errors.not_listed(count - len(entries))
    else:
        entries.append(last)
        assert len(entries) == count
    for (path, text), (given_path, given_text) in zip(entries, violations):  # in order, cut to their caps
        assert len(path) <= errors.MAX_FIELD_CHARS and len(text) <= errors.MAX_DESCRIPTION_CHARS
        assert given_path.startswith(path.removesuffix("…")) and given_text.startswith(text.removesuffix("…"))


def test_problems_a_validator_did_not_collect_are_counted_with_those_that_do_not_fit() -> None:
    found = FieldViolations([(f"items[{i}].symbol", f"'s{i}' is not a symbol: {rules.SYMBOL_RULE_TEXT}")
                             for i in range(100)], unlisted=900)
    shown = listed(found.status())
    assert shown[0][0] == "items[0].symbol"
    assert shown[-1] == ("items", errors.not_listed(1000 - (len(shown) - 1)))
    assert "(and " in found.status().message  # the message names the first few and counts the others


def test_a_long_summary_is_cut_to_the_message_budget() -> None:
    status = FieldViolations([("items", "x")]).status("batch 3 rejected: " + "é" * 5000)
    assert message_bytes(status.message) <= errors.MAX_MESSAGE_BYTES
    assert status.message.startswith("batch 3 rejected: ") and status.message.endswith("…")


def test_echoed_values_are_a_short_prefix() -> None:
    problem = rules.symbol_problem("A" * 9000)
    assert problem is not None and len(problem) < 200
    assert problem.startswith(f"'{'A' * errors.ECHO_CHARS}'… (9000 characters) is not a symbol")
    assert rules.symbol_problem("btc") == f"'btc' is not a symbol: {rules.SYMBOL_RULE_TEXT}"
